import Foundation
import VLMCore

/// What a training run measured: the loss of every step and where the time went.
public struct TrainingResult: Sendable, Codable {
    public var steps: Int
    public var losses: [Double]
    public var gradNorms: [Double]
    public var learningRates: [Double]
    /// Wall-clock seconds of the training steps alone (forward, backward, clipping, update), and the same in thread
    /// CPU time (the loader's threads excluded); `batchWaitSeconds` is the time spent waiting for batches.
    public var trainSeconds: Double
    public var trainCPUSeconds: Double
    public var batchWaitSeconds: Double
    public var stepMilliseconds: [Double]
    /// All positions the model processed (tokens and patches, padding included) and the supervised ones.
    public var positions: Int
    public var supervisedTokens: Int

    public var msPerStep: Double { steps > 0 ? trainSeconds * 1000 / Double(steps) : 0 }
    public var msPerStepMedian: Double {
        let s = stepMilliseconds.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    /// Positions per second of training time.
    public var tokensPerSecond: Double { trainSeconds > 0 ? Double(positions) / trainSeconds : 0 }
    /// The mean loss of the last 50 steps (or fewer), which a single noisy step would misstate.
    public var finalLoss: Double {
        let tail = losses.suffix(50)
        return tail.isEmpty ? .nan : tail.reduce(0, +) / Double(tail.count)
    }
}

/// Runs `steps` training steps on batches from `nextBatch`, timing each one.
///
/// ```swift
/// let trainer = try Trainer<Float>(config: cfg, hyper: hyper, seed: 1)
/// let result = try TrainingRun.run(trainer, steps: 2000) { try loader.next() }
/// ```
public enum TrainingRun {
    public static func run(
        _ trainer: Trainer<Float>, steps: Int, progress: ((StepStats) -> Void)? = nil,
        nextBatch: () throws -> TrainBatch
    ) throws -> TrainingResult {
        var result = TrainingResult(steps: 0, losses: [], gradNorms: [], learningRates: [], trainSeconds: 0,
                                    trainCPUSeconds: 0, batchWaitSeconds: 0, stepMilliseconds: [], positions: 0,
                                    supervisedTokens: 0)
        result.losses.reserveCapacity(steps)
        for _ in 0..<steps {
            let w0 = monotonicSeconds()
            let batch = try trainer.model.expand(try nextBatch())
            let t0 = monotonicSeconds(), c0 = threadCPUSeconds()
            let stats = trainer.step(batch)
            let t1 = monotonicSeconds(), c1 = threadCPUSeconds()
            guard stats.loss.isFinite else {
                throw VLMError(.gateFailed, "the loss became \(stats.loss) at step \(stats.step)")
            }
            result.batchWaitSeconds += t0 - w0
            result.trainSeconds += t1 - t0
            result.trainCPUSeconds += c1 - c0
            result.stepMilliseconds.append((t1 - t0) * 1000)
            result.losses.append(stats.loss)
            result.gradNorms.append(stats.gradNorm)
            result.learningRates.append(stats.learningRate)
            result.positions += stats.positions
            result.supervisedTokens += stats.supervisedTokens
            result.steps += 1
            progress?(stats)
        }
        return result
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    static func threadCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

/// The loss curve as CSV (`step,loss,grad_norm,lr`) and as a standalone SVG line chart.
public enum LossCurve {
    public static func csv(_ r: TrainingResult) -> String {
        var out = "step,loss,grad_norm,lr\n"
        for i in r.losses.indices {
            out += "\(i),\(r.losses[i]),\(r.gradNorms[i]),\(r.learningRates[i])\n"
        }
        return out
    }

    /// A 720×360 SVG: raw loss in light grey, a 25-step moving average in blue, log-free linear axes with ticks.
    public static func svg(_ r: TrainingResult, title: String) -> String {
        let w = 720.0, h = 360.0, left = 60.0, right = 20.0, top = 36.0, bottom = 44.0
        let losses = r.losses.filter(\.isFinite)
        guard !losses.isEmpty else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\"><text x=\"20\" y=\"40\">no steps</text></svg>\n"
        }
        let maxY = max(losses.max()!, 1e-9) * 1.05
        let n = max(losses.count - 1, 1)
        func x(_ i: Int) -> Double { left + (w - left - right) * Double(i) / Double(n) }
        func y(_ v: Double) -> Double { top + (h - top - bottom) * (1 - v / maxY) }
        func fmt(_ v: Double) -> String { String(format: "%.1f", v) }
        func path(_ values: [Double]) -> String {
            values.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(fmt(x($0.offset))),\(fmt(y($0.element)))" }.joined(separator: " ")
        }
        var smooth: [Double] = []
        var sum = 0.0
        for (i, v) in losses.enumerated() {
            sum += v
            if i >= 25 { sum -= losses[i - 25] }
            smooth.append(sum / Double(min(i + 1, 25)))
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(fmt(w / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
        for k in 0...4 {
            let v = maxY * Double(k) / 4
            s += "<text x=\"\(fmt(left - 6))\" y=\"\(fmt(y(v) + 4))\" text-anchor=\"end\">\(String(format: "%.2f", v))</text>\n"
            s += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(y(v)))\" x2=\"\(fmt(w - right))\" y2=\"\(fmt(y(v)))\" stroke=\"#eee\"/>\n"
            let step = n * k / 4
            s += "<text x=\"\(fmt(x(step)))\" y=\"\(fmt(h - bottom + 16))\" text-anchor=\"middle\">\(step)</text>\n"
        }
        s += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(h - bottom))\" x2=\"\(fmt(w - right))\" y2=\"\(fmt(h - bottom))\" stroke=\"black\"/>\n"
        s += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(top))\" x2=\"\(fmt(left))\" y2=\"\(fmt(h - bottom))\" stroke=\"black\"/>\n"
        s += "<text x=\"\(fmt(w / 2))\" y=\"\(fmt(h - 8))\" text-anchor=\"middle\">step</text>\n"
        s += "<text x=\"14\" y=\"\(fmt(h / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(fmt(h / 2)))\">loss</text>\n"
        s += "<path d=\"\(path(losses))\" fill=\"none\" stroke=\"#bbb\" stroke-width=\"1\"/>\n"
        s += "<path d=\"\(path(smooth))\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>\n"
        s += "</svg>\n"
        return s
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}

/// Scores a decoded answer against a shape's true attributes: the first colour word, shape word and side word
/// named in the answer must match.
public struct AttributeScore: Sendable, Codable, Equatable {
    public var colour = 0, shape = 0, side = 0, total = 0

    public init() {}

    public var colourAccuracy: Double { total > 0 ? Double(colour) / Double(total) : 0 }
    public var shapeAccuracy: Double { total > 0 ? Double(shape) / Double(total) : 0 }
    public var sideAccuracy: Double { total > 0 ? Double(side) / Double(total) : 0 }

    /// Adds one answer. `colours`, `shapes` and `sides` are the vocabularies of each attribute.
    public mutating func add(answer: String, colour: String, shape: String, side: String,
                             colours: [String], shapes: [String], sides: [String] = ["left", "right"]) {
        let words = answer.lowercased().split { !$0.isLetter }.map(String.init)
        func first(_ set: [String]) -> String? { words.first { set.contains($0) } }
        total += 1
        if first(colours) == colour { self.colour += 1 }
        if first(shapes) == shape { self.shape += 1 }
        if first(sides) == side { self.side += 1 }
    }
}
