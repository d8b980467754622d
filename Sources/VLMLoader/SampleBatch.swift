import Foundation
import VLMCore

/// Samples of one rank's stream read into one contiguous buffer: the unit a loader thread hands over, whole.
///
/// A worker thread reads each sample's bytes from its shard straight into the buffer (one `pread`), checks every
/// member against its recorded XXH3, and records where the members' data lie; nothing is copied out. The consumer
/// reads the members in place (`inputIds(_:)`, `pixels(_:)`, ...) and does no per-sample hand-off. The loader
/// reuses the buffer once the consumer has dropped its last reference to the batch.
///
/// ```swift
/// let stream = try loader.samples(epoch: 0)
/// while let batch = try stream.nextBatch() {
///     for i in 0..<batch.count { train(batch.inputIds(i), batch.pixels(i), batch.entries[i].pixelShape) }
/// }
/// ```
public final class SampleBatch: @unchecked Sendable {
    /// One sample of the batch; its members are byte ranges of the batch's buffer.
    public struct Entry: Sendable {
        /// The sample's rank-local index (its place in this rank's stream).
        public var index: Int
        public var key: String
        /// Which dataset of a mixture (0 for a single dataset).
        public var dataset: Int
        /// True for a sample repeated to pad the end of an epoch.
        public var isPad: Bool
        /// Positions the image takes in the model (0 if text-only).
        public var imageTokens: Int
        /// `[tiles, patches, patch*patch*3]` of the uint8 pixels; empty for a text-only sample.
        public var pixelShape: [Int]
        var ids: Range<Int>
        var labels: Range<Int>
        var pixels: Range<Int>
        var meta: Range<Int>

        /// Text tokens (input ids, and as many labels).
        public var tokenCount: Int { ids.count / 4 }
        public var pixelCount: Int { pixels.count }
        public var metaCount: Int { meta.count }
    }

    /// The samples read, in stream order.
    public private(set) var entries: [Entry] = []
    /// The rank-local indices this batch covers, skipped samples included.
    public private(set) var indices: ArraySlice<Int> = []
    /// Shards of samples skipped because the shard was missing (`MissingPolicy.skip`), one per sample.
    private(set) var skipped: [String] = []
    /// Samples skipped as damaged (`CorruptPolicy.skip`), one error each.
    private(set) var damaged: [VLMError] = []
    /// The error that stops the stream, after this batch's entries, and the rank-local index it happened at.
    private(set) var failure: (error: any Error, index: Int)?

    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private var used = 0

    init(capacity: Int = 1 << 20) {
        self.capacity = max(4096, capacity)
        storage = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 64)
    }

    deinit { storage.deallocate() }

    public var count: Int { entries.count }

    /// Bytes of the buffer in use.
    public var byteCount: Int { used }

    /// The input ids of sample `i` (int32; LLaVA's `-200` where the image goes), in place.
    public func inputIds(_ i: Int) -> UnsafeBufferPointer<Int32> { view(entries[i].ids, as: Int32.self) }

    /// The labels of sample `i` (int32; `-100` where not supervised), in place.
    public func labels(_ i: Int) -> UnsafeBufferPointer<Int32> { view(entries[i].labels, as: Int32.self) }

    /// The uint8 patches of sample `i` (`entries[i].pixelShape`), in place; empty for a text-only sample.
    public func pixels(_ i: Int) -> UnsafeBufferPointer<UInt8> { view(entries[i].pixels, as: UInt8.self) }

    /// The raw `KEY.json` member of sample `i`, in place.
    public func meta(_ i: Int) -> UnsafeBufferPointer<UInt8> { view(entries[i].meta, as: UInt8.self) }

    /// Sample `i` as a `LoadedSample` (its members copied out).
    public func sample(_ i: Int) -> LoadedSample {
        let e = entries[i]
        return LoadedSample(key: e.key, dataset: e.dataset, isPad: e.isPad, inputIds: Array(inputIds(i)),
                            labels: Array(labels(i)), pixels: Array(pixels(i)), pixelShape: e.pixelShape,
                            imageTokens: e.imageTokens, meta: Array(meta(i)))
    }

    private func view<T>(_ range: Range<Int>, as: T.Type) -> UnsafeBufferPointer<T> {
        guard !range.isEmpty else { return UnsafeBufferPointer(start: nil, count: 0) }
        // every range is aligned for its type (see `align`)
        return UnsafeBufferPointer(start: (storage + range.lowerBound).assumingMemoryBound(to: T.self),
                                   count: range.count / MemoryLayout<T>.stride)
    }

    /// Empties the batch for the samples at `indices`, keeping its buffer.
    func reset(_ indices: ArraySlice<Int>) {
        entries.removeAll(keepingCapacity: true)
        skipped.removeAll(keepingCapacity: true)
        damaged.removeAll(keepingCapacity: true)
        failure = nil
        used = 0
        self.indices = indices
    }

    /// Room for `bytes` more at a 64-byte boundary; returns where they go. Growing keeps what is there (entries
    /// hold offsets, not pointers).
    private func reserve(_ bytes: Int) -> Int {
        let start = (used + 63) & ~63
        if start + bytes > capacity {
            let grown = max(start + bytes, capacity * 2)
            let larger = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 64)
            larger.copyMemory(from: storage, byteCount: used)
            storage.deallocate()
            storage = larger
            capacity = grown
        }
        used = start + bytes
        return start
    }

    /// A member's data range (relative to a sample at `base`), moved to an aligned place of its own when its
    /// offset in the shard does not suit `T` (npy data is normally 64-byte aligned inside 512-byte tar blocks).
    private func align<T>(_ range: Range<Int>, base: Int, as: T.Type) -> Range<Int> {
        let absolute = range.lowerBound + base ..< range.upperBound + base
        guard absolute.lowerBound % MemoryLayout<T>.alignment != 0 else { return absolute }
        let start = reserve(range.count)
        (storage + start).copyMemory(from: storage + absolute.lowerBound, byteCount: range.count)
        return start ..< start + range.count
    }

    /// Reads one sample into the buffer (checked with `verify`) and records it. Throws as
    /// `SampleDecoder.read` does; the buffer is left as it was then.
    func append(_ info: SampleInfo, shard: ShardInfo, source: ShardSource, dataset: Int, isPad: Bool, index: Int,
                verify: Bool) throws {
        let mark = used
        do {
            let base = reserve(info.size)
            let raw = UnsafeMutableRawBufferPointer(start: storage + base, count: info.size)
            try SampleDecoder.fetch(info, shard: shard, source: source, verify: verify, into: raw)
            let layout = try SampleDecoder.damage { try SampleDecoder.layout(UnsafeRawBufferPointer(raw), info: info, shard: shard) }
            let ids = align(layout.ids, base: base, as: Int32.self)
            let labels: Range<Int>
            if let stored = layout.labels {
                labels = align(stored, base: base, as: Int32.self)
            } else {  // none stored: every position unsupervised
                let start = reserve(ids.count)
                (storage + start).initializeMemory(as: Int32.self, repeating: ignoreIndex, count: ids.count / 4)
                labels = start ..< start + ids.count
            }
            entries.append(Entry(index: index, key: info.key, dataset: dataset, isPad: isPad,
                                 imageTokens: info.imageTokens, pixelShape: layout.pixelShape, ids: ids, labels: labels,
                                 pixels: layout.pixels.isEmpty ? 0..<0 : layout.pixels.lowerBound + base ..< layout.pixels.upperBound + base,
                                 meta: layout.meta.isEmpty ? 0..<0 : layout.meta.lowerBound + base ..< layout.meta.upperBound + base))
        } catch {
            used = mark
            throw error
        }
    }

    func skip(shard: String) { skipped.append(shard) }
    func damage(_ error: VLMError) { damaged.append(error) }
    func fail(_ error: any Error, at index: Int) { failure = (error, index) }
}

extension Loader {
    /// Reads the samples at the rank-local `indices` of (`plan`, `slice`) into `batch`, applying the missing and
    /// corrupt policies; stops at the first error it must report (`SampleBatch.failure`).
    func fill(_ batch: SampleBatch, indices: ArraySlice<Int>, plan: EpochPlan, slice: RankSlice) {
        batch.reset(indices)
        for j in indices {
            let (position, isPad) = slice.globalPosition(j)
            let ref = plan.refs[position]
            let dataset = datasets[Int(ref.dataset)]
            let info = dataset.index.samples[Int(ref.sample)]
            ShardReadHint.position = j
            defer { ShardReadHint.position = nil }
            do {
                try batch.append(info, shard: dataset.index.shards[info.shard], source: dataset.source,
                                 dataset: Int(ref.dataset), isPad: isPad, index: j, verify: options.verifyReads)
            } catch let error as VLMError where error.kind == .notFound && options.onMissing == .skip {
                batch.skip(shard: shardName(ref))
            } catch let damage as DamagedSample {
                if options.onCorrupt == .skip || (damage.truncated && options.onMissing == .skip) {
                    batch.damage(damage.error)
                } else {
                    batch.fail(damage.error, at: j)
                    return
                }
            } catch {
                batch.fail(error, at: j)
                return
            }
        }
    }
}

extension StreamReport {
    /// Counts a batch's skipped and damaged samples (its delivered ones are counted as they are handed on).
    mutating func accountSkips(_ batch: SampleBatch) {
        for shard in batch.skipped {
            skipped += 1
            if !missingShards.contains(shard) { missingShards.append(shard) }
        }
        for error in batch.damaged {
            skipped += 1
            corrupt += 1
            if corruptErrors.count < 100 { corruptErrors.append("\(error)") }
        }
    }

    mutating func accountDelivered(_ entry: SampleBatch.Entry) {
        delivered += 1
        if entry.isPad { padded += 1 }
    }
}

/// Reads a rank's samples (`indices`, in delivery order) in units of `unit` consecutive samples on `threads`
/// background threads (unit u on thread u mod threads), each unit into one `SampleBatch` handed over whole; with
/// no threads, the consumer reads each unit itself. Batches are reused once the consumer has let go of them, so
/// a steady stream allocates nothing. Memory: about `threads × (capacity + 2)` batches.
final class BatchPipeline: @unchecked Sendable {
    let indices: [Int]
    let unit: Int
    private let full: [BoundedQueue<SampleBatch>]
    private let free: [BoundedQueue<SampleBatch>]
    private let read: @Sendable (SampleBatch, ArraySlice<Int>) -> Void
    private var nextUnit = 0
    /// Batches handed to the consumer, with the thread that made them: reused once only the pipeline holds them.
    private var handedOut: [(batch: SampleBatch, thread: Int)] = []

    var unitCount: Int { (indices.count + unit - 1) / unit }

    init(indices: [Int], unit: Int, threads: Int, capacity: Int,
         read: @escaping @Sendable (SampleBatch, ArraySlice<Int>) -> Void) {
        self.indices = indices
        self.unit = max(1, unit)
        self.read = read
        full = (0..<threads).map { _ in BoundedQueue<SampleBatch>(capacity: max(1, capacity)) }
        free = (0..<max(1, threads)).map { _ in BoundedQueue<SampleBatch>(capacity: max(1, capacity) + 2) }
        for t in 0..<threads {
            let queue = full[t], spare = free[t], units = unitCount, unit = self.unit
            let thread = Thread { [indices] in
                for u in stride(from: t, to: units, by: threads) {
                    if queue.isClosed { return }
                    let batch = spare.tryPop() ?? SampleBatch()
                    read(batch, indices[u * unit ..< min((u + 1) * unit, indices.count)])
                    if !queue.push(batch) { return }
                    if batch.failure != nil { break }
                }
                queue.close()
            }
            thread.name = "vlmdata-loader-\(t)"
            thread.start()
        }
    }

    deinit { close() }

    /// The next unit's batch, nil at the end. Throws when a thread stopped early.
    func next() throws -> SampleBatch? {
        recycle()
        guard nextUnit < unitCount else { return nil }
        let u = nextUnit
        let batch: SampleBatch
        let thread: Int
        if full.isEmpty {
            thread = 0
            batch = free[0].tryPop() ?? SampleBatch()
            read(batch, indices[u * unit ..< min((u + 1) * unit, indices.count)])
        } else {
            thread = u % full.count
            guard let popped = full[thread].pop() else {
                throw VLMError(.io, "loader thread \(thread) stopped early")
            }
            batch = popped
        }
        nextUnit += 1
        handedOut.append((batch, thread))
        return batch
    }

    /// Hands batches the consumer no longer holds back to their threads.
    private func recycle() {
        var i = 0
        while i < handedOut.count {
            if isKnownUniquelyReferenced(&handedOut[i].batch) {
                let (batch, thread) = handedOut.remove(at: i)
                free[thread].tryPush(batch)
            } else {
                i += 1
            }
        }
    }

    func close() {
        for queue in full { queue.close() }
    }
}

/// Hands on a pipeline's batches whole (`nextBatch`) or sample by sample (`nextEntry`), counting the stream's
/// report, and tracks how far the rank's stream has been consumed.
final class BatchCursor {
    let pipeline: BatchPipeline
    private(set) var report: StreamReport
    private var current: SampleBatch?
    private var cursor = 0
    private var failed = false
    /// One past the rank-local index of the last sample handed on or skipped past.
    private(set) var position: Int

    init(pipeline: BatchPipeline, report: StreamReport, position: Int) {
        self.pipeline = pipeline
        self.report = report
        self.position = position
    }

    /// The next sample as (its batch, its entry), nil at the end. Throws the first read error, after the samples
    /// read before it.
    func nextEntry() throws -> (batch: SampleBatch, entry: Int)? {
        while true {
            if let batch = current, cursor < batch.count {
                let i = cursor
                cursor += 1
                report.accountDelivered(batch.entries[i])
                position = batch.entries[i].index + 1
                return (batch, i)
            }
            if let batch = current {
                current = nil
                try finish(batch)
            }
            guard let batch = try take() else { return nil }
            current = batch
            cursor = 0
        }
    }

    /// The next batch whole (at least one sample), nil at the end. Throws the first read error, after the batch
    /// holding the samples read before it. Throws if `nextEntry` left samples of the current batch.
    func nextBatch() throws -> SampleBatch? {
        if let batch = current {
            guard cursor >= batch.count else {
                throw VLMError(.invalidArgument, "nextBatch() called while samples of the current batch are still to be taken")
            }
            current = nil
            try finish(batch)
        }
        while let batch = try take() {
            guard let last = batch.entries.last else {
                try finish(batch)
                continue
            }
            for entry in batch.entries { report.accountDelivered(entry) }
            position = last.index + 1
            current = batch
            cursor = batch.count
            return batch
        }
        return nil
    }

    private func take() throws -> SampleBatch? {
        guard !failed else { return nil }
        do {
            guard let batch = try pipeline.next() else { return nil }
            report.accountSkips(batch)
            return batch
        } catch {
            failed = true
            throw error
        }
    }

    /// After the last sample of `batch`: throws its failure, else moves past the samples it skipped.
    private func finish(_ batch: SampleBatch) throws {
        if let failure = batch.failure {
            failed = true
            position = failure.index
            pipeline.close()
            throw failure.error
        }
        if let last = batch.indices.last { position = last + 1 }
    }

    func close() { pipeline.close() }
}
