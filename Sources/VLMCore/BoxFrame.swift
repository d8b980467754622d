/// The frame in which normalized box coordinates are stated: which image `[0, 1]` spans.
///
/// A box in an instruction must point at the right place in the pixels the model sees, so the frame follows the
/// preprocessing mode (`BoxFrame(pixelMode:)`):
/// - `original`: the whole image as annotated. Right for `squash` (each axis scaled on its own) and for anyres,
///   whose base view is the whole image squashed to S × S (the grid tiles are unpadded with the original size).
/// - `pad`: LLaVA-1.5's `expand2square` square of side max(w, h), the image pasted at ((side − w) // 2,
///   (side − h) // 2). LLaVA-1.5's grounding data states its boxes in this square.
/// - `crop`: the centre square of side min(w, h) that CLIP's shortest-edge resize + centre crop keeps. Boxes that
///   the crop cuts are not stated (`normalized` returns nil). The square is taken in original pixels, so it agrees
///   with the S-pixel crop to within one output pixel (1/S, below the 2-decimal text precision at S ≥ 200).
///
/// ```swift
/// let box = Box(x: 10, y: 20, width: 100, height: 50)
/// let inPad = BoxFrame.pad.normalized(box, imageWidth: 640, imageHeight: 480)   // y shifted by 80 px of 640
/// ```
public enum BoxFrame: String, Codable, Hashable, Sendable, CaseIterable {
    case original
    case pad
    case crop

    /// The frame of pixels made with a preprocessing mode (`crop`, `pad`, `squash`, `anyres`); nil for an unknown
    /// mode.
    public init?(pixelMode: String) {
        switch pixelMode {
        case "crop": self = .crop
        case "pad": self = .pad
        case "squash", "anyres": self = .original
        default: return nil
        }
    }

    /// The square (or the whole image) that `[0, 1]` spans, in original pixels: origin and size.
    public func window(imageWidth w: Int, imageHeight h: Int) -> (x: Double, y: Double, width: Double, height: Double) {
        switch self {
        case .original:
            return (0, 0, Double(w), Double(h))
        case .pad:
            let side = max(w, h)
            // expand2square pastes the image at ((side - w) // 2, (side - h) // 2): the frame starts that far before it.
            return (-Double((side - w) / 2), -Double((side - h) / 2), Double(side), Double(side))
        case .crop:
            let side = min(w, h)
            return (Double(w - side) / 2, Double(h - side) / 2, Double(side), Double(side))
        }
    }

    /// `[x1, y1, x2, y2]` of `box` in this frame, each in `[0, 1]`; nil when the box is not wholly inside the frame
    /// (only a crop cuts boxes off; a tolerance of half an original pixel allows for annotation rounding).
    public func normalized(_ box: Box, imageWidth: Int, imageHeight: Int) -> [Double]? {
        let f = window(imageWidth: max(imageWidth, 1), imageHeight: max(imageHeight, 1))
        let edges = [(box.x - f.x) / f.width, (box.y - f.y) / f.height,
                     (box.x + box.width - f.x) / f.width, (box.y + box.height - f.y) / f.height]
        if self == .crop {
            let tolerance = 0.5 / f.width
            guard edges.allSatisfy({ $0 >= -tolerance && $0 <= 1 + tolerance }) else { return nil }
        }
        return edges.map { min(max($0, 0), 1) }
    }
}

extension BoxFrame {
    /// True when `text` states a normalized box as LLaVA's data writes one: `[x1, y1, x2, y2]`, four decimals in
    /// [0, 1] separated by commas (spaces allowed), e.g. "[0.12, 0.30, 0.58, 0.91]".
    ///
    /// ```swift
    /// BoxFrame.statesBox(in: "The dog [0.10, 0.20, 0.50, 0.90] sits.")   // true
    /// ```
    public static func statesBox(in text: String) -> Bool {
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "["), box(bytes, from: i + 1) != nil { return true }
            i += 1
        }
        return false
    }

    /// Parses four comma-separated numbers in [0, 1] and a closing bracket from `start`; the index after it.
    private static func box(_ b: [UInt8], from start: Int) -> Int? {
        var i = start
        for n in 0..<4 {
            while i < b.count, b[i] == UInt8(ascii: " ") { i += 1 }
            let numberStart = i
            var dot = false
            while i < b.count, (b[i] >= UInt8(ascii: "0") && b[i] <= UInt8(ascii: "9")) || (!dot && b[i] == UInt8(ascii: ".")) {
                if b[i] == UInt8(ascii: ".") { dot = true }
                i += 1
            }
            guard i > numberStart, let value = Double(String(decoding: b[numberStart..<i], as: UTF8.self)),
                  (0...1).contains(value) else { return nil }
            while i < b.count, b[i] == UInt8(ascii: " ") { i += 1 }
            guard i < b.count, b[i] == UInt8(ascii: n == 3 ? "]" : ",") else { return nil }
            i += 1
        }
        return i
    }
}
