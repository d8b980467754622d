import Foundation
import Testing
import VLMCatalog
import VLMCore
@testable import VLMLoader

/// Batches handed over whole (`SampleStream.nextBatch()`, `WorkerStream.nextEntry()`): the same samples, bytes,
/// order and resume state as sample by sample, on any thread count, and buffers reused only once let go.
@Suite(.serialized) struct BatchHandOffTests {
    let root: String
    let made: [MadeSample]
    let index: DatasetIndex

    init() throws {
        root = temporaryFolder("batches")
        let (catalog, made) = try makeWorkspace(root, shards: 4, perShard: 21, lastShard: 9)
        self.made = made
        index = try DatasetIndex.load(catalog: catalog)
    }

    func loader(workers: Int, chunk: Int? = nil, world: Int = 1, rank: Int = 0, prefetch: Int = 32) throws -> Loader {
        try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))],
                   options: LoaderOptions(order: OrderSpec(seed: 11, blockSize: 8, partitions: 4),
                                          topology: Topology(rank: rank, worldSize: world), workers: workers,
                                          prefetch: prefetch, unit: 1, remainder: .pad, chunk: chunk))
    }

    /// (key, ids, labels, pixels, meta) of every sample, sample by sample.
    func perSample(_ loader: Loader) throws -> [LoadedSample] {
        let stream = try loader.samples(epoch: 2)
        var out: [LoadedSample] = []
        while let s = try stream.next() { out.append(s) }
        return out
    }

    @Test(arguments: [(0, 5), (1, 7), (2, 16), (3, 1), (2, nil)] as [(Int, Int?)])
    func wholeBatchesEqualSampleBySample(workers: Int, chunk: Int?) throws {
        for rank in 0..<2 {
            let expected = try perSample(loader(workers: 0, world: 2, rank: rank))
            let stream = try loader(workers: workers, chunk: chunk, world: 2, rank: rank).samples(epoch: 2)
            var got: [LoadedSample] = []
            var sizes: [Int] = []
            while let batch = try stream.nextBatch() {
                sizes.append(batch.count)
                for i in 0..<batch.count {
                    let s = batch.sample(i)
                    #expect(Array(batch.inputIds(i)) == s.inputIds)
                    #expect(Array(batch.pixels(i)) == s.pixels)
                    got.append(s)
                }
                // the state after a whole batch is the state after its last sample
                #expect(stream.state().consumed == min(got.count * 2, 2 * expected.count) || stream.state().epoch == 3)
            }
            #expect(got.map(\.key) == expected.map(\.key))
            #expect(got.map(\.inputIds) == expected.map(\.inputIds))
            #expect(got.map(\.labels) == expected.map(\.labels))
            #expect(got.map(\.pixels) == expected.map(\.pixels))
            #expect(got.map(\.pixelShape) == expected.map(\.pixelShape))
            #expect(got.map(\.meta) == expected.map(\.meta))
            #expect(got.map(\.isPad) == expected.map(\.isPad))
            let unit = chunk ?? 16
            #expect(sizes.dropLast().allSatisfy { $0 == unit })
            #expect(stream.report.delivered == expected.count)
            #expect(stream.state().epoch == 3)
        }
    }

    /// The bytes are what was written, labels included (-100 where the shard stores none).
    @Test func bytesInPlaceMatchWhatWasWritten() throws {
        let stream = try loader(workers: 2, chunk: 6).samples(epoch: 0)
        var seen = 0
        let byKey = Dictionary(uniqueKeysWithValues: made.map { ($0.key, $0) })
        while let batch = try stream.nextBatch() {
            for i in 0..<batch.count {
                let m = try #require(byKey[batch.entries[i].key])
                #expect(Array(batch.inputIds(i)) == m.inputIds)
                #expect(Array(batch.labels(i)) == m.labels)
                #expect(Array(batch.pixels(i)) == m.pixels)
                #expect(batch.entries[i].pixelShape == (m.pixels.isEmpty ? [] : [1, 4, 12]))
                #expect(String(decoding: batch.meta(i), as: UTF8.self) == "{\"key\":\"\(m.key)\"}")
                seen += 1
            }
        }
        #expect(seen == made.count)
    }

    /// A batch the consumer keeps is never overwritten; one it lets go of is reused (no allocation per batch).
    @Test(arguments: [0, 2])
    func keptBatchesStayIntactAndReleasedOnesAreReused(workers: Int) throws {
        let stream = try loader(workers: workers, chunk: 4, prefetch: 4).samples(epoch: 0)
        let first = try #require(try stream.nextBatch())
        let keys = first.entries.map(\.key)
        let ids = (0..<first.count).map { Array(first.inputIds($0)) }
        var identities: Set<ObjectIdentifier> = [ObjectIdentifier(first)]
        var batches = 1
        while let batch = try stream.nextBatch() {
            identities.insert(ObjectIdentifier(batch))
            batches += 1
        }
        #expect(first.entries.map(\.key) == keys)
        #expect((0..<first.count).map { Array(first.inputIds($0)) } == ids)
        #expect(batches == (made.count + 3) / 4)
        // the kept batch plus, per thread, the queue's and the ones in flight: far fewer than the batches read
        #expect(identities.count <= 1 + max(1, workers) * 4)
    }

    /// Mixing the two ways inside a batch is refused rather than losing samples.
    @Test func nextBatchInsideABatchIsRefused() throws {
        let stream = try loader(workers: 1, chunk: 4).samples(epoch: 0)
        _ = try stream.next()
        #expect(throws: VLMError.self) { _ = try stream.nextBatch() }
    }

    /// A worker's samples in place (`nextEntry`) are its samples copied out (`next`), index for index.
    @Test(arguments: [0, 2])
    func workerEntriesEqualWorkerSamples(threads: Int) throws {
        let loader = try loader(workers: 0)
        let share = WorkerShare(worker: 1, workers: 2, chunk: 5)
        let copied = try WorkerStream(loader: loader, epoch: 0, resuming: nil, share: share, threads: 0, prefetch: 8)
        var expected: [(Int, [Int32], [UInt8])] = []
        while let (j, s) = try copied.next() { expected.append((j, s.inputIds, s.pixels)) }
        let inPlace = try WorkerStream(loader: loader, epoch: 0, resuming: nil, share: share, threads: threads, prefetch: 8)
        var got: [(Int, [Int32], [UInt8])] = []
        while let (batch, i) = try inPlace.nextEntry() {
            got.append((batch.entries[i].index, Array(batch.inputIds(i)), Array(batch.pixels(i))))
        }
        #expect(got.map(\.0) == expected.map(\.0))
        #expect(got.map(\.0) == share.indices(count: inPlace.slice.count))
        #expect(got.map(\.1) == expected.map(\.1))
        #expect(got.map(\.2) == expected.map(\.2))
    }
}
