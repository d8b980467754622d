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

/// One worker's share of a rank's stream (`WorkerShare`), decoded ahead on `threads` background threads and
/// delivered in rank order, each sample with its rank-local index.
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
    public private(set) var report = StreamReport()
    private let loader: Loader
    private var taken = 0
    private var queues: [BoundedQueue<SampleStream.Item>] = []
    private var failed = false

    public init(loader: Loader, epoch: Int, resuming state: LoaderState?, share: WorkerShare, threads: Int,
                prefetch: Int) throws {
        try share.validate()
        guard threads >= 0 else { throw VLMError(.invalidArgument, "the thread count cannot be negative") }
        guard prefetch >= 1 else { throw VLMError(.invalidArgument, "prefetch must be at least 1 sample") }
        let (plan, consumed) = try Self.start(loader: loader, epoch: epoch, resuming: state)
        self.loader = loader
        self.plan = plan
        self.share = share
        let options = loader.options
        slice = RankSlice(epochLength: plan.count, consumed: consumed, topology: options.topology, unit: options.unit,
                          remainder: options.remainder)
        report.droppedGlobal = slice.dropped
        report.paddedGlobal = slice.padded
        indices = share.indices(count: slice.count)
        loader.announce(plan: plan, slice: slice, rankIndices: indices)
        guard threads > 0 else { return }
        let slice = self.slice, indices = self.indices
        for t in 0..<threads {
            let queue = BoundedQueue<SampleStream.Item>(capacity: prefetch)
            queues.append(queue)
            let thread = Thread { [loader, plan, slice, indices] in
                for i in stride(from: t, to: indices.count, by: threads) {
                    if queue.isClosed { return }
                    let item = SampleStream.produce(indices[i], loader: loader, plan: plan, slice: slice)
                    if !queue.push(item) { return }
                    if case .failed = item { break }
                }
                queue.close()
            }
            thread.name = "vlmdata-worker-\(share.worker)-\(t)"
            thread.start()
        }
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

    /// The next sample of this worker and its rank-local index; nil at the end. Throws the first read error.
    public func next() throws -> (index: Int, sample: LoadedSample)? {
        while true {
            guard !failed, taken < indices.count else { return nil }
            let i = taken
            let item: SampleStream.Item
            if queues.isEmpty {
                item = SampleStream.produce(indices[i], loader: loader, plan: plan, slice: slice)
            } else {
                guard let popped = queues[i % queues.count].pop() else {
                    failed = true
                    throw VLMError(.io, "loader thread \(i % queues.count) stopped early")
                }
                item = popped
            }
            taken += 1
            let sample: LoadedSample?
            do { sample = try report.account(item) } catch {
                failed = true
                close()
                throw error
            }
            if let sample { return (indices[i], sample) }
        }
    }

    /// Where a restart continues once the rank has consumed its first `rankTaken` samples (see `SampleStream.state()`).
    public func state(rankTaken: Int) -> LoaderState {
        let consumed = slice.consumed + max(0, rankTaken) * slice.topology.worldSize
        if rankTaken >= slice.count || consumed >= plan.count {
            return LoaderState(epoch: plan.epoch + 1, consumed: 0, fingerprint: plan.fingerprint, spec: plan.spec)
        }
        return LoaderState(epoch: plan.epoch, consumed: consumed, fingerprint: plan.fingerprint, spec: plan.spec)
    }

    /// Stops the background threads; `next()` returns nil afterwards.
    public func close() {
        for queue in queues { queue.close() }
    }
}
