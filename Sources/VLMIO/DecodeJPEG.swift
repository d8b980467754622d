import CTurboJPEG
import Foundation
import VLMCore

/// JPEG decoding through TurboJPEG, matching PIL's `Image.open(f).convert("RGB")`:
/// ISLOW IDCT and fancy upsampling (flags 0), gray replicated to RGB, 4-channel JPEGs (CMYK and YCCK) decoded
/// to CMYK, inverted as PIL's "CMYK;I" rawmode does and converted with PIL's `cmyk2rgb`.
///
/// Truncation follows PIL with `LOAD_TRUNCATED_IMAGES = False`: when the data runs out before the end-of-image
/// marker the decode fails; other libjpeg warnings (which make tjDecompress2 return -1 with complete output) are
/// ignored, as PIL ignores them.
final class JPEGDecoder {
    private let handle: tjhandle

    init() {
        // tjInitDecompress only fails when out of memory.
        handle = tjInitDecompress()!
    }

    deinit { tjDestroy(handle) }

    private var message: String { String(cString: tjGetErrorStr2(handle)) }

    func decode(_ bytes: UnsafeRawBufferPointer, name: String, options: DecodeOptions) throws -> DecodedImage {
        let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var width: Int32 = 0, height: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(handle, base, UInt(bytes.count), &width, &height, &subsamp, &colorspace) == 0 else {
            throw VLMError(.corrupt, file: name, "cannot identify image file: bad JPEG header (\(message))")
        }
        try ImageDecoder.checkPixelLimit(width: Int(width), height: Int(height), name: name, options: options)

        // DCT-domain downscaling for --fast-decode: the smallest TurboJPEG scale (1/8, 1/4 or 1/2) whose
        // output still covers the requested size, plus the fast IDCT and plain upsampling. Not bit-identical to PIL.
        var outW = Int(width), outH = Int(height)
        var reduced = false
        var flags: Int32 = 0
        if let minimum = options.minimumSize {
            flags = Int32(TJFLAG_FASTDCT | TJFLAG_FASTUPSAMPLE)
            reduced = true
            for factor in Self.reducingFactors {
                let w = (Int(width) * factor.num + factor.denom - 1) / factor.denom
                let h = (Int(height) * factor.num + factor.denom - 1) / factor.denom
                if w >= minimum.width, h >= minimum.height {
                    outW = w
                    outH = h
                    break
                }
            }
        }

        let isCMYK = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let orientation = options.readOrientation ? EXIFOrientation.fromJPEG(bytes) : 1
        let rgb: [UInt8]
        if isCMYK {
            let cmyk = try run(bytes, name: name, width: outW, height: outH, channels: 4, format: TJPF_CMYK, flags: flags)
            rgb = Self.invertedCMYKToRGB(cmyk, pixels: outW * outH)
        } else {
            rgb = try run(bytes, name: name, width: outW, height: outH, channels: 3, format: TJPF_RGB, flags: flags)
        }
        return DecodedImage(width: outW, height: outH, rgb: rgb, orientation: orientation, reducedScale: reduced)
    }

    /// The rows and columns of `rect` (and a margin around them), decoded through libjpeg's region API with the
    /// same settings as `decode`, so every pixel given is the full decode's pixel (see `docs/images.md`).
    /// Returns nil whenever that cannot be promised cheaply, and the caller decodes the whole image instead:
    /// the region is the whole image; fast decode or a non-trivial EXIF orientation is asked for; the file does
    /// not end cleanly (`vlm_jpeg_clean_scans`: data that runs out, a marker after a single scan's data — what a
    /// full decode reports as an error is then reported by it); or libjpeg fails (the full decode gives the error).
    func decodeRegion(_ bytes: UnsafeRawBufferPointer, name: String, options: DecodeOptions,
                      rect: (x: Int, y: Int, width: Int, height: Int)) throws -> DecodedRegion? {
        guard options.minimumSize == nil, rect.width > 0, rect.height > 0 else { return nil }
        if options.readOrientation, EXIFOrientation.fromJPEG(bytes) != 1 { return nil }
        let base = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var width: Int32 = 0, height: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        guard tjDecompressHeader3(handle, base, UInt(bytes.count), &width, &height, &subsamp, &colorspace) == 0 else { return nil }
        try ImageDecoder.checkPixelLimit(width: Int(width), height: Int(height), name: name, options: options)
        guard rect.x >= 0, rect.y >= 0, rect.x + rect.width <= Int(width), rect.y + rect.height <= Int(height),
              rect.width < Int(width) || rect.height < Int(height) else { return nil }
        let scans = vlm_jpeg_clean_scans(base, bytes.count)
        guard scans > 0 else { return nil }

        let reader = UnsafeMutablePointer<vlm_jpeg_region>.allocate(capacity: 1)
        defer {
            vlm_jpeg_region_close(reader)
            reader.deallocate()
        }
        var x = UInt32(rect.x), columns = UInt32(rect.width), imageWidth: UInt32 = 0, imageHeight: UInt32 = 0
        var channels: Int32 = 0
        let top = UInt32(rect.y)
        guard vlm_jpeg_region_open(reader, base, bytes.count, scans == 1 ? 1 : 0, &x, &columns, top,
                                   &imageWidth, &imageHeight, &channels) == 0,
              imageWidth == UInt32(width), imageHeight == UInt32(height) else { return nil }
        let first = Int(reader.pointee.first_row)
        let rows = rect.y + rect.height - first
        let rowBytes = Int(columns) * Int(channels)
        var failed = false
        let decoded = [UInt8](unsafeUninitializedCapacity: rowBytes * rows) { out, initialized in
            failed = vlm_jpeg_region_read(reader, out.baseAddress, rowBytes, UInt32(rows)) != 0
            initialized = failed ? 0 : rowBytes * rows
        }
        if failed { return nil }
        let rgb = channels == 4 ? Self.invertedCMYKToRGB(decoded, pixels: Int(columns) * rows) : decoded
        return DecodedRegion(x: Int(x), y: first, width: Int(columns), height: rows, rgb: rgb,
                             imageWidth: Int(width), imageHeight: Int(height))
    }

    /// One tjDecompress2 call into a fresh buffer, with PIL's truncation rule applied to warnings.
    private func run(_ bytes: UnsafeRawBufferPointer, name: String, width: Int, height: Int, channels: Int,
                     format: TJPF, flags: Int32) throws -> [UInt8] {
        let count = width * height * channels
        var warning: String?
        let pixels = try [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
            let status = tjDecompress2(handle, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(bytes.count),
                                       out.baseAddress, Int32(width), 0, Int32(height), format.rawValue, flags)
            if status != 0 {
                if tjGetErrorCode(handle) == Int32(TJERR_WARNING.rawValue) {
                    warning = message
                } else {
                    throw VLMError(.corrupt, file: name, "cannot decode JPEG: \(message)")
                }
            }
            initialized = count
        }
        guard warning != nil, Self.dataRanOut(bytes) else { return pixels }
        // The data ended before an EOI marker: PIL (LOAD_TRUNCATED_IMAGES = False) raises "image file is
        // truncated", even when only the EOI itself is missing (checked against Pillow 13).
        throw VLMError(.corrupt, file: name, "image file is truncated: the JPEG data ends before its end-of-image marker (\(warning!))")
    }

    /// TurboJPEG's 1/8, 1/4 and 1/2 scaling factors, smallest first.
    static let reducingFactors: [(num: Int, denom: Int)] = {
        var count: Int32 = 0
        guard let factors = tjGetScalingFactors(&count) else { return [] }
        return (0..<Int(count)).map { (Int(factors[$0].num), Int(factors[$0].denom)) }
            // Only 1/2, 1/4 and 1/8 have SIMD reduced IDCTs; 3/8, 5/8, 3/4, 7/8 run slower than a full decode.
            .filter { $0.num < $0.denom && [2, 4, 8].contains($0.denom / $0.num) && $0.denom % $0.num == 0 }
            .sorted { $0.num * $1.denom < $1.num * $0.denom }
    }()

    /// True when no EOI marker follows the last start-of-scan: the decoder ran out of data.
    /// (Entropy-coded data never holds `FF D9`: a data byte FF is always followed by 00.)
    static func dataRanOut(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var lastSOS = -1
        var i = 0
        let n = bytes.count
        while i + 1 < n {
            if bytes[i] == 0xFF {
                let marker = bytes[i + 1]
                if marker == 0xDA { lastSOS = i }
                if marker == 0xD9, lastSOS >= 0 { return false }
            }
            i += 1
        }
        return true
    }

    /// PIL: "CMYK;I" inverts the four bytes libjpeg gives, then `cmyk2rgb`:
    /// nk = 255 − K; channel = CLIP8(nk − MULDIV255(C, nk)). With the inversion this is k − MULDIV255(255 − c, k).
    static func invertedCMYKToRGB(_ cmyk: [UInt8], pixels: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: pixels * 3) { out, initialized in
            cmyk.withUnsafeBufferPointer { src in
                for p in 0..<pixels {
                    let k = Int32(src[p * 4 + 3])   // nk = 255 - (255 - k)
                    for c in 0..<3 {
                        let inverted = 255 - Int32(src[p * 4 + c])
                        let t = inverted * k + 128
                        let muldiv = ((t >> 8) + t) >> 8
                        out[p * 3 + c] = UInt8(clamping: k - muldiv)
                    }
                }
            }
            initialized = pixels * 3
        }
    }
}
