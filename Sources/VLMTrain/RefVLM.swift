import VLMCore

/// LLaVA in miniature: patch embedding (+ learned positions) → projector → GPT-style pre-LN decoder, tied head.
///
/// Parameters and gradients each live in one flat `Buffer`; `layout` names the tensors in it. `forward` computes the
/// masked next-token loss of an `ExpandedBatch` and keeps the activations; `backward` then fills `grads`.
///
/// ```swift
/// let model = try RefVLM<Float>(config: cfg, seed: 1)
/// let batch = try model.expand(trainBatch)
/// let loss = model.forward(batch).loss
/// model.backward()
/// ```
public final class RefVLM<T: TrainScalar> {
    public let config: RefVLMConfig
    public let layout: ParameterLayout
    public let params: Buffer<T>
    public let grads: Buffer<T>
    public var backend: MatmulBackend
    /// Zero the normalized pixels before the patch embedding: the image-blind control.
    public var blind = false

    private var acts: Activations<T>?
    private var dacts: Activations<T>?
    private var current: ExpandedBatch?

    public var parameterCount: Int { layout.count }

    /// A model with GPT-2's initialization (normal 0.02, residual projections scaled by 1/√(2·layers)) from `seed`.
    public init(config: RefVLMConfig, seed: UInt64, backend: MatmulBackend = .blas) throws {
        try config.validate()
        self.config = config
        layout = ParameterLayout(config)
        params = Buffer(count: layout.count)
        grads = Buffer(count: layout.count)
        self.backend = backend
        var rng = SeededRNG(seed: seed)
        for tensor in layout.tensors {
            for i in 0..<tensor.count {
                params[tensor.offset + i] = tensor.initStd > 0 ? T(rng.normal() * tensor.initStd) : T(tensor.initConstant)
            }
        }
    }

    /// A copy of `other`'s parameters converted to this scalar type (used to compare Float against Double).
    public init<U: TrainScalar>(converting other: RefVLM<U>, backend: MatmulBackend? = nil) {
        config = other.config
        layout = other.layout
        params = Buffer(count: layout.count)
        grads = Buffer(count: layout.count)
        self.backend = backend ?? other.backend
        blind = other.blind
        for i in 0..<layout.count { params[i] = T(other.params[i]) }
    }

    /// Expands a loader batch for this model's vocabulary, context and patch shape.
    public func expand(_ batch: TrainBatch) throws -> ExpandedBatch {
        try ExpandedBatch(batch, vocabSize: config.vocabSize, maxSeqLen: config.maxSeqLen,
                          patches: config.patches, patchDim: config.patchDim)
    }

    // MARK: Forward

    /// Runs the model on `batch`, keeping the activations for `backward`; returns the mean loss over supervised
    /// positions and how many there were.
    @_specialize(exported: true, where T == Float)
    @discardableResult
    public func forward(_ batch: ExpandedBatch) -> (loss: T, count: Int) {
        let cfg = config, L = layout
        let B = batch.batchSize, Tn = batch.seqLen, C = cfg.channels, V = cfg.vocabSize
        let Np = cfg.patches, PD = cfg.patchDim, BT = B * Tn, BP = B * Np
        let a = activations(batch: B, seq: Tn)
        current = batch
        let p = params.pointer

        // pixels: uint8 → (x/255 − mean) / std per channel, or zeros for the blind control
        if blind {
            a.pixels.zero()
        } else {
            // x·scale[k] + shift[k] = (x/255 − mean) / std, per value of a patch (channel k mod 3)
            let scale = (0..<PD).map { T(1 / (255 * cfg.pixelStd[$0 % 3])) }
            let shift = (0..<PD).map { T(-cfg.pixelMean[$0 % 3] / cfg.pixelStd[$0 % 3]) }
            batch.pixels.withUnsafeBufferPointer { px in
                scale.withUnsafeBufferPointer { sc in
                    shift.withUnsafeBufferPointer { sh in
                        for row in 0..<BP {
                            let src = px.baseAddress! + row * PD, dst = a.pixels.pointer + row * PD
                            for k in 0..<PD { dst[k] = T(src[k]) * sc[k] + sh[k] }
                        }
                    }
                }
            }
        }
        Ops.linearForward(a.patch.pointer, a.pixels.pointer, p + L.patchW, p + L.patchB,
                          n: BP, inFeatures: PD, outFeatures: C, backend: backend)
        Ops.positionAddForward(a.patch.pointer, p + L.patchPos, batch: B, seq: Np, c: C)
        let projected: Buffer<T>
        switch cfg.projector {
        case .linear:
            Ops.linearForward(a.proj1.pointer, a.patch.pointer, p + L.proj1W, p + L.proj1B,
                              n: BP, inFeatures: C, outFeatures: C, backend: backend)
            projected = a.proj1
        case .mlp2xGelu:
            Ops.linearForward(a.proj1.pointer, a.patch.pointer, p + L.proj1W, p + L.proj1B,
                              n: BP, inFeatures: C, outFeatures: C, backend: backend)
            Ops.geluForward(a.projGelu.pointer, a.proj1.pointer, count: BP * C)
            Ops.linearForward(a.proj2.pointer, a.projGelu.pointer, p + L.proj2W, p + L.proj2B,
                              n: BP, inFeatures: C, outFeatures: C, backend: backend)
            projected = a.proj2
        }

        // decoder input: token embeddings and projected patches, plus learned positions
        batch.tokens.withUnsafeBufferPointer { tok in
            batch.imageSlots.withUnsafeBufferPointer { slots in
                Ops.gatherForward(a.encoded.pointer, p + L.wte, tok.baseAddress!, n: BT, c: C)
                Ops.gatherForward(a.encoded.pointer, projected.pointer, slots.baseAddress!, n: BT, c: C)
            }
        }
        Ops.positionAddForward(a.encoded.pointer, p + L.wpe, batch: B, seq: Tn, c: C)

        var residual = a.encoded.pointer
        for (l, w) in L.layers.enumerated() {
            let s = a.layers[l]
            Ops.layerNormForward(s.ln1.pointer, s.ln1Mean.pointer, s.ln1Rstd.pointer, residual, p + w.ln1w, p + w.ln1b, n: BT, c: C)
            Ops.linearForward(s.qkv.pointer, s.ln1.pointer, p + w.qkvw, p + w.qkvb, n: BT, inFeatures: C, outFeatures: 3 * C, backend: backend)
            Ops.attentionForward(s.atty.pointer, s.att.pointer, s.qkv.pointer, batch: B, seq: Tn, c: C, heads: cfg.heads)
            Ops.linearForward(s.attproj.pointer, s.atty.pointer, p + w.attprojw, p + w.attprojb, n: BT, inFeatures: C, outFeatures: C, backend: backend)
            Ops.residualForward(s.res2.pointer, residual, s.attproj.pointer, count: BT * C)
            Ops.layerNormForward(s.ln2.pointer, s.ln2Mean.pointer, s.ln2Rstd.pointer, s.res2.pointer, p + w.ln2w, p + w.ln2b, n: BT, c: C)
            Ops.linearForward(s.fch.pointer, s.ln2.pointer, p + w.fcw, p + w.fcb, n: BT, inFeatures: C, outFeatures: 4 * C, backend: backend)
            Ops.geluForward(s.fchGelu.pointer, s.fch.pointer, count: BT * 4 * C, tanhOut: s.fchTanh.pointer)
            Ops.linearForward(s.fcproj.pointer, s.fchGelu.pointer, p + w.fcprojw, p + w.fcprojb, n: BT, inFeatures: 4 * C, outFeatures: C, backend: backend)
            Ops.residualForward(s.res3.pointer, s.res2.pointer, s.fcproj.pointer, count: BT * C)
            residual = s.res3.pointer
        }
        Ops.layerNormForward(a.lnf.pointer, a.lnfMean.pointer, a.lnfRstd.pointer, residual, p + L.lnfW, p + L.lnfB, n: BT, c: C)
        Ops.linearForward(a.logits.pointer, a.lnf.pointer, p + L.wte, nil, n: BT, inFeatures: C, outFeatures: V, backend: backend)
        let result = batch.targets.withUnsafeBufferPointer { tg in
            Ops.crossEntropyForward(a.losses.pointer, a.probs.pointer, a.logits.pointer, tg.baseAddress!, n: BT, vocab: V)
        }
        a.supervised = result.count
        return (result.mean, result.count)
    }

    /// The logits `[batch, seq, vocab]` of the last `forward`.
    public func logits(sample b: Int, position t: Int) -> UnsafeBufferPointer<T> {
        let a = acts!, V = config.vocabSize, Tn = current!.seqLen
        return UnsafeBufferPointer(start: a.logits.pointer + (b * Tn + t) * V, count: V)
    }

    // MARK: Backward

    /// Fills `grads` (overwriting them) with the gradient of the last `forward`'s loss.
    @_specialize(exported: true, where T == Float)
    public func backward() {
        guard let batch = current, let a = acts else { preconditionFailure("backward() before forward()") }
        let cfg = config, L = layout
        let B = batch.batchSize, Tn = batch.seqLen, C = cfg.channels, V = cfg.vocabSize
        let Np = cfg.patches, PD = cfg.patchDim, BT = B * Tn, BP = B * Np
        let d = gradActivations(batch: B, seq: Tn)
        d.zeroAll()
        grads.zero()
        let p = params.pointer, g = grads.pointer

        batch.targets.withUnsafeBufferPointer { tg in
            Ops.crossEntropyBackward(d.logits.pointer, a.probs.pointer, tg.baseAddress!, count: a.supervised, n: BT, vocab: V)
        }
        Ops.linearBackward(d.lnf.pointer, g + L.wte, nil, d.logits.pointer, a.lnf.pointer, p + L.wte,
                           n: BT, inFeatures: C, outFeatures: V, backend: backend)
        let lastResidual = L.layers.isEmpty ? a.encoded : a.layers[L.layers.count - 1].res3
        let lastDResidual = L.layers.isEmpty ? d.encoded : d.layers[L.layers.count - 1].res3
        Ops.layerNormBackward(lastDResidual.pointer, g + L.lnfW, g + L.lnfB, d.lnf.pointer, lastResidual.pointer, p + L.lnfW,
                              a.lnfMean.pointer, a.lnfRstd.pointer, n: BT, c: C)

        for l in stride(from: L.layers.count - 1, through: 0, by: -1) {
            let w = L.layers[l], s = a.layers[l], ds = d.layers[l]
            let residual = l == 0 ? a.encoded : a.layers[l - 1].res3
            let dresidual = l == 0 ? d.encoded : d.layers[l - 1].res3
            // res3 = res2 + fcproj
            Ops.residualBackward(ds.res2.pointer, ds.fcproj.pointer, ds.res3.pointer, count: BT * C)
            Ops.linearBackward(ds.fchGelu.pointer, g + w.fcprojw, g + w.fcprojb, ds.fcproj.pointer, s.fchGelu.pointer, p + w.fcprojw,
                               n: BT, inFeatures: 4 * C, outFeatures: C, backend: backend)
            Ops.geluBackward(ds.fch.pointer, s.fch.pointer, ds.fchGelu.pointer, count: BT * 4 * C, tanhIn: s.fchTanh.pointer)
            Ops.linearBackward(ds.ln2.pointer, g + w.fcw, g + w.fcb, ds.fch.pointer, s.ln2.pointer, p + w.fcw,
                               n: BT, inFeatures: C, outFeatures: 4 * C, backend: backend)
            Ops.layerNormBackward(ds.res2.pointer, g + w.ln2w, g + w.ln2b, ds.ln2.pointer, s.res2.pointer, p + w.ln2w,
                                  s.ln2Mean.pointer, s.ln2Rstd.pointer, n: BT, c: C)
            // res2 = residual + attproj
            Ops.residualBackward(dresidual.pointer, ds.attproj.pointer, ds.res2.pointer, count: BT * C)
            Ops.linearBackward(ds.atty.pointer, g + w.attprojw, g + w.attprojb, ds.attproj.pointer, s.atty.pointer, p + w.attprojw,
                               n: BT, inFeatures: C, outFeatures: C, backend: backend)
            Ops.attentionBackward(ds.qkv.pointer, ds.atty.pointer, s.qkv.pointer, s.att.pointer, batch: B, seq: Tn, c: C, heads: cfg.heads)
            Ops.linearBackward(ds.ln1.pointer, g + w.qkvw, g + w.qkvb, ds.qkv.pointer, s.ln1.pointer, p + w.qkvw,
                               n: BT, inFeatures: C, outFeatures: 3 * C, backend: backend)
            Ops.layerNormBackward(dresidual.pointer, g + w.ln1w, g + w.ln1b, ds.ln1.pointer, residual.pointer, p + w.ln1w,
                                  s.ln1Mean.pointer, s.ln1Rstd.pointer, n: BT, c: C)
        }

        Ops.positionAddBackward(g + L.wpe, d.encoded.pointer, batch: B, seq: Tn, c: C)
        let dprojected = cfg.projector == .linear ? d.proj1 : d.proj2
        batch.tokens.withUnsafeBufferPointer { tok in
            batch.imageSlots.withUnsafeBufferPointer { slots in
                Ops.gatherBackward(g + L.wte, d.encoded.pointer, tok.baseAddress!, n: BT, c: C)
                Ops.gatherBackward(dprojected.pointer, d.encoded.pointer, slots.baseAddress!, n: BT, c: C)
            }
        }
        if cfg.projector == .mlp2xGelu {
            Ops.linearBackward(d.projGelu.pointer, g + L.proj2W, g + L.proj2B, d.proj2.pointer, a.projGelu.pointer, p + L.proj2W,
                               n: BP, inFeatures: C, outFeatures: C, backend: backend)
            Ops.geluBackward(d.proj1.pointer, a.proj1.pointer, d.projGelu.pointer, count: BP * C)
        }
        Ops.linearBackward(d.patch.pointer, g + L.proj1W, g + L.proj1B, d.proj1.pointer, a.patch.pointer, p + L.proj1W,
                           n: BP, inFeatures: C, outFeatures: C, backend: backend)
        Ops.positionAddBackward(g + L.patchPos, d.patch.pointer, batch: B, seq: Np, c: C)
        Ops.linearBackward(nil, g + L.patchW, g + L.patchB, d.patch.pointer, a.pixels.pointer, p + L.patchW,
                           n: BP, inFeatures: PD, outFeatures: C, backend: backend)
    }

    /// The gradient of the loss with respect to the decoder input `[batch, seq, channels]` (after `backward`),
    /// so tests can check which positions receive gradient.
    public func inputGradient(sample b: Int, position t: Int) -> [T] {
        let d = dacts!, C = config.channels, Tn = current!.seqLen
        return Array(UnsafeBufferPointer(start: d.encoded.pointer + (b * Tn + t) * C, count: C))
    }

    // MARK: Activation storage

    private func activations(batch: Int, seq: Int) -> Activations<T> {
        if let a = acts, a.batch == batch, a.seq == seq { return a }
        let a = Activations<T>(config: config, batch: batch, seq: seq)
        acts = a
        return a
    }

    private func gradActivations(batch: Int, seq: Int) -> Activations<T> {
        if let d = dacts, d.batch == batch, d.seq == seq { return d }
        let d = Activations<T>(config: config, batch: batch, seq: seq)
        dacts = d
        return d
    }
}

/// Every intermediate tensor of one forward pass (and, in a second instance, their gradients).
final class Activations<T: TrainScalar> {
    final class LayerActs {
        let ln1, ln1Mean, ln1Rstd, qkv, att, atty, attproj, res2: Buffer<T>
        let ln2, ln2Mean, ln2Rstd, fch, fchGelu, fchTanh, fcproj, res3: Buffer<T>
        init(bt: Int, c: Int, heads: Int, batch: Int, seq: Int) {
            ln1 = Buffer(count: bt * c); ln1Mean = Buffer(count: bt); ln1Rstd = Buffer(count: bt)
            qkv = Buffer(count: bt * 3 * c); att = Buffer(count: batch * heads * seq * seq)
            atty = Buffer(count: bt * c); attproj = Buffer(count: bt * c); res2 = Buffer(count: bt * c)
            ln2 = Buffer(count: bt * c); ln2Mean = Buffer(count: bt); ln2Rstd = Buffer(count: bt)
            fch = Buffer(count: bt * 4 * c); fchGelu = Buffer(count: bt * 4 * c); fchTanh = Buffer(count: bt * 4 * c)
            fcproj = Buffer(count: bt * c); res3 = Buffer(count: bt * c)
        }
        var all: [Buffer<T>] { [ln1, ln1Mean, ln1Rstd, qkv, att, atty, attproj, res2, ln2, ln2Mean, ln2Rstd, fch, fchGelu, fchTanh, fcproj, res3] }
    }

    let batch: Int, seq: Int
    let pixels, patch, proj1, projGelu, proj2, encoded: Buffer<T>
    let layers: [LayerActs]
    let lnf, lnfMean, lnfRstd, logits, probs, losses: Buffer<T>
    var supervised = 0

    init(config cfg: RefVLMConfig, batch: Int, seq: Int) {
        self.batch = batch
        self.seq = seq
        let C = cfg.channels, bt = batch * seq, bp = batch * cfg.patches
        pixels = Buffer(count: bp * cfg.patchDim)
        patch = Buffer(count: bp * C); proj1 = Buffer(count: bp * C)
        projGelu = Buffer(count: bp * C); proj2 = Buffer(count: bp * C)
        encoded = Buffer(count: bt * C)
        layers = (0..<cfg.layers).map { _ in LayerActs(bt: bt, c: C, heads: cfg.heads, batch: batch, seq: seq) }
        lnf = Buffer(count: bt * C); lnfMean = Buffer(count: bt); lnfRstd = Buffer(count: bt)
        logits = Buffer(count: bt * cfg.vocabSize); probs = Buffer(count: bt * cfg.vocabSize); losses = Buffer(count: bt)
    }

    func zeroAll() {
        for b in [pixels, patch, proj1, projGelu, proj2, encoded, lnf, lnfMean, lnfRstd, logits, probs, losses] { b.zero() }
        for l in layers { for b in l.all { b.zero() } }
    }
}
