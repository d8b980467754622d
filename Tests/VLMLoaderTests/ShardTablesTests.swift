import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
@testable import VLMLoader

/// The loader holds a shard's sample table only while its stream reads that shard (issue 19, bounded memory):
/// each table is read from the catalog once per stream and dropped after the stream's last read of the shard.
@Suite(.serialized) struct ShardTablesTests {
    let root: String
    let catalog: Catalog
    let index: DatasetIndex

    init() throws {
        root = temporaryFolder("tables")
        (catalog, _) = try makeWorkspace(root, shards: 100, perShard: 8)
        index = try DatasetIndex.load(catalog: catalog)
    }

    func stream(_ spec: OrderSpec, workers: Int = 0, world: Int = 1, rank: Int = 0,
                onMissing: MissingPolicy = .error, index: DatasetIndex? = nil) throws -> SampleStream {
        try Loader(datasets: [LoaderDataset(index: index ?? self.index, source: LocalShardSource(root: root))],
                   options: LoaderOptions(order: spec, topology: Topology(rank: rank, worldSize: world), workers: workers,
                                          prefetch: 8, onMissing: onMissing)).samples(epoch: 1)
    }

    @Test func shardByShardHoldsOneTableAtATime() throws {
        let stream = try self.stream(OrderSpec(seed: 5, shuffle: .shard, partitions: 1))
        #expect(try keys(stream).count == 800)
        #expect(stream.tableStats == ShardTables.Stats(reads: 100, peakTables: 1, peakSamples: 8))
    }

    @Test func blockShuffleHoldsAboutTwoShardsPerPartition() throws {
        for (workers, world) in [(0, 1), (3, 1), (2, 3)] {
            for rank in 0..<world {
                let stream = try self.stream(OrderSpec(seed: 9, shuffle: .block, blockSize: 16, partitions: 4),
                                             workers: workers, world: world, rank: rank)
                let got = try keys(stream)
                #expect(got.count == stream.count)
                let stats = stream.tableStats
                // Every shard this rank reads is read from the catalog once. Each partition's span is in one block
                // of 16 samples (at most 3 shards of 8), or two when the threads read ahead across a block's end:
                // at most 4 × 5 of the 100 tables are held.
                #expect(stats.reads <= 100 && stats.reads >= 100 / world)
                #expect(stats.peakTables <= 4 * 5, "\(workers) workers, rank \(rank)/\(world): \(stats)")
                #expect(stats.peakSamples <= 4 * 5 * 8)
            }
        }
    }

    /// Length grouping visits every shard throughout the epoch: each table is still read once (held from its
    /// first read to its last), and the order is the one the lengths make.
    @Test func lengthGroupingReadsEachTableOnce() throws {
        let stream = try self.stream(OrderSpec(seed: 2, shuffle: .block, blockSize: 16, partitions: 4, groupMegabatch: 8))
        #expect(try keys(stream).count == 800)
        #expect(stream.tableStats.reads == 100)
    }

    @Test func theLengthsAreReadOnlyForLengthGrouping() throws {
        let plain = try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))],
                               options: LoaderOptions(order: OrderSpec(seed: 1)))
        let grouped = try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))],
                                 options: LoaderOptions(order: OrderSpec(seed: 1, groupMegabatch: 8)))
        #expect(plain.plan(epoch: 0).refs != grouped.plan(epoch: 0).refs)
        let lengths = try index.signedLengths()
        #expect(lengths.count == 800 && !lengths.contains(0))
        #expect(lengths.contains { $0 < 0 } && lengths.contains { $0 > 0 })
    }

    /// A shard removed from the catalog after the index was read is named when the stream reaches it; the samples
    /// before it are delivered, and `--on-missing skip` skips its samples and keeps those after it.
    @Test func aShardThatLeftTheCatalogIsNamed() throws {
        let spec = OrderSpec(seed: 0, shuffle: .none)
        let id = try catalog.shardRecords().first { $0.name == "train-000001.tar" }!.id
        try catalog.deleteShards(ids: [id])
        let stream = try self.stream(spec)
        var got: [String] = []
        do {
            while let sample = try stream.next() { got.append(sample.key) }
            Issue.record("the stream ended without an error")
        } catch let error as VLMError {
            #expect(error.kind == .notFound)
            #expect("\(error)".contains("train-000001.tar"), "\(error)")
        }
        #expect(got.count == 8)
        let skipping = try self.stream(spec, onMissing: .skip)
        #expect(try keys(skipping).count == 792)
        #expect(skipping.report.skipped == 8 && skipping.report.missingShards == ["train-000001.tar"])
    }

    /// A shard rewritten after the index was read (another checksum) is refused, naming it, not read with the
    /// old offsets.
    @Test func aShardRewrittenAfterTheIndexWasReadIsRefused() throws {
        try catalog.write { db in
            try db.execute(sql: "UPDATE shards SET sha256 = 'rewritten' WHERE name = 'train-000002.tar'")
        }
        let stream = try self.stream(OrderSpec(seed: 0, shuffle: .none))
        var got = 0
        do {
            while try stream.next() != nil { got += 1 }
            Issue.record("the stream ended without an error")
        } catch let error as VLMError {
            #expect(error.kind == .conflict)
            #expect("\(error)".contains("train-000002.tar") && "\(error)".contains("rewritten"), "\(error)")
        }
        #expect(got == 16)
        // A fresh index reads it as it is now.
        #expect(try DatasetIndex.load(catalog: catalog).shards[2].sha256 == "rewritten")
    }

    /// A shard row whose count disagrees with its samples is refused when the shard is opened.
    @Test func aShardRowThatMiscountsItsSamplesIsCorrupt() throws {
        try catalog.write { db in try db.execute(sql: "UPDATE shards SET samples = 9 WHERE name = 'train-000000.tar'") }
        let index = try DatasetIndex.load(catalog: catalog)
        #expect(index.count == 801)
        #expect { try index.samples(ofShard: 0) } throws: { error in
            guard let error = error as? VLMError else { return false }
            return error.kind == .corrupt && "\(error)".contains("says 9 samples but the index holds 8")
        }
        #expect(try index.samples(ofShard: 1).count == 8)
    }

    @Test func aRestrictedIndexReadsItsShardsByName() throws {
        let part = try index.restricted(to: ["train-000007.tar", "train-000003.tar"])
        #expect(part.shards.map(\.name) == ["train-000003.tar", "train-000007.tar"])
        #expect(part.count == 16 && part.shards.map(\.firstSample) == [0, 8])
        let whole3 = try index.samples(ofShard: 3), whole7 = try index.samples(ofShard: 7)
        #expect(try part.samples(ofShard: 0).map(\.key) == whole3.map(\.key))
        #expect(try part.samples(ofShard: 1).map(\.key) == whole7.map(\.key))
        #expect(try part.samples(ofShard: 1).allSatisfy { $0.shard == 1 })
        let stream = try self.stream(OrderSpec(seed: 4), index: part)
        #expect(Set(try keys(stream)) == Set((whole3 + whole7).map(\.key)))
    }
}
