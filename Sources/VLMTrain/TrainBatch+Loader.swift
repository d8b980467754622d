import VLMCore
import VLMLoader

extension TrainBatch {
    /// Collates samples from the streaming loader: right padding (token 0, label -100, mask 0); a text-only sample
    /// gets zero pixels, which the model never reads since it has no image position.
    ///
    /// Throws when an image is not one tile of `grid` (what `patchify` wrote must match the model).
    public init(samples: [LoadedSample], grid: PatchGrid) throws {
        try self.init(samples: samples, patches: grid.patchesPerTile, patchDim: grid.patchDim)
    }

    /// Throws when an image is not one tile of `patches × patchDim` (what `patchify` wrote must match the model).
    public init(samples: [LoadedSample], patches: Int, patchDim: Int) throws {
        var pixels: [UInt8] = []
        pixels.reserveCapacity(samples.count * patches * patchDim)
        for s in samples {
            if s.pixels.isEmpty {
                pixels.append(contentsOf: repeatElement(0, count: patches * patchDim))
                continue
            }
            guard s.pixelShape == [1, patches, patchDim], s.pixels.count == patches * patchDim else {
                throw VLMError(.badInput, record: s.key,
                               "pixels are \(s.pixelShape), the model takes [1, \(patches), \(patchDim)] (one tile)")
            }
            pixels.append(contentsOf: s.pixels)
        }
        self.init(sequences: samples.map { ($0.inputIds, $0.labels) }, pixels: pixels, patches: patches, patchDim: patchDim)
    }
}
