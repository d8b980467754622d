/// `--part I/N`: this process handles part I (0-based) of N, chosen by a stable hash of each item's key, so N
/// processes on N machines split the work deterministically and without overlap.
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

    /// True when `key` belongs to this part (FNV-1a 64 of the key's UTF-8, modulo N).
    public func contains(key: String) -> Bool {
        count <= 1 || Int(StableHash.fnv1a64(key) % UInt64(count)) == index
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
