import VLMCore

extension PixelBuffer {
    /// PIL `crop((x, y, x + w, y + h))` with integer coordinates: areas outside the image are zero-filled.
    public func cropped(_ rect: PixelRect) -> PixelBuffer {
        if rect.x == 0, rect.y == 0, rect.width == width, rect.height == height { return self }
        var out = PixelBuffer(width: rect.width, height: rect.height)
        let x0 = max(rect.x, 0), x1 = min(rect.x + rect.width, width)
        let y0 = max(rect.y, 0), y1 = min(rect.y + rect.height, height)
        guard x1 > x0, y1 > y0 else { return out }
        let span = (x1 - x0) * 3
        out.pixels.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for y in y0..<y1 {
                    let s = src.baseAddress! + (y * width + x0) * 3
                    let d = dst.baseAddress! + ((y - rect.y) * rect.width + (x0 - rect.x)) * 3
                    d.update(from: s, count: span)
                }
            }
        }
        return out
    }

    /// PIL `paste(image, (x, y))` of a same-mode image: the box clipped to this image, bytes copied.
    public mutating func paste(_ image: PixelBuffer, x: Int, y: Int) {
        let x0 = max(x, 0), x1 = min(x + image.width, width)
        let y0 = max(y, 0), y1 = min(y + image.height, height)
        guard x1 > x0, y1 > y0 else { return }
        let span = (x1 - x0) * 3
        let dstWidth = width
        pixels.withUnsafeMutableBufferPointer { dst in
            image.pixels.withUnsafeBufferPointer { src in
                for row in y0..<y1 {
                    let s = src.baseAddress! + ((row - y) * image.width + (x0 - x)) * 3
                    let d = dst.baseAddress! + (row * dstWidth + x0) * 3
                    d.update(from: s, count: span)
                }
            }
        }
    }

    /// LLaVA-1.5's `expand2square`: centred on a square of side max(w, h) filled with `background`
    /// (w > h: pasted at (0, (w − h) // 2); h > w: at ((h − w) // 2, 0)); a square image is returned as is.
    public func expandedToSquare(background: (UInt8, UInt8, UInt8)) -> PixelBuffer {
        if width == height { return self }
        let side = max(width, height)
        var canvas = PixelBuffer(width: side, height: side, fill: background)
        if width > height {
            canvas.paste(self, x: 0, y: (width - height) / 2)
        } else {
            canvas.paste(self, x: (height - width) / 2, y: 0)
        }
        return canvas
    }

    /// PIL `ImageOps.exif_transpose` for an EXIF orientation value (1...8): 2 mirror, 3 rotate 180, 4 flip,
    /// 5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° counter-clockwise.
    public func oriented(_ orientation: Int) -> PixelBuffer {
        guard (2...8).contains(orientation) else { return self }
        let swaps = orientation >= 5
        let outW = swaps ? height : width
        let outH = swaps ? width : height
        var out = PixelBuffer(width: outW, height: outH)
        let w = width, h = height
        out.pixels.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                for oy in 0..<outH {
                    for ox in 0..<outW {
                        let sx: Int, sy: Int
                        switch orientation {
                        case 2: sx = w - 1 - ox; sy = oy
                        case 3: sx = w - 1 - ox; sy = h - 1 - oy
                        case 4: sx = ox; sy = h - 1 - oy
                        case 5: sx = oy; sy = ox                     // transpose
                        case 6: sx = oy; sy = h - 1 - ox             // rotate 270 (90° clockwise)
                        case 7: sx = w - 1 - oy; sy = h - 1 - ox     // transverse
                        default: sx = w - 1 - oy; sy = ox            // 8: rotate 90 (counter-clockwise)
                        }
                        let s = (sy * w + sx) * 3, d = (oy * outW + ox) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return out
    }
}
