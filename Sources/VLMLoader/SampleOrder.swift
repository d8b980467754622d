import VLMCore

/// How an epoch's order is shuffled.
public enum ShuffleMode: String, Sendable, Codable, CaseIterable {
    /// Source order: shards by name, samples as written. No partition interleaving.
    case none
    /// Shard order shuffled; samples stay in their shard's order.
    case shard
    /// Shard order shuffled, then samples shuffled within consecutive blocks of `blockSize`.
    case block
}

/// Everything the global order depends on besides the dataset itself. Part of the resume state: resuming with a
/// different spec would continue a different order, so it is refused.
public struct OrderSpec: Sendable, Hashable, Codable {
    public var seed: UInt64
    public var shuffle: ShuffleMode
    /// Samples per shuffle block (`.block` only).
    public var blockSize: Int
    /// Canonical partitions: contiguous spans of the shuffled order that are interleaved round-robin, so a rank reads
    /// from few shards at a time (when it divides this number). Fixed for a run; never the physical world size.
    public var partitions: Int
    /// When > 0, the epoch's order is regrouped as LLaVA's `group_by_modality_length` does, with mega-batches of this
    /// many samples (LLaVA: batch size × world size). Fixed here so a resume on another world size keeps the order.
    public var groupMegabatch: Int

    public init(seed: UInt64 = 0, shuffle: ShuffleMode = .block, blockSize: Int = 1024, partitions: Int = 8,
                groupMegabatch: Int = 0) {
        self.seed = seed
        self.shuffle = shuffle
        self.blockSize = blockSize
        self.partitions = partitions
        self.groupMegabatch = groupMegabatch
    }

    public func validate() throws {
        guard blockSize >= 1 else { throw VLMError(.invalidArgument, "the shuffle block size must be at least 1, not \(blockSize)") }
        guard partitions >= 1 else { throw VLMError(.invalidArgument, "the canonical partition count must be at least 1, not \(partitions)") }
        guard groupMegabatch >= 0 else { throw VLMError(.invalidArgument, "the length-grouping mega-batch must be 0 (off) or positive") }
    }
}

/// The global order of one epoch: a pure function of (seed, epoch, dataset fingerprint, shard sizes, spec).
///
/// 1. Shards in index order are permuted by Fisher–Yates with `SplitMix64(derivedFrom: ["shards", seed, epoch, fp])`
///    (`.shard`, `.block`); their samples are laid out one shard after another.
/// 2. `.block`: that sequence is cut into consecutive blocks of `blockSize`, each shuffled in turn by one generator
///    `SplitMix64(derivedFrom: ["blocks", seed, epoch, fp])`.
/// 3. The result is split into `partitions` contiguous spans (span p = `[p*N/P, (p+1)*N/P)`), which are interleaved
///    round-robin (first element of each span, then the second, ...), skipping exhausted spans.
///
/// Position `i` of `positions` is the `i`-th sample consumed globally in the epoch; ranks take their slices of it.
///
/// ```swift
/// let order = SampleOrder(shardSizes: [100, 100, 50], fingerprint: index.fingerprint, epoch: 0, spec: OrderSpec(seed: 7))
/// let first = order.positions[0]   // a sample index into DatasetIndex.samples
/// ```
public struct SampleOrder: Sendable {
    public let epoch: Int
    public let spec: OrderSpec
    /// Sample indices in consumption order; a permutation of `0..<N`.
    public let positions: [Int32]

    public init(shardSizes: [Int], fingerprint: String, epoch: Int, spec: OrderSpec) {
        self.epoch = epoch
        self.spec = spec
        let total = shardSizes.reduce(0, +)
        var starts: [Int] = []
        var acc = 0
        for size in shardSizes { starts.append(acc); acc += size }

        var shardOrder = Array(shardSizes.indices)
        if spec.shuffle != .none {
            var rng = SplitMix64(derivedFrom: ["shards", String(spec.seed), String(epoch), fingerprint])
            rng.shuffle(&shardOrder)
        }
        var sequence = [Int32]()
        sequence.reserveCapacity(total)
        for s in shardOrder {
            for i in 0..<shardSizes[s] { sequence.append(Int32(starts[s] + i)) }
        }
        if spec.shuffle == .block {
            var rng = SplitMix64(derivedFrom: ["blocks", String(spec.seed), String(epoch), fingerprint])
            var start = 0
            while start < total {
                let end = min(start + spec.blockSize, total)
                sequence.withUnsafeMutableBufferPointer { buffer in
                    var slice = buffer[start..<end]
                    rng.shuffle(&slice)
                }
                start = end
            }
        }
        if spec.shuffle == .none || spec.partitions <= 1 || total == 0 {
            positions = sequence
            return
        }
        positions = SampleOrder.interleave(sequence, partitions: spec.partitions)
    }

    /// Splits `sequence` into `partitions` contiguous spans and interleaves them round-robin.
    static func interleave(_ sequence: [Int32], partitions p: Int) -> [Int32] {
        let n = sequence.count
        let bounds = (0...p).map { $0 * n / p }
        let longest = (0..<p).map { bounds[$0 + 1] - bounds[$0] }.max() ?? 0
        var out = [Int32]()
        out.reserveCapacity(n)
        for round in 0..<longest {
            for part in 0..<p where bounds[part] + round < bounds[part + 1] {
                out.append(sequence[bounds[part] + round])
            }
        }
        return out
    }

    public var count: Int { positions.count }
}
