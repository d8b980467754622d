import Foundation
import Testing
import VLMCatalog
import VLMCore
@testable import VLMInstruct

/// LLM-made instructions and box frames: the prompt states its boxes in `--box-frame`, the instructions record that
/// frame (so `shard` checks them like template ones), and another frame makes new rows.
extension LLMGeneratorTests {
    @Test func theFrameOfThePromptIsRecordedAndAnotherFrameMakesNewRows() throws {
        let s = try setup("llm-frames")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 3, kinds: [.detail, .conversation])
        let (first, _) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(first.instructions == 6)
        o.boxFrame = .pad
        let (second, _) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(second.requestsSent == 6 && second.instructions == 6, "pad prompts differ, so they are new requests")
        let rows = try storedInstructions(s.catalog, generator: "llm")
        #expect(rows.count == 12)
        for row in rows {
            let frame = row.key.hasSuffix("-0-pad") ? "pad" : "original"
            #expect(row.key.hasSuffix("-0") || frame == "pad", "\(row.key)")
            #expect(row.meta["box_frame"] as? String == frame, "\(row.key)")
            let said = row.turns.contains { $0.from == .gpt && BoxFrame.statesBox(in: $0.value) }
            #expect(row.meta["states_box"] as? Bool == said, "\(row.key)")
        }
        #expect(rows.filter { $0.key.hasSuffix("-pad") }.count == 6)
    }

    @Test func promptBoxesAreInTheFrameAndTheCropLeavesOutWhatItCuts() {
        // 200 x 100: the pad square is 200 x 200 (image at y = 50), the crop the middle 100 x 100 (x from 50).
        let inside = ObjectFact(externalID: 1, categoryID: 1, category: "dog", supercategory: "animal",
                                box: Box(x: 60, y: 10, width: 40, height: 80), isCrowd: false)
        let cut = ObjectFact(externalID: 2, categoryID: 2, category: "cat", supercategory: "animal",
                             box: Box(x: 0, y: 10, width: 70, height: 20), isCrowd: false)
        let image = ImageFacts(id: 1, key: "k", sourceID: 1, fileName: "k.jpg", width: 200, height: 100,
                               captions: [(id: 1, text: "A dog and a cat.")], objects: [inside, cut])
        #expect(LLMPrompts.symbolic(image) == "A dog and a cat.\n\ndog: [0.300, 0.100, 0.500, 0.900]\ncat: [0.000, 0.100, 0.350, 0.300]")
        #expect(LLMPrompts.symbolic(image, frame: .pad) == "A dog and a cat.\n\ndog: [0.300, 0.300, 0.500, 0.700]\ncat: [0.000, 0.300, 0.350, 0.400]")
        #expect(LLMPrompts.symbolic(image, frame: .crop) == "A dog and a cat.\n\ndog: [0.100, 0.100, 0.500, 0.900]")
    }

    @Test func boxesAreFoundInText() {
        #expect(BoxFrame.statesBox(in: "It is at [0.12, 0.25, 0.60, 0.91]."))
        #expect(BoxFrame.statesBox(in: "[0,0,1,1]"))
        #expect(!BoxFrame.statesBox(in: "[0.12, 0.25, 0.60]"))
        #expect(!BoxFrame.statesBox(in: "[1.5, 0.2, 0.6, 0.9]"))
        #expect(!BoxFrame.statesBox(in: "options [a, b, c, d] and [12, 3, 4, 5]"))
    }
}
