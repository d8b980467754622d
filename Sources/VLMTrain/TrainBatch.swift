import VLMCore

/// One training batch as the loader hands it over (LLaVA's conventions), before the image tokens are expanded.
///
/// - `inputIDs`, `labels`, `attentionMask`: `[batchSize, seqLen]`, right-padded. `-200` in `inputIDs` marks where the
///   image goes; `-100` in `labels` marks a token that is not supervised. Labels are aligned with the inputs (as in
///   LLaVA's `preprocess`); the model shifts them for next-token prediction.
/// - `pixels`: uint8 `[batchSize, tiles, patches, patchDim]`, unnormalized, as the pixel shards store them; the model
///   normalizes them with its configured mean and standard deviation.
public struct TrainBatch: Sendable, Equatable {
    public static let imageTokenID: Int32 = -200
    public static let ignoreIndex: Int32 = -100

    public var batchSize: Int
    public var seqLen: Int
    public var inputIDs: [Int32]
    public var labels: [Int32]
    public var attentionMask: [UInt8]
    public var pixels: [UInt8]
    public var tiles: Int
    public var patches: Int
    public var patchDim: Int

    public init(
        batchSize: Int, seqLen: Int, inputIDs: [Int32], labels: [Int32], attentionMask: [UInt8]? = nil,
        pixels: [UInt8], tiles: Int = 1, patches: Int, patchDim: Int
    ) {
        self.batchSize = batchSize
        self.seqLen = seqLen
        self.inputIDs = inputIDs
        self.labels = labels
        self.attentionMask = attentionMask ?? inputIDs.map { _ in 1 }
        self.pixels = pixels
        self.tiles = tiles
        self.patches = patches
        self.patchDim = patchDim
    }

    /// Builds a right-padded batch from per-sample sequences (padding: token 0, label -100, mask 0).
    public init(
        sequences: [(inputIDs: [Int32], labels: [Int32])], pixels: [UInt8], patches: Int, patchDim: Int
    ) {
        let len = sequences.map(\.inputIDs.count).max() ?? 0
        var ids = [Int32](repeating: 0, count: sequences.count * len)
        var labs = [Int32](repeating: TrainBatch.ignoreIndex, count: sequences.count * len)
        var mask = [UInt8](repeating: 0, count: sequences.count * len)
        for (b, s) in sequences.enumerated() {
            for (i, id) in s.inputIDs.enumerated() {
                ids[b * len + i] = id
                labs[b * len + i] = s.labels[i]
                mask[b * len + i] = 1
            }
        }
        self.init(batchSize: sequences.count, seqLen: len, inputIDs: ids, labels: labs, attentionMask: mask,
                  pixels: pixels, tiles: 1, patches: patches, patchDim: patchDim)
    }
}

/// A batch laid out for the decoder: the image placeholder replaced by one position per patch, labels shifted.
///
/// Position `t` of sample `b` holds either a token (`tokens[b·T + t] ≥ 0`) or projected patch
/// `imageSlots[b·T + t] = b·patches + p`; `targets[b·T + t]` is the label of position `t + 1` (-100 when not supervised).
public struct ExpandedBatch: Sendable, Equatable {
    public var batchSize: Int
    /// The expanded, padded sequence length.
    public var seqLen: Int
    public var tokens: [Int32]
    public var imageSlots: [Int32]
    public var targets: [Int32]
    /// The number of real (unpadded) positions of each sample.
    public var lengths: [Int]
    /// Unnormalized pixels `[batchSize, patches, patchDim]`.
    public var pixels: [UInt8]
    public var patches: Int
    public var patchDim: Int

    /// Expands `batch`: each `-200` becomes `patches` positions taking the projected patches in order, labelled -100.
    ///
    /// Throws when a sample has more than one image placeholder, an id outside `0..<vocabSize`, padding that is not on
    /// the right, pixels of the wrong shape, or an expanded length above `maxSeqLen`.
    public init(_ batch: TrainBatch, vocabSize: Int, maxSeqLen: Int, patches: Int, patchDim: Int) throws {
        let B = batch.batchSize, L = batch.seqLen
        guard batch.inputIDs.count == B * L, batch.labels.count == B * L, batch.attentionMask.count == B * L else {
            throw VLMError(.invalidArgument, "batch arrays do not match [\(B), \(L)]")
        }
        guard batch.tiles == 1 else {
            throw VLMError(.unsupported, "RefVLM takes one image tile per sample, the batch has \(batch.tiles)")
        }
        guard batch.patches == patches, batch.patchDim == patchDim else {
            throw VLMError(.invalidArgument,
                           "pixels are [\(batch.patches), \(batch.patchDim)] per image, the model expects [\(patches), \(patchDim)]")
        }
        guard batch.pixels.count == B * patches * patchDim else {
            throw VLMError(.invalidArgument, "pixels hold \(batch.pixels.count) values, expected \(B * patches * patchDim)")
        }
        var rows: [[(token: Int32, slot: Int32, label: Int32)]] = []
        rows.reserveCapacity(B)
        for b in 0..<B {
            var row: [(token: Int32, slot: Int32, label: Int32)] = []
            var images = 0
            var ended = false
            for i in 0..<L {
                let k = b * L + i
                if batch.attentionMask[k] == 0 { ended = true; continue }
                if ended {
                    throw VLMError(.invalidArgument, file: nil, record: "sample \(b)", "padding must be on the right")
                }
                let id = batch.inputIDs[k]
                if id == TrainBatch.imageTokenID {
                    images += 1
                    guard images == 1 else {
                        throw VLMError(.unsupported, record: "sample \(b)", "more than one <image> placeholder")
                    }
                    for p in 0..<patches { row.append((-1, Int32(b * patches + p), TrainBatch.ignoreIndex)) }
                } else {
                    guard id >= 0, Int(id) < vocabSize else {
                        throw VLMError(.invalidArgument, record: "sample \(b)", "token id \(id) outside the vocabulary of \(vocabSize)")
                    }
                    let label = batch.labels[k]
                    guard label == TrainBatch.ignoreIndex || (label >= 0 && Int(label) < vocabSize) else {
                        throw VLMError(.invalidArgument, record: "sample \(b)", "label \(label) outside the vocabulary of \(vocabSize)")
                    }
                    row.append((id, -1, label))
                }
            }
            guard row.count <= maxSeqLen else {
                throw VLMError(.invalidArgument, record: "sample \(b)",
                               "\(row.count) positions after expanding the image, the model holds \(maxSeqLen)")
            }
            rows.append(row)
        }
        let T = rows.map(\.count).max() ?? 0
        batchSize = B
        seqLen = T
        tokens = [Int32](repeating: 0, count: B * T)
        imageSlots = [Int32](repeating: -1, count: B * T)
        targets = [Int32](repeating: TrainBatch.ignoreIndex, count: B * T)
        lengths = rows.map(\.count)
        for (b, row) in rows.enumerated() {
            for (t, e) in row.enumerated() {
                tokens[b * T + t] = e.token
                imageSlots[b * T + t] = e.slot
                if t + 1 < row.count { targets[b * T + t] = row[t + 1].label }
            }
        }
        pixels = batch.pixels
        self.patches = patches
        self.patchDim = patchDim
    }
}
