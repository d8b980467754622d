import Foundation
import VLMCore

/// Which of a rank's samples one consumer process takes (a PyTorch DataLoader worker, for example).
///
/// The rank's samples are cut into consecutive chunks of `chunk` (the batch size); worker `k` of `workers` takes
/// chunks `k, k + workers, ...`. A DataLoader takes batches from its workers round-robin, so with `chunk` equal to
/// its batch size the batches arrive in exactly the rank's order.
public struct WorkerShare: Sendable, Hashable {
    public var worker: Int
    public var workers: Int
    public var chunk: Int

    public init(worker: Int = 0, workers: Int = 1, chunk: Int = 1) {
        self.worker = worker
        self.workers = workers
        self.chunk = chunk
    }

    public func validate() throws {
        guard workers >= 1 else { throw VLMError(.invalidArgument, "the worker count must be at least 1, not \(workers)") }
        guard worker >= 0, worker < workers else {
            throw VLMError(.invalidArgument, "worker \(worker) is outside 0..<\(workers)")
        }
        guard chunk >= 1 else { throw VLMError(.invalidArgument, "the worker chunk must be at least 1, not \(chunk)") }
    }

    /// The rank-local indices (of `0..<count`) this worker takes, ascending.
    public func indices(count: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(count / workers + chunk)
        var start = worker * chunk
        while start < count {
            for j in start..<min(start + chunk, count) { out.append(j) }
            start += workers * chunk
        }
        return out
    }
}

/// One worker's share of a rank's stream (`WorkerShare`), read ahead on `threads` background threads a batch at
/// a time (each batch one buffer, handed over whole) and delivered in rank order, each sample with its rank-local
/// index.
///
/// With one worker it delivers exactly what `SampleStream` does. `state(rankTaken:)` is the resume state once the
/// rank has consumed its first `rankTaken` samples (all workers together).
///
/// ```swift
/// let stream = try WorkerStream(loader: loader, epoch: 0, resuming: nil,
///                               share: WorkerShare(worker: 1, workers: 2, chunk: 8), threads: 1, prefetch: 32)
/// while let (j, sample) = try stream.next() { use(j, sample) }
/// ```
public final class WorkerStream: @unchecked Sendable {
    public let plan: EpochPlan
    public let slice: RankSlice
    public let share: WorkerShare
    /// The rank-local indices this worker delivers.
    public let indices: [Int]
    public var report: StreamReport { cursor.report }
    private let cursor: BatchCursor

    /// `prefetch`: samples each thread reads ahead; a thread hands over `share.chunk` samples at a time (at least
    /// 16, at most `prefetch`).
    public init(loader: Loader, epoch: Int, resuming state: LoaderState?, share: WorkerShare, threads: Int,
                prefetch: Int) throws {
        try share.validate()
        guard threads >= 0 else { throw VLMError(.invalidArgument, "the thread count cannot be negative") }
        guard prefetch >= 1 else { throw VLMError(.invalidArgument, "prefetch must be at least 1 sample") }
        let (plan, consumed) = try Self.start(loader: loader, epoch: epoch, resuming: state)
        self.plan = plan
        self.share = share
        let options = loader.options
        let slice = RankSlice(epochLength: plan.count, consumed: consumed, topology: options.topology, unit: options.unit,
                              remainder: options.remainder)
        self.slice = slice
        var report = StreamReport()
        report.droppedGlobal = slice.dropped
        report.paddedGlobal = slice.padded
        let indices = share.indices(count: slice.count)
        self.indices = indices
        loader.announce(plan: plan, slice: slice, rankIndices: indices)
        let unit = loader.handOff(max(1, min(max(share.chunk, 16), prefetch)))
        let pipeline = BatchPipeline(indices: indices, unit: unit, threads: threads,
                                     capacity: max(1, prefetch / unit)) { [loader, plan, slice] batch, indices in
            loader.fill(batch, indices: indices, plan: plan, slice: slice)
        }
        cursor = BatchCursor(pipeline: pipeline, report: report, position: 0)
    }

    deinit { close() }

    /// The epoch's plan and the positions already consumed, as `Loader.samples(resuming:)` computes them.
    static func start(loader: Loader, epoch: Int, resuming state: LoaderState?) throws -> (EpochPlan, Int) {
        guard let state else { return (loader.plan(epoch: epoch), 0) }
        let plan = loader.plan(epoch: state.epoch)
        try state.check(fingerprint: plan.fingerprint, spec: loader.options.order)
        guard state.consumed >= 0 else { throw VLMError(.badInput, record: "resume state", "negative consumed count") }
        if state.consumed >= plan.count { return (loader.plan(epoch: state.epoch + 1), 0) }
        return (plan, state.consumed)
    }

    /// The next sample of this worker (copied out) and its rank-local index; nil at the end. Throws the first
    /// read error.
    public func next() throws -> (index: Int, sample: LoadedSample)? {
        guard let (batch, i) = try cursor.nextEntry() else { return nil }
        return (batch.entries[i].index, batch.sample(i))
    }

    /// The next sample in place: its batch and its entry there; nil at the end. The batch is reused once every
    /// reference to it is gone.
    public func nextEntry() throws -> (batch: SampleBatch, entry: Int)? { try cursor.nextEntry() }

    /// The next samples as one batch, in place; nil at the end (see `SampleStream.nextBatch()`).
    public func nextBatch() throws -> SampleBatch? { try cursor.nextBatch() }

    /// Where a restart continues once the rank has consumed its first `rankTaken` samples (see `SampleStream.state()`).
    public func state(rankTaken: Int) -> LoaderState {
        let consumed = slice.consumed + max(0, rankTaken) * slice.topology.worldSize
        if rankTaken >= slice.count || consumed >= plan.count {
            return LoaderState(epoch: plan.epoch + 1, consumed: 0, fingerprint: plan.fingerprint, spec: plan.spec)
        }
        return LoaderState(epoch: plan.epoch, consumed: consumed, fingerprint: plan.fingerprint, spec: plan.spec)
    }

    /// Stops the background threads; `next()` returns nil afterwards.
    public func close() { cursor.close() }
}
