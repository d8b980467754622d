import Testing
import VLMCore
@testable import VLMLoader
@testable import VLMTrain

@Suite struct LoaderAdapterTests {
    static func sample(_ key: String, ids: [Int32], labels: [Int32], pixels: [UInt8], shape: [Int]) -> LoadedSample {
        LoadedSample(key: key, dataset: 0, isPad: false, inputIds: ids, labels: labels, pixels: pixels, pixelShape: shape,
                     imageTokens: shape.count == 3 ? shape[1] : 0, meta: [])
    }

    @Test func collatesLoaderSamplesRightPadded() throws {
        let a = Self.sample("a", ids: [1, -200, 5, 2], labels: [-100, -100, 5, 2], pixels: [UInt8](repeating: 7, count: 48), shape: [1, 4, 12])
        let b = Self.sample("b", ids: [1, 9, 2], labels: [-100, 9, 2], pixels: [], shape: [])
        let batch = try TrainBatch(samples: [a, b], patches: 4, patchDim: 12)
        #expect(batch.batchSize == 2 && batch.seqLen == 4)
        #expect(batch.inputIDs == [1, -200, 5, 2, 1, 9, 2, 0])
        #expect(batch.labels == [-100, -100, 5, 2, -100, 9, 2, -100])
        #expect(batch.attentionMask == [1, 1, 1, 1, 1, 1, 1, 0])
        #expect(batch.pixels == [UInt8](repeating: 7, count: 48) + [UInt8](repeating: 0, count: 48))
        // and the model takes it: sample a expands to BOS + 4 patches + 2 tokens
        let model = try RefVLM<Float>(config: RefVLMTests.microConfig(), seed: 1)
        #expect(try model.expand(batch).lengths == [7, 3])
    }

    @Test func rejectsPixelsOfAnotherShape() {
        let tiles = Self.sample("anyres", ids: [1, -200, 2], labels: [-100, -100, 2], pixels: [UInt8](repeating: 0, count: 96), shape: [2, 4, 12])
        #expect(throws: VLMError.self) { try TrainBatch(samples: [tiles], patches: 4, patchDim: 12) }
        let patch = Self.sample("p14", ids: [1, -200, 2], labels: [-100, -100, 2], pixels: [UInt8](repeating: 0, count: 48), shape: [1, 2, 24])
        #expect(throws: VLMError.self) { try TrainBatch(samples: [patch], patches: 4, patchDim: 12) }
    }
}
