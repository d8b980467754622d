import VLMCore
import VLMIO

/// An 8-bit RGB image: rows top to bottom, pixels interleaved `R G B` (numpy `[H, W, 3]` uint8 layout).
///
/// ```swift
/// let image = PixelBuffer(try ImageDecoder().decode(file: "cat.jpg"))
/// let small = image.resized(width: 448, height: 336, filter: .bicubic)
/// ```
public struct PixelBuffer: Sendable, Equatable {
    public var width: Int
    public var height: Int
    /// `width * height * 3` bytes.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "PixelBuffer: \(pixels.count) bytes for \(width)x\(height) RGB")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// A `width` x `height` image filled with one colour (PIL `Image.new("RGB", size, color)`).
    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        self.width = width
        self.height = height
        let count = width * height * 3
        if fill == (0, 0, 0) {
            pixels = [UInt8](repeating: 0, count: count)
        } else {
            pixels = [UInt8](unsafeUninitializedCapacity: count) { out, initialized in
                var i = 0
                while i < count {
                    out[i] = fill.0; out[i + 1] = fill.1; out[i + 2] = fill.2
                    i += 3
                }
                initialized = count
            }
        }
    }

    public init(_ decoded: DecodedImage) {
        self.init(width: decoded.width, height: decoded.height, pixels: decoded.rgb)
    }

    /// The RGB triple at (x, y).
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }
}
