import Foundation

/// AdamW over the flat parameter buffer (llm.c's layout: first and second moments in one buffer each).
///
/// Weight decay is decoupled (Loshchilov & Hutter) and applies only to tensors whose layout entry says `decay`.
///
/// ```swift
/// let opt = AdamW(model: model, hyper: AdamWHyper(maxLR: 3e-3, warmupSteps: 50, totalSteps: 2000))
/// let lr = opt.step(model: model, step: s)
/// ```
public final class AdamW<T: TrainScalar> {
    public var hyper: AdamWHyper
    public let m: Buffer<T>
    public let v: Buffer<T>
    private let decayMask: [Bool]
    private var t = 0

    public init(model: RefVLM<T>, hyper: AdamWHyper) {
        self.hyper = hyper
        m = Buffer(count: model.parameterCount)
        v = Buffer(count: model.parameterCount)
        var mask = [Bool](repeating: false, count: model.parameterCount)
        for tensor in model.layout.tensors where tensor.decay {
            for i in tensor.offset..<(tensor.offset + tensor.count) { mask[i] = true }
        }
        decayMask = mask
    }

    /// Applies one update with the learning rate of `step` (0-based) and returns that rate.
    @_specialize(exported: true, where T == Float)
    @discardableResult
    public func step(model: RefVLM<T>, step: Int) -> Double {
        t += 1
        let lr = hyper.learningRate(step: step)
        let b1 = T(hyper.beta1), b2 = T(hyper.beta2), eps = T(hyper.eps), wd = T(hyper.weightDecay), lrT = T(lr)
        let c1 = 1 / (1 - T(hyper.beta1.pow(t))), c2 = 1 / (1 - T(hyper.beta2.pow(t)))
        let p = model.params.pointer, g = model.grads.pointer, mp = m.pointer, vp = v.pointer
        decayMask.withUnsafeBufferPointer { mask in
            for i in 0..<model.parameterCount {
                let gi = g[i]
                let mi = b1 * mp[i] + (1 - b1) * gi
                let vi = b2 * vp[i] + (1 - b2) * gi * gi
                mp[i] = mi
                vp[i] = vi
                let update = (mi * c1) / ((vi * c2).squareRoot() + eps)
                p[i] -= lrT * (update + (mask[i] ? wd * p[i] : 0))
            }
        }
        return lr
    }
}

/// AdamW's settings and the learning-rate schedule: linear warmup, then cosine decay to `minLR`.
public struct AdamWHyper: Sendable, Equatable, Codable {
    public var maxLR: Double
    public var minLR: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    public var weightDecay: Double
    /// Global-norm clipping threshold (0 turns clipping off).
    public var clipNorm: Double

    public init(
        maxLR: Double = 3e-3, minLR: Double? = nil, warmupSteps: Int = 50, totalSteps: Int = 2000,
        beta1: Double = 0.9, beta2: Double = 0.95, eps: Double = 1e-8, weightDecay: Double = 0.01, clipNorm: Double = 1
    ) {
        self.maxLR = maxLR
        self.minLR = minLR ?? maxLR / 10
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.clipNorm = clipNorm
    }

    /// The rate at 0-based `step`: `maxLR·(step+1)/warmup` during warmup, then cosine from `maxLR` to `minLR`.
    public func learningRate(step: Int) -> Double {
        if step < warmupSteps { return maxLR * Double(step + 1) / Double(warmupSteps) }
        let span = max(totalSteps - warmupSteps, 1)
        let progress = min(Double(step - warmupSteps) / Double(span), 1)
        return minLR + 0.5 * (maxLR - minLR) * (1 + Double.cos(Double.pi * progress))
    }
}

extension Double {
    fileprivate func pow(_ n: Int) -> Double { Foundation.pow(self, Double(n)) }
}

