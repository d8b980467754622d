import CTurboJPEG
import Foundation
import VLMCore

/// What an image's header says, read without decoding pixels: format, width, height.
///
/// ```swift
/// let header = try ImageHeader.read(bytes, name: "000000000139.jpg")
/// print(header.format, header.width, header.height)
/// ```
public struct ImageHeader: Sendable, Equatable {
    public enum Format: String, Sendable {
        case jpeg, png, gif, bmp, webp, tiff
        /// Formats the later stages can decode.
        public var isSupported: Bool { self == .jpeg || self == .png }
    }

    public var format: Format
    public var width: Int
    public var height: Int

    public init(format: Format, width: Int, height: Int) {
        self.format = format
        self.width = width
        self.height = height
    }

    /// Sniffs the format from magic bytes; nil when the bytes are no image format we know.
    public static func sniff(_ bytes: UnsafeRawBufferPointer) -> Format? {
        func starts(_ magic: [UInt8]) -> Bool {
            bytes.count >= magic.count && zip(bytes.prefix(magic.count), magic).allSatisfy { $0 == $1 }
        }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if starts([0x42, 0x4D]) { return .bmp }
        if starts(Array("RIFF".utf8)), bytes.count >= 12, Array(bytes[8..<12]) == Array("WEBP".utf8) { return .webp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        return nil
    }

    /// Reads the header of a JPEG or PNG. Other known formats are reported as unsupported; unknown bytes as
    /// not an image. `name` goes into the error.
    public static func read(_ bytes: [UInt8], name: String) throws -> ImageHeader {
        try bytes.withUnsafeBytes { raw in try read(raw, name: name) }
    }

    public static func read(_ raw: UnsafeRawBufferPointer, name: String) throws -> ImageHeader {
        guard !raw.isEmpty else { throw VLMError(.corrupt, file: name, "file is empty") }
        guard let format = sniff(raw) else {
            throw VLMError(.corrupt, file: name, "not an image: unknown signature \(raw.prefix(8).map { String(format: "%02x", $0) }.joined())")
        }
        switch format {
        case .jpeg: return try readJPEG(raw, name: name)
        case .png: return try readPNG(raw, name: name)
        default: throw VLMError(.unsupported, file: name, "\(format.rawValue.uppercased()) images are not supported (JPEG and PNG are)")
        }
    }

    static func readPNG(_ raw: UnsafeRawBufferPointer, name: String) throws -> ImageHeader {
        // Signature (8) + IHDR chunk: length (4) "IHDR" (4) width (4) height (4) depth colour ...
        guard raw.count >= 33, Array(raw[12..<16]) == Array("IHDR".utf8) else {
            throw VLMError(.corrupt, file: name, "PNG without an IHDR chunk (\(raw.count) bytes)")
        }
        func be32(_ at: Int) -> Int { Int(raw[at]) << 24 | Int(raw[at + 1]) << 16 | Int(raw[at + 2]) << 8 | Int(raw[at + 3]) }
        let width = be32(16), height = be32(20)
        guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
            throw VLMError(.corrupt, file: name, "PNG header has invalid size \(width)x\(height)")
        }
        return ImageHeader(format: .png, width: width, height: height)
    }

    static func readJPEG(_ raw: UnsafeRawBufferPointer, name: String) throws -> ImageHeader {
        let handle = try TurboJPEGHandle.decompressor(name: name)
        var width: Int32 = 0, height: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        let rc = tjDecompressHeader3(handle.raw, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(raw.count),
                                     &width, &height, &subsamp, &colorspace)
        guard rc == 0 else {
            throw VLMError(.corrupt, file: name, "JPEG header unreadable: \(handle.lastError)")
        }
        // A stream cut before its frame header "succeeds" with a 0x0 size.
        guard width > 0, height > 0 else {
            throw VLMError(.corrupt, file: name, "JPEG has no frame header (truncated after \(raw.count) bytes?)")
        }
        return ImageHeader(format: .jpeg, width: Int(width), height: Int(height))
    }
}

/// Owns one TurboJPEG handle (`tjInitDecompress` / `tjInitCompress`), destroyed in deinit. Not thread-safe:
/// use one per thread.
public final class TurboJPEGHandle {
    public let raw: tjhandle

    private init(raw: tjhandle) { self.raw = raw }

    public static func decompressor(name: String) throws -> TurboJPEGHandle {
        guard let h = tjInitDecompress() else { throw VLMError(.io, file: name, "tjInitDecompress failed") }
        return TurboJPEGHandle(raw: h)
    }

    public static func compressor(name: String) throws -> TurboJPEGHandle {
        guard let h = tjInitCompress() else { throw VLMError(.io, file: name, "tjInitCompress failed") }
        return TurboJPEGHandle(raw: h)
    }

    /// The handle's last error message (`tjGetErrorStr2`).
    public var lastError: String {
        guard let message = tjGetErrorStr2(raw) else { return "unknown TurboJPEG error" }
        return String(cString: message)
    }

    deinit { tjDestroy(raw) }
}
