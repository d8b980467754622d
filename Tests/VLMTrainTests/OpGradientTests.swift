import Testing
@testable import VLMTrain

/// Every op's backward pass against centred finite differences in Double (reference matmul).
@Suite struct OpGradientTests {
    static let tolerance = 1e-6
    typealias D = [Double]

    @Test func linearWithBias() {
        let n = 5, c = 4, oc = 3
        var rng = SeededRNG(seed: 1)
        let inputs = [GradientCheck.random(n * c, &rng), GradientCheck.random(oc * c, &rng), GradientCheck.random(oc, &rng)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], x[1], x[2], D(repeating: 0, count: n * oc)]) { p in
                Ops.linearForward(p[3], p[0], p[1], p[2], n: n, inFeatures: c, outFeatures: oc, backend: .reference)
            }[3]
        }, backward: { x, dout in
            let r = D.withPointers([x[0], x[1], dout, D(repeating: 0, count: n * c), D(repeating: 0, count: oc * c), D(repeating: 0, count: oc)]) { p in
                Ops.linearBackward(p[3], p[4], p[5], p[2], p[0], p[1], n: n, inFeatures: c, outFeatures: oc, backend: .reference)
            }
            return [r[3], r[4], r[5]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func bias() {
        let n = 4, c = 3
        var rng = SeededRNG(seed: 2)
        let inputs = [GradientCheck.random(n * c, &rng), GradientCheck.random(c, &rng)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], x[1]]) { p in Ops.biasForward(p[0], p[1], n: n, c: c) }[0]
        }, backward: { _, dout in
            let r = D.withPointers([dout, D(repeating: 0, count: c)]) { p in Ops.biasBackward(p[1], p[0], n: n, c: c) }
            return [dout, r[1]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func gatherAndImageScatter() {
        // rows 0..5 of a 4-row table; -1 rows are left untouched (they belong to the other source)
        let rows = 4, c = 3
        let index: [Int32] = [2, -1, 0, 2, 3, -1]
        var rng = SeededRNG(seed: 3)
        let base = GradientCheck.random(index.count * c, &rng)
        let inputs = [GradientCheck.random(rows * c, &rng)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], base]) { p in Ops.gatherForward(p[1], p[0], index, n: index.count, c: c) }[1]
        }, backward: { _, dout in
            let r = D.withPointers([dout, D(repeating: 0, count: rows * c)]) { p in
                Ops.gatherBackward(p[1], p[0], index, n: index.count, c: c)
            }
            return [r[1]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func positionAdd() {
        let b = 2, t = 3, c = 4
        var rng = SeededRNG(seed: 4)
        let inputs = [GradientCheck.random(b * t * c, &rng), GradientCheck.random(5 * c, &rng)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], x[1]]) { p in Ops.positionAddForward(p[0], p[1], batch: b, seq: t, c: c) }[0]
        }, backward: { _, dout in
            let r = D.withPointers([dout, D(repeating: 0, count: 5 * c)]) { p in
                Ops.positionAddBackward(p[1], p[0], batch: b, seq: t, c: c)
            }
            return [dout, r[1]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func residual() {
        var rng = SeededRNG(seed: 5)
        let inputs = [GradientCheck.random(12, &rng), GradientCheck.random(12, &rng)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], x[1], D(repeating: 0, count: 12)]) { p in Ops.residualForward(p[2], p[0], p[1], count: 12) }[2]
        }, backward: { _, dout in
            let r = D.withPointers([D(repeating: 0, count: 12), D(repeating: 0, count: 12), dout]) { p in
                Ops.residualBackward(p[0], p[1], p[2], count: 12)
            }
            return [r[0], r[1]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func layerNorm() {
        let n = 4, c = 6
        var rng = SeededRNG(seed: 6)
        let inputs = [GradientCheck.random(n * c, &rng), GradientCheck.random(c, &rng), GradientCheck.random(c, &rng)]
        let zeros = D(repeating: 0, count: n * c), stat = D(repeating: 0, count: n)
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], x[1], x[2], zeros, stat, stat]) { p in
                Ops.layerNormForward(p[3], p[4], p[5], p[0], p[1], p[2], n: n, c: c)
            }[3]
        }, backward: { x, dout in
            let f = D.withPointers([x[0], x[1], x[2], zeros, stat, stat]) { p in
                Ops.layerNormForward(p[3], p[4], p[5], p[0], p[1], p[2], n: n, c: c)
            }
            let r = D.withPointers([zeros, D(repeating: 0, count: c), D(repeating: 0, count: c), dout, x[0], x[1], f[4], f[5]]) { p in
                Ops.layerNormBackward(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], n: n, c: c)
            }
            return [r[0], r[1], r[2]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func gelu() {
        var rng = SeededRNG(seed: 7)
        let inputs = [GradientCheck.random(20, &rng, scale: 2)]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], D(repeating: 0, count: 20)]) { p in Ops.geluForward(p[1], p[0], count: 20) }[1]
        }, backward: { x, dout in
            [D.withPointers([D(repeating: 0, count: 20), x[0], dout]) { p in Ops.geluBackward(p[0], p[1], p[2], count: 20) }[0]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func geluMatchesGPT2Formula() {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) at a few points, computed independently
        let xs: [Double] = [-3, -1, -0.5, 0, 0.5, 1, 3]
        let out = D.withPointers([xs, D(repeating: 0, count: xs.count)]) { p in Ops.geluForward(p[1], p[0], count: xs.count) }[1]
        let expected = [-0.0036373920817729943, -0.15880800939172324, -0.15428599017516298, 0,
                        0.34571400982483704, 0.8411919906082768, 2.996362607918227]
        for i in xs.indices { #expect(abs(out[i] - expected[i]) < 1e-12) }
    }

    @Test func causalAttention() {
        let b = 2, t = 4, c = 6, heads = 2
        var rng = SeededRNG(seed: 8)
        let inputs = [GradientCheck.random(b * t * 3 * c, &rng)]
        let attCount = b * heads * t * t
        let err = GradientCheck.opError(inputs: inputs, forward: { x in
            D.withPointers([x[0], D(repeating: 0, count: b * t * c), D(repeating: 0, count: attCount)]) { p in
                Ops.attentionForward(p[1], p[2], p[0], batch: b, seq: t, c: c, heads: heads)
            }[1]
        }, backward: { x, dout in
            let f = D.withPointers([x[0], D(repeating: 0, count: b * t * c), D(repeating: 0, count: attCount)]) { p in
                Ops.attentionForward(p[1], p[2], p[0], batch: b, seq: t, c: c, heads: heads)
            }
            return [D.withPointers([D(repeating: 0, count: b * t * 3 * c), dout, x[0], f[2]]) { p in
                Ops.attentionBackward(p[0], p[1], p[2], p[3], batch: b, seq: t, c: c, heads: heads)
            }[0]]
        })
        #expect(err <= Self.tolerance)
    }

    @Test func attentionIsCausal() {
        // changing a later position's key/value leaves earlier outputs bit-identical
        let b = 1, t = 5, c = 4, heads = 2
        var rng = SeededRNG(seed: 9)
        var qkv = GradientCheck.random(b * t * 3 * c, &rng)
        func run(_ x: D) -> D {
            D.withPointers([x, D(repeating: 0, count: t * c), D(repeating: 0, count: heads * t * t)]) { p in
                Ops.attentionForward(p[1], p[2], p[0], batch: b, seq: t, c: c, heads: heads)
            }[1]
        }
        let before = run(qkv)
        for i in (4 * 3 * c)..<(5 * 3 * c) { qkv[i] += 1 }
        let after = run(qkv)
        #expect(Array(before[0..<(4 * c)]) == Array(after[0..<(4 * c)]))
        #expect(Array(before[(4 * c)...]) != Array(after[(4 * c)...]))
    }

    @Test func maskedCrossEntropy() {
        let n = 5, v = 7
        let targets: [Int32] = [3, -100, 0, 6, -100]
        var rng = SeededRNG(seed: 10)
        let inputs = [GradientCheck.random(n * v, &rng, scale: 2)]
        func lossOf(_ logits: D) -> Double {
            var mean = 0.0
            _ = D.withPointers([logits, D(repeating: 0, count: n), D(repeating: 0, count: n * v)]) { p in
                mean = Ops.crossEntropyForward(p[1], p[2], p[0], targets, n: n, vocab: v).mean
            }
            return mean
        }
        // the op's output is a scalar: check d(mean)/d(logits) with R = [1]
        let err = GradientCheck.opError(inputs: inputs, forward: { x in [lossOf(x[0])] }, backward: { x, dout in
            let f = D.withPointers([x[0], D(repeating: 0, count: n), D(repeating: 0, count: n * v)]) { p in
                _ = Ops.crossEntropyForward(p[1], p[2], p[0], targets, n: n, vocab: v)
            }
            let g = D.withPointers([D(repeating: 0, count: n * v), f[2]]) { p in
                Ops.crossEntropyBackward(p[0], p[1], targets, count: 3, n: n, vocab: v)
            }[0]
            return [g.map { $0 * dout[0] }]
        })
        #expect(err <= Self.tolerance)
        // the mean is over the 3 supervised rows, each −log softmax
        var manual = 0.0
        for row in [0, 2, 3] {
            let l = inputs[0][(row * v)..<((row + 1) * v)]
            let lse = Foundation.log(l.map { Foundation.exp($0) }.reduce(0, +))
            manual += lse - l[row * v + Int(targets[row])]
        }
        #expect(abs(lossOf(inputs[0]) - manual / 3) < 1e-12)
    }

    @Test func globalNormAndClipping() {
        var rng = SeededRNG(seed: 11)
        let g = GradientCheck.random(10, &rng)
        let err = GradientCheck.opError(inputs: [g], forward: { x in
            [x[0].withUnsafeBufferPointer { Ops.globalNorm($0.baseAddress!, count: 10) }]
        }, backward: { x, dout in
            let norm = x[0].withUnsafeBufferPointer { Ops.globalNorm($0.baseAddress!, count: 10) }
            return [D.withPointers([D(repeating: 0, count: 10), x[0]]) { p in
                Ops.globalNormBackward(p[0], p[1], norm: norm, dnorm: dout[0], count: 10)
            }[0]]
        })
        #expect(err <= Self.tolerance)
        let norm = g.withUnsafeBufferPointer { Ops.globalNorm($0.baseAddress!, count: 10) }
        let clipped = D.withPointers([g]) { p in _ = Ops.clipGlobalNorm(p[0], count: 10, maxNorm: norm / 2) }[0]
        let after = clipped.withUnsafeBufferPointer { Ops.globalNorm($0.baseAddress!, count: 10) }
        #expect(abs(after - norm / 2) < 1e-5)
        let unclipped = D.withPointers([g]) { p in _ = Ops.clipGlobalNorm(p[0], count: 10, maxNorm: norm * 2) }[0]
        #expect(unclipped == g)
    }

    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func blasMatchesReference(transA: Bool, transB: Bool) {
        let m = 7, n = 5, k = 9
        var rng = SeededRNG(seed: 12)
        let a = GradientCheck.random(m * k, &rng), b = GradientCheck.random(k * n, &rng), c0 = GradientCheck.random(m * n, &rng)
        func run(_ backend: MatmulBackend) -> D {
            D.withPointers([a, b, c0]) { p in
                gemm(backend, transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5,
                     a: p[0], lda: transA ? m : k, b: p[1], ldb: transB ? k : n, beta: 0.25, c: p[2], ldc: n)
            }[2]
        }
        #expect(GradientCheck.relativeError(run(.blas), run(.reference)) < 1e-14)
        // and single precision through cblas_sgemm
        let af = a.map(Float.init), bf = b.map(Float.init)
        var cf = c0.map(Float.init)
        af.withUnsafeBufferPointer { pa in bf.withUnsafeBufferPointer { pb in cf.withUnsafeMutableBufferPointer { pc in
            gemm(.blas, transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.5, a: pa.baseAddress!, lda: transA ? m : k,
                 b: pb.baseAddress!, ldb: transB ? k : n, beta: 0.25, c: pc.baseAddress!, ldc: n)
        } } }
        #expect(GradientCheck.relativeError(cf.map(Double.init), run(.reference)) < 1e-5)
    }
}

import Foundation

@Suite struct ScalarTests {
    @Test func floatTanhIsWithin5e7OfLibm() {
        var worst: Double = 0
        var x: Float = -12
        while x <= 12 {
            worst = max(worst, abs(Double(Float.tanh(x)) - Foundation.tanh(Double(x))))
            x += 0.00037
        }
        #expect(worst < 5e-7, "max |fast tanh - tanh| = \(worst)")
        #expect(Float.tanh(0) == 0 && Float.tanh(100) <= 1 && Float.tanh(-100) >= -1)
    }
}
