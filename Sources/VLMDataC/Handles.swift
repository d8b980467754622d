import Foundation
import VLMCore
import VLMLoader

/// What a `vlmdata_loader *` points to.
final class LoaderHandle {
    let loader: Loader

    init(loader: Loader) {
        self.loader = loader
    }

    /// The stream a (epoch, resume state, worker share) describes.
    func stream(epoch: Int, resume: LoaderState?, share: WorkerShare, threads: Int, prefetch: Int) throws -> WorkerStream {
        try WorkerStream(loader: loader, epoch: epoch, resuming: resume, share: share, threads: threads, prefetch: prefetch)
    }
}

/// What a `vlmdata_stream *` points to: one worker's share of a rank's stream, read a batch (or a packed row) at a
/// time; the samples of the last `next` wait here until the caller copies them out.
final class StreamHandle {
    let stream: WorkerStream
    private var packer: Packer?
    private var readyRows: [[(index: Int, sample: LoadedSample)]] = []
    private var exhausted = false
    /// Rank-local samples consumed once the pending batch is delivered (handed to the packer, when packing).
    private var rankTaken = 0
    private(set) var pending: [PendingSample] = []
    private(set) var pendingTaken = 0
    private var deferredError: (any Error)?

    init(stream: WorkerStream, packContext: Int, packRows: Int) {
        self.stream = stream
        if packContext > 0 { packer = Packer(context: packContext, openRows: packRows) }
    }

    /// Overlong samples the packer dropped so far.
    var overlong: Int { packer?.overlong.count ?? 0 }

    /// Reads the next `maxSamples` samples, or with packing the next packed row (whole samples), into `pending`.
    func next(maxSamples: Int) throws {
        pending = []
        if packer != nil {
            while readyRows.isEmpty && !exhausted {
                guard let item = try stream.next() else {
                    exhausted = true
                    readyRows += rowsWithIndices(packer!.flush())
                    break
                }
                indexOfKey[item.sample.key, default: []].append(item.index)
                rankTaken = item.index + 1
                let dropped = packer!.overlong.count
                let closed = packer!.add(item.sample)
                if packer!.overlong.count > dropped { forget(item.sample.key) }
                readyRows += rowsWithIndices(closed)
            }
            if !readyRows.isEmpty { pending = readyRows.removeFirst().map { .loaded(index: $0.index, sample: $0.sample) } }
        } else {
            if let error = deferredError {
                deferredError = nil
                throw error
            }
            do {
                // in place: the samples stay in the loader's batch buffers until they are copied out
                while pending.count < maxSamples, let (batch, entry) = try stream.nextEntry() {
                    pending.append(.inPlace(batch: batch, entry: entry))
                    rankTaken = batch.entries[entry].index + 1
                }
            } catch {
                // the samples read before the error are delivered first; the next call reports it
                guard !pending.isEmpty else { throw error }
                deferredError = error
            }
        }
        pendingTaken = rankTaken
    }

    /// The packer holds samples, not their indices: keys in flight map back to their rank-local indices (a padding
    /// repeat can share a key with an earlier sample, hence a list in arrival order).
    private var indexOfKey: [String: [Int]] = [:]

    private func rowsWithIndices(_ rows: [[LoadedSample]]) -> [[(index: Int, sample: LoadedSample)]] {
        rows.map { row in
            row.map { sample in (forget(sample.key), sample) }
        }
    }

    @discardableResult
    private func forget(_ key: String) -> Int {
        let index = indexOfKey[key]!.removeFirst()
        if indexOfKey[key]!.isEmpty { indexOfKey[key] = nil }
        return index
    }
}

/// The fields of one pending sample, as buffers to copy from.
struct SampleFields {
    var index: Int
    var key: String
    var dataset: Int
    var isPad: Bool
    var imageTokens: Int
    var pixelShape: [Int]
    var inputIds: UnsafeBufferPointer<Int32>
    var labels: UnsafeBufferPointer<Int32>
    var pixels: UnsafeBufferPointer<UInt8>
    var meta: UnsafeBufferPointer<UInt8>
}

/// A sample waiting to be copied out: decoded (a packed row's) or in place in the loader's batch buffer.
enum PendingSample {
    case loaded(index: Int, sample: LoadedSample)
    case inPlace(batch: SampleBatch, entry: Int)

    var tokens: Int {
        switch self {
        case .loaded(_, let s): return s.inputIds.count
        case .inPlace(let b, let e): return b.entries[e].tokenCount
        }
    }

    var pixelBytes: Int {
        switch self {
        case .loaded(_, let s): return s.pixels.count
        case .inPlace(let b, let e): return b.entries[e].pixelCount
        }
    }

    var metaBytes: Int {
        switch self {
        case .loaded(_, let s): return s.meta.count
        case .inPlace(let b, let e): return b.entries[e].metaCount
        }
    }

    var key: String {
        switch self {
        case .loaded(_, let s): return s.key
        case .inPlace(let b, let e): return b.entries[e].key
        }
    }

    func withFields<R>(_ body: (SampleFields) throws -> R) rethrows -> R {
        switch self {
        case .loaded(let index, let s):
            return try s.inputIds.withUnsafeBufferPointer { ids in
                try s.labels.withUnsafeBufferPointer { labels in
                    try s.pixels.withUnsafeBufferPointer { pixels in
                        try s.meta.withUnsafeBufferPointer { meta in
                            try body(SampleFields(index: index, key: s.key, dataset: s.dataset, isPad: s.isPad,
                                                  imageTokens: s.imageTokens, pixelShape: s.pixelShape, inputIds: ids,
                                                  labels: labels, pixels: pixels, meta: meta))
                        }
                    }
                }
            }
        case .inPlace(let b, let i):
            let e = b.entries[i]
            return try body(SampleFields(index: e.index, key: e.key, dataset: e.dataset, isPad: e.isPad,
                                         imageTokens: e.imageTokens, pixelShape: e.pixelShape, inputIds: b.inputIds(i),
                                         labels: b.labels(i), pixels: b.pixels(i), meta: b.meta(i)))
        }
    }
}
