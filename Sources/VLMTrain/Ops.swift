/// The forward and backward passes of every op RefVLM is built from, on raw row-major buffers (llm.c's style).
///
/// Conventions: `N` rows of `C` features; weights are stored `[out, in]` (PyTorch's layout); every backward pass
/// *accumulates* into the gradients it is given (`+=`), so callers zero gradients once per step.
///
/// ```swift
/// Ops.linearForward(out, inp, weight, bias, n: 8, inFeatures: 64, outFeatures: 256, backend: .blas)
/// Ops.linearBackward(dinp, dweight, dbias, dout, inp, weight, n: 8, inFeatures: 64, outFeatures: 256, backend: .blas)
/// ```
public enum Ops {
    // MARK: Linear (matrix product + bias)

    /// `out[n, oc] = inp[n, :] · weight[oc, :] + bias[oc]`.
    public static func linearForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>, _ bias: UnsafePointer<T>?,
        n: Int, inFeatures c: Int, outFeatures oc: Int, backend: MatmulBackend
    ) {
        gemm(backend, transA: false, transB: true, m: n, n: oc, k: c, a: inp, lda: c, b: weight, ldb: c,
             beta: 0, c: out, ldc: oc)
        if let bias { biasForward(out, bias, n: n, c: oc) }
    }

    /// Accumulates `dinp += dout · weight`, `dweight += doutᵀ · inp` and `dbias += Σₙ dout`; `dinp` may be nil.
    public static func linearBackward<T: TrainScalar>(
        _ dinp: UnsafeMutablePointer<T>?, _ dweight: UnsafeMutablePointer<T>, _ dbias: UnsafeMutablePointer<T>?,
        _ dout: UnsafePointer<T>, _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>,
        n: Int, inFeatures c: Int, outFeatures oc: Int, backend: MatmulBackend
    ) {
        if let dinp {
            gemm(backend, transA: false, transB: false, m: n, n: c, k: oc, a: dout, lda: oc, b: weight, ldb: c,
                 beta: 1, c: dinp, ldc: c)
        }
        gemm(backend, transA: true, transB: false, m: oc, n: c, k: n, a: dout, lda: oc, b: inp, ldb: c,
             beta: 1, c: dweight, ldc: c)
        if let dbias { biasBackward(dbias, dout, n: n, c: oc) }
    }

    /// `x[n, c] += bias[c]`.
    @inlinable
    public static func biasForward<T: TrainScalar>(_ x: UnsafeMutablePointer<T>, _ bias: UnsafePointer<T>, n: Int, c: Int) {
        for row in 0..<n {
            let xr = x + row * c
            for j in 0..<c { xr[j] += bias[j] }
        }
    }

    /// `dbias[c] += Σₙ dout[n, c]`.
    @inlinable
    public static func biasBackward<T: TrainScalar>(_ dbias: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>, n: Int, c: Int) {
        for row in 0..<n {
            let dr = dout + row * c
            for j in 0..<c { dbias[j] += dr[j] }
        }
    }

    // MARK: Gather (token embedding and the image-token scatter)

    /// `out[i, :] = table[index[i], :]` for every `i` whose index is ≥ 0; rows with a negative index are left as they are.
    ///
    /// The token embedding gathers rows of `wte` by token id; the image-token scatter gathers rows of the projected
    /// patches by image slot, so the two together fill every position of the decoder's input.
    @inlinable
    public static func gatherForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ table: UnsafePointer<T>, _ index: UnsafePointer<Int32>, n: Int, c: Int
    ) {
        for i in 0..<n {
            let row = Int(index[i])
            guard row >= 0 else { continue }
            (out + i * c).update(from: table + row * c, count: c)
        }
    }

    /// `dtable[index[i], :] += dout[i, :]` for every `i` whose index is ≥ 0.
    @inlinable
    public static func gatherBackward<T: TrainScalar>(
        _ dtable: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>, _ index: UnsafePointer<Int32>, n: Int, c: Int
    ) {
        for i in 0..<n {
            let row = Int(index[i])
            guard row >= 0 else { continue }
            let d = dtable + row * c, g = dout + i * c
            for j in 0..<c { d[j] += g[j] }
        }
    }

    // MARK: Position embedding

    /// `x[b, t, :] += pos[t, :]` for a `[batch, seq, c]` tensor.
    @inlinable
    public static func positionAddForward<T: TrainScalar>(
        _ x: UnsafeMutablePointer<T>, _ pos: UnsafePointer<T>, batch: Int, seq: Int, c: Int
    ) {
        for b in 0..<batch {
            for t in 0..<seq {
                let xr = x + (b * seq + t) * c, pr = pos + t * c
                for j in 0..<c { xr[j] += pr[j] }
            }
        }
    }

    /// `dpos[t, :] += Σ_b dx[b, t, :]` (the gradient of `x` itself passes through unchanged).
    @inlinable
    public static func positionAddBackward<T: TrainScalar>(
        _ dpos: UnsafeMutablePointer<T>, _ dx: UnsafePointer<T>, batch: Int, seq: Int, c: Int
    ) {
        for b in 0..<batch {
            for t in 0..<seq {
                let dr = dx + (b * seq + t) * c, pr = dpos + t * c
                for j in 0..<c { pr[j] += dr[j] }
            }
        }
    }

    // MARK: Residual

    /// `out = a + b`.
    @inlinable
    public static func residualForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ a: UnsafePointer<T>, _ b: UnsafePointer<T>, count: Int
    ) {
        for i in 0..<count { out[i] = a[i] + b[i] }
    }

    /// `da += dout`, `db += dout`.
    @inlinable
    public static func residualBackward<T: TrainScalar>(
        _ da: UnsafeMutablePointer<T>, _ db: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>, count: Int
    ) {
        for i in 0..<count {
            da[i] += dout[i]
            db[i] += dout[i]
        }
    }

    // MARK: LayerNorm

    /// LayerNorm over the last dimension (eps 1e-5, as PyTorch); saves each row's mean and 1/σ for the backward pass.
    @inlinable
    public static func layerNormForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ mean: UnsafeMutablePointer<T>, _ rstd: UnsafeMutablePointer<T>,
        _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>, _ bias: UnsafePointer<T>, n: Int, c: Int
    ) {
        let eps: T = 1e-5
        let invC = 1 / T(c)
        for row in 0..<n {
            let x = inp + row * c, o = out + row * c
            var m: T = 0
            for j in 0..<c { m += x[j] }
            m *= invC
            var v: T = 0
            for j in 0..<c {
                let d = x[j] - m
                v += d * d
            }
            v *= invC
            let s = 1 / (v + eps).squareRoot()
            for j in 0..<c { o[j] = (x[j] - m) * s * weight[j] + bias[j] }
            mean[row] = m
            rstd[row] = s
        }
    }

    /// Accumulates the gradients of LayerNorm's input, weight and bias.
    @inlinable
    public static func layerNormBackward<T: TrainScalar>(
        _ dinp: UnsafeMutablePointer<T>, _ dweight: UnsafeMutablePointer<T>, _ dbias: UnsafeMutablePointer<T>,
        _ dout: UnsafePointer<T>, _ inp: UnsafePointer<T>, _ weight: UnsafePointer<T>,
        _ mean: UnsafePointer<T>, _ rstd: UnsafePointer<T>, n: Int, c: Int
    ) {
        let invC = 1 / T(c)
        for row in 0..<n {
            let x = inp + row * c, g = dout + row * c, dx = dinp + row * c
            let m = mean[row], s = rstd[row]
            var dnormMean: T = 0, dnormNormMean: T = 0
            for j in 0..<c {
                let norm = (x[j] - m) * s
                let dnorm = weight[j] * g[j]
                dnormMean += dnorm
                dnormNormMean += dnorm * norm
            }
            dnormMean *= invC
            dnormNormMean *= invC
            for j in 0..<c {
                let norm = (x[j] - m) * s
                let dnorm = weight[j] * g[j]
                dbias[j] += g[j]
                dweight[j] += norm * g[j]
                dx[j] += (dnorm - dnormMean - norm * dnormNormMean) * s
            }
        }
    }

    // MARK: GELU (tanh approximation, as GPT-2)

    /// `out = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`; when `tanhOut` is given, the tanh values are kept there
    /// so the backward pass need not recompute them.
    @inlinable
    public static func geluForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>, count: Int, tanhOut: UnsafeMutablePointer<T>? = nil
    ) {
        let k = T(0.7978845608028654)  // √(2/π)
        let a = T(0.044715)
        if let tanhOut {
            for i in 0..<count {
                let x = inp[i]
                let th = T.tanh(k * (x + a * x * x * x))
                tanhOut[i] = th
                out[i] = 0.5 * x * (1 + th)
            }
        } else {
            for i in 0..<count {
                let x = inp[i]
                out[i] = 0.5 * x * (1 + T.tanh(k * (x + a * x * x * x)))
            }
        }
    }

    /// `dinp += gelu'(inp) · dout`, from the tanh values the forward pass kept (or recomputed when nil).
    @inlinable
    public static func geluBackward<T: TrainScalar>(
        _ dinp: UnsafeMutablePointer<T>, _ inp: UnsafePointer<T>, _ dout: UnsafePointer<T>, count: Int,
        tanhIn: UnsafePointer<T>? = nil
    ) {
        let k = T(0.7978845608028654)
        let a = T(0.044715)
        for i in 0..<count {
            let x = inp[i]
            let th = tanhIn.map { $0[i] } ?? T.tanh(k * (x + a * x * x * x))
            let sech2 = 1 - th * th
            let local = 0.5 * (1 + th) + 0.5 * x * sech2 * k * (1 + 3 * a * x * x)
            dinp[i] += local * dout[i]
        }
    }

    // MARK: Causal multi-head self-attention

    /// Causal attention over `qkv[b, t, 3c]` (query, key, value blocks of `c` each, `heads` heads of `c/heads`):
    /// `out[b, t, c]`, and the softmax weights `att[b, h, t, t2]` (zero above the diagonal) kept for backward.
    @inlinable
    public static func attentionForward<T: TrainScalar>(
        _ out: UnsafeMutablePointer<T>, _ att: UnsafeMutablePointer<T>, _ qkv: UnsafePointer<T>,
        batch: Int, seq: Int, c: Int, heads: Int
    ) {
        let c3 = 3 * c, hs = c / heads
        let scale = 1 / T(hs).squareRoot()
        for b in 0..<batch {
            for t in 0..<seq {
                for h in 0..<heads {
                    let q = qkv + (b * seq + t) * c3 + h * hs
                    let row = att + ((b * heads + h) * seq + t) * seq
                    var maxv = -T.infinity
                    for t2 in 0...t {
                        let key = qkv + (b * seq + t2) * c3 + h * hs + c
                        var dot: T = 0
                        for i in 0..<hs { dot += q[i] * key[i] }
                        dot *= scale
                        row[t2] = dot
                        if dot > maxv { maxv = dot }
                    }
                    var sum: T = 0
                    for t2 in 0...t {
                        let e = T.exp(row[t2] - maxv)
                        row[t2] = e
                        sum += e
                    }
                    let inv = 1 / sum
                    for t2 in 0...t { row[t2] *= inv }
                    for t2 in (t + 1)..<max(seq, t + 1) { row[t2] = 0 }
                    let o = out + (b * seq + t) * c + h * hs
                    for i in 0..<hs { o[i] = 0 }
                    for t2 in 0...t {
                        let value = qkv + (b * seq + t2) * c3 + h * hs + 2 * c
                        let w = row[t2]
                        for i in 0..<hs { o[i] += w * value[i] }
                    }
                }
            }
        }
    }

    /// Accumulates `dqkv` from `dout`, using the softmax weights saved by the forward pass.
    @inlinable
    public static func attentionBackward<T: TrainScalar>(
        _ dqkv: UnsafeMutablePointer<T>, _ dout: UnsafePointer<T>, _ qkv: UnsafePointer<T>, _ att: UnsafePointer<T>,
        batch: Int, seq: Int, c: Int, heads: Int
    ) {
        let c3 = 3 * c, hs = c / heads
        let scale = 1 / T(hs).squareRoot()
        let datt = UnsafeMutablePointer<T>.allocate(capacity: max(seq, 1))
        defer { datt.deallocate() }
        for b in 0..<batch {
            for t in 0..<seq {
                for h in 0..<heads {
                    let row = att + ((b * heads + h) * seq + t) * seq
                    let g = dout + (b * seq + t) * c + h * hs
                    // out = Σ att · value
                    for t2 in 0...t {
                        let value = qkv + (b * seq + t2) * c3 + h * hs + 2 * c
                        let dvalue = dqkv + (b * seq + t2) * c3 + h * hs + 2 * c
                        var d: T = 0
                        let w = row[t2]
                        for i in 0..<hs {
                            d += value[i] * g[i]
                            dvalue[i] += w * g[i]
                        }
                        datt[t2] = d
                    }
                    // softmax: dpre[t2] = att[t2] · (datt[t2] − Σ att · datt)
                    var dot: T = 0
                    for t2 in 0...t { dot += row[t2] * datt[t2] }
                    let q = qkv + (b * seq + t) * c3 + h * hs
                    let dq = dqkv + (b * seq + t) * c3 + h * hs
                    for t2 in 0...t {
                        let dpre = row[t2] * (datt[t2] - dot) * scale
                        let key = qkv + (b * seq + t2) * c3 + h * hs + c
                        let dkey = dqkv + (b * seq + t2) * c3 + h * hs + c
                        for i in 0..<hs {
                            dq[i] += key[i] * dpre
                            dkey[i] += q[i] * dpre
                        }
                    }
                }
            }
        }
    }

    // MARK: Masked cross-entropy

    /// Softmax of `logits[n, v]` into `probs`, and the cross-entropy of each row whose target is ≥ 0 (others: 0).
    ///
    /// Returns the mean over supervised rows (0 when there are none) and how many rows were supervised.
    @inlinable
    public static func crossEntropyForward<T: TrainScalar>(
        _ losses: UnsafeMutablePointer<T>, _ probs: UnsafeMutablePointer<T>, _ logits: UnsafePointer<T>,
        _ targets: UnsafePointer<Int32>, n: Int, vocab v: Int
    ) -> (mean: T, count: Int) {
        var total: T = 0
        var count = 0
        for row in 0..<n {
            let l = logits + row * v, p = probs + row * v
            var maxv = -T.infinity
            for j in 0..<v where l[j] > maxv { maxv = l[j] }
            var sum: T = 0
            for j in 0..<v {
                let e = T.exp(l[j] - maxv)
                p[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0..<v { p[j] *= inv }
            let target = Int(targets[row])
            if target >= 0 {
                // log-softmax directly from the logits, which stays exact when a probability underflows
                let loss = T.log(sum) + maxv - l[target]
                losses[row] = loss
                total += loss
                count += 1
            } else {
                losses[row] = 0
            }
        }
        return (count > 0 ? total / T(count) : 0, count)
    }

    /// `dlogits = (probs − onehot(target)) / count` on supervised rows and exactly 0 on masked rows (overwrites).
    @inlinable
    public static func crossEntropyBackward<T: TrainScalar>(
        _ dlogits: UnsafeMutablePointer<T>, _ probs: UnsafePointer<T>, _ targets: UnsafePointer<Int32>,
        count: Int, n: Int, vocab v: Int
    ) {
        let scale: T = count > 0 ? 1 / T(count) : 0
        for row in 0..<n {
            let d = dlogits + row * v, p = probs + row * v
            let target = Int(targets[row])
            if target < 0 {
                for j in 0..<v { d[j] = 0 }
                continue
            }
            for j in 0..<v { d[j] = p[j] * scale }
            d[target] -= scale
        }
    }

    // MARK: Global-norm clipping

    /// The L2 norm of all gradients together.
    @inlinable
    public static func globalNorm<T: TrainScalar>(_ grads: UnsafePointer<T>, count: Int) -> T {
        var sum: T = 0
        for i in 0..<count { sum += grads[i] * grads[i] }
        return sum.squareRoot()
    }

    /// `dgrads += dnorm · grads / norm`: the gradient of the global norm (zero when the norm is zero).
    @inlinable
    public static func globalNormBackward<T: TrainScalar>(
        _ dgrads: UnsafeMutablePointer<T>, _ grads: UnsafePointer<T>, norm: T, dnorm: T, count: Int
    ) {
        guard norm > 0 else { return }
        let s = dnorm / norm
        for i in 0..<count { dgrads[i] += s * grads[i] }
    }

    /// Scales the gradients so their global norm is at most `maxNorm` (as `torch.nn.utils.clip_grad_norm_`).
    /// Returns the norm before clipping.
    @inlinable @discardableResult
    public static func clipGlobalNorm<T: TrainScalar>(_ grads: UnsafeMutablePointer<T>, count: Int, maxNorm: T) -> T {
        let norm = globalNorm(grads, count: count)
        if maxNorm > 0, norm > maxNorm {
            let s = maxNorm / (norm + 1e-6)
            for i in 0..<count { grads[i] *= s }
        }
        return norm
    }
}
