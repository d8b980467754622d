import VLMCore
import VLMImage

/// How a batch carries its pixels.
public enum PixelFormat: Sendable, Hashable {
    /// The shards' uint8 values, untouched.
    case uint8
    /// float32, normalized as the image processors do (VLMImage's `Normalization`: `.clip`, `.siglip`, `.imagenet`).
    case float32(Normalization)
}

public struct CollateOptions: Sendable {
    /// The id that pads `inputIds` (the tokenizer's pad id; LLaVA uses the unk or eos id).
    public var padId: Int32
    public var pixelFormat: PixelFormat
    /// Rows are padded to a multiple of this many columns (8 suits tensor cores).
    public var padToMultipleOf: Int

    public init(padId: Int32 = 0, pixelFormat: PixelFormat = .uint8, padToMultipleOf: Int = 1) {
        self.padId = padId
        self.pixelFormat = pixelFormat
        self.padToMultipleOf = padToMultipleOf
    }
}

/// A collated batch: `rows × length` matrices, row-major, plus the images of its samples.
///
/// Each row holds one sample, or with packing several whole samples ("segments"). Attention must stay inside a
/// segment: `segmentIds` numbers them 1, 2, ... within a row (0 on padding), `positionIds` restart at 0 in each,
/// and `cuSeqlens` gives the cumulative segment lengths over all rows with padding removed (FlashAttention's
/// varlen convention). Text ids keep LLaVA's `-200` placeholder where the model inserts the image's tokens.
public struct Batch: Sendable {
    public var keys: [String]
    public var rows: Int
    public var length: Int
    public var inputIds: [Int32]
    /// `-100` on padding and on each packed segment's first token (no prediction across a boundary).
    public var labels: [Int32]
    /// 1 on tokens, 0 on padding.
    public var attentionMask: [Int32]
    public var positionIds: [Int32]
    public var segmentIds: [Int32]
    public var cuSeqlens: [Int32]
    /// Per image, in key order: the row and column of its `-200`, and its tile count and image tokens.
    public var imageRows: [Int32]
    public var imageColumns: [Int32]
    public var imageTiles: [Int]
    public var imageTokens: [Int]
    /// `[total tiles, patches, patch*patch*3]` over all images; one of the two arrays is filled per `PixelFormat`.
    public var pixelShape: [Int]
    public var pixelsUInt8: [UInt8]
    public var pixelsFloat: [Float]
    /// Model positions (images expanded) of each row's samples; the budget each row was packed into (0 if unpacked).
    public var modelTokens: Int
    public var context: Int
    /// Samples that are padding repeats.
    public var paddingSamples: Int

    /// Share of the batch's model positions that are padding: `1 - modelTokens / (rows × capacity)`, the capacity
    /// being the packing context, or else the longest row in model positions.
    public var paddingFraction: Double
}

/// Turns samples into batches: one sample per row, or rows of packed samples.
public struct Collator: Sendable {
    public var options: CollateOptions

    public init(options: CollateOptions = CollateOptions()) {
        self.options = options
    }

    /// One sample per row.
    public func collate(_ samples: [LoadedSample]) throws -> Batch {
        try collate(rows: samples.map { [$0] }, context: 0)
    }

    /// Each inner array is one row of whole samples (from a `Packer`), `context` its budget in model positions.
    public func collate(rows groups: [[LoadedSample]], context: Int) throws -> Batch {
        let textLengths = groups.map { $0.reduce(0) { $0 + $1.inputIds.count } }
        var length = textLengths.max() ?? 0
        let multiple = max(1, options.padToMultipleOf)
        length = (length + multiple - 1) / multiple * multiple
        let rows = groups.count
        let cells = rows * length
        var batch = Batch(keys: [], rows: rows, length: length,
                          inputIds: [Int32](repeating: options.padId, count: cells),
                          labels: [Int32](repeating: ignoreIndex, count: cells),
                          attentionMask: [Int32](repeating: 0, count: cells),
                          positionIds: [Int32](repeating: 0, count: cells),
                          segmentIds: [Int32](repeating: 0, count: cells),
                          cuSeqlens: [0], imageRows: [], imageColumns: [], imageTiles: [], imageTokens: [],
                          pixelShape: [], pixelsUInt8: [], pixelsFloat: [], modelTokens: 0, context: context,
                          paddingSamples: 0, paddingFraction: 0)
        var pixels: [UInt8] = []
        var tileShape: [Int]? = nil
        var totalTiles = 0
        var longestModelRow = 0
        for (r, group) in groups.enumerated() {
            var column = 0
            var rowModel = 0
            for (s, sample) in group.enumerated() {
                batch.keys.append(sample.key)
                if sample.isPad { batch.paddingSamples += 1 }
                let base = r * length + column
                let packed = group.count > 1
                for (i, id) in sample.inputIds.enumerated() {
                    batch.inputIds[base + i] = id
                    batch.labels[base + i] = (packed && i == 0) ? ignoreIndex : sample.labels[i]
                    batch.attentionMask[base + i] = 1
                    batch.positionIds[base + i] = Int32(i)
                    batch.segmentIds[base + i] = Int32(s + 1)
                    if id == imageTokenId {
                        batch.imageRows.append(Int32(r))
                        batch.imageColumns.append(Int32(column + i))
                    }
                }
                column += sample.inputIds.count
                batch.cuSeqlens.append(batch.cuSeqlens.last! + Int32(sample.inputIds.count))
                rowModel += sample.modelLength
                if !sample.pixels.isEmpty {
                    guard sample.pixelShape.count == 3 else {
                        throw VLMError(.corrupt, record: sample.key, "pixels have shape \(sample.pixelShape), expected [tiles, patches, dim]")
                    }
                    let shape = Array(sample.pixelShape.dropFirst())
                    if let tileShape, tileShape != shape {
                        throw VLMError(.badInput, record: sample.key,
                                       "patches of shape \(shape) cannot share a batch with \(tileShape); shard with one patchify config")
                    }
                    tileShape = shape
                    totalTiles += sample.pixelShape[0]
                    batch.imageTiles.append(sample.pixelShape[0])
                    batch.imageTokens.append(sample.imageTokens)
                    pixels += sample.pixels
                }
            }
            batch.modelTokens += rowModel
            longestModelRow = max(longestModelRow, rowModel)
        }
        if let tileShape { batch.pixelShape = [totalTiles] + tileShape }
        switch options.pixelFormat {
        case .uint8: batch.pixelsUInt8 = pixels
        case .float32(let normalization): batch.pixelsFloat = normalization.apply(pixels)
        }
        let capacity = context > 0 ? context : longestModelRow
        batch.paddingFraction = rows * capacity == 0 ? 0 : 1 - Double(batch.modelTokens) / Double(rows * capacity)
        return batch
    }
}
