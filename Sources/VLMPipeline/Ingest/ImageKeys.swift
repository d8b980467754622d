import Foundation
import VLMCore
import VLMIO

/// Image keys that cannot collide.
///
/// A key is `SPLIT_STEM` (the file name without its extension, escaped to letters, digits, `_` and `-`) when no
/// other image of the ingest escapes to the same text and the catalog holds no other image under it. Names that
/// escape alike (`x.jpg` and `x.png`, `a b.jpg` and `a_b.jpg`, `a_b/c.jpg` and `a/b_c.jpg`) all get
/// `SPLIT_STEM-HASH`, HASH being the first 8 hex digits of the sha256 of the image's identity (COCO: its id;
/// LLaVA: its relative path), lengthened until unique. An image already in the catalog keeps its key.
///
/// ```swift
/// let keys = ImageKeys.assign(split: "train", items: [("1", "x.jpg"), ("2", "x.png")], existing: [:], taken: [])
/// // two keys "train_x-" + 8 hex digits, one per image
/// ```
enum ImageKeys {
    /// The key before any disambiguation.
    static func base(split: String, name: String) -> String {
        "\(split)_\(SampleKey.sanitize((name as NSString).deletingPathExtension))"
    }

    /// Keys for `items` (identity, file name), in order. `existing` maps an identity to the key the catalog
    /// already holds for it; `taken` is every other key in the catalog.
    static func assign(split: String, items: [(identity: String, name: String)], existing: [String: String],
                       taken: Set<String>) -> [String] {
        let bases = items.map { base(split: split, name: $0.name) }
        var identitiesOfBase: [String: Set<String>] = [:]
        for (item, base) in zip(items, bases) { identitiesOfBase[base, default: []].insert(item.identity) }
        var used = taken.union(existing.values)
        var keys = [String?](repeating: nil, count: items.count)
        var needHash: [Int] = []
        for (i, item) in items.enumerated() {
            if let key = existing[item.identity] {
                keys[i] = key
            } else if identitiesOfBase[bases[i]]!.count == 1, !used.contains(bases[i]) {
                keys[i] = bases[i]
                used.insert(bases[i])
            } else {
                needHash.append(i)
            }
        }
        for i in needHash {
            let digest = Hashing.sha256(items[i].identity)
            var length = 8
            var key = "\(bases[i])-\(digest.prefix(length))"
            while used.contains(key) && length < digest.count {
                length += 4
                key = "\(bases[i])-\(digest.prefix(length))"
            }
            var n = 2
            while used.contains(key) { key = "\(bases[i])-\(digest)-\(n)"; n += 1 }
            keys[i] = key
            used.insert(key)
        }
        return keys.map { $0! }
    }
}

/// What ingest checks a COCO box against: finite, positive area, and the image's frame.
enum BoxCheck {
    enum Verdict: Equatable {
        case keep
        /// Clipped to the image; `report` is false when it overshot by at most a pixel (rounding).
        case clipped(x: Double, y: Double, w: Double, h: Double, message: String, report: Bool)
        case rejected(String)
    }

    static func format(_ v: Double) -> String {
        v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)"
    }

    static func check(x: Double, y: Double, w: Double, h: Double, imageWidth: Int?, imageHeight: Int?) -> Verdict {
        let text = "[\([x, y, w, h].map(format).joined(separator: ", "))]"
        guard x.isFinite, y.isFinite, w.isFinite, h.isFinite else { return .rejected("bbox \(text) is not finite") }
        guard w >= 0, h >= 0 else { return .rejected("bbox \(text) has a negative width or height") }
        guard w > 0, h > 0 else { return .rejected("bbox \(text) has zero area") }
        guard let imageWidth, let imageHeight, imageWidth > 0, imageHeight > 0 else { return .keep }
        let W = Double(imageWidth), H = Double(imageHeight)
        let x1 = max(x, 0), y1 = max(y, 0)
        let x2 = min(x + w, W), y2 = min(y + h, H)
        guard x2 > x1, y2 > y1 else { return .rejected("bbox \(text) lies outside the \(imageWidth)x\(imageHeight) image") }
        if x1 == x, y1 == y, x2 == x + w, y2 == y + h { return .keep }
        let overshoot = max(-x, -y, x + w - W, y + h - H)
        let clipped = "[\([x1, y1, x2 - x1, y2 - y1].map(format).joined(separator: ", "))]"
        return .clipped(x: x1, y: y1, w: x2 - x1, h: y2 - y1,
                        message: "bbox \(text) extends past the \(imageWidth)x\(imageHeight) image: clipped to \(clipped)",
                        report: overshoot > 1)
    }
}

/// The sizes ingest accepts from an input file (documented in docs/ingest.md).
enum IngestLimits {
    /// Longest string in a record (a caption, a conversation turn) in UTF-8 bytes.
    static let maxStringBytes = 64 << 10
    /// Deepest nesting inside one record.
    static let maxDepth = 64
    /// Most bytes one record may take once parsed.
    static let maxRecordBytes = 4 << 20

    static func configure(_ reader: JSONStreamReader) {
        reader.maxStringBytes = maxStringBytes
        reader.maxDepth = maxDepth
        reader.maxElementBytes = maxRecordBytes
    }
}
