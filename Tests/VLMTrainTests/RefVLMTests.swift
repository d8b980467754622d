import Foundation
import Testing
import VLMCore
@testable import VLMTrain

/// The whole model: gradients, masking, initial loss, overfitting and determinism, on micro configurations.
@Suite struct RefVLMTests {
    /// 4×4 images in 2×2 patches → 4 patches of 12 values; vocabulary 11; C = 8, 2 layers, 2 heads.
    static func microConfig(_ projector: ProjectorKind = .linear) -> RefVLMConfig {
        RefVLMConfig(vocabSize: 11, maxSeqLen: 12, patches: 4, patchDim: 12, channels: 8, layers: 2, heads: 2,
                     projector: projector)
    }

    /// Three samples of different lengths (right-padded), the plain template's masking, and one text-only sample.
    static func microBatch(seed: UInt64 = 5) -> TrainBatch {
        var rng = SeededRNG(seed: seed)
        let pixels = (0..<(3 * 4 * 12)).map { _ in UInt8(rng.next() % 256) }
        return TrainBatch(sequences: [
            ([1, -200, 4, 7, 2], [-100, -100, 4, 7, 2]),
            ([1, -200, 9, 3, 5, 6, 2], [-100, -100, 9, 3, -100, 6, 2]),
            ([1, 8, 8, 2], [-100, 8, 8, 2]),
        ], pixels: pixels, patches: 4, patchDim: 12)
    }

    static func gradients<T: TrainScalar>(_ model: RefVLM<T>, _ batch: ExpandedBatch) -> [Double] {
        model.forward(batch)
        model.backward()
        return model.grads.array.map { Double($0) }
    }

    @Test(arguments: ProjectorKind.allCases)
    func wholeModelGradientMatchesFiniteDifferences(projector: ProjectorKind) throws {
        // C = 4 (2 heads of 2) keeps the ~2·700 forward passes of the check short in debug builds
        var cfg = Self.microConfig(projector)
        cfg.channels = 4
        cfg.maxSeqLen = 10
        let model = try RefVLM<Double>(config: cfg, seed: 3, backend: .reference)
        // larger than GPT-2's 0.02 so that every path carries a gradient well above rounding
        var rng = SeededRNG(seed: 4)
        for i in 0..<model.parameterCount { model.params[i] += rng.normal() * 0.3 }
        let batch = try model.expand(Self.microBatch())
        let analytic = Self.gradients(model, batch)
        let h = 1e-5
        var numeric = [Double](repeating: 0, count: model.parameterCount)
        for i in 0..<model.parameterCount {
            let v = model.params[i]
            model.params[i] = v + h
            let lp = model.forward(batch).loss
            model.params[i] = v - h
            let lm = model.forward(batch).loss
            model.params[i] = v
            numeric[i] = (lp - lm) / (2 * h)
        }
        let overall = GradientCheck.relativeError(analytic, numeric)
        #expect(overall <= 1e-5, "whole-model relative error \(overall)")
        for tensor in model.layout.tensors {
            let range = tensor.offset..<(tensor.offset + tensor.count)
            let err = GradientCheck.relativeError(Array(analytic[range]), Array(numeric[range]))
            #expect(err <= 1e-5, "\(tensor.name): relative error \(err)")
            // every tensor takes part (the unused tail of wpe aside)
            if tensor.name != "wpe" { #expect(analytic[range].contains { $0 != 0 }, "\(tensor.name) has no gradient") }
        }
    }

    @Test func floatAndDoubleGradientsAgree() throws {
        let double = try RefVLM<Double>(config: Self.microConfig(.mlp2xGelu), seed: 8)
        let float = RefVLM<Float>(converting: double)
        let batch = try double.expand(Self.microBatch())
        let gd = Self.gradients(double, batch), gf = Self.gradients(float, batch)
        let err = GradientCheck.relativeError(gf, gd)
        #expect(err <= 1e-3, "Float vs Double relative error \(err)")
        #expect(abs(Double(float.forward(batch).loss) - double.forward(batch).loss) < 1e-5)
    }

    @Test func blasAndReferenceBackendsAgree() throws {
        let blas = try RefVLM<Double>(config: Self.microConfig(), seed: 8, backend: .blas)
        let reference = RefVLM<Double>(converting: blas, backend: .reference)
        let batch = try blas.expand(Self.microBatch())
        #expect(GradientCheck.relativeError(Self.gradients(blas, batch), Self.gradients(reference, batch)) < 1e-12)
    }

    @Test func maskedPositionsGetExactlyZeroGradient() throws {
        let model = try RefVLM<Double>(config: Self.microConfig(), seed: 3)
        let batch = try model.expand(Self.microBatch())
        model.forward(batch)
        model.backward()
        // sample 0 expands to 1 + 4 + 3 = 8 positions: its last real position (EOS, nothing to predict after it) and
        // the padding after it influence no supervised prediction (causal attention), so get exactly zero gradient
        #expect(batch.lengths == [8, 10, 4])
        for t in 7..<batch.seqLen { #expect(model.inputGradient(sample: 0, position: t).allSatisfy { $0 == 0 }) }
        for t in 4..<batch.seqLen { #expect(model.inputGradient(sample: 2, position: t).allSatisfy { $0 == 0 }) }
        #expect(model.inputGradient(sample: 0, position: 6).contains { $0 != 0 })
    }

    @Test func changingMaskedTokensLeavesLossBitIdentical() throws {
        let model = try RefVLM<Float>(config: Self.microConfig(), seed: 3)
        let base = Self.microBatch()
        let loss = model.forward(try model.expand(base)).loss
        // sample 1's label at "5" is -100: replacing the token there only changes what later positions see, so use
        // the unsupervised tail instead — the final EOS of each sample and the padding after sample 2
        var changed = base
        changed.inputIDs[0 * base.seqLen + 4] = 10  // sample 0's last token: its own prediction is masked
        changed.inputIDs[2 * base.seqLen + 5] = 7   // padding (attention mask 0)
        changed.labels[2 * base.seqLen + 5] = -100
        let loss2 = model.forward(try model.expand(changed)).loss
        #expect(loss.bitPattern == loss2.bitPattern)
        // a masked label that is revealed (set to its token) changes the loss: the mask is what keeps it out
        var revealed = base
        revealed.labels[1 * base.seqLen + 4] = 5
        let loss3 = model.forward(try model.expand(revealed)).loss
        #expect(loss3 != loss)
    }

    @Test func imagePlaceholderExpandsToPatchesInOrder() throws {
        let model = try RefVLM<Float>(config: Self.microConfig(), seed: 1)
        let e = try model.expand(Self.microBatch())
        #expect(e.seqLen == 10)
        // sample 1: BOS, 4 patch slots (4..7 = sample 1's patches), then 9 3 5 6 2
        let row1 = (0..<10).map { e.tokens[10 + $0] }
        let slots1 = (0..<10).map { e.imageSlots[10 + $0] }
        #expect(row1 == [1, -1, -1, -1, -1, 9, 3, 5, 6, 2])
        #expect(slots1 == [-1, 4, 5, 6, 7, -1, -1, -1, -1, -1])
        // targets are the labels shifted by one; image positions and the masked "5" are -100
        let targets1 = (0..<10).map { e.targets[10 + $0] }
        #expect(targets1 == [-100, -100, -100, -100, 9, 3, -100, 6, 2, -100])
        // the text-only sample takes no image slot; its padding is token 0 with no target
        #expect((0..<10).allSatisfy { e.imageSlots[20 + $0] == -1 })
        #expect((0..<10).map { e.targets[20 + $0] } == [8, 8, 2, -100, -100, -100, -100, -100, -100, -100])
    }

    @Test func badBatchesAreRejected() throws {
        let model = try RefVLM<Float>(config: Self.microConfig(), seed: 1)
        var two = Self.microBatch()
        two.inputIDs[2] = -200
        #expect(throws: VLMError.self) { try model.expand(two) }
        var outside = Self.microBatch()
        outside.inputIDs[3] = 11
        #expect(throws: VLMError.self) { try model.expand(outside) }
        var leftPad = Self.microBatch()
        leftPad.attentionMask[0] = 0
        #expect(throws: VLMError.self) { try model.expand(leftPad) }
        var wrongPixels = Self.microBatch()
        wrongPixels.pixels.removeLast()
        #expect(throws: VLMError.self) { try model.expand(wrongPixels) }
        let long = TrainBatch(sequences: [([1, -200] + [Int32](repeating: 3, count: 8), [Int32](repeating: -100, count: 10))],
                              pixels: [UInt8](repeating: 0, count: 48), patches: 4, patchDim: 12)
        #expect(throws: VLMError.self) { try model.expand(long) }
    }

    @Test func initialLossIsNearLogVocabulary() throws {
        // the full-size model: C = 64, 2 layers, 4 heads, 16 patches of 8×8×3, vocabulary 100
        let cfg = RefVLMConfig(vocabSize: 100, maxSeqLen: 32, patches: 16, patchDim: 192)
        let model = try RefVLM<Float>(config: cfg, seed: 1)
        #expect((100_000...140_000).contains(model.parameterCount))
        var rng = SeededRNG(seed: 2)
        let sequences: [(inputIDs: [Int32], labels: [Int32])] = (0..<8).map { _ in
            let answer = (0..<6).map { _ in Int32(rng.next() % 100) }
            return ([1, -200] + answer, [-100, -100] + answer)
        }
        let pixels = (0..<(8 * 16 * 192)).map { _ in UInt8(rng.next() % 256) }
        let loss = model.forward(try model.expand(TrainBatch(sequences: sequences, pixels: pixels, patches: 16, patchDim: 192))).loss
        #expect(abs(Double(loss) - Foundation.log(100.0)) <= 0.25, "initial loss \(loss), ln 100 = \(Foundation.log(100.0))")
    }

    static func overfitBatch() -> TrainBatch {
        var rng = SeededRNG(seed: 21)
        let sequences: [(inputIDs: [Int32], labels: [Int32])] = (0..<8).map { _ in
            let answer = (0..<4).map { _ in Int32(3 + rng.next() % 17) }
            return ([1, -200] + answer + [2], [-100, -100] + answer + [2])
        }
        let pixels = (0..<(8 * 4 * 12)).map { _ in UInt8(rng.next() % 256) }
        return TrainBatch(sequences: sequences, pixels: pixels, patches: 4, patchDim: 12)
    }

    static func overfitTrainer() throws -> Trainer<Float> {
        let cfg = RefVLMConfig(vocabSize: 20, maxSeqLen: 12, patches: 4, patchDim: 12, channels: 32, layers: 2, heads: 4)
        return try Trainer<Float>(config: cfg, hyper: AdamWHyper(maxLR: 1e-2, warmupSteps: 10, totalSteps: 300, weightDecay: 0), seed: 7)
    }

    @Test func fixedBatchOfEightOverfits() throws {
        let trainer = try Self.overfitTrainer()
        let batch = try trainer.model.expand(Self.overfitBatch())
        var losses: [Double] = []
        for _ in 0..<300 {
            losses.append(trainer.step(batch).loss)
            if losses.last! < 0.01 { break }
        }
        #expect(losses.last! < 0.01, "loss after \(losses.count) steps: \(losses.last!)")
        #expect(abs(losses[0] - Foundation.log(20.0)) < 0.25)
        // greedy decoding from (BOS, image) now recalls each sample's answer from its image alone
        let raw = Self.overfitBatch()
        let answers = try trainer.model.generate(prompts: (0..<8).map { _ in [1, -200] }, pixels: raw.pixels,
                                                 maxNewTokens: 8, stopTokens: [2])
        for b in 0..<8 {
            let expected = Array(raw.inputIDs[(b * raw.seqLen + 2)..<((b + 1) * raw.seqLen)])
            #expect(answers[b] == expected)
        }
    }

    @Test func sameSeedGivesBitIdenticalLosses() throws {
        func run() throws -> [UInt32] {
            let trainer = try Self.overfitTrainer()
            let batch = try trainer.model.expand(Self.overfitBatch())
            return (0..<15).map { _ in Float(trainer.step(batch).loss).bitPattern }
        }
        let a = try run(), b = try run()
        #expect(a == b)
        // and a different seed gives a different run
        let cfg = try Self.overfitTrainer().model.config
        let other = try Trainer<Float>(config: cfg, hyper: AdamWHyper(totalSteps: 300), seed: 8)
        #expect(Float(try other.step(Self.overfitBatch()).loss).bitPattern != a[0])
    }

    @Test func learningRateScheduleWarmsUpThenDecays() {
        let h = AdamWHyper(maxLR: 1e-3, warmupSteps: 10, totalSteps: 110)
        #expect(abs(h.learningRate(step: 0) - 1e-4) < 1e-12)
        #expect(abs(h.learningRate(step: 9) - 1e-3) < 1e-12)
        #expect(abs(h.learningRate(step: 10) - 1e-3) < 1e-12)
        #expect(abs(h.learningRate(step: 60) - 5.5e-4) < 1e-12)
        #expect(abs(h.learningRate(step: 110) - 1e-4) < 1e-12)
    }
}
