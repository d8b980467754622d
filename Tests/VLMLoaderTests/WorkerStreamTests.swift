import Foundation
import Testing
import VLMCatalog
import VLMCore
@testable import VLMLoader

/// `WorkerStream`: a consumer's share of a rank's stream (what each PyTorch DataLoader worker reads).
@Suite(.serialized) struct WorkerStreamTests {
    let root: String
    let index: DatasetIndex

    init() throws {
        root = temporaryFolder("workers")
        let (catalog, _) = try makeWorkspace(root, shards: 4, perShard: 19, lastShard: 7)
        index = try DatasetIndex.load(catalog: catalog)
    }

    func loader(world: Int = 1, rank: Int = 0, unit: Int = 1) throws -> Loader {
        try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))],
                   options: LoaderOptions(order: OrderSpec(seed: 5, blockSize: 8, partitions: 4),
                                          topology: Topology(rank: rank, worldSize: world), workers: 0, unit: unit))
    }

    @Test func sharesAreChunksRoundRobin() throws {
        #expect(WorkerShare(worker: 0, workers: 2, chunk: 3).indices(count: 10) == [0, 1, 2, 6, 7, 8])
        #expect(WorkerShare(worker: 1, workers: 2, chunk: 3).indices(count: 10) == [3, 4, 5, 9])
        #expect(WorkerShare().indices(count: 4) == [0, 1, 2, 3])
        #expect(throws: VLMError.self) { try WorkerShare(worker: 2, workers: 2).validate() }
        #expect(throws: VLMError.self) { try WorkerShare(worker: 0, workers: 1, chunk: 0).validate() }
    }

    /// The workers' shares, taken round-robin by chunk (as a DataLoader collects batches), are the rank's stream.
    @Test(arguments: [(1, 0), (2, 1), (3, 2)])
    func sharesInterleaveToTheRanksStream(workers: Int, threads: Int) throws {
        let chunk = 4
        for rank in 0..<2 {
            let loader = try loader(world: 2, rank: rank, unit: chunk)
            let whole = try loader.samples(epoch: 1)
            var expected: [String] = []
            while let s = try whole.next() { expected.append(s.key) }
            var shares: [[(Int, String)]] = []
            for k in 0..<workers {
                let stream = try WorkerStream(loader: loader, epoch: 1, resuming: nil,
                                              share: WorkerShare(worker: k, workers: workers, chunk: chunk),
                                              threads: threads, prefetch: 2)
                var got: [(Int, String)] = []
                while let (j, s) = try stream.next() { got.append((j, s.key)) }
                shares.append(got)
            }
            var merged: [(Int, String)] = []
            var next = [Int](repeating: 0, count: workers)
            for b in 0... {
                let k = b % workers
                guard next[k] < shares[k].count else { break }
                merged += shares[k][next[k] ..< min(next[k] + chunk, shares[k].count)]
                next[k] += chunk
            }
            #expect(merged.map(\.1) == expected)
            #expect(merged.map(\.0) == Array(0..<expected.count))
        }
    }

    /// The state after N rank samples equals what `SampleStream` reports after N, and resumes there.
    @Test func stateAfterRankSamplesMatchesTheSampleStream() throws {
        let loader = try loader(world: 2, rank: 0)
        let stream = try loader.samples(epoch: 0)
        for _ in 0..<9 { _ = try stream.next() }
        let worker = try WorkerStream(loader: loader, epoch: 0, resuming: nil, share: WorkerShare(), threads: 0, prefetch: 1)
        #expect(worker.state(rankTaken: 9) == stream.state())
        #expect(worker.state(rankTaken: worker.slice.count).epoch == 1)
        let resumed = try WorkerStream(loader: loader, epoch: 0, resuming: stream.state(), share: WorkerShare(),
                                       threads: 1, prefetch: 1)
        var rest: [String] = []
        while let (_, s) = try resumed.next() { rest.append(s.key) }
        var tail: [String] = []
        while let s = try stream.next() { tail.append(s.key) }
        #expect(rest == tail)
    }
}
