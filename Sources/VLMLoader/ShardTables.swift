import Foundation
import VLMCore

/// The sample tables (`SampleInfo`s: key, offsets, lengths, members) of the shards one stream is reading.
///
/// A shard's table is read from its dataset's index (`DatasetIndex.samples(ofShard:)`, one catalog query) at the
/// stream's first read of that shard and dropped after its last: the stream counts its planned reads per shard
/// when it starts (its share of the epoch's plan, padding included), and each read counts one down. So a stream
/// holds the tables of the shards its order is in at the moment: with shard or block shuffle and P canonical
/// partitions, about P spans each in one or two shards. An order that visits every shard throughout the epoch
/// (length grouping, a mixture's repeated passes) holds each table from its first read to its last, at most the
/// whole index, as before. Readers on several threads share the tables; a table is read once even when two
/// threads need it at the same moment.
final class ShardTables: @unchecked Sendable {
    struct Stats: Sendable, Equatable {
        /// Tables read from the index (one per shard per stream when no read fails).
        var reads = 0
        /// Most tables, and most samples in them, held at once.
        var peakTables = 0
        var peakSamples = 0
    }

    private struct Slot {
        var table: [SampleInfo]?
        /// Planned reads of the shard not yet taken.
        var left = 0
        var loading = false
    }

    private let indexes: [DatasetIndex]
    private var slots: [[Slot]]
    private let condition = NSCondition()
    private var held = (tables: 0, samples: 0)
    private var counts = Stats()

    /// The tables of the samples `loader` reads at the rank-local `rankIndices` of (`plan`, `slice`).
    init(loader: Loader, plan: EpochPlan, slice: RankSlice, rankIndices: some Sequence<Int>) {
        indexes = loader.datasets.map(\.index)
        slots = indexes.map { [Slot](repeating: Slot(), count: $0.shards.count) }
        for j in rankIndices {
            let ref = plan.refs[slice.globalPosition(j).0]
            let d = Int(ref.dataset)
            slots[d][indexes[d].shard(ofSample: Int(ref.sample))].left += 1
        }
    }

    var stats: Stats {
        condition.lock()
        defer { condition.unlock() }
        return counts
    }

    /// Sample `n` of dataset `d` and its shard, for one planned read: the shard's table is read first when it is
    /// not held, and dropped once its last planned read has been taken. A table that cannot be read throws (and
    /// counts as the read); the next read of that shard tries again.
    func take(dataset d: Int, sample n: Int) throws -> (info: SampleInfo, shard: ShardInfo) {
        let index = indexes[d]
        let s = index.shard(ofSample: n)
        let shard = index.shards[s]
        condition.lock()
        while slots[d][s].loading { condition.wait() }
        if let table = slots[d][s].table {
            taken(d, s)
            condition.unlock()
            return (table[n - shard.firstSample], shard)
        }
        slots[d][s].loading = true
        condition.unlock()
        let result = Result { try index.samples(ofShard: s) }
        condition.lock()
        slots[d][s].loading = false
        if case .success(let table) = result {
            slots[d][s].table = table
            counts.reads += 1
            held.tables += 1
            held.samples += table.count
            counts.peakTables = max(counts.peakTables, held.tables)
            counts.peakSamples = max(counts.peakSamples, held.samples)
        }
        taken(d, s)
        condition.broadcast()
        condition.unlock()
        return (try result.get()[n - shard.firstSample], shard)
    }

    /// Counts one read of shard `s` of dataset `d` as taken; drops its table after the last. Lock held.
    private func taken(_ d: Int, _ s: Int) {
        slots[d][s].left -= 1
        if slots[d][s].left <= 0, let table = slots[d][s].table {
            slots[d][s].table = nil
            held.tables -= 1
            held.samples -= table.count
        }
    }
}
