/// Status of an ingested image, as recorded in the catalog's `images.status`.
public enum ImageStatus: String, Codable, Sendable, CaseIterable {
    case ok
    case missing
    case corrupt
    case sizeMismatch = "size_mismatch"
    case tooLarge = "too_large"
}

/// An axis-aligned box in pixels, COCO's `[x, y, width, height]`.
public struct Box: Codable, Hashable, Sendable {
    public var x: Double
    public var y: Double
    public var width: Double
    public var height: Double

    public init(x: Double, y: Double, width: Double, height: Double) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    /// `[x1, y1, x2, y2]` divided by the image size, clamped to 0...1 (LLaVA's symbolic form).
    public func normalized(imageWidth: Int, imageHeight: Int) -> [Double] {
        let w = Double(max(imageWidth, 1)), h = Double(max(imageHeight, 1))
        func clamp(_ v: Double) -> Double { min(max(v, 0), 1) }
        return [clamp(x / w), clamp(y / h), clamp((x + width) / w), clamp((y + height) / h)]
    }
}

/// PIL's decompression-bomb limit: `Image.MAX_IMAGE_PIXELS` = 1024³ / 4 / 3.
public enum PixelLimit {
    /// Above this PIL warns (DecompressionBombWarning).
    public static let warn = 89_478_485
    /// Above this PIL refuses to open the image (DecompressionBombError).
    public static let error = 2 * 89_478_485

    /// PIL counts max(1, w) * max(1, h).
    public static func pixels(width: Int, height: Int) -> Int { max(1, width) * max(1, height) }
}

/// Image keys: stable, unique, no dots (WebDataset splits member names at the first dot).
public enum SampleKey {
    /// Turns any text into a key: letters, digits, `_` and `-` kept, everything else becomes `_`.
    public static func sanitize(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if scalar.isASCII, scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "-" || scalar == "_" {
                out.unicodeScalars.append(scalar)
            } else {
                out.append("_")
            }
        }
        return out
    }
}
