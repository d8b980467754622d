import CPNG
import CTurboJPEG
import Foundation
import VLMCore

/// Encoders for 8-bit RGB (or gray) pixels: PNG through libpng, JPEG through TurboJPEG.
///
/// ```swift
/// let png = try ImageEncode.png(rgb: pixels, width: 32, height: 32)
/// try AtomicFile.write(png, to: "shape.png")
/// ```
public enum ImageEncode {
    /// PNG, 8-bit RGB (`channels` 3) or gray (`channels` 1), no interlace, default compression.
    public static func png(rgb pixels: [UInt8], width: Int, height: Int, channels: Int = 3) throws -> [UInt8] {
        guard width > 0, height > 0, pixels.count == width * height * channels, channels == 1 || channels == 3 else {
            throw VLMError(.invalidArgument, "PNG encode: \(pixels.count) bytes for \(width)x\(height)x\(channels)")
        }
        let sink = PNGSink()
        guard let png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nil, nil, nil) else {
            throw VLMError(.io, "png_create_write_struct failed")
        }
        var pngOpt: png_structp? = png
        var info = png_create_info_struct(png)
        defer { png_destroy_write_struct(&pngOpt, &info) }
        let context = Unmanaged.passUnretained(sink).toOpaque()
        png_set_write_fn(png, context, { ptr, data, length in
            guard let ptr, let data else { return }
            let sink = Unmanaged<PNGSink>.fromOpaque(png_get_io_ptr(ptr)).takeUnretainedValue()
            sink.bytes.append(contentsOf: UnsafeBufferPointer(start: data, count: length))
        }, nil)
        // libpng reports errors by longjmp unless an error function is set; with valid inputs (checked above)
        // and an in-memory sink, no error path is reachable.
        png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8,
                     channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT)
        png_write_info(png, info)
        pixels.withUnsafeBufferPointer { buf in
            let stride = width * channels
            for y in 0..<height {
                png_write_row(png, buf.baseAddress! + y * stride)
            }
        }
        png_write_end(png, nil)
        return sink.bytes
    }

    /// Baseline JPEG, 4:2:0, at `quality` (1–100), from 8-bit RGB.
    public static func jpeg(rgb pixels: [UInt8], width: Int, height: Int, quality: Int = 90) throws -> [UInt8] {
        guard width > 0, height > 0, pixels.count == width * height * 3 else {
            throw VLMError(.invalidArgument, "JPEG encode: \(pixels.count) bytes for \(width)x\(height)x3")
        }
        let handle = try TurboJPEGHandle.compressor(name: "jpeg encode")
        var out: UnsafeMutablePointer<UInt8>? = nil
        var size: UInt = 0
        let rc = pixels.withUnsafeBufferPointer { buf in
            tjCompress2(handle.raw, buf.baseAddress, Int32(width), 0, Int32(height), Int32(TJPF_RGB.rawValue),
                        &out, &size, Int32(TJSAMP_420.rawValue), Int32(quality), 0)
        }
        defer { if let out { tjFree(out) } }
        guard rc == 0, let out else { throw VLMError(.io, "JPEG encode failed: \(handle.lastError)") }
        return Array(UnsafeBufferPointer(start: out, count: Int(size)))
    }
}

private final class PNGSink {
    var bytes: [UInt8] = []
}
