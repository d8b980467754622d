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
        var out: UnsafeMutablePointer<UInt8>?
        var size = 0
        var message = [CChar](repeating: 0, count: Int(VLM_PNG_MESSAGE))
        // The shim sets libpng's setjmp, so a libpng error (say, out of memory) is a return code, not an abort.
        let rc = pixels.withUnsafeBufferPointer { buf in
            vlm_png_write(buf.baseAddress, UInt32(width), UInt32(height), Int32(channels), &out, &size, &message)
        }
        defer { vlm_png_free(out) }
        guard rc == 0, let out else {
            let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw VLMError(.io, "PNG encode failed: \(text.isEmpty ? "libpng error" : text)")
        }
        return Array(UnsafeBufferPointer(start: out, count: size))
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
