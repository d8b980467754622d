import VLMCore

/// This process's place in a data-parallel job: rank, world size, local rank.
public struct Topology: Sendable, Hashable, Codable {
    public var rank: Int
    public var worldSize: Int
    public var localRank: Int

    public init(rank: Int = 0, worldSize: Int = 1, localRank: Int = 0) {
        self.rank = rank
        self.worldSize = worldSize
        self.localRank = localRank
    }

    public func validate() throws {
        guard worldSize >= 1 else { throw VLMError(.invalidArgument, "the world size must be at least 1, not \(worldSize)") }
        guard rank >= 0, rank < worldSize else {
            throw VLMError(.invalidArgument, "rank \(rank) is outside 0..<\(worldSize) (the world size)")
        }
    }
}

/// What happens to the samples left when the rest of an epoch does not split evenly over ranks (and batches).
public enum RemainderPolicy: String, Sendable, Codable, CaseIterable {
    /// Drop the last samples so every rank gets the same number of whole batches.
    case dropLast = "drop-last"
    /// Pad by repeating samples from the start of the epoch's order until every rank has the same number of whole
    /// batches (as PyTorch's `DistributedSampler` does).
    case pad
}

/// One rank's share of the rest of an epoch.
///
/// The global order is consumed in lockstep: after every rank has taken `j` samples, the first `c + j*W` positions
/// of the epoch are consumed. Rank `w` takes global positions `c + j*W + w` for `j = 0, 1, ...`; within a rank,
/// worker `k` of `K` decodes the samples with `j % K == k`, and the rank delivers them in `j` order, so a rank's
/// stream never depends on its worker count. Positions past the end are padding (policy `.pad`).
///
/// ```swift
/// let slice = RankSlice(epochLength: order.count, consumed: 0, topology: Topology(rank: 1, worldSize: 4),
///                       unit: 8, remainder: .pad)
/// for j in 0..<slice.count { let (position, isPad) = slice.globalPosition(j) }
/// ```
public struct RankSlice: Sendable, Hashable {
    public let epochLength: Int
    public let consumed: Int
    public let topology: Topology
    /// Samples this rank takes.
    public let count: Int
    /// Padded positions across all ranks (`.pad`) or dropped samples (`.dropLast`).
    public let padded: Int
    public let dropped: Int

    /// - Parameter unit: the batch size: every rank gets a multiple of it.
    public init(epochLength: Int, consumed: Int, topology: Topology, unit: Int = 1, remainder: RemainderPolicy) {
        self.epochLength = epochLength
        self.consumed = consumed
        self.topology = topology
        let remaining = max(0, epochLength - consumed)
        let step = topology.worldSize * max(1, unit)
        let total: Int
        switch remainder {
        case .dropLast: total = remaining / step * step
        case .pad: total = epochLength == 0 ? 0 : (remaining + step - 1) / step * step
        }
        count = total / topology.worldSize
        padded = max(0, total - remaining)
        dropped = max(0, remaining - total)
    }

    /// The global position of this rank's `j`-th sample, and whether it is padding (then `position` is the
    /// repeated position, counted from the epoch's start).
    public func globalPosition(_ j: Int) -> (position: Int, isPad: Bool) {
        let g = consumed + j * topology.worldSize + topology.rank
        if g < epochLength { return (g, false) }
        return ((g - epochLength) % epochLength, true)
    }

    /// The rank-local indices worker `k` of `workers` decodes.
    public func workerIndices(_ k: Int, of workers: Int) -> StrideTo<Int> {
        stride(from: k, to: count, by: workers)
    }
}
