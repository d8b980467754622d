import Foundation
@testable import VLMTrain

/// Finite-difference helpers for the gradient tests (Double, centred differences).
enum GradientCheck {
    static func random(_ n: Int, _ rng: inout SeededRNG, scale: Double = 1) -> [Double] {
        (0..<n).map { _ in rng.normal() * scale }
    }

    /// ‖a − b‖ / max(‖a‖, ‖b‖): the norm-wise relative error of two gradients (0 when both are zero).
    static func relativeError(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var diff = 0.0, na = 0.0, nb = 0.0
        for i in a.indices {
            diff += (a[i] - b[i]) * (a[i] - b[i])
            na += a[i] * a[i]
            nb += b[i] * b[i]
        }
        let denom = max(na, nb).squareRoot()
        return denom == 0 ? 0 : diff.squareRoot() / denom
    }

    /// Checks an op: `forward(inputs)` gives its output, `backward(inputs, dout)` the gradient of each input for
    /// upstream gradient `dout`. The scalar checked is `Σ forward(inputs) · R` for a random `R`. Returns the worst
    /// relative error over the inputs listed in `check` (all by default).
    static func opError(
        inputs: [[Double]], seed: UInt64 = 99, h: Double = 1e-5, check: [Int]? = nil,
        forward: ([[Double]]) -> [Double], backward: ([[Double]], [Double]) -> [[Double]]
    ) -> Double {
        var rng = SeededRNG(seed: seed)
        let out = forward(inputs)
        let r = random(out.count, &rng)
        func loss(_ x: [[Double]]) -> Double { zip(forward(x), r).reduce(0) { $0 + $1.0 * $1.1 } }
        let analytic = backward(inputs, r)
        var worst = 0.0
        for k in check ?? Array(inputs.indices) {
            var numeric = [Double](repeating: 0, count: inputs[k].count)
            var x = inputs
            for i in inputs[k].indices {
                let v = x[k][i]
                x[k][i] = v + h
                let lp = loss(x)
                x[k][i] = v - h
                let lm = loss(x)
                x[k][i] = v
                numeric[i] = (lp - lm) / (2 * h)
            }
            worst = max(worst, relativeError(analytic[k], numeric))
        }
        return worst
    }
}

extension Array where Element == Double {
    /// Runs `body` with mutable pointers to copies of `arrays`, returning the copies afterwards.
    static func withPointers(_ arrays: [[Double]], _ body: ([UnsafeMutablePointer<Double>]) -> Void) -> [[Double]] {
        let buffers = arrays.map { a -> UnsafeMutablePointer<Double> in
            let p = UnsafeMutablePointer<Double>.allocate(capacity: Swift.max(a.count, 1))
            p.initialize(from: a, count: a.count)
            return p
        }
        body(buffers)
        let result = zip(buffers, arrays).map { Array(UnsafeBufferPointer(start: $0.0, count: $0.1.count)) }
        buffers.forEach { $0.deallocate() }
        return result
    }
}
