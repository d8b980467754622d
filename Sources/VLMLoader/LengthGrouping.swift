import VLMCore

/// LLaVA's `get_modality_length_grouped_indices` (llava/train/llava_trainer.py), with `SplitMix64` in place of
/// `torch.randperm`.
///
/// Lengths are positive for samples with an image and negative for text-only ones. Each modality is permuted, cut
/// into mega-batches of `batchSize * worldSize`, each mega-batch sorted by length (longest first) and split into
/// `worldSize` chunks of even total length; the mega-batches of both modalities (all but each one's last) are then
/// permuted together, and the two last ones are joined into a final mixed mega-batch. Image and text-only samples
/// therefore never share a batch except in that last one, and each batch holds samples of similar length.
///
/// ```swift
/// var rng = SplitMix64(seed: 1)
/// let order = LengthGrouping.modalityGrouped(lengths: [120, -40, 300, -35], batchSize: 1, worldSize: 1, rng: &rng)
/// ```
public enum LengthGrouping {
    public static func modalityGrouped(lengths: [Int], batchSize: Int, worldSize: Int,
                                       rng: inout SplitMix64) -> [Int] {
        precondition(!lengths.contains(0), "LLaVA's grouping needs non-zero lengths")
        if lengths.allSatisfy({ $0 > 0 }) || lengths.allSatisfy({ $0 < 0 }) {
            return lengthGrouped(lengths: lengths.map(abs), batchSize: batchSize, worldSize: worldSize, rng: &rng)
        }
        let mm = lengths.indices.filter { lengths[$0] > 0 }
        let lang = lengths.indices.filter { lengths[$0] < 0 }
        let mmShuffle = lengthGrouped(lengths: mm.map { lengths[$0] }, batchSize: batchSize, worldSize: worldSize,
                                      rng: &rng).map { mm[$0] }
        let langShuffle = lengthGrouped(lengths: lang.map { -lengths[$0] }, batchSize: batchSize, worldSize: worldSize,
                                        rng: &rng).map { lang[$0] }
        let mega = batchSize * worldSize
        let mmMega = chunks(mmShuffle, mega)
        let langMega = chunks(langShuffle, mega)
        let additional = (mmMega.last ?? []) + (langMega.last ?? [])
        var megabatches = Array(mmMega.dropLast()) + Array(langMega.dropLast())
        var perm = Array(megabatches.indices)
        rng.shuffle(&perm)
        megabatches = perm.map { megabatches[$0] }
        if !additional.isEmpty { megabatches.append(additional.sorted()) }
        return megabatches.flatMap { $0 }
    }

    /// LLaVA's `get_length_grouped_indices` (lengths all positive).
    public static func lengthGrouped(lengths: [Int], batchSize: Int, worldSize: Int, rng: inout SplitMix64) -> [Int] {
        var indices = Array(lengths.indices)
        rng.shuffle(&indices)
        var out: [Int] = []
        out.reserveCapacity(lengths.count)
        for megabatch in chunks(indices, batchSize * worldSize) {
            // Python's sorted is stable; so is this (ties keep their permuted order).
            let sorted = megabatch.enumerated().sorted {
                lengths[$0.element] != lengths[$1.element] ? lengths[$0.element] > lengths[$1.element] : $0.offset < $1.offset
            }.map(\.element)
            for chunk in splitToEvenChunks(sorted, lengths: lengths, chunks: worldSize) { out += chunk }
        }
        return out
    }

    /// LLaVA's `split_to_even_chunks`: greedy, each index to the chunk with the smallest total, a full chunk closed.
    static func splitToEvenChunks(_ indices: [Int], lengths: [Int], chunks n: Int) -> [[Int]] {
        if indices.count % n != 0 {
            return (0..<n).map { i in stride(from: i, to: indices.count, by: n).map { indices[$0] } }
        }
        let perChunk = indices.count / n
        var chunks = [[Int]](repeating: [], count: n)
        var totals = [Double](repeating: 0, count: n)
        for index in indices {
            let shortest = totals.indices.min { totals[$0] < totals[$1] }!   // first minimum, as list.index(min(...))
            chunks[shortest].append(index)
            totals[shortest] += Double(lengths[index])
            if chunks[shortest].count == perChunk { totals[shortest] = .infinity }
        }
        return chunks
    }

    static func chunks<T>(_ items: [T], _ size: Int) -> [[T]] {
        stride(from: 0, to: items.count, by: size).map { Array(items[$0..<min($0 + size, items.count)]) }
    }
}
