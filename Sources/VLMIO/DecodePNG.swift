import CDeflate
import CPNG
import Foundation
import VLMCore

/// PNG decoding to RGB with PIL's rules (PngImagePlugin `_MODES` + `convert("RGB")`):
/// - gray 1/2/4/8-bit: bits replicated to 8 (0/255, ×85, ×17), copied to R, G, B; gray 16-bit is PIL's "I;16":
///   values above 255 become 255, the rest are kept (no scaling);
/// - RGB, RGBA, gray+alpha 16-bit: the high byte of each sample ("RGB;16B", "RGBA;16B", "LA;16B");
/// - alpha dropped, never composited; tRNS ignored (no blending);
/// - palette (1/2/4/8-bit): looked up, indices past the PLTE entries are black; a PLTE libpng would refuse but PIL
///   reads (length not a multiple of 3, empty, repeated: the last wins, missing: all black) is handed to libpng
///   rewritten as the valid PLTE PIL sees (`vlm_png_patch_palette`);
/// - Adam7 interlacing supported; the chunks before the image data are CRC-checked as PIL does when opening
///   (a bad one is "bad header checksum"), IDAT and what follows it are not.
///
/// libpng does the chunk layer, inflate, unfiltering and de-interlacing, through the setjmp-guarded shims in
/// `Sources/CPNG/shim.h` (libpng reports errors by `longjmp`, which Swift cannot catch; the shims turn them into
/// return codes and messages, and ignore warnings as PIL does). It is asked for no value transform at all: the raw
/// samples come back as stored and the PIL conversions above are done here, because libpng's own conversions
/// (16-to-8 scaling, gamma, alpha compositing, tRNS expansion) are not PIL's. Decoding is two steps: the header
/// (signature and chunks up to the first IDAT) is parsed first, so the pixel limit is checked from IHDR before any
/// pixel memory is allocated; then the rows are read into a buffer owned here. Rows are complete once the last one
/// is delivered: what follows the image data (the end of the zlib stream, later chunks) is not required, as PIL
/// stops reading there too.
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
    }

    package static func decode(_ bytes: UnsafeRawBufferPointer, name: String, options: DecodeOptions) throws -> DecodedImage {
        var readerPointer: UnsafeMutablePointer<vlm_png_reader>?
        var info = vlm_png_header()
        let opened = vlm_png_open(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &readerPointer, &info)
        defer { vlm_png_close(readerPointer) }
        guard let reader = readerPointer else {
            throw VLMError(.io, file: name, "cannot decode PNG: out of memory")
        }
        guard opened == 0 else { throw headerError(message(reader), name: name) }

        let header = Header(width: Int(info.width), height: Int(info.height), bitDepth: Int(info.bit_depth),
                            colorType: Int(info.color_type), interlaced: info.interlaced != 0)
        try ImageDecoder.checkPixelLimit(width: header.width, height: header.height, name: name, options: options)
        let rowBytes = info.row_bytes
        // Deflate expands at most ~1032:1; refuse before allocating when the data left cannot possibly be enough
        // (a huge header over a few bytes of IDAT, with the pixel limit switched off).
        let needed = header.height.multipliedReportingOverflow(by: rowBytes)
        guard !needed.overflow, needed.partialValue <= info.data_bytes * 1040 + 1024 else {
            throw VLMError(.corrupt, file: name,
                           "image file is truncated: \(info.data_bytes) bytes of PNG image data cannot inflate to the \(needed.partialValue) bytes needed")
        }

        let raw: [UInt8]
        // The fast path leaves libpng before the image data, so an eXIf chunk after it (read by `vlm_png_exif`
        // through png_read_end) needs the libpng path: taken when the orientation is asked for.
        if !header.interlaced, header.bitDepth == 8, !options.readOrientation,
           let rows = inflatedRows(reader, height: header.height, rowBytes: rowBytes, bytesPerPixel: header.channels) {
            raw = rows
        } else {
            // libpng fills every byte of every row when it succeeds (all seven passes for Adam7), so the buffer
            // needs no zeroing; on failure nothing is returned.
            var failure: String?
            raw = [UInt8](unsafeUninitializedCapacity: needed.partialValue) { buffer, initialized in
                if vlm_png_read_rows(reader, buffer.baseAddress, rowBytes) != 0 { failure = message(reader) }
                initialized = needed.partialValue
            }
            if let failure { throw dataError(failure, name: name) }
        }

        var orientation = 1
        if options.readOrientation {
            var exif: UnsafePointer<UInt8>?
            let count = vlm_png_exif(reader, 1, &exif)
            if count > 0, let exif { orientation = EXIFOrientation.fromTIFF(UnsafeRawBufferPointer(start: exif, count: count)) }
        }

        let width = header.width, height = header.height
        // 8-bit RGB rows are already the RGB image.
        if header.colorType == 2, header.bitDepth == 8 {
            return DecodedImage(width: width, height: height, rgb: raw, orientation: orientation)
        }
        let rgb = [UInt8](unsafeUninitializedCapacity: width * height * 3) { out, initialized in
            withUnsafeBytes(of: &info.palette) { paletteBytes in
                let palette = paletteBytes.bindMemory(to: UInt8.self)
                raw.withUnsafeBufferPointer { src in
                    for y in 0..<height {
                        convertRow(UnsafeBufferPointer(rebasing: src[(y * rowBytes)..<((y + 1) * rowBytes)]), header: header,
                                   palette: palette, count: width, out: out.baseAddress! + y * width * 3, step: 3)
                    }
                }
            }
            initialized = width * height * 3
        }
        return DecodedImage(width: width, height: height, rgb: rgb, orientation: orientation)
    }

    /// The fast path for the common PNG (8-bit, not interlaced): the IDAT chunks that follow the header, inflated
    /// in one call by libdeflate (whole-buffer, about twice zlib's speed) and unfiltered by `vlm_png_unfilter`.
    /// Lossless, so the rows equal libpng's. Anything unusual returns nil and libpng decodes the file, with its
    /// rules and messages: a stream that does not inflate to exactly the rows (truncated, corrupt, a bad Adler-32,
    /// trailing data), a chunk that runs past the end of the file, an unknown filter type.
    static func inflatedRows(_ reader: UnsafeMutablePointer<vlm_png_reader>, height: Int, rowBytes: Int, bytesPerPixel: Int) -> [UInt8]? {
        guard let data = reader.pointee.data else { return nil }
        let size = reader.pointee.size
        // png_read_info stops after the first IDAT's length and type.
        var position = reader.pointee.position - 8
        func isIDAT(_ at: Int) -> Bool { data[at + 4] == 0x49 && data[at + 5] == 0x44 && data[at + 6] == 0x41 && data[at + 7] == 0x54 }
        func length(_ at: Int) -> Int { Int(data[at]) << 24 | Int(data[at + 1]) << 16 | Int(data[at + 2]) << 8 | Int(data[at + 3]) }
        guard position >= 8, position + 8 <= size, isIDAT(position) else { return nil }
        // Consecutive IDAT chunks hold one zlib stream; most encoders split it every 8 or 64 KiB.
        var compressed: [UInt8] = []
        compressed.reserveCapacity(size - position)
        while position + 8 <= size, isIDAT(position) {
            let count = length(position)
            guard count <= size - position - 8 else { return nil }
            compressed.append(contentsOf: UnsafeBufferPointer(start: data + position + 8, count: count))
            position += 12 + count
        }
        let filteredCount = height * (rowBytes + 1)
        guard let decompressor = libdeflate_alloc_decompressor() else { return nil }
        defer { libdeflate_free_decompressor(decompressor) }
        var inflated = true
        let filtered = [UInt8](unsafeUninitializedCapacity: filteredCount) { out, initialized in
            var actual = 0
            let result = compressed.withUnsafeBytes { input in
                libdeflate_zlib_decompress(decompressor, input.baseAddress, input.count, out.baseAddress, filteredCount, &actual)
            }
            inflated = result == LIBDEFLATE_SUCCESS && actual == filteredCount
            initialized = inflated ? filteredCount : 0
        }
        guard inflated else { return nil }
        var unfiltered = true
        let rows = [UInt8](unsafeUninitializedCapacity: height * rowBytes) { out, initialized in
            unfiltered = filtered.withUnsafeBufferPointer { input in
                vlm_png_unfilter(input.baseAddress, height, rowBytes, bytesPerPixel, out.baseAddress) == 0
            }
            initialized = unfiltered ? height * rowBytes : 0
        }
        return unfiltered ? rows : nil
    }

    static func message(_ reader: UnsafeMutablePointer<vlm_png_reader>) -> String {
        withUnsafeBytes(of: &reader.pointee.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// An error while opening (signature, IHDR, the chunks before the image data): PIL's "cannot identify image file".
    static func headerError(_ message: String, name: String) -> VLMError {
        // libpng names the chunk first: "IHDR: CRC error".
        if message.hasSuffix(": CRC error") {
            let chunk = message.dropLast(": CRC error".count)
            return VLMError(.corrupt, file: name, "cannot identify image file: broken PNG file (bad header checksum in '\(chunk)')")
        }
        if message.contains("Read beyond end of data") {
            return VLMError(.corrupt, file: name, "cannot identify image file: PNG truncated before the image data")
        }
        return VLMError(.corrupt, file: name, "cannot identify image file: broken PNG file (libpng: \(message))")
    }

    /// An error while reading the rows: the data ends early ("image file is truncated", as PIL says) or is corrupt.
    static func dataError(_ message: String, name: String) -> VLMError {
        if message.contains("Not enough image data") || message.contains("Read beyond end of data") {
            return VLMError(.corrupt, file: name, "image file is truncated: the PNG image data ends before the last row (libpng: \(message))")
        }
        return VLMError(.corrupt, file: name, "broken data stream when reading image file: PNG (libpng: \(message))")
    }

    /// One raw row (samples as stored: packed below 8 bits, 16-bit big-endian) to RGB, pixel i written at `out + i * step`.
    static func convertRow(_ line: UnsafeBufferPointer<UInt8>, header: Header, palette: UnsafeBufferPointer<UInt8>,
                           count: Int, out: UnsafeMutablePointer<UInt8>, step: Int) {
        let depth = header.bitDepth
        if depth == 8, convertRow8(line, header: header, palette: palette, count: count, out: out, step: step) {
            return
        }
        switch (header.colorType, depth) {
        case (0, 16):
            for i in 0..<count {
                let v = Int(line[2 * i]) << 8 | Int(line[2 * i + 1])
                let g = UInt8(min(v, 255))
                out[i * step] = g; out[i * step + 1] = g; out[i * step + 2] = g
            }
        case (0, _):
            let mul: UInt8 = depth == 1 ? 255 : depth == 2 ? 85 : depth == 4 ? 17 : 1
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

    /// The 8-bit colour types (the common case) through pointers, no bit unpacking: gray, palette, gray+alpha,
    /// RGBA. Returns false for any other layout. Same values as the general cases of `convertRow`.
    @inline(__always)
    static func convertRow8(_ line: UnsafeBufferPointer<UInt8>, header: Header, palette: UnsafeBufferPointer<UInt8>,
                            count: Int, out: UnsafeMutablePointer<UInt8>, step: Int) -> Bool {
        let src = line.baseAddress!
        switch header.colorType {
        case 0, 4:
            let stride = header.colorType == 0 ? 1 : 2
            for i in 0..<count {
                let g = src[i * stride]
                out[i * step] = g; out[i * step + 1] = g; out[i * step + 2] = g
            }
        case 3:
            let table = palette.baseAddress!
            for i in 0..<count {
                let p = table + Int(src[i]) * 3
                out[i * step] = p[0]; out[i * step + 1] = p[1]; out[i * step + 2] = p[2]
            }
        case 2, 6:
            let stride = header.colorType == 2 ? 3 : 4
            for i in 0..<count {
                out[i * step] = src[i * stride]; out[i * step + 1] = src[i * stride + 1]; out[i * step + 2] = src[i * stride + 2]
            }
        default:
            return false
        }
        return true
    }
}
