import Foundation
import VLMCatalog
import VLMCore

/// What to do when a shard cannot be found (a file gone, an HTTP 404).
public enum MissingPolicy: String, Sendable, Codable, CaseIterable {
    /// Stop with an error naming the shard.
    case error
    /// Skip that shard's samples, counting them in the stream's report.
    case skip
}

/// What to do with a sample whose bytes are damaged: a member that no longer matches the XXH3 recorded when its
/// shard was written, a member that does not decode, or a shard cut short.
public enum CorruptPolicy: String, Sendable, Codable, CaseIterable {
    /// Stop with an error naming the shard, the member and its offset.
    case error
    /// Skip that sample, counting it and keeping the error in the stream's report.
    case skip
}

/// How a loader orders, splits and reads.
public struct LoaderOptions: Sendable {
    public var order: OrderSpec
    public var topology: Topology
    /// Background decode threads per rank; 0 decodes on the calling thread.
    public var workers: Int
    /// Samples each worker may decode ahead (the memory bound: about `workers × prefetch` samples).
    public var prefetch: Int
    /// Samples a worker reads into one buffer and hands over whole (at most `prefetch`; default: the batch size,
    /// at least 16).
    public var chunk: Int?
    /// Every rank gets a multiple of this many samples per epoch (the batch size).
    public var unit: Int
    public var remainder: RemainderPolicy
    /// Missing shards; `.skip` also skips the samples a truncated or emptied shard no longer holds.
    public var onMissing: MissingPolicy
    /// Damaged samples (checksum mismatch, undecodable member, truncated shard).
    public var onCorrupt: CorruptPolicy
    /// Check every member read against the XXH3 recorded at write time (on by default; one extra pass over the
    /// sample's bytes, see docs/integrity.md for its cost).
    public var verifyReads: Bool
    /// A mixture's epoch size for its `.weight` datasets (default: their total size).
    public var epochSize: Int?

    public init(order: OrderSpec = OrderSpec(), topology: Topology = Topology(), workers: Int = 2, prefetch: Int = 32,
                unit: Int = 1, remainder: RemainderPolicy = .pad, onMissing: MissingPolicy = .error, epochSize: Int? = nil,
                onCorrupt: CorruptPolicy = .error, verifyReads: Bool = true, chunk: Int? = nil) {
        self.chunk = chunk
        self.onCorrupt = onCorrupt
        self.verifyReads = verifyReads
        self.order = order
        self.topology = topology
        self.workers = workers
        self.prefetch = prefetch
        self.unit = unit
        self.remainder = remainder
        self.onMissing = onMissing
        self.epochSize = epochSize
    }
}

extension LoaderOptions {
    /// Samples per hand-off unit (`chunk`, else the batch size but at least 16), within the prefetch bound.
    var handOff: Int { max(1, min(chunk ?? max(unit, 16), prefetch)) }
}

/// One dataset a loader reads: its index, where its bytes come from, and its share of a mixture.
public struct LoaderDataset: Sendable {
    public var index: DatasetIndex
    public var source: any ShardSource
    public var policy: MixPolicy

    public init(index: DatasetIndex, source: any ShardSource, policy: MixPolicy = .repeat(1)) {
        self.index = index
        self.source = source
        self.policy = policy
    }
}

/// The streaming loader: a deterministic, resumable, rank-aware sample stream over training shards.
///
/// ```swift
/// let loader = try Loader(workspace: "./vlmdata-work",
///                         options: LoaderOptions(order: OrderSpec(seed: 42), topology: try .fromEnvironment(env)))
/// let stream = try loader.samples(epoch: 0)          // or loader.samples(resuming: savedState)
/// while let sample = try stream.next() { train(sample) }
/// try stream.state().save(to: "loader-state.json")
/// ```
public final class Loader: Sendable {
    public let datasets: [LoaderDataset]
    public let options: LoaderOptions
    private let components: [PlanComponent]

    public init(datasets: [LoaderDataset], options: LoaderOptions) throws {
        guard !datasets.isEmpty else { throw VLMError(.invalidArgument, "a loader needs at least one dataset") }
        try options.order.validate()
        try options.topology.validate()
        guard options.workers >= 0 else { throw VLMError(.invalidArgument, "the worker count cannot be negative") }
        guard options.prefetch >= 1 else { throw VLMError(.invalidArgument, "prefetch must be at least 1 sample") }
        if let chunk = options.chunk, chunk < 1 { throw VLMError(.invalidArgument, "the chunk must be at least 1 sample") }
        guard options.unit >= 1 else { throw VLMError(.invalidArgument, "the batch size must be at least 1") }
        self.datasets = datasets
        self.options = options
        components = datasets.map { PlanComponent(index: $0.index, policy: $0.policy) }
    }

    /// A loader over a workspace's training shards, read from its `shards/` folder.
    public convenience init(workspace: String, options: LoaderOptions) throws {
        let catalog = try Catalog(workspace: Workspace(root: workspace))
        let index = try DatasetIndex.load(catalog: catalog)
        try self.init(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: catalog.workspace.root))],
                      options: options)
    }

    /// The dataset (or mixture) fingerprint the resume state is checked against.
    public var fingerprint: String { plan(epoch: 0).fingerprint }

    /// The global order of an epoch (every rank computes the same).
    public func plan(epoch: Int) -> EpochPlan {
        EpochPlan(components: components, epoch: epoch, spec: options.order, epochSize: options.epochSize)
    }

    /// This rank's stream from the start of `epoch`.
    public func samples(epoch: Int) throws -> SampleStream {
        let plan = plan(epoch: epoch)
        return SampleStream(loader: self, plan: plan, consumed: 0)
    }

    /// This rank's stream continuing exactly where `state` stopped (any world size or worker count).
    public func samples(resuming state: LoaderState) throws -> SampleStream {
        let plan = plan(epoch: state.epoch)
        try state.check(fingerprint: plan.fingerprint, spec: options.order)
        guard state.consumed >= 0 else { throw VLMError(.badInput, record: "resume state", "negative consumed count") }
        if state.consumed >= plan.count {
            return SampleStream(loader: self, plan: self.plan(epoch: state.epoch + 1), consumed: 0)
        }
        return SampleStream(loader: self, plan: plan, consumed: state.consumed)
    }

    /// This rank's stream from `state` when given, else from the start of `epoch`.
    public func samples(epoch: Int, resuming state: LoaderState?) throws -> SampleStream {
        if let state { return try samples(resuming: state) }
        return try samples(epoch: epoch)
    }

    /// Samples per hand-off unit: `preferred` for local shards; one for a cache of remote shards, whose plan-aware
    /// eviction counts on the threads advancing position by position (with 16-sample units and four threads, a
    /// cache of two shards fetched a shard twice in an epoch; the download dominates there, not the hand-off).
    func handOff(_ preferred: Int) -> Int {
        datasets.contains(where: { $0.source.wantsPlan }) ? 1 : preferred
    }

    /// Hands each remote source the shard names this process reads, in order (`rankIndices` of `slice`).
    func announce(plan: EpochPlan, slice: RankSlice, rankIndices: some Sequence<Int>) {
        guard datasets.contains(where: { $0.source.wantsPlan }) else { return }
        var reads = [[(position: Int, shard: String)]](repeating: [], count: datasets.count)
        for j in rankIndices {
            let ref = plan.refs[slice.globalPosition(j).0]
            reads[Int(ref.dataset)].append((j, shardName(ref)))
        }
        for (d, names) in reads.enumerated() { datasets[d].source.plan(names) }
    }

    func shardName(_ ref: SampleRef) -> String {
        let dataset = datasets[Int(ref.dataset)]
        return dataset.index.shards[dataset.index.samples[Int(ref.sample)].shard].name
    }
}

/// Counts a stream reports: what was padded, dropped or skipped.
public struct StreamReport: Sendable, Codable, Equatable {
    public var delivered = 0
    /// Padding samples this rank delivered (repeats, `RemainderPolicy.pad`).
    public var padded = 0
    /// Samples of the epoch no rank gets (`RemainderPolicy.dropLast`), and padded positions over all ranks.
    public var droppedGlobal = 0
    public var paddedGlobal = 0
    /// Samples skipped because their shard was missing (`MissingPolicy.skip`) or they were damaged (see
    /// `corrupt`), and the missing shards.
    public var skipped = 0
    public var missingShards: [String] = []
    /// Of the skipped samples, those whose bytes were damaged (`CorruptPolicy.skip`, or a truncated shard under
    /// `MissingPolicy.skip`), with the first 100 errors (shard, member, offset).
    public var corrupt = 0
    public var corruptErrors: [String] = []
}

/// One rank's samples for the rest of an epoch, read ahead on background threads a batch at a time (each batch
/// one buffer, handed over whole), delivered in order.
///
/// Not thread-safe: one consumer calls `next()` (a sample, copied out) or `nextBatch()` (the next samples in
/// place, no copy). `state()` is where a restart would continue after the samples delivered so far. Call
/// `close()` (or let it deinit) to stop the workers early.
public final class SampleStream: @unchecked Sendable {
    public let plan: EpochPlan
    public let slice: RankSlice
    public var report: StreamReport { cursor.report }
    private let startConsumed: Int
    private let cursor: BatchCursor

    init(loader: Loader, plan: EpochPlan, consumed: Int) {
        self.plan = plan
        startConsumed = consumed
        let options = loader.options
        let slice = RankSlice(epochLength: plan.count, consumed: consumed, topology: options.topology, unit: options.unit,
                              remainder: options.remainder)
        self.slice = slice
        var report = StreamReport()
        report.droppedGlobal = slice.dropped
        report.paddedGlobal = slice.padded
        loader.announce(plan: plan, slice: slice, rankIndices: 0..<slice.count)
        let unit = loader.handOff(options.handOff)
        let pipeline = BatchPipeline(indices: Array(0..<slice.count), unit: unit, threads: options.workers,
                                     capacity: max(1, options.prefetch / unit)) { [loader, plan, slice] batch, indices in
            loader.fill(batch, indices: indices, plan: plan, slice: slice)
        }
        cursor = BatchCursor(pipeline: pipeline, report: report, position: 0)
    }

    deinit { close() }

    /// Samples this rank takes in the rest of the epoch (skipped ones included).
    public var count: Int { slice.count }

    /// The next sample, nil at the end of the epoch's share. Throws the first read or decode error.
    public func next() throws -> LoadedSample? {
        guard let (batch, i) = try cursor.nextEntry() else { return nil }
        return batch.sample(i)
    }

    /// The next samples as one batch, read in place (the loader reuses its buffer once you let go of it); nil at
    /// the end. Do not call it while samples of a batch started with `next()` remain.
    public func nextBatch() throws -> SampleBatch? { try cursor.nextBatch() }

    /// Where a restart continues: the epoch and the global positions consumed once every rank has taken as many
    /// samples as this one (ranks advance in lockstep). At the end of the epoch: the next epoch, 0 consumed.
    public func state() -> LoaderState {
        let taken = cursor.position
        let consumed = startConsumed + taken * slice.topology.worldSize
        if taken >= slice.count || consumed >= plan.count {
            return LoaderState(epoch: plan.epoch + 1, consumed: 0, fingerprint: plan.fingerprint, spec: plan.spec)
        }
        return LoaderState(epoch: plan.epoch, consumed: consumed, fingerprint: plan.fingerprint, spec: plan.spec)
    }

    /// Stops the background workers; `next()` returns nil afterwards.
    public func close() { cursor.close() }
}
