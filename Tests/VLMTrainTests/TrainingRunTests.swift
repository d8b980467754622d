import Foundation
import Testing
@testable import VLMTrain

@Suite struct TrainingRunTests {
    @Test func runRecordsEveryStepAndWritesTheCurve() throws {
        let trainer = try RefVLMTests.overfitTrainer()
        let batch = RefVLMTests.overfitBatch()
        let result = try TrainingRun.run(trainer, steps: 12) { batch }
        #expect(result.steps == 12 && result.losses.count == 12 && result.stepMilliseconds.count == 12)
        #expect(result.losses.last! < result.losses.first!)
        #expect(result.positions == 12 * 8 * 10)  // 8 samples of BOS + 4 patches + 4 answer tokens + EOS
        #expect(result.supervisedTokens == 12 * 8 * 5)
        #expect(result.trainSeconds > 0 && result.tokensPerSecond > 0)
        let csv = LossCurve.csv(result).split(separator: "\n")
        #expect(csv.count == 13 && csv[0] == "step,loss,grad_norm,lr")
        #expect(Double(csv[1].split(separator: ",")[1]) == result.losses[0])
        let svg = LossCurve.svg(result, title: "RefVLM <smoke>")
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<path").count == 3)
        #expect(svg.contains("RefVLM &lt;smoke&gt;"))
    }

    @Test func attributeScoreReadsTheFirstNamedWord() {
        var score = AttributeScore()
        let colours = ["red", "green", "blue"], shapes = ["circle", "square", "triangle"]
        score.add(answer: "a red circle on the left\n", colour: "red", shape: "circle", side: "left", colours: colours, shapes: shapes)
        score.add(answer: "a blue square on the right", colour: "red", shape: "square", side: "left", colours: colours, shapes: shapes)
        score.add(answer: "", colour: "green", shape: "triangle", side: "right", colours: colours, shapes: shapes)
        #expect(score.total == 3 && score.colour == 1 && score.shape == 2 && score.side == 1)
        #expect(abs(score.shapeAccuracy - 2.0 / 3) < 1e-12)
    }
}
