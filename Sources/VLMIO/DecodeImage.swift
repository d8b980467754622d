import Foundation
import VLMCore

/// An image decoded to 8-bit RGB, rows top to bottom, pixels interleaved `R G B`.
public struct DecodedImage: Sendable {
    public var width: Int
    public var height: Int
    /// `width * height * 3` bytes.
    public var rgb: [UInt8]
    /// EXIF orientation (1...8) when the file carries one, else 1. Never applied by the decoder.
    public var orientation: Int
    /// True when the image was decoded at a reduced DCT scale (`DecodeOptions.minimumSize`); not bit-identical to PIL.
    public var reducedScale: Bool

    public init(width: Int, height: Int, rgb: [UInt8], orientation: Int = 1, reducedScale: Bool = false) {
        self.width = width
        self.height = height
        self.rgb = rgb
        self.orientation = orientation
        self.reducedScale = reducedScale
    }
}

/// Part of an image, decoded (`ImageDecoder.decodeRegion`): the pixels of the columns `x ..< x + width` and rows
/// `y ..< y + height` of an image `imageWidth` x `imageHeight`, each equal to the whole image's decode.
public struct DecodedRegion: Sendable {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int
    /// `width * height * 3` bytes, RGB.
    public var rgb: [UInt8]
    public var imageWidth: Int
    public var imageHeight: Int
}

/// How to decode: the decompression-bomb limit and the optional fast JPEG path.
public struct DecodeOptions: Sendable, Hashable {
    /// PIL refuses images above this many pixels (`DecompressionBombError`); nil disables the check.
    public var pixelLimit: Int?
    /// When set, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as the result is at least this large
    /// (width, height). DCT-domain scaling is fast but not bit-identical to PIL's full decode plus resize.
    public var minimumSize: (width: Int, height: Int)? {
        get { minimumWidth.map { ($0, minimumHeight ?? 0) } }
        set { minimumWidth = newValue?.width; minimumHeight = newValue?.height }
    }
    private var minimumWidth: Int?
    private var minimumHeight: Int?
    /// Read the EXIF orientation tag (JPEG APP1, PNG eXIf) into `DecodedImage.orientation`.
    public var readOrientation: Bool

    public init(pixelLimit: Int? = PixelLimit.error, minimumSize: (width: Int, height: Int)? = nil, readOrientation: Bool = false) {
        self.pixelLimit = pixelLimit
        self.readOrientation = readOrientation
        self.minimumSize = minimumSize
    }
}

/// The file formats the decoder recognises, told apart by their first bytes (as PIL does), not by the extension.
public enum ImageFormatSniff: String, Sendable {
    case jpeg
    case png

    public static func detect(_ bytes: UnsafeRawBufferPointer) -> ImageFormatSniff? {
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        if bytes.count >= 8, bytes[0] == 0x89, bytes[1] == 0x50, bytes[2] == 0x4E, bytes[3] == 0x47,
           bytes[4] == 0x0D, bytes[5] == 0x0A, bytes[6] == 0x1A, bytes[7] == 0x0A { return .png }
        return nil
    }
}

/// Decodes JPEG and PNG bytes to RGB exactly as `PIL.Image.open(f).convert("RGB")` does.
///
/// ```swift
/// let decoder = ImageDecoder()               // one per thread: it owns a TurboJPEG handle
/// let image = try decoder.decode(file: "/data/cat.jpg")
/// ```
///
/// Not thread-safe; give each worker thread its own decoder.
public final class ImageDecoder {
    public var options: DecodeOptions
    private lazy var jpeg = JPEGDecoder()

    public init(options: DecodeOptions = DecodeOptions()) {
        self.options = options
    }

    /// Reads and decodes a file. Errors name the file.
    public func decode(file path: String) throws -> DecodedImage {
        let bytes = try ImageFileReader.read(path)
        return try decode(bytes, name: path)
    }

    /// Decodes in-memory bytes; `name` is used in errors (a path, or `archive.tar: member.jpg`).
    public func decode(_ bytes: [UInt8], name: String) throws -> DecodedImage {
        try bytes.withUnsafeBytes { raw in try decode(raw, name: name) }
    }

    public func decode(_ bytes: UnsafeRawBufferPointer, name: String) throws -> DecodedImage {
        guard !bytes.isEmpty else {
            throw VLMError(.corrupt, file: name, "cannot identify image file: it is empty (0 bytes)")
        }
        switch ImageFormatSniff.detect(bytes) {
        case .jpeg:
            return try jpeg.decode(bytes, name: name, options: options)
        case .png:
            return try PNGDecoder.decode(bytes, name: name, options: options)
        case nil:
            throw VLMError(.corrupt, file: name, "cannot identify image file: not a JPEG or PNG (first bytes \(hexPrefix(bytes)))")
        }
    }

    /// A region holding at least the pixels of `rect` (x, y, width, height) of a JPEG, each equal to the whole
    /// decode's pixel, decoding only the columns and top rows it needs and stopping after its last row. Nil when
    /// the bytes are not a JPEG or a region decode cannot be promised equal (see `JPEGDecoder.decodeRegion`):
    /// the caller then decodes the whole image, which also reports any error in the file.
    public func decodeRegion(_ bytes: UnsafeRawBufferPointer, name: String,
                             covering rect: (x: Int, y: Int, width: Int, height: Int)) throws -> DecodedRegion? {
        guard ImageFormatSniff.detect(bytes) == .jpeg else { return nil }
        return try jpeg.decodeRegion(bytes, name: name, options: options, rect: rect)
    }

    /// PIL's `_decompression_bomb_check`, run on the header size before any pixel is allocated.
    static func checkPixelLimit(width: Int, height: Int, name: String, options: DecodeOptions) throws {
        guard let limit = options.pixelLimit else { return }
        let pixels = PixelLimit.pixels(width: width, height: height)
        if pixels > limit {
            throw VLMError(.corrupt, file: name,
                           "decompression bomb: image size (\(width)x\(height) = \(pixels) pixels) exceeds the limit of \(limit) pixels")
        }
    }

    private func hexPrefix(_ bytes: UnsafeRawBufferPointer) -> String {
        bytes.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")
    }
}

/// Whole-file reads with errors that name the file.
package enum ImageFileReader {
    package static func read(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw VLMError(errno == ENOENT ? .notFound : .io, file: path, "cannot open image file: \(reason)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw VLMError.io(file: path, "cannot stat image file: \(String(cString: strerror(errno)))")
        }
        let size = Int(info.st_size)
        var done = 0
        let bytes = try [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            while done < size {
                let n = Foundation.read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw VLMError.io(file: path, "read failed: \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                done += n
            }
            count = done
        }
        return bytes
    }
}
