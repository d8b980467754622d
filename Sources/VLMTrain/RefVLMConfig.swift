import VLMCore

/// The projector between the patch embedding and the decoder, as LLaVA names them (`mm_projector_type`).
public enum ProjectorKind: String, Sendable, CaseIterable, Codable {
    /// LLaVA-1: one Linear.
    case linear
    /// LLaVA-1.5: Linear, GELU, Linear.
    case mlp2xGelu = "mlp2x_gelu"
}

/// The shape of a RefVLM: a patch embedding, a projector, and a GPT-style pre-LayerNorm decoder with a tied head.
public struct RefVLMConfig: Sendable, Equatable, Codable {
    public var vocabSize: Int
    /// The longest expanded sequence (text tokens plus one position per patch).
    public var maxSeqLen: Int
    /// Patches per image and values per patch (`patch · patch · 3`).
    public var patches: Int
    public var patchDim: Int
    public var channels: Int
    public var layers: Int
    public var heads: Int
    public var projector: ProjectorKind
    /// Per-channel mean and standard deviation applied to `pixel / 255` (channel = index mod 3, RGB interleaved).
    public var pixelMean: [Double]
    public var pixelStd: [Double]

    public init(
        vocabSize: Int, maxSeqLen: Int, patches: Int, patchDim: Int, channels: Int = 64, layers: Int = 2,
        heads: Int = 4, projector: ProjectorKind = .linear,
        pixelMean: [Double] = RefVLMConfig.clipMean, pixelStd: [Double] = RefVLMConfig.clipStd
    ) {
        self.vocabSize = vocabSize
        self.maxSeqLen = maxSeqLen
        self.patches = patches
        self.patchDim = patchDim
        self.channels = channels
        self.layers = layers
        self.heads = heads
        self.projector = projector
        self.pixelMean = pixelMean
        self.pixelStd = pixelStd
    }

    /// CLIP's image mean and standard deviation (OpenAI CLIP, as LLaVA's image processor uses them).
    public static let clipMean = [0.48145466, 0.4578275, 0.40821073]
    public static let clipStd = [0.26862954, 0.26130258, 0.27577711]

    /// Checks the shape is one the model can be built with.
    public func validate() throws {
        func check(_ ok: Bool, _ message: String) throws {
            if !ok { throw VLMError(.invalidArgument, "RefVLM config: \(message)") }
        }
        try check(vocabSize > 0, "vocabulary size must be positive")
        try check(maxSeqLen > 0, "maximum sequence length must be positive")
        try check(patches > 0 && patchDim > 0, "patches and patch size must be positive")
        try check(channels > 0 && heads > 0 && channels % heads == 0, "channels (\(channels)) must divide by heads (\(heads))")
        try check(layers > 0, "at least one layer")
        try check(pixelMean.count == 3 && pixelStd.count == 3 && pixelStd.allSatisfy { $0 > 0 },
                  "pixel mean and std need 3 values each, std positive")
    }
}


/// Where each parameter tensor lives in the flat parameter buffer (llm.c's layout: one allocation, named offsets).
public struct ParameterLayout: Sendable {
    public struct Tensor: Sendable {
        public var name: String
        public var offset: Int
        public var count: Int
        /// Whether AdamW's weight decay applies (matrices and embeddings; not biases or LayerNorm).
        public var decay: Bool
        /// How the tensor starts: normal with this standard deviation, or a constant.
        public var initStd: Double
        public var initConstant: Double
    }

    public struct Layer: Sendable {
        public var ln1w = 0, ln1b = 0, qkvw = 0, qkvb = 0, attprojw = 0, attprojb = 0
        public var ln2w = 0, ln2b = 0, fcw = 0, fcb = 0, fcprojw = 0, fcprojb = 0
    }

    public private(set) var tensors: [Tensor] = []
    public private(set) var count = 0
    public var patchW = 0, patchB = 0, patchPos = 0
    public var proj1W = 0, proj1B = 0, proj2W = 0, proj2B = 0
    public var wte = 0, wpe = 0
    public var layers: [Layer] = []
    public var lnfW = 0, lnfB = 0

    public init(_ cfg: RefVLMConfig) {
        let C = cfg.channels
        let std = 0.02
        let residualStd = 0.02 / Double(2 * cfg.layers).squareRoot()
        patchW = add("patch_embed.weight", C * cfg.patchDim, decay: true, std: std)
        patchB = add("patch_embed.bias", C, decay: false)
        patchPos = add("patch_embed.position", cfg.patches * C, decay: true, std: std)
        proj1W = add("mm_projector.0.weight", C * C, decay: true, std: std)
        proj1B = add("mm_projector.0.bias", C, decay: false)
        if cfg.projector == .mlp2xGelu {
            proj2W = add("mm_projector.2.weight", C * C, decay: true, std: std)
            proj2B = add("mm_projector.2.bias", C, decay: false)
        }
        wte = add("wte", cfg.vocabSize * C, decay: true, std: std)
        wpe = add("wpe", cfg.maxSeqLen * C, decay: true, std: std)
        for l in 0..<cfg.layers {
            var layer = Layer()
            layer.ln1w = add("h.\(l).ln_1.weight", C, decay: false, constant: 1)
            layer.ln1b = add("h.\(l).ln_1.bias", C, decay: false)
            layer.qkvw = add("h.\(l).attn.c_attn.weight", 3 * C * C, decay: true, std: std)
            layer.qkvb = add("h.\(l).attn.c_attn.bias", 3 * C, decay: false)
            layer.attprojw = add("h.\(l).attn.c_proj.weight", C * C, decay: true, std: residualStd)
            layer.attprojb = add("h.\(l).attn.c_proj.bias", C, decay: false)
            layer.ln2w = add("h.\(l).ln_2.weight", C, decay: false, constant: 1)
            layer.ln2b = add("h.\(l).ln_2.bias", C, decay: false)
            layer.fcw = add("h.\(l).mlp.c_fc.weight", 4 * C * C, decay: true, std: std)
            layer.fcb = add("h.\(l).mlp.c_fc.bias", 4 * C, decay: false)
            layer.fcprojw = add("h.\(l).mlp.c_proj.weight", 4 * C * C, decay: true, std: residualStd)
            layer.fcprojb = add("h.\(l).mlp.c_proj.bias", C, decay: false)
            layers.append(layer)
        }
        lnfW = add("ln_f.weight", C, decay: false, constant: 1)
        lnfB = add("ln_f.bias", C, decay: false)
    }

    private mutating func add(_ name: String, _ n: Int, decay: Bool, std: Double = 0, constant: Double = 0) -> Int {
        let offset = count
        tensors.append(Tensor(name: name, offset: offset, count: n, decay: decay, initStd: std, initConstant: constant))
        count += n
        return offset
    }
}
