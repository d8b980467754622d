/// One part of a partitioned run (`--part I/N`): part `index` (1-based) of `count`.
///
/// A record belongs to the part `fnv1a64(key) % count + 1`, so N processes on N machines (a Slurm job array,
/// a Kubernetes Indexed Job) split the same catalog into disjoint parts that together cover every key, and
/// the split never depends on the order or number of records.
///
/// ```swift
/// let part = try WorkPart(parsing: "2/4")
/// if part.contains(key: "coco_val2017_000000397133_caption_0") { ... }
/// ```
public struct WorkPart: Hashable, Sendable, Codable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws {
        guard count >= 1, (1 ... count).contains(index) else {
            throw VLMError(.invalidArgument, "part \(index)/\(count): expected I/N with 1 <= I <= N")
        }
        self.index = index
        self.count = count
    }

    /// Parses `I/N`, e.g. `1/2`.
    public init(parsing text: String) throws {
        let pieces = text.split(separator: "/", omittingEmptySubsequences: false)
        guard pieces.count == 2, let i = Int(pieces[0]), let n = Int(pieces[1]) else {
            throw VLMError(.invalidArgument, "part '\(text)': expected I/N, e.g. 1/4")
        }
        try self.init(index: i, count: n)
    }

    public var description: String { "\(index)/\(count)" }

    /// The part (1-based) a key falls in when the work is split `count` ways.
    public static func partIndex(of key: String, count: Int) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int(hash % UInt64(count)) + 1
    }

    public func contains(key: String) -> Bool {
        WorkPart.partIndex(of: key, count: count) == index
    }
}
