/// `--part I/N`: this process handles part I (0-based) of N, so N processes on N machines split the work
/// deterministically and without overlap.
///
/// There is one partition function, `owns(imageKey:sampleKey:)`: a sample belongs to the part of its image key
/// (the sample key only for a text-only sample). Every stage that takes `--part` selects with it, so any mix of
/// stages run with the same `I/N` selects the same images, and the parts' workspaces merge into exactly what one
/// workspace would hold (docs/partitioning.md). A part is recorded (and encoded) as the text "I/N".
///
/// ```swift
/// let part = PartSpec(parsing: "1/4")!
/// if part.owns(imageKey: "train_000000000009", sampleKey: "train_000000000009-tpl-caption-0") { ... }
/// ```
public struct PartSpec: Codable, Hashable, Sendable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// Parses "I/N" with 0 <= I < N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else { return nil }
        self.init(index: i, count: n)
    }

    public var description: String { "\(index)/\(count)" }

    /// The part (0..<count) that `key` falls in: FNV-1a 64 of the key's UTF-8, modulo N.
    public static func index(of key: String, count: Int) -> Int {
        count <= 1 ? 0 : Int(StableHash.fnv1a64(key) % UInt64(count))
    }

    /// True when `key` (an image key, or the sample key of a text-only sample) belongs to this part.
    public func contains(key: String) -> Bool {
        Self.index(of: key, count: count) == index
    }

    /// The partition function every stage uses: a sample (or an image, or an instruction) belongs to the part of
    /// its image key; only a text-only sample falls back to its own key.
    public func owns(imageKey: String?, sampleKey: String) -> Bool {
        contains(key: imageKey ?? sampleKey)
    }

    /// Encoded as "I/N"; decodes "I/N" or the older `{"index": I, "count": N}`.
    public init(from decoder: any Decoder) throws {
        if let text = try? decoder.singleValueContainer().decode(String.self) {
            guard let part = PartSpec(parsing: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not I/N with I < N"))
            }
            self = part
            return
        }
        enum Keys: String, CodingKey { case index, count }
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(index: try c.decode(Int.self, forKey: .index), count: try c.decode(Int.self, forKey: .count))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// Hashes that are the same in every process and on every machine (Swift's `hashValue` is randomized per run).
public enum StableHash {
    public static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        return hash
    }
}
