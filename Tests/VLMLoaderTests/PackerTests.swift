import Testing
@testable import VLMLoader

@Suite struct PackerTests {
    func sample(_ key: String, text: Int, image: Int = 0) -> LoadedSample {
        var ids = [Int32](repeating: 5, count: text)
        if image > 0 { ids[0] = imageTokenId }
        return LoadedSample(key: key, dataset: 0, isPad: false, inputIds: ids, labels: ids, pixels: [], pixelShape: [],
                            imageTokens: image, meta: [])
    }

    @Test func modelLengthCountsImageTokens() {
        #expect(sample("a", text: 10, image: 576).modelLength == 585)
        #expect(sample("b", text: 10).modelLength == 10)
    }

    @Test func firstFitOverABoundedBuffer() {
        var packer = Packer(context: 10, openRows: 2)
        var rows: [[String]] = []
        for (key, length) in [("a", 6), ("b", 5), ("c", 4), ("d", 3), ("e", 7), ("f", 2)] {
            rows += packer.add(sample(key, text: length)).map { $0.map(\.key) }
        }
        // a→row0, b→row1, c fills row0 exactly (emitted), d→row1 (8), e opens a row, f→row1 (10, emitted)
        #expect(rows == [["a", "c"], ["b", "d", "f"]])
        #expect(packer.buffered == 1)
        rows += packer.flush().map { $0.map(\.key) }
        #expect(rows.last == ["e"])
        #expect(abs(packer.paddingFraction - (1 - 27.0 / 30.0)) < 1e-9)
    }

    @Test func oldestRowLeavesWhenTheBufferIsFull() {
        var packer = Packer(context: 10, openRows: 2)
        #expect(packer.add(sample("a", text: 8)).isEmpty)
        #expect(packer.add(sample("b", text: 8)).isEmpty)
        #expect(packer.add(sample("c", text: 8)).map { $0.map(\.key) } == [["a"]])
        #expect(packer.add(sample("long", text: 11)).isEmpty)
        #expect(packer.overlong == ["long"])
    }

    @Test func imageSamplesArePackedByModelLength() throws {
        var packer = Packer(context: 600, openRows: 4)
        var rows: [[LoadedSample]] = []
        rows += packer.add(sample("img1", text: 20, image: 300))   // 319
        rows += packer.add(sample("img2", text: 20, image: 300))   // 319: does not fit with img1
        rows += packer.add(sample("txt", text: 200))                // fits with img1 (519)
        rows += packer.flush()
        #expect(rows.map { $0.map(\.key) } == [["img1", "txt"], ["img2"]])
        let batch = try Collator().collate(rows: rows, context: 600)
        #expect(batch.modelTokens == 319 * 2 + 200)
        #expect(abs(batch.paddingFraction - (1 - 838.0 / 1200.0)) < 1e-9)
        #expect(batch.imageRows == [0, 1] && batch.imageColumns == [0, 0])
        #expect(batch.cuSeqlens == [0, 20, 220, 240])
    }
}
