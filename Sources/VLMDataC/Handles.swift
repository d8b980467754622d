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
    private(set) var pending: [(index: Int, sample: LoadedSample)] = []
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
            if !readyRows.isEmpty { pending = readyRows.removeFirst() }
        } else {
            if let error = deferredError {
                deferredError = nil
                throw error
            }
            do {
                while pending.count < maxSamples, let item = try stream.next() {
                    pending.append(item)
                    rankTaken = item.index + 1
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
