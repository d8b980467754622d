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
        var packed = PackedStrings()
        appendBase(split: split, name: name, to: &packed)
        return packed[0]
    }

    /// Appends the base key of `name` to `packed` as one string. Plain names (`000000000139.jpg`: ASCII, no
    /// folder, one extension of letters and digits) are cut and escaped byte by byte; any other name goes through
    /// Foundation's `deletingPathExtension` and `SampleKey.sanitize`, the rule's definition.
    static func appendBase(split: String, name: String, to packed: inout PackedStrings) {
        packed.appendBytes(split.utf8)
        packed.appendByte(UInt8(ascii: "_"))
        if let stem = plainStem(name) {
            var name = name
            name.withUTF8 { utf8 in
                for byte in utf8[..<stem] { packed.appendByte(isKeyByte(byte) ? byte : UInt8(ascii: "_")) }
            }
        } else {
            packed.appendBytes(SampleKey.sanitize((name as NSString).deletingPathExtension).utf8)
        }
        packed.finish()
    }

    /// The length of a plain name's stem (before its last dot), or nil when the name is not plain.
    static func plainStem(_ name: String) -> Int? {
        var name = name
        return name.withUTF8 { utf8 -> Int? in
            guard utf8.count >= 3, utf8[0] != UInt8(ascii: ".") else { return nil }
            var dot: Int?
            for (i, byte) in utf8.enumerated() {
                guard byte < 0x80, byte > 0x20, byte != UInt8(ascii: "/"), byte != UInt8(ascii: "\\") else { return nil }
                if byte == UInt8(ascii: ".") { dot = i }
            }
            guard let dot, dot + 1 < utf8.count, utf8[dot - 1] != UInt8(ascii: ".") else { return nil }
            for byte in utf8[(dot + 1)...] where !(isKeyByte(byte) && byte != UInt8(ascii: "-") && byte != UInt8(ascii: "_")) {
                return nil
            }
            return dot
        }
    }

    /// Letters, digits, `-` and `_` (ASCII): what `SampleKey.sanitize` keeps.
    @inline(__always) static func isKeyByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_")
    }

    /// Keys for `items` (identity, file name), in order. `existing` maps an identity to the key the catalog
    /// already holds for it; `taken` is every other key in the catalog.
    static func assign(split: String, items: [(identity: String, name: String)], existing: [String: String],
                       taken: Set<String>) -> [String] {
        var names = PackedStrings()
        for item in items { names.append(item.name) }
        let keys = assign(split: split, names: names, identity: { items[$0].identity }, existing: existing, taken: taken)
        return (0..<items.count).map { keys[$0] }
    }

    /// Keys for the images named in `names`, in order; `identity(i)` is image i's identity. Memory: the base keys
    /// packed, 6 bytes per image, and a String only for a key that is not its base (kept, or hashed).
    static func assign(split: String, names: PackedStrings, identity: (Int) -> String, existing: [String: String],
                       taken: Set<String>) -> KeyList {
        let count = names.count
        var bases = PackedStrings()
        for i in 0..<count { appendBase(split: split, name: names[i], to: &bases) }
        // Images sorted by base key: images whose names escape alike are neighbours.
        var order = [Int32](0..<Int32(count))
        order.sort { a, b in
            let c = bases.compare(Int(a), Int(b))
            return c != 0 ? c < 0 : a < b
        }
        // Whether each image may take its base: its base belongs to one identity only, and no earlier image of
        // that identity took it already (an identity listed twice).
        var mayTakeBase = [Bool](repeating: false, count: count)
        var start = 0
        while start < count {
            var end = start + 1
            while end < count, bases.compare(Int(order[start]), Int(order[end])) == 0 { end += 1 }
            if end - start == 1 {
                mayTakeBase[Int(order[start])] = true
            } else {
                let first = identity(Int(order[start]))
                if (start + 1..<end).allSatisfy({ identity(Int(order[$0])) == first }) {
                    mayTakeBase[Int(order[start])] = true   // the earliest image (order is stable)
                }
            }
            start = end
        }
        let existingKeys = Set(existing.values)
        var list = KeyList(bases: bases, isBase: [Bool](repeating: false, count: count), others: [:])
        var needHash: [Int32] = []
        for i in 0..<count {
            let id = existing.isEmpty ? nil : existing[identity(i)]
            if let key = id {
                list.others[Int32(i)] = key
            } else if mayTakeBase[i], case let base = bases[i], !taken.contains(base), !existingKeys.contains(base) {
                list.isBase[i] = true
            } else {
                needHash.append(Int32(i))
            }
        }
        // Is `key` used: in the catalog, an image's base key, or a hashed key given already?
        var hashed = Set<String>()
        func used(_ key: String) -> Bool {
            if taken.contains(key) || existingKeys.contains(key) || hashed.contains(key) { return true }
            var lo = 0, hi = count
            while lo < hi {
                let mid = (lo + hi) / 2
                if bases.compare(Int(order[mid]), key) < 0 { lo = mid + 1 } else { hi = mid }
            }
            while lo < count, bases.compare(Int(order[lo]), key) == 0 {
                if list.isBase[Int(order[lo])] { return true }
                lo += 1
            }
            return false
        }
        for i in needHash.map(Int.init) {
            let base = bases[i]
            let digest = Hashing.sha256(identity(i))
            var length = 8
            var key = "\(base)-\(digest.prefix(length))"
            while used(key) && length < digest.count {
                length += 4
                key = "\(base)-\(digest.prefix(length))"
            }
            var n = 2
            while used(key) { key = "\(base)-\(digest)-\(n)"; n += 1 }
            list.others[Int32(i)] = key
            hashed.insert(key)
        }
        return list
    }

    /// The keys of one ingest: image i's is its base key or one kept or hashed.
    struct KeyList {
        let bases: PackedStrings
        var isBase: [Bool]
        var others: [Int32: String]

        var count: Int { bases.count }

        subscript(i: Int) -> String { isBase[i] ? bases[i] : others[Int32(i)]! }
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
