import VLMCore

/// LLaVA-NeXT's "anyres" tiling (llava/mm_utils.py `process_anyres_image`): choose the grid resolution,
/// resize keeping the aspect ratio and pad with black, cut S×S tiles row-major, and put a global S×S view
/// (the whole image resized to S×S) first.
public enum AnyRes {
    /// `select_best_resolution`: the candidate (width, height) that keeps the most effective pixels
    /// (min(downscaled area, original area)), ties broken by the least wasted area, first candidate winning a full tie.
    public static func selectBestResolution(width: Int, height: Int, candidates: [[Int]]) -> (width: Int, height: Int) {
        var best = (width: candidates[0][0], height: candidates[0][1])
        var maxEffective = 0
        var minWasted = Int.max
        let ow = Double(width), oh = Double(height)
        for candidate in candidates {
            let (cw, ch) = (candidate[0], candidate[1])
            let scale = min(Double(cw) / ow, Double(ch) / oh)
            let dw = Int(ow * scale), dh = Int(oh * scale)
            let effective = min(dw * dh, width * height)
            let wasted = cw * ch - effective
            if effective > maxEffective || (effective == maxEffective && wasted < minWasted) {
                maxEffective = effective
                minWasted = wasted
                best = (cw, ch)
            }
        }
        return best
    }

    /// `resize_and_pad_image`: scale to fit the target keeping the aspect ratio (the fitted side exact, the other
    /// `min(ceil(side * scale), target)`), centred on black at ((tw − w) // 2, (th − h) // 2).
    public static func resizeAndPad(_ image: PixelBuffer, width tw: Int, height th: Int, filter: ResampleFilter,
                                    order: ResizePassOrder = .pillow13) -> PixelBuffer {
        let scaleW = Double(tw) / Double(image.width)
        let scaleH = Double(th) / Double(image.height)
        let newW: Int, newH: Int
        if scaleW < scaleH {
            newW = tw
            newH = min(Int((Double(image.height) * scaleW).rounded(.up)), th)
        } else {
            newH = th
            newW = min(Int((Double(image.width) * scaleH).rounded(.up)), tw)
        }
        let resized = image.resized(width: newW, height: newH, filter: filter, order: order)
        var canvas = PixelBuffer(width: tw, height: th)
        canvas.paste(resized, x: (tw - newW) / 2, y: (th - newH) / 2)
        return canvas
    }

    public static func process(_ image: PixelBuffer, config: PreprocessConfig) -> PreprocessedImage {
        let s = config.imageSize
        let best = selectBestResolution(width: image.width, height: image.height, candidates: config.gridPinpoints)
        let padded = resizeAndPad(image, width: best.width, height: best.height, filter: config.resample, order: config.passOrder)
        let rows = best.height / s, cols = best.width / s
        var tiles = [image.resized(width: s, height: s, filter: config.resample, order: config.passOrder)]
        tiles.reserveCapacity(1 + rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                tiles.append(padded.cropped(PixelRect(x: c * s, y: r * s, width: s, height: s)))
            }
        }
        return PreprocessedImage(tiles: tiles, gridRows: rows, gridCols: cols)
    }
}
