import VLMCore

/// First-fit packing of whole samples into contexts of `context` model positions (image tokens counted), over at
/// most `openRows` rows held open at once (the bounded buffer).
///
/// Each sample goes into the first open row it fits; when none has room and `openRows` rows are open, the oldest
/// row is emitted and a new one opened. A row filled exactly is emitted at once. A sample longer than the context
/// is never split or truncated: it is dropped and counted in `overlong`.
///
/// ```swift
/// var packer = Packer(context: 2048, openRows: 8)
/// for sample in samples { for row in packer.add(sample) { use(row) } }
/// for row in packer.flush() { use(row) }
/// ```
public struct Packer: Sendable {
    public let context: Int
    public let openRows: Int
    public private(set) var overlong: [String] = []
    /// Model positions placed and rows emitted so far (for the padding fraction).
    public private(set) var placedTokens = 0
    public private(set) var emittedRows = 0
    private var rows: [[LoadedSample]] = []
    private var used: [Int] = []

    public init(context: Int, openRows: Int = 8) {
        self.context = context
        self.openRows = max(1, openRows)
    }

    /// Places `sample`, returning the rows that closed.
    public mutating func add(_ sample: LoadedSample) -> [[LoadedSample]] {
        let length = sample.modelLength
        guard length <= context else {
            overlong.append(sample.key)
            return []
        }
        placedTokens += length
        var out: [[LoadedSample]] = []
        if let r = used.firstIndex(where: { $0 + length <= context }) {
            rows[r].append(sample)
            used[r] += length
            if used[r] == context { out.append(removeRow(r)) }
            return out
        }
        if rows.count == openRows { out.append(removeRow(0)) }
        rows.append([sample])
        used.append(length)
        if length == context { out.append(removeRow(rows.count - 1)) }
        return out
    }

    /// Emits every open row, oldest first.
    public mutating func flush() -> [[LoadedSample]] {
        var out: [[LoadedSample]] = []
        while !rows.isEmpty { out.append(removeRow(0)) }
        return out
    }

    /// Samples waiting in open rows.
    public var buffered: Int { rows.reduce(0) { $0 + $1.count } }

    /// `1 - placed / (rows × context)` over everything emitted so far.
    public var paddingFraction: Double {
        emittedRows == 0 ? 0 : 1 - Double(placedTokens - pendingTokens) / Double(emittedRows * context)
    }

    private var pendingTokens: Int { used.reduce(0, +) }

    private mutating func removeRow(_ r: Int) -> [LoadedSample] {
        used.remove(at: r)
        emittedRows += 1
        return rows.remove(at: r)
    }
}
