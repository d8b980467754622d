import Foundation
import VLMCore

/// What one optimizer step did.
public struct StepStats: Sendable, Equatable {
    public var step: Int
    public var loss: Double
    /// The global gradient norm before clipping.
    public var gradNorm: Double
    public var learningRate: Double
    /// Supervised positions in the batch (the loss's denominator) and all positions (tokens + patches).
    public var supervisedTokens: Int
    public var positions: Int
}

/// RefVLM with its AdamW state: `step` runs forward, backward, clipping and the update on one batch.
///
/// ```swift
/// let trainer = try Trainer<Float>(config: cfg, hyper: AdamWHyper(totalSteps: 2000), seed: 7)
/// for s in 0..<2000 { let stats = try trainer.step(batch(s)) }
/// let answers = try trainer.model.generate(prompts: prompts, pixels: pixels, maxNewTokens: 4, stopTokens: [eos])
/// ```
public final class Trainer<T: TrainScalar> {
    public let model: RefVLM<T>
    public let optimizer: AdamW<T>
    public private(set) var steps = 0

    public init(config: RefVLMConfig, hyper: AdamWHyper, seed: UInt64, backend: MatmulBackend = .blas) throws {
        model = try RefVLM(config: config, seed: seed, backend: backend)
        optimizer = AdamW(model: model, hyper: hyper)
    }

    /// One step on `batch`; throws when the batch does not fit the model.
    @discardableResult
    public func step(_ batch: TrainBatch) throws -> StepStats {
        try step(model.expand(batch))
    }

    @_specialize(exported: true, where T == Float)
    @discardableResult
    public func step(_ batch: ExpandedBatch) -> StepStats {
        let (loss, count) = model.forward(batch)
        model.backward()
        let norm = Ops.clipGlobalNorm(model.grads.pointer, count: model.parameterCount,
                                      maxNorm: T(optimizer.hyper.clipNorm))
        let lr = optimizer.step(model: model, step: steps)
        defer { steps += 1 }
        return StepStats(step: steps, loss: Double(loss), gradNorm: Double(norm), learningRate: lr,
                         supervisedTokens: count, positions: batch.batchSize * batch.seqLen)
    }
}

extension RefVLM {
    /// Greedy decoding: extends each prompt (token ids with one `-200` for its image) by the most likely next token
    /// until one of `stopTokens` (included in the answer) or `maxNewTokens`. `pixels` holds one image per prompt.
    @_specialize(exported: true, where T == Float)
    public func generate(
        prompts: [[Int32]], pixels: [UInt8], maxNewTokens: Int, stopTokens: Set<Int32> = []
    ) throws -> [[Int32]] {
        var sequences = prompts
        var answers = [[Int32]](repeating: [], count: prompts.count)
        var done = [Bool](repeating: false, count: prompts.count)
        for _ in 0..<maxNewTokens where done.contains(false) {
            let batch = TrainBatch(
                sequences: sequences.map { ($0, [Int32](repeating: TrainBatch.ignoreIndex, count: $0.count)) },
                pixels: pixels, patches: config.patches, patchDim: config.patchDim)
            let expanded = try expand(batch)
            forward(expanded)
            for b in sequences.indices where !done[b] {
                let row = logits(sample: b, position: expanded.lengths[b] - 1)
                var best = 0
                for j in 1..<row.count where row[j] > row[best] { best = j }
                let next = Int32(best)
                sequences[b].append(next)
                answers[b].append(next)
                if stopTokens.contains(next) || sequences[b].count >= config.maxSeqLen - config.patches { done[b] = true }
            }
        }
        return answers
    }
}
