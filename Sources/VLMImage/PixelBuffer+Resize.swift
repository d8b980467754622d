import VLMCore

/// PIL's resampling filters for 8-bit images.
public enum ResampleFilter: String, Sendable, Codable, CaseIterable {
    case nearest
    case bilinear
    case bicubic

    /// PIL's filter support (half-width of the kernel at scale 1).
    var support: Double {
        switch self {
        case .nearest: return 0
        case .bilinear: return 1
        case .bicubic: return 2
        }
    }

    /// The kernel, evaluated in double with PIL's operation order (Resample.c `bicubic_filter`, `bilinear_filter`).
    @inline(__always)
    func weight(_ value: Double) -> Double {
        var x = value
        if x < 0 { x = -x }
        switch self {
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .nearest:
            return 0
        }
    }
}

/// Fixed-point coefficients for one axis, as PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` make them.
struct ResampleCoefficients {
    static let precisionBits: Int32 = 22

    /// Per output index: the first input index and the number of taps.
    var start: [Int]
    var count: [Int]
    /// `outSize * ksize` Q22 weights, row-major by output index.
    var weights: [Int32]
    var ksize: Int

    init(inSize: Int, in0: Float = 0, in1: Float? = nil, outSize: Int, filter: ResampleFilter) {
        let in1 = in1 ?? Float(inSize)
        let scale = Double(in1 - in0) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        self.ksize = ksize
        var start = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var weights = [Int32](repeating: 0, count: outSize * ksize)
        var k = [Double](repeating: 0, count: ksize)
        let ss = 1.0 / filterscale
        let scaleFactor = Double(1 << ResampleCoefficients.precisionBits)
        for xx in 0..<outSize {
            let center = Double(in0) + (Double(xx) + 0.5) * scale
            var ww = 0.0
            var xmin = Int(center - support + 0.5)   // truncating, as C's (int)
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            for x in 0..<xmax {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<xmax where ww != 0 { k[x] /= ww }
            for x in 0..<xmax {
                let v = k[x]
                weights[xx * ksize + x] = v < 0 ? Int32(-0.5 + v * scaleFactor) : Int32(0.5 + v * scaleFactor)
            }
            start[xx] = xmin
            count[xx] = xmax
        }
        self.start = start
        self.count = count
        self.weights = weights
    }
}

/// Which pass runs first when both axes change. Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass
/// first when the height shrinks by more than twice the width's shrink, `h − H > 2·(w − W)` with H < h (measured
/// against Pillow 13.0 on 300 size combinations); Pillow up to 12.1 always runs the horizontal pass first. The order
/// changes the 8-bit rounding between passes, so it is part of the preprocessing config.
public enum ResizePassOrder: String, Sendable, Codable, CaseIterable {
    case pillow13 = "pillow13"
    case horizontalFirst = "horizontal-first"

    func verticalFirst(width: Int, height: Int, outW: Int, outH: Int) -> Bool {
        switch self {
        case .pillow13: return outH < height && (height - outH) > 2 * (width - outW)
        case .horizontalFirst: return false
        }
    }
}

/// A rectangle of an image: origin and size in pixels.
public struct PixelRect: Sendable, Hashable, Codable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

extension PixelBuffer {
    /// PIL `Image.resize((width, height), filter)` on an RGB image: same size → copy; bicubic/bilinear through
    /// the separable two-pass Q22 fixed-point resampler (horizontal first into an 8-bit temporary image, an
    /// unchanged axis skipped); nearest through PIL's affine scale.
    public func resized(width: Int, height: Int, filter: ResampleFilter = .bicubic, order: ResizePassOrder = .pillow13) -> PixelBuffer {
        resized(width: width, height: height, filter: filter, window: PixelRect(x: 0, y: 0, width: width, height: height), order: order)
    }

    /// The `window` of `resized(width:height:filter:)`, value for value, computing only the pixels inside it
    /// (a center crop after a resize need not compute the columns it drops).
    public func resized(width outW: Int, height outH: Int, filter: ResampleFilter, window: PixelRect,
                        order: ResizePassOrder = .pillow13) -> PixelBuffer {
        precondition(outW > 0 && outH > 0, "resize to \(outW)x\(outH)")
        precondition(window.x >= 0 && window.y >= 0 && window.x + window.width <= outW && window.y + window.height <= outH)
        if outW == width && outH == height {
            return cropped(window)
        }
        if filter == .nearest {
            return nearest(outW: outW, outH: outH, window: window)
        }
        return resampled(outW: outW, outH: outH, filter: filter, window: window, order: order)
    }

    /// PIL `ImagingResampleInner` restricted to an output window.
    func resampled(outW: Int, outH: Int, filter: ResampleFilter, window: PixelRect, order: ResizePassOrder) -> PixelBuffer {
        let needH = outW != width
        let needV = outH != height
        if !needH && !needV { return cropped(window) }
        let vertical = ResampleCoefficients(inSize: height, outSize: outH, filter: filter)
        if needH && needV && order.verticalFirst(width: width, height: height, outW: outW, outH: outH) {
            // Vertical into an 8-bit temporary image over the source columns the horizontal pass reads, then horizontal.
            let horizontal = ResampleCoefficients(inSize: width, outSize: outW, filter: filter)
            var firstColumn = Int.max, lastColumn = 0
            for xx in window.x..<(window.x + window.width) {
                firstColumn = min(firstColumn, horizontal.start[xx])
                lastColumn = max(lastColumn, horizontal.start[xx] + horizontal.count[xx])
            }
            let temp = verticalPass(rowOffset: 0, columns: firstColumn..<lastColumn, rows: window.y..<(window.y + window.height),
                                    coefficients: vertical)
            return temp.horizontalPass(rows: 0..<temp.height, columns: window.x..<(window.x + window.width),
                                       coefficients: horizontal, columnOffset: firstColumn)
        }
        if needH {
            let horizontal = ResampleCoefficients(inSize: width, outSize: outW, filter: filter)
            // Source rows the vertical pass reads for the window's rows (all of them when there is no vertical pass).
            var firstRow = window.y, lastRow = window.y + window.height
            if needV {
                firstRow = Int.max
                lastRow = 0
                for yy in window.y..<(window.y + window.height) {
                    firstRow = min(firstRow, vertical.start[yy])
                    lastRow = max(lastRow, vertical.start[yy] + vertical.count[yy])
                }
            }
            let temp = horizontalPass(rows: firstRow..<lastRow, columns: window.x..<(window.x + window.width), coefficients: horizontal)
            if !needV { return temp }
            return temp.verticalPass(rowOffset: firstRow, columns: 0..<temp.width, rows: window.y..<(window.y + window.height),
                                     coefficients: vertical)
        }
        return verticalPass(rowOffset: 0, columns: window.x..<(window.x + window.width), rows: window.y..<(window.y + window.height),
                            coefficients: vertical)
    }

    /// Horizontal pass over source `rows`, producing output `columns`; result rounded and clipped to 8 bits.
    func horizontalPass(rows: Range<Int>, columns: Range<Int>, coefficients c: ResampleCoefficients, columnOffset: Int = 0) -> PixelBuffer {
        let outWidth = columns.count
        let outHeight = rows.count
        let count = outWidth * outHeight * 3
        let ksize = c.ksize
        let srcWidth = width
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            pixels.withUnsafeBufferPointer { srcBuffer in
                c.weights.withUnsafeBufferPointer { weightBuffer in
                    c.start.withUnsafeBufferPointer { starts in
                        c.count.withUnsafeBufferPointer { counts in
                            let src = srcBuffer.baseAddress!
                            let weights = weightBuffer.baseAddress!
                            var dst = out.baseAddress!
                            let half: Int32 = 1 << (ResampleCoefficients.precisionBits - 1)
                            for y in rows {
                                let line = src + y * srcWidth * 3
                                for xx in columns {
                                    let n = counts[xx]
                                    var p = line + (starts[xx] - columnOffset) * 3
                                    let k = weights + xx * ksize
                                    // R and B share one 64-bit multiply: (R + B·2³²)·w sums to S_R + S_B·2³²
                                    // exactly, and |S_R| < 2³¹, so S_R is the low word (signed) and S_B the rest.
                                    // Two multiplies per tap instead of three; same integers as PIL's.
                                    var rb = Int64(half) | Int64(half) << 32
                                    var g = half
                                    for x in 0..<n {
                                        let w = k[x]
                                        rb &+= (Int64(p[0]) | Int64(p[2]) << 32) &* Int64(w)
                                        g &+= Int32(p[1]) &* w
                                        p += 3
                                    }
                                    let r = Int32(truncatingIfNeeded: rb)
                                    let b = Int32(truncatingIfNeeded: (rb &- Int64(r)) >> 32)
                                    dst[0] = clip8(r)
                                    dst[1] = clip8(g)
                                    dst[2] = clip8(b)
                                    dst += 3
                                }
                            }
                        }
                    }
                }
            }
            initialized = count
        }
        return PixelBuffer(width: outWidth, height: outHeight, pixels: bytes)
    }

    /// Vertical pass: output `rows` (indices into the coefficient table, whose source rows are shifted by
    /// `rowOffset`, the first row `self` holds), over source `columns`.
    func verticalPass(rowOffset: Int, columns: Range<Int>, rows: Range<Int>, coefficients c: ResampleCoefficients) -> PixelBuffer {
        let outWidth = columns.count
        let rowBytes = outWidth * 3
        let count = rowBytes * rows.count
        let ksize = c.ksize
        let srcStride = width * 3
        let columnOffset = columns.lowerBound * 3
        var accumulator = [Int32](repeating: 0, count: rowBytes)
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            pixels.withUnsafeBufferPointer { srcBuffer in
                c.weights.withUnsafeBufferPointer { weightBuffer in
                    accumulator.withUnsafeMutableBufferPointer { accBuffer in
                        let src = srcBuffer.baseAddress! + columnOffset
                        let acc = accBuffer.baseAddress!
                        let half: Int32 = 1 << (ResampleCoefficients.precisionBits - 1)
                        var dst = out.baseAddress!
                        for yy in rows {
                            let n = c.count[yy]
                            let first = c.start[yy] - rowOffset
                            let k = weightBuffer.baseAddress! + yy * ksize
                            for i in 0..<rowBytes { acc[i] = half }
                            // Taps in pairs: half the accumulator traffic; integer sums, so the grouping is exact.
                            var y = 0
                            while y + 1 < n {
                                let w0 = k[y], w1 = k[y + 1]
                                let l0 = src + (first + y) * srcStride
                                let l1 = l0 + srcStride
                                for i in 0..<rowBytes { acc[i] &+= Int32(l0[i]) &* w0 &+ Int32(l1[i]) &* w1 }
                                y += 2
                            }
                            if y < n {
                                let w = k[y]
                                let line = src + (first + y) * srcStride
                                for i in 0..<rowBytes { acc[i] &+= Int32(line[i]) &* w }
                            }
                            for i in 0..<rowBytes { dst[i] = clip8(acc[i]) }
                            dst += rowBytes
                        }
                    }
                }
            }
            initialized = count
        }
        return PixelBuffer(width: outWidth, height: rows.count, pixels: bytes)
    }

    /// PIL's NEAREST resize: `ImagingScaleAffine` with xo = scale/2 accumulated by repeated addition.
    func nearest(outW: Int, outH: Int, window: PixelRect) -> PixelBuffer {
        let xscale = Double(Float(width)) / Double(outW)
        let yscale = Double(Float(height)) / Double(outH)
        var xin = [Int](repeating: 0, count: outW)
        var xo = xscale * 0.5
        for x in 0..<outW {
            xin[x] = xo < 0 ? -1 : min(Int(xo), width - 1)
            xo += xscale
        }
        var yin = [Int](repeating: 0, count: outH)
        var yo = yscale * 0.5
        for y in 0..<outH {
            yin[y] = yo < 0 ? -1 : min(Int(yo), height - 1)
            yo += yscale
        }
        var out = PixelBuffer(width: window.width, height: window.height)
        out.pixels.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                var d = 0
                for y in window.y..<(window.y + window.height) {
                    let row = yin[y] * width * 3
                    for x in window.x..<(window.x + window.width) {
                        let s = row + xin[x] * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                        d += 3
                    }
                }
            }
        }
        return out
    }
}

/// PIL's `clip8`: the Q22 accumulator shifted down and clamped to 0...255.
@inline(__always)
func clip8(_ value: Int32) -> UInt8 {
    let v = value >> ResampleCoefficients.precisionBits
    return v < 0 ? 0 : (v > 255 ? 255 : UInt8(truncatingIfNeeded: v))
}
