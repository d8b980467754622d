import CVLMKernels
import Foundation
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
    /// The Q22 weights as `ResampleKernel` reads them: per output index `ksize + ksize % 2` vectors, for each pair
    /// of taps (zero past `count`) its high then its low part (`ResampleKernel.split`).
    var pairedWeights: [SIMD8<Int16>]
    var ksize: Int

    /// Vectors of `pairedWeights` per output index.
    var vectorsPerOutput: Int { ksize + ksize % 2 }

    init(inSize: Int, in0: Float = 0, in1: Float? = nil, outSize: Int, filter: ResampleFilter) {
        let in1 = in1 ?? Float(inSize)
        let scale = Double(in1 - in0) / Double(outSize)
        let filterscale = max(scale, 1.0)
        let support = filter.support * filterscale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        self.ksize = ksize
        let vectors = ksize + ksize % 2
        var start = [Int](repeating: 0, count: outSize)
        var count = [Int](repeating: 0, count: outSize)
        var paired = [SIMD8<Int16>](repeating: .zero, count: outSize * vectors)
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
            // Round half away from zero, as PIL does.
            let fixed = { (v: Double) -> Int32 in v < 0 ? Int32(-0.5 + v * scaleFactor) : Int32(0.5 + v * scaleFactor) }
            for x in stride(from: 0, to: xmax, by: 2) {
                let pair = ResampleKernel.split(fixed(k[x]), x + 1 < xmax ? fixed(k[x + 1]) : 0)
                paired[xx * vectors + x] = pair.high
                paired[xx * vectors + x + 1] = pair.low
            }
            start[xx] = xmin
            count[xx] = xmax
        }
        self.start = start
        self.count = count
        self.pairedWeights = paired
    }
}

extension ResampleCoefficients {
    /// The table for a whole-axis resize, shared by all threads: a dataset has few distinct sizes, and a table
    /// costs about as much to build as a tenth of the resize itself. Cleared when it holds 256 tables.
    static func cached(inSize: Int, outSize: Int, filter: ResampleFilter) -> ResampleCoefficients {
        let key = Cache.Key(inSize: inSize, outSize: outSize, filter: filter)
        if let hit = Cache.shared.lock.withLock({ Cache.shared.tables[key] }) { return hit }
        let table = ResampleCoefficients(inSize: inSize, outSize: outSize, filter: filter)
        Cache.shared.lock.withLock {
            if Cache.shared.tables.count >= 256 { Cache.shared.tables.removeAll() }
            Cache.shared.tables[key] = table
        }
        return table
    }

    private final class Cache: @unchecked Sendable {
        struct Key: Hashable {
            var inSize: Int
            var outSize: Int
            var filter: ResampleFilter
        }

        static let shared = Cache()
        let lock = NSLock()
        /// Guarded by `lock`.
        var tables: [Key: ResampleCoefficients] = [:]
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
        resized(part: PixelRect(x: 0, y: 0, width: width, height: height), ofImageWidth: width, height: height,
                toWidth: outW, height: outH, filter: filter, window: window, order: order)
    }

    /// The same `window` of the whole image's resize, computed from `self`, which holds only the pixels `part` of
    /// an image `imageWidth` x `imageHeight`. `part` must contain `sourceRect(...)` of the same arguments: the
    /// coefficients are the whole image's, and every tap reads a pixel `self` holds, so the values are the same.
    public func resized(part: PixelRect, ofImageWidth imageWidth: Int, height imageHeight: Int, toWidth outW: Int,
                        height outH: Int, filter: ResampleFilter, window: PixelRect, order: ResizePassOrder = .pillow13) -> PixelBuffer {
        precondition(outW > 0 && outH > 0, "resize to \(outW)x\(outH)")
        precondition(window.x >= 0 && window.y >= 0 && window.x + window.width <= outW && window.y + window.height <= outH)
        precondition(part.width == width && part.height == height)
        if outW == imageWidth && outH == imageHeight {
            return cropped(PixelRect(x: window.x - part.x, y: window.y - part.y, width: window.width, height: window.height))
        }
        if filter == .nearest {
            return nearest(outW: outW, outH: outH, window: window, part: part, imageWidth: imageWidth, imageHeight: imageHeight)
        }
        return resampled(outW: outW, outH: outH, filter: filter, window: window, order: order, part: part,
                         imageWidth: imageWidth, imageHeight: imageHeight)
    }

    /// The source pixels `resized(width: outW, height: outH, filter:, window:)` of a `width` x `height` image
    /// reads: the rectangle spanning every tap of every output pixel in `window` (the same for both pass orders:
    /// the first pass computes exactly the rows or columns the second one reads).
    public static func sourceRect(width: Int, height: Int, outW: Int, outH: Int, filter: ResampleFilter, window: PixelRect) -> PixelRect {
        if outW == width && outH == height { return window }
        if filter == .nearest {
            let x = nearestIndices(inSize: width, outSize: outW)[window.x..<(window.x + window.width)]
            let y = nearestIndices(inSize: height, outSize: outH)[window.y..<(window.y + window.height)]
            let x0 = max(x.min()!, 0), y0 = max(y.min()!, 0)
            return PixelRect(x: x0, y: y0, width: x.max()! + 1 - x0, height: y.max()! + 1 - y0)
        }
        func taps(inSize: Int, outSize: Int, _ range: Range<Int>) -> Range<Int> {
            if inSize == outSize { return range }
            let c = ResampleCoefficients.cached(inSize: inSize, outSize: outSize, filter: filter)
            var first = Int.max, last = 0
            for i in range {
                first = min(first, c.start[i])
                last = max(last, c.start[i] + c.count[i])
            }
            return first..<last
        }
        let columns = taps(inSize: width, outSize: outW, window.x..<(window.x + window.width))
        let rows = taps(inSize: height, outSize: outH, window.y..<(window.y + window.height))
        return PixelRect(x: columns.lowerBound, y: rows.lowerBound, width: columns.count, height: rows.count)
    }

    /// PIL `ImagingResampleInner` restricted to an output window, from the `part` of the image `self` holds.
    func resampled(outW: Int, outH: Int, filter: ResampleFilter, window: PixelRect, order: ResizePassOrder,
                   part: PixelRect, imageWidth: Int, imageHeight: Int) -> PixelBuffer {
        let needH = outW != imageWidth
        let needV = outH != imageHeight
        let windowColumns = window.x..<(window.x + window.width), windowRows = window.y..<(window.y + window.height)
        let vertical = ResampleCoefficients.cached(inSize: imageHeight, outSize: outH, filter: filter)
        if needH && needV && order.verticalFirst(width: imageWidth, height: imageHeight, outW: outW, outH: outH) {
            // Vertical into an 8-bit temporary image over the source columns the horizontal pass reads, then horizontal.
            let horizontal = ResampleCoefficients.cached(inSize: imageWidth, outSize: outW, filter: filter)
            var firstColumn = Int.max, lastColumn = 0
            for xx in windowColumns {
                firstColumn = min(firstColumn, horizontal.start[xx])
                lastColumn = max(lastColumn, horizontal.start[xx] + horizontal.count[xx])
            }
            let temp = verticalPass(rowOffset: part.y, columns: (firstColumn - part.x)..<(lastColumn - part.x), rows: windowRows,
                                    coefficients: vertical)
            return temp.horizontalPass(rows: 0..<temp.height, columns: windowColumns, coefficients: horizontal, columnOffset: firstColumn)
        }
        if needH {
            let horizontal = ResampleCoefficients.cached(inSize: imageWidth, outSize: outW, filter: filter)
            // Source rows the vertical pass reads for the window's rows (all of them when there is no vertical pass).
            var firstRow = window.y, lastRow = window.y + window.height
            if needV {
                firstRow = Int.max
                lastRow = 0
                for yy in windowRows {
                    firstRow = min(firstRow, vertical.start[yy])
                    lastRow = max(lastRow, vertical.start[yy] + vertical.count[yy])
                }
            }
            let temp = horizontalPass(rows: (firstRow - part.y)..<(lastRow - part.y), columns: windowColumns, coefficients: horizontal,
                                      columnOffset: part.x)
            if !needV { return temp }
            return temp.verticalPass(rowOffset: firstRow, columns: 0..<temp.width, rows: windowRows, coefficients: vertical)
        }
        return verticalPass(rowOffset: part.y, columns: (window.x - part.x)..<(window.x + window.width - part.x), rows: windowRows,
                            coefficients: vertical)
    }

    /// Horizontal pass over source `rows`, producing output `columns` (their source pixels shifted by
    /// `columnOffset`, the first column `self` holds); result rounded and clipped to 8 bits.
    ///
    /// Bands of 16 rows are transposed so that a source column becomes three 16-byte vectors (R, G and B of the
    /// 16 rows); the taps of an output column are then whole vectors, as in the vertical pass, and the same
    /// kernel computes them. The output columns are transposed back into rows.
    func horizontalPass(rows: Range<Int>, columns: Range<Int>, coefficients c: ResampleCoefficients, columnOffset: Int = 0) -> PixelBuffer {
        if width < 6 {
            // A transposed block reads 16 bytes of each row; columns past the taps do not change the result.
            return widened(to: 6).horizontalPass(rows: rows, columns: columns, coefficients: c, columnOffset: columnOffset)
        }
        // The source pixels the output columns read, at least 6 (16 bytes), inside the image.
        var first = Int.max, last = 0
        for xx in columns {
            first = min(first, c.start[xx] - columnOffset)
            last = max(last, c.start[xx] + c.count[xx] - columnOffset)
        }
        let span = max(last - first, 6)
        first = min(first, width - span)
        let band = 16
        let outRowBytes = columns.count * 3
        // Transposed layout: byte b of a row span becomes vector b, holding that byte of the band's 16 rows.
        let source = UnsafeMutableRawPointer.allocate(byteCount: span * 3 * band, alignment: 16)
        let results = UnsafeMutableRawPointer.allocate(byteCount: max(outRowBytes, band) * band, alignment: 16)
        defer {
            source.deallocate()
            results.deallocate()
        }
        let count = outRowBytes * rows.count
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            pixels.withUnsafeBytes { src in
                c.pairedWeights.withUnsafeBufferPointer { weights in
                    withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: 2 * band) { lines in
                        let dst = UnsafeMutableRawPointer(out.baseAddress!)
                        let srcRows = lines.baseAddress!, dstRows = srcRows + band
                        var top = rows.lowerBound
                        while top < rows.upperBound {
                            // The last band overlaps the one before (its rows are computed twice, identically); with
                            // fewer than 16 rows in all, the last row repeats and only the real ones are stored.
                            top = max(min(top, rows.upperBound - band), rows.lowerBound)
                            for r in 0..<band {
                                let y = min(top + r, rows.upperBound - 1)
                                srcRows[r] = UnsafeMutableRawPointer(mutating: src.baseAddress! + (y * width + first) * 3)
                                dstRows[r] = dst + (y - rows.lowerBound) * outRowBytes
                            }
                            ResampleKernel.transpose(lines: span * 3, from: srcRows, to: source)
                            for (i, xx) in columns.enumerated() {
                                ResampleKernel.line(source + (c.start[xx] - columnOffset - first) * 3 * band, stride: 3 * band,
                                                    taps: c.count[xx], weights: weights.baseAddress! + xx * c.vectorsPerOutput,
                                                    byteCount: 3 * band, into: results + i * 3 * band)
                            }
                            ResampleKernel.transpose(lines: max(outRowBytes, band), from: results, to: dstRows,
                                                     rows: min(band, rows.count), count: outRowBytes)
                            top += band
                        }
                    }
                }
            }
            initialized = count
        }
        return PixelBuffer(width: columns.count, height: rows.count, pixels: bytes)
    }

    /// Vertical pass: output `rows` (indices into the coefficient table, whose source rows are shifted by
    /// `rowOffset`, the first row `self` holds), over source `columns`.
    func verticalPass(rowOffset: Int, columns: Range<Int>, rows: Range<Int>, coefficients c: ResampleCoefficients) -> PixelBuffer {
        if columns.count < 6 {
            // The kernel works on 16-byte lines: compute 6 columns (padding a narrower image) and keep the asked ones.
            let wide = width < 6 ? widened(to: 6) : self
            let left = min(columns.lowerBound, wide.width - 6)
            let result = wide.verticalPass(rowOffset: rowOffset, columns: left..<(left + 6), rows: rows, coefficients: c)
            return result.cropped(PixelRect(x: columns.lowerBound - left, y: 0, width: columns.count, height: rows.count))
        }
        let rowBytes = columns.count * 3
        let count = rowBytes * rows.count
        let srcStride = width * 3
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            pixels.withUnsafeBytes { src in
                c.pairedWeights.withUnsafeBufferPointer { weights in
                    let base = src.baseAddress! + columns.lowerBound * 3
                    var dst = UnsafeMutableRawPointer(out.baseAddress!)
                    for yy in rows {
                        ResampleKernel.line(base + (c.start[yy] - rowOffset) * srcStride, stride: srcStride, taps: c.count[yy],
                                            weights: weights.baseAddress! + yy * c.vectorsPerOutput, byteCount: rowBytes, into: dst)
                        dst += rowBytes
                    }
                }
            }
            initialized = count
        }
        return PixelBuffer(width: columns.count, height: rows.count, pixels: bytes)
    }

    /// This image on the left of a zero-filled one `width` pixels wide.
    func widened(to width: Int) -> PixelBuffer {
        var wide = PixelBuffer(width: width, height: height)
        wide.paste(self, x: 0, y: 0)
        return wide
    }

    /// PIL's NEAREST resize: `ImagingScaleAffine` with xo = scale/2 accumulated by repeated addition; `self` holds
    /// the `part` of an image `imageWidth` x `imageHeight`.
    func nearest(outW: Int, outH: Int, window: PixelRect, part: PixelRect, imageWidth: Int, imageHeight: Int) -> PixelBuffer {
        let xin = Self.nearestIndices(inSize: imageWidth, outSize: outW)
        let yin = Self.nearestIndices(inSize: imageHeight, outSize: outH)
        var out = PixelBuffer(width: window.width, height: window.height)
        out.pixels.withUnsafeMutableBufferPointer { dst in
            pixels.withUnsafeBufferPointer { src in
                var d = 0
                for y in window.y..<(window.y + window.height) {
                    let row = (yin[y] - part.y) * width * 3
                    for x in window.x..<(window.x + window.width) {
                        let s = row + (xin[x] - part.x) * 3
                        dst[d] = src[s]; dst[d + 1] = src[s + 1]; dst[d + 2] = src[s + 2]
                        d += 3
                    }
                }
            }
        }
        return out
    }

    /// The source index of each output index along one axis of a NEAREST resize (PIL's accumulated `xo`).
    static func nearestIndices(inSize: Int, outSize: Int) -> [Int] {
        let scale = Double(Float(inSize)) / Double(outSize)
        var indices = [Int](repeating: 0, count: outSize)
        var xo = scale * 0.5
        for x in 0..<outSize {
            indices[x] = xo < 0 ? -1 : min(Int(xo), inSize - 1)
            xo += scale
        }
        return indices
    }
}

/// The integer SIMD core of both passes. Pixels are 0...255 and a Q22 weight w is split as w = h·2¹⁵ + l with
/// 0 ≤ l < 2¹⁵, so both parts fit Int16 and Σ p·w = 2¹⁵·Σ p·h + Σ p·l exactly: SSE2's `pmaddwd` multiplies two taps'
/// pixels by two weights and adds them in each Int32 lane. The sums are PIL's Int32 accumulator, value for value.
enum ResampleKernel {
    /// Whether lines of 32 bytes or more go to the AVX2 copy of this kernel (CVLMKernels), checked once per
    /// process. `VLMDATA_NO_AVX2=1` keeps the baseline path, to test it on a machine that has AVX2.
    static let hasAVX2 = vlm_has_avx2() != 0 && ProcessInfo.processInfo.environment["VLMDATA_NO_AVX2"] == nil

    /// Two taps' weights as the kernel reads them: (w₀, w₁) repeated, high parts, then low parts.
    static func split(_ w0: Int32, _ w1: Int32) -> (high: SIMD8<Int16>, low: SIMD8<Int16>) {
        let high = SIMD2<Int16>(Int16(w0 >> 15), Int16(w1 >> 15))
        let low = SIMD2<Int16>(Int16(w0 & 0x7fff), Int16(w1 & 0x7fff))
        return (SIMD8(lowHalf: SIMD4(lowHalf: high, highHalf: high), highHalf: SIMD4(lowHalf: high, highHalf: high)),
                SIMD8(lowHalf: SIMD4(lowHalf: low, highHalf: low), highHalf: SIMD4(lowHalf: low, highHalf: low)))
    }

    /// One output line of `byteCount` (≥ 16) bytes: Σₖ wₖ·lineₖ over `taps` lines `stride` bytes apart, rounded and
    /// clipped as PIL's `clip8`. The last chunk may overlap the one before (the same values are written twice).
    @inline(__always)
    static func line(_ first: UnsafeRawPointer, stride: Int, taps: Int, weights: UnsafePointer<SIMD8<Int16>>,
                     byteCount: Int, into out: UnsafeMutableRawPointer) {
        if byteCount >= 32, hasAVX2 {
            let w = UnsafeRawPointer(weights).assumingMemoryBound(to: Int16.self)
            vlm_resample_line_avx2(first.assumingMemoryBound(to: UInt8.self), stride, taps, w, byteCount,
                                   out.assumingMemoryBound(to: UInt8.self))
        } else {
            baselineLine(first, stride: stride, taps: taps, weights: weights, byteCount: byteCount, into: out)
        }
    }

    /// `line` in SSE2 (x86-64 baseline) through Swift SIMD, 16 bytes at a time.
    @inline(__always)
    static func baselineLine(_ first: UnsafeRawPointer, stride: Int, taps: Int, weights: UnsafePointer<SIMD8<Int16>>,
                             byteCount: Int, into out: UnsafeMutableRawPointer) {
        var i = 0
        while i < byteCount {
            let at = min(i, byteCount - 16)
            (out + at).storeBytes(of: chunk(first + at, stride: stride, taps: taps, weights: weights), as: SIMD16<UInt8>.self)
            i += 16
        }
    }

    /// 16 bytes of an output line. All sums wrap in Int32: 2¹⁵·Σ p·h + Σ p·l ≡ Σ p·w (mod 2³²), and the true sum
    /// fits Int32 (it is PIL's accumulator), so no partial sum needs a bound.
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, stride: Int, taps: Int, weights: UnsafePointer<SIMD8<Int16>>) -> SIMD16<UInt8> {
        var high = SIMD16<Int32>()
        var low = SIMD16<Int32>(repeating: 1 << (ResampleCoefficients.precisionBits - 1))
        var k = 0
        while k < taps {
            let a = (p + k &* stride).loadUnaligned(as: SIMD16<UInt8>.self)
            // An odd last tap pairs with itself under weight 0, so no line past the taps is read.
            let b = (p + min(k &+ 1, taps &- 1) &* stride).loadUnaligned(as: SIMD16<UInt8>.self)
            let lo = interleaveLow(a, b), hi = interleaveHigh(a, b)
            let wh = weights[k], wl = weights[k &+ 1]
            high &+= SIMD16(lowHalf: multiplyAdd(lo, wh), highHalf: multiplyAdd(hi, wh))
            low &+= SIMD16(lowHalf: multiplyAdd(lo, wl), highHalf: multiplyAdd(hi, wl))
            k &+= 2
        }
        let sum = high &<< 15 &+ low
        return SIMD16<UInt8>(truncatingIfNeeded: SIMD16(lowHalf: clip8(sum.lowHalf), highHalf: clip8(sum.highHalf)))
    }

    /// Eight (pixel, pixel) byte pairs times a weight pair, summed per pair: two `pmaddwd`.
    @inline(__always)
    static func multiplyAdd(_ pairs: SIMD16<UInt8>, _ w: SIMD8<Int16>) -> SIMD8<Int32> {
        SIMD8(lowHalf: multiplyAdd(SIMD8<Int16>(truncatingIfNeeded: pairs.lowHalf), w),
              highHalf: multiplyAdd(SIMD8<Int16>(truncatingIfNeeded: pairs.highHalf), w))
    }

    /// The `pmaddwd` pattern: even lanes times even lanes plus odd times odd, in Int32.
    @inline(__always)
    static func multiplyAdd(_ p: SIMD8<Int16>, _ w: SIMD8<Int16>) -> SIMD4<Int32> {
        SIMD4<Int32>(truncatingIfNeeded: p.evenHalf) &* SIMD4<Int32>(truncatingIfNeeded: w.evenHalf)
            &+ SIMD4<Int32>(truncatingIfNeeded: p.oddHalf) &* SIMD4<Int32>(truncatingIfNeeded: w.oddHalf)
    }

    /// PIL's `clip8`: the Q22 sums shifted down and clamped to 0...255 (in Int16, which the shifted sums fit).
    @inline(__always)
    static func clip8(_ acc: SIMD8<Int32>) -> SIMD8<Int16> {
        var v = SIMD8<Int16>(truncatingIfNeeded: acc &>> ResampleCoefficients.precisionBits)
        v &= ~(v &>> 15)                        // max(v, 0)
        v ^= (v ^ 255) & ((255 &- v) &>> 15)    // min(v, 255); the two become pmaxsw and pminsw
        return v
    }

    @inline(__always)
    static func interleaveLow(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        SIMD16(a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3], a[4], b[4], a[5], b[5], a[6], b[6], a[7], b[7])
    }

    @inline(__always)
    static func interleaveHigh(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        SIMD16(a[8], b[8], a[9], b[9], a[10], b[10], a[11], b[11], a[12], b[12], a[13], b[13], a[14], b[14], a[15], b[15])
    }

    /// Transposes 16 rows of `lines` (≥ 16) bytes into `lines` vectors of 16 bytes at `out`: vector b holds byte b
    /// of each row. Blocks of 16 bytes, the last one overlapping the previous.
    static func transpose(lines: Int, from rows: UnsafePointer<UnsafeMutableRawPointer>, to out: UnsafeMutableRawPointer) {
        var b = 0
        while b < lines {
            let at = min(b, lines - 16)
            transpose16 { (rows[$0] + at).loadUnaligned(as: SIMD16<UInt8>.self) } store: { i, v in
                (out + (at + i) * 16).storeBytes(of: v, as: SIMD16<UInt8>.self)
            }
            b += 16
        }
    }

    /// The inverse: `lines` (≥ 16) vectors at `vectors` back into the first `count` bytes of the first `rows` of
    /// 16 rows (fewer than 16 bytes only when `count` is).
    static func transpose(lines: Int, from vectors: UnsafeRawPointer, to rowStarts: UnsafePointer<UnsafeMutableRawPointer>,
                          rows: Int, count: Int) {
        var b = 0
        while b < count {
            let at = min(b, lines - 16)
            transpose16 { (vectors + (at + $0) * 16).load(as: SIMD16<UInt8>.self) } store: { r, v in
                if r >= rows { return }
                if count >= 16 {
                    (rowStarts[r] + at).storeBytes(of: v, as: SIMD16<UInt8>.self)
                } else {
                    withUnsafeBytes(of: v) { rowStarts[r].copyMemory(from: $0.baseAddress!, byteCount: count) }
                }
            }
            b += 16
        }
    }

    /// A 16x16 byte block transposed: rows interleaved by bytes, then words, then 32-bit lanes within each half of
    /// 8 rows (in registers), and the halves joined by 64-bit lanes. One half waits on the stack, which also keeps
    /// the compiler from fusing the stages into byte-by-byte inserts.
    @inline(__always)
    static func transpose16(load: (Int) -> SIMD16<UInt8>, store: (Int, SIMD16<UInt8>) -> Void) {
        withUnsafeTemporaryAllocation(of: SIMD16<UInt8>.self, capacity: 16) { scratch in
            let top = scratch.baseAddress!, bottom = top + 8
            transposeHalf(load, into: top)
            transposeHalf({ load($0 + 8) }, into: bottom)
            for j in 0..<8 {
                store(2 * j, interleave64Low(top[j], bottom[j]))
                store(2 * j + 1, interleave64High(top[j], bottom[j]))
            }
        }
    }

    /// Rows 0..<8 of a block: vector j gets bytes 2j and 2j + 1 of the 8 rows, as two 8-byte columns.
    @inline(__always)
    static func transposeHalf(_ row: (Int) -> SIMD16<UInt8>, into out: UnsafeMutablePointer<SIMD16<UInt8>>) {
        let r = (row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7))
        let a = (interleaveLow(r.0, r.1), interleaveHigh(r.0, r.1), interleaveLow(r.2, r.3), interleaveHigh(r.2, r.3),
                 interleaveLow(r.4, r.5), interleaveHigh(r.4, r.5), interleaveLow(r.6, r.7), interleaveHigh(r.6, r.7))
        let b = (interleave16Low(a.0, a.2), interleave16High(a.0, a.2), interleave16Low(a.1, a.3), interleave16High(a.1, a.3),
                 interleave16Low(a.4, a.6), interleave16High(a.4, a.6), interleave16Low(a.5, a.7), interleave16High(a.5, a.7))
        out[0] = interleave32Low(b.0, b.4)
        out[1] = interleave32High(b.0, b.4)
        out[2] = interleave32Low(b.1, b.5)
        out[3] = interleave32High(b.1, b.5)
        out[4] = interleave32Low(b.2, b.6)
        out[5] = interleave32High(b.2, b.6)
        out[6] = interleave32Low(b.3, b.7)
        out[7] = interleave32High(b.3, b.7)
    }

    // Interleaving by 16-, 32- and 64-bit lanes (punpck{l,h}{wd,dq,qdq}).

    @inline(__always)
    static func interleave16Low(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        let x = unsafeBitCast(a, to: SIMD8<UInt16>.self), y = unsafeBitCast(b, to: SIMD8<UInt16>.self)
        return unsafeBitCast(SIMD8(x[0], y[0], x[1], y[1], x[2], y[2], x[3], y[3]), to: SIMD16<UInt8>.self)
    }

    @inline(__always)
    static func interleave16High(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        let x = unsafeBitCast(a, to: SIMD8<UInt16>.self), y = unsafeBitCast(b, to: SIMD8<UInt16>.self)
        return unsafeBitCast(SIMD8(x[4], y[4], x[5], y[5], x[6], y[6], x[7], y[7]), to: SIMD16<UInt8>.self)
    }

    @inline(__always)
    static func interleave32Low(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        let x = unsafeBitCast(a, to: SIMD4<UInt32>.self), y = unsafeBitCast(b, to: SIMD4<UInt32>.self)
        return unsafeBitCast(SIMD4(x[0], y[0], x[1], y[1]), to: SIMD16<UInt8>.self)
    }

    @inline(__always)
    static func interleave32High(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        let x = unsafeBitCast(a, to: SIMD4<UInt32>.self), y = unsafeBitCast(b, to: SIMD4<UInt32>.self)
        return unsafeBitCast(SIMD4(x[2], y[2], x[3], y[3]), to: SIMD16<UInt8>.self)
    }

    @inline(__always)
    static func interleave64Low(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        SIMD16(lowHalf: a.lowHalf, highHalf: b.lowHalf)
    }

    @inline(__always)
    static func interleave64High(_ a: SIMD16<UInt8>, _ b: SIMD16<UInt8>) -> SIMD16<UInt8> {
        SIMD16(lowHalf: a.highHalf, highHalf: b.highHalf)
    }
}
