import Foundation
import VLMCore

/// PNG decoding to RGB with PIL's rules (PngImagePlugin `_MODES` + `convert("RGB")`):
/// - gray 1/2/4/8-bit: bits replicated to 8 (0/255, ×85, ×17), copied to R, G, B; gray 16-bit is PIL's "I;16":
///   values above 255 become 255, the rest are kept (no scaling);
/// - RGB, RGBA, gray+alpha 16-bit: the high byte of each sample ("RGB;16B", "RGBA;16B", "LA;16B");
/// - alpha dropped, never composited; tRNS ignored (no blending);
/// - palette (1/2/4/8-bit): looked up, indices past the PLTE entries are black;
/// - Adam7 interlacing supported; header chunks are CRC-checked as PIL does when opening.
///
/// Why not libpng's reader: libpng reports every error by `longjmp` to a `setjmp` the caller made, and
/// Swift cannot call `setjmp`; without it a corrupt file aborts the process. Its simplified API (which does its
/// own setjmp) gamma-converts 16-bit samples, premultiplies 16-bit alpha and honours gAMA, none of which PIL does.
/// So the chunk layer, filters and conversions are here and the inflate is zlib's `uncompress` (the zlib libpng
/// itself links), looked up at run time.
package enum PNGDecoder {
    struct Header {
        var width: Int
        var height: Int
        var bitDepth: Int
        var colorType: Int
        var interlaced: Bool

        var channels: Int {
            switch colorType {
            case 0, 3: return 1
            case 2: return 3
            case 4: return 2
            default: return 4
            }
        }

        var bitsPerPixel: Int { channels * bitDepth }
        func rowBytes(_ w: Int) -> Int { (w * bitsPerPixel + 7) / 8 }
    }

    static let validDepths: [Int: Set<Int>] = [0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]]

    package static func decode(_ bytes: UnsafeRawBufferPointer, name: String, options: DecodeOptions) throws -> DecodedImage {
        func fail(_ message: String) -> VLMError { VLMError(.corrupt, file: name, message) }
        func be32(_ at: Int) -> Int { Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]) }

        var header: Header?
        var palette = [UInt8](repeating: 0, count: 256 * 3)
        var idat: [UInt8] = []
        var seenIDAT = false
        var orientation = 1
        var pos = 8
        chunks: while pos + 8 <= bytes.count {
            let length = be32(pos)
            let type = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(pos + 4)..<(pos + 8)]), as: UTF8.self)
            let dataStart = pos + 8
            let available = min(length, bytes.count - dataStart)
            let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart..<(dataStart + available)])
            if header == nil, type != "IHDR" {
                throw fail("cannot identify image file: PNG does not start with an IHDR chunk")
            }
            if type == "IDAT" {
                seenIDAT = true
                idat.append(contentsOf: data)
            } else if available < length || dataStart + length + 4 > bytes.count {
                if seenIDAT { break chunks }
                throw fail("cannot identify image file: PNG truncated inside the '\(type)' chunk")
            } else if !seenIDAT {
                // PIL checks the CRC of every chunk it reads while opening (those before the image data).
                let stored = UInt32(be32(dataStart + length))
                let computed = CRC32.checksum(UnsafeRawBufferPointer(rebasing: bytes[(pos + 4)..<(dataStart + length)]))
                if stored != computed {
                    throw fail("cannot identify image file: broken PNG file (bad header checksum in '\(type)')")
                }
            }
            switch type {
            case "IHDR":
                guard length == 13, available == 13 else { throw fail("cannot identify image file: IHDR has \(length) bytes, expected 13") }
                let h = Header(width: be32(dataStart), height: be32(dataStart + 4), bitDepth: Int(data[8]),
                               colorType: Int(data[9]), interlaced: data[12] == 1)
                guard let depths = validDepths[h.colorType], depths.contains(h.bitDepth) else {
                    throw fail("cannot identify image file: unsupported PNG bit depth \(h.bitDepth) with colour type \(h.colorType)")
                }
                guard data[10] == 0, data[11] == 0, data[12] <= 1 else {
                    throw fail("cannot identify image file: unknown PNG compression, filter or interlace method")
                }
                guard h.width > 0, h.height > 0, h.width <= Int(Int32.max), h.height <= Int(Int32.max) else {
                    throw fail("cannot identify image file: PNG size \(h.width)x\(h.height) is invalid")
                }
                try ImageDecoder.checkPixelLimit(width: h.width, height: h.height, name: name, options: options)
                header = h
            case "PLTE":
                let entries = min(length / 3, 256)
                for i in 0..<(entries * 3) { palette[i] = data[i] }
            case "eXIf":
                if options.readOrientation { orientation = EXIFOrientation.fromTIFF(data) }
            case "IEND":
                break chunks
            default:
                break
            }
            pos = dataStart + length + 4
        }
        guard let header else { throw fail("cannot identify image file: PNG has no IHDR chunk") }
        guard seenIDAT else { throw fail("image file is truncated: PNG has no image data (IDAT)") }

        let passes = header.interlaced ? adam7 : [Pass(x0: 0, y0: 0, dx: 1, dy: 1)]
        var expected = 0
        for pass in passes {
            let (w, h) = pass.size(header.width, header.height)
            if w > 0, h > 0 { expected += h * (1 + header.rowBytes(w)) }
        }
        let raw = try inflate(idat, expected: expected, name: name)

        let width = header.width, height = header.height
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        try rgb.withUnsafeMutableBufferPointer { out in
            try raw.withUnsafeBufferPointer { src in
                try palette.withUnsafeBufferPointer { pal in
                    var offset = 0
                    for pass in passes {
                        let (w, h) = pass.size(width, height)
                        guard w > 0, h > 0 else { continue }
                        let rowBytes = header.rowBytes(w)
                        let bpp = max(1, header.bitsPerPixel / 8)
                        var previous = [UInt8](repeating: 0, count: rowBytes)
                        var current = [UInt8](repeating: 0, count: rowBytes)
                        for y in 0..<h {
                            let filter = src[offset]
                            try unfilter(filter, src: UnsafeBufferPointer(rebasing: src[(offset + 1)..<(offset + 1 + rowBytes)]),
                                         previous: previous, into: &current, bpp: bpp, name: name)
                            offset += 1 + rowBytes
                            let row = (pass.y0 + y * pass.dy) * width
                            current.withUnsafeBufferPointer { line in
                                convertRow(line, header: header, palette: pal, count: w,
                                           out: out.baseAddress! + (row + pass.x0) * 3, step: pass.dx * 3)
                            }
                            swap(&previous, &current)
                        }
                    }
                }
            }
        }
        return DecodedImage(width: width, height: height, rgb: rgb, orientation: orientation)
    }

    struct Pass {
        var x0, y0, dx, dy: Int
        func size(_ width: Int, _ height: Int) -> (Int, Int) {
            ((width - x0 + dx - 1) / dx, (height - y0 + dy - 1) / dy)
        }
    }

    static let adam7 = [
        Pass(x0: 0, y0: 0, dx: 8, dy: 8), Pass(x0: 4, y0: 0, dx: 8, dy: 8), Pass(x0: 0, y0: 4, dx: 4, dy: 8),
        Pass(x0: 2, y0: 0, dx: 4, dy: 4), Pass(x0: 0, y0: 2, dx: 2, dy: 4), Pass(x0: 1, y0: 0, dx: 2, dy: 2),
        Pass(x0: 0, y0: 1, dx: 1, dy: 2),
    ]

    static func unfilter(_ filter: UInt8, src: UnsafeBufferPointer<UInt8>, previous: [UInt8], into current: inout [UInt8],
                         bpp: Int, name: String) throws {
        let n = src.count
        try previous.withUnsafeBufferPointer { up in
            try current.withUnsafeMutableBufferPointer { cur in
                switch filter {
                case 0:
                    for i in 0..<n { cur[i] = src[i] }
                case 1:
                    for i in 0..<n { cur[i] = src[i] &+ (i >= bpp ? cur[i - bpp] : 0) }
                case 2:
                    for i in 0..<n { cur[i] = src[i] &+ up[i] }
                case 3:
                    for i in 0..<n {
                        let left = i >= bpp ? Int(cur[i - bpp]) : 0
                        cur[i] = src[i] &+ UInt8((left + Int(up[i])) >> 1)
                    }
                case 4:
                    for i in 0..<n {
                        let a = i >= bpp ? Int(cur[i - bpp]) : 0
                        let b = Int(up[i])
                        let c = i >= bpp ? Int(up[i - bpp]) : 0
                        let p = a + b - c
                        let pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                        let predictor = (pa <= pb && pa <= pc) ? a : (pb <= pc ? b : c)
                        cur[i] = src[i] &+ UInt8(predictor)
                    }
                default:
                    throw VLMError(.corrupt, file: name, "broken PNG file: unsupported filter type \(filter)")
                }
            }
        }
    }

    /// One unfiltered row to RGB, pixel i written at `out + i * step`.
    static func convertRow(_ line: UnsafeBufferPointer<UInt8>, header: Header, palette: UnsafeBufferPointer<UInt8>,
                           count: Int, out: UnsafeMutablePointer<UInt8>, step: Int) {
        let depth = header.bitDepth
        switch (header.colorType, depth) {
        case (0, 16):
            for i in 0..<count {
                let v = Int(line[2 * i]) << 8 | Int(line[2 * i + 1])
                let g = UInt8(min(v, 255))
                out[i * step] = g; out[i * step + 1] = g; out[i * step + 2] = g
            }
        case (0, _):
            let scale: [Int: UInt8] = [1: 255, 2: 85, 4: 17, 8: 1]
            let mul = scale[depth]!
            let mask = (1 << depth) - 1
            for i in 0..<count {
                let bit = i * depth
                let v = UInt8((Int(line[bit >> 3]) >> (8 - depth - (bit & 7))) & mask) &* mul
                out[i * step] = v; out[i * step + 1] = v; out[i * step + 2] = v
            }
        case (3, _):
            let mask = (1 << depth) - 1
            for i in 0..<count {
                let bit = i * depth
                let index = (Int(line[bit >> 3]) >> (8 - depth - (bit & 7))) & mask
                out[i * step] = palette[index * 3]; out[i * step + 1] = palette[index * 3 + 1]; out[i * step + 2] = palette[index * 3 + 2]
            }
        case (2, 8), (6, 8):
            let stride = header.channels
            for i in 0..<count {
                out[i * step] = line[i * stride]; out[i * step + 1] = line[i * stride + 1]; out[i * step + 2] = line[i * stride + 2]
            }
        case (2, 16), (6, 16):
            let stride = header.channels * 2
            for i in 0..<count {
                out[i * step] = line[i * stride]; out[i * step + 1] = line[i * stride + 2]; out[i * step + 2] = line[i * stride + 4]
            }
        case (4, _):
            let stride = depth / 4   // 2 bytes per pixel at 8-bit, 4 at 16-bit; the gray sample (its high byte) first
            for i in 0..<count {
                let g = line[i * stride]
                out[i * step] = g; out[i * step + 1] = g; out[i * step + 2] = g
            }
        default:
            break
        }
    }

    /// Inflates the concatenated IDAT data. Succeeds when it yields at least the bytes the image needs
    /// (PIL stops reading there too); fails as PIL does ("image file is truncated") when it yields fewer.
    static func inflate(_ data: [UInt8], expected: Int, name: String) throws -> [UInt8] {
        guard let uncompress = Zlib.uncompress else {
            throw VLMError(.unsupported, file: name, "cannot decode PNG: zlib (libz.so.1) could not be loaded")
        }
        // Deflate expands at most ~1032:1; refuse before allocating when the data cannot possibly be enough
        // (a huge header over a few bytes of IDAT, with the pixel limit switched off).
        guard expected <= data.count * 1040 + 1024 else {
            throw VLMError(.corrupt, file: name,
                           "image file is truncated: \(data.count) bytes of PNG image data cannot inflate to the \(expected) bytes needed")
        }
        var produced: UInt = 0
        let out = [UInt8](unsafeUninitializedCapacity: expected) { buffer, initialized in
            var length = UInt(expected)
            _ = data.withUnsafeBufferPointer { src in
                uncompress(buffer.baseAddress, &length, src.baseAddress, UInt(src.count))
            }
            produced = length
            initialized = expected
        }
        guard Int(produced) == expected else {
            throw VLMError(.corrupt, file: name,
                           "image file is truncated: PNG image data inflates to \(produced) of the \(expected) bytes needed")
        }
        return out
    }
}

/// zlib's one-shot `uncompress`, resolved from the shared library libpng itself links.
enum Zlib {
    typealias Uncompress = @convention(c) (UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt>?, UnsafePointer<UInt8>?, UInt) -> Int32

    static let uncompress: Uncompress? = {
        for library in ["libz.so.1", "libz.so"] {
            if let handle = dlopen(library, RTLD_NOW), let symbol = dlsym(handle, "uncompress") {
                return unsafeBitCast(symbol, to: Uncompress.self)
            }
        }
        return nil
    }()
}

/// CRC-32 (ISO 3309, as PNG uses) with a precomputed table.
package enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    package static func checksum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt32 {
        var c = ~initial
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return ~c
    }
}
