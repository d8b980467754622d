import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMText

/// `tokenize` as a stage value: every instruction through a tokenizer.json and a LLaVA chat template.
///
/// Its run is named `TEMPLATE@TOKENIZER` (the tokenizer named by its folder, or its file name when that is not
/// `tokenizer.json`), e.g. `vicuna_v1@mistral-v1`; `shard --tokenized` accepts the name.
public struct TokenizeStep: Stage, LineageStage {
    public static let name = "tokenize"
    public static let summary = "tokenize the instructions with a tokenizer.json and a LLaVA chat template (input_ids + labels)"
    static let reads = [GenInstructionsStep.name, IngestLLaVAStep.name]
    static let derived: [Catalog.DerivedTable] = [.tokenized]
    /// The stage's own check (rows missing for this config) is as cheap as lineage's and also sees rows removed
    /// since the last run: it always runs, and a run that finds nothing to do reuses the earlier run.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var tokenizer: String
        public var template: String
        public var maxLength = 2048
        public var imageTokens = PatchGrid.clipViTL14at336.imageTokens
        public var overflow = "truncate"
        public var nonLegacy = false
        /// LLaVA's `tokenizer.legacy` and a tokenizer.model's mode; nil: its tokenizer_config.json, else true.
        public var legacy: Bool?
        /// Keep samples with no supervised token instead of making them error rows.
        public var allowUnsupervised = false
        public var jobs = 1
        /// `image_tokens: pixels`: each image's count from its stored pixels (`imageTokens` is then unused).
        public var imageTokensFromPixels = false
        /// With `imageTokensFromPixels`: the pixel config (hash) to count from, when the catalog holds several.
        public var pixels: String?
        /// `--part I/N`: only the instructions of this part's images.
        public var part: String?
        /// One sample per instruction (each with its own copy of the image) instead of one multi-turn sample per image.
        public var samplePerInstruction = false

        public init(tokenizer: String, template: String) {
            self.tokenizer = tokenizer
            self.template = template
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case tokenizer, template, overflow, jobs, pixels, part, legacy
            case allowUnsupervised = "allow_unsupervised", samplePerInstruction = "sample_per_instruction"
            case maxLength = "max_length", imageTokens = "image_tokens", nonLegacy = "non_legacy"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(tokenizer: try c.decode(String.self, forKey: .tokenizer), template: try c.decode(String.self, forKey: .template))
            maxLength = try c.value(.maxLength, default: maxLength)
            if (try? c.decodeIfPresent(String.self, forKey: .imageTokens)) == "pixels" {
                imageTokensFromPixels = true
            } else {
                imageTokens = try c.value(.imageTokens, default: imageTokens)
            }
            pixels = try c.decodeIfPresent(String.self, forKey: .pixels)
            part = try c.decodeIfPresent(String.self, forKey: .part)
            overflow = try c.value(.overflow, default: overflow)
            nonLegacy = try c.value(.nonLegacy, default: nonLegacy)
            legacy = try c.decodeIfPresent(Bool.self, forKey: .legacy)
            allowUnsupervised = try c.value(.allowUnsupervised, default: allowUnsupervised)
            jobs = try c.value(.jobs, default: jobs)
            samplePerInstruction = try c.value(.samplePerInstruction, default: samplePerInstruction)
        }
    }

    public let config: Config
    let stage: TokenizeStage

    public init(config: Config) throws {
        guard let template = ChatTemplate(rawValue: config.template) else {
            throw invalid("template", "must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")), not '\(config.template)'")
        }
        guard let overflow = TokenizeStage.Overflow(rawValue: config.overflow) else {
            throw invalid("overflow", "must be 'truncate' or 'drop', not '\(config.overflow)'")
        }
        guard config.maxLength > 0 else { throw invalid("max_length", "must be positive") }
        guard config.imageTokensFromPixels || config.imageTokens > 0 else { throw invalid("image_tokens", "must be positive or 'pixels'") }
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        if config.pixels != nil, !config.imageTokensFromPixels { throw invalid("pixels", "is only used with image_tokens: pixels") }
        guard config.jobs > 0 else { throw invalid("jobs", "must be positive") }
        if config.nonLegacy, config.legacy == true { throw invalid("non_legacy", "contradicts legacy: true") }
        self.config = config
        var options = TokenizeStage.Options(tokenizer: config.tokenizer, template: template, maxLength: config.maxLength,
                                            imageTokens: config.imageTokensFromPixels ? 0 : config.imageTokens, overflow: overflow,
                                            legacy: config.nonLegacy ? false : config.legacy,
                                            allowUnsupervised: config.allowUnsupervised, jobs: config.jobs)
        options.imageTokensFromPixels = config.imageTokensFromPixels
        options.pixelsConfig = config.pixels
        options.part = config.part.flatMap(PartSpec.init(parsing:))
        options.grouping = config.samplePerInstruction ? .perInstruction : .perImage
        stage = TokenizeStage(options: options)
    }

    public func run(_ context: StageContext) throws -> StageReport { try runWithLineage(context) }

    /// `vicuna_v1@mistral-v1`: the template, then the tokenizer's folder (or file) name; `/per-instruction` after it
    /// for one sample per instruction (not for `plain`, which is never grouped).
    public static func readableName(template: String, tokenizer: String, samplePerInstruction: Bool = false) -> String {
        "\(template)@\(tokenizerDisplayName(tokenizer))"
            + (samplePerInstruction ? ChatTemplate(rawValue: template).map(TokenizeStage.perInstructionSuffix) ?? "" : "")
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        guard FileManager.default.fileExists(atPath: config.tokenizer) else {
            throw VLMError(.notFound, file: config.tokenizer, "tokenizer file does not exist")
        }
        let tokenizerConfig = try stage.config(try loadTokenizer(config.tokenizer, legacy: stage.options.legacy), catalog: catalog)
        var identity = LineageIdentity(name: stage.readableName,
                                       config: tokenizerConfig, output: Hashing.canonicalHash(tokenizerConfig))
        // Where the tokenizer was read from (its sha256 is in the config): `vlmdata view` finds it there.
        identity.recorded["tokenizer_path"] = URL(fileURLWithPath: config.tokenizer).standardizedFileURL.path
        return identity
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        var stage = stage
        if stage.options.part == nil { stage.options.part = context.part }
        return try stage.run(catalog: catalog, progress: context.progress)
    }
}

/// `tokenizer train` as a stage value: a byte-level BPE tokenizer.json from the catalog's text or from files.
public struct TokenizerTrainStep: Stage, LineageStage {
    public static let name = "tokenizer train"
    /// Writes a file, not the catalog.
    static let writerLock: String? = nil
    public static let summary = "train a byte-level BPE tokenizer (GPT-2 style) and write a tokenizer.json"
    static let reads = [IngestCOCOStep.name, IngestLLaVAStep.name, GenInstructionsStep.name]
    /// The output is a file that may be removed or edited: the stage always runs (it is deterministic).
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var vocabSize: Int
        public var out: String
        public var fromCatalog = false
        public var minFrequency = 2
        public var specialTokens: [String] = []
        /// Text files, one text per line (instead of the catalog).
        public var files: [String] = []

        public init(vocabSize: Int, out: String) {
            self.vocabSize = vocabSize
            self.out = out
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case out, files
            case vocabSize = "vocab_size", fromCatalog = "from_catalog", minFrequency = "min_frequency", specialTokens = "special_tokens"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(vocabSize: try c.decode(Int.self, forKey: .vocabSize), out: try c.decode(String.self, forKey: .out))
            fromCatalog = try c.value(.fromCatalog, default: fromCatalog)
            minFrequency = try c.value(.minFrequency, default: minFrequency)
            specialTokens = try c.value(.specialTokens, default: specialTokens)
            files = try c.value(.files, default: files)
        }
    }

    public let config: Config

    public init(config: Config) throws {
        guard config.fromCatalog != !config.files.isEmpty else {
            throw invalid("from_catalog", "or text files must be given, not both and not neither")
        }
        guard config.vocabSize > 0 else { throw invalid("vocab_size", "must be positive") }
        guard config.minFrequency >= 1 else { throw invalid("min_frequency", "must be at least 1") }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport {
        if config.fromCatalog { return try runWithLineage(context) }
        do { return try train(texts: try fileTexts(), progress: context.progress) } catch { throw Self.failure(error) }
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: "bpe-\(config.vocabSize)", config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        try train(texts: try TokenizeStage.catalogTexts(catalog), progress: context.progress)
    }

    func fileTexts() throws -> [String] {
        var texts: [String] = []
        for file in config.files {
            guard let data = FileManager.default.contents(atPath: file) else { throw VLMError(.notFound, file: file, "cannot read the text file") }
            var records = Array(data).split(separator: 0x0A, omittingEmptySubsequences: false)
            if records.last?.isEmpty == true { records.removeLast() }
            for (i, record) in records.enumerated() {
                guard let text = String(validating: record, as: UTF8.self) else {
                    throw VLMError.badInput(file: file, record: "line \(i + 1)", "not valid UTF-8")
                }
                texts.append(text)
            }
        }
        return texts
    }

    func train(texts: [String], progress: any ProgressSink) throws -> StageReport {
        let trainer = BPETrainer(vocabSize: config.vocabSize,
                                 specialTokens: config.specialTokens.isEmpty ? BPETrainer.defaultSpecialTokens : config.specialTokens,
                                 minFrequency: config.minFrequency)
        let result = try trainer.train(texts: texts, progress: progress)
        let parent = URL(fileURLWithPath: config.out).deletingLastPathComponent().path
        try? FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        try AtomicFile.write(result.json, to: config.out)
        return StageReport(stage: Self.name, counts: ["texts": texts.count, "vocab_size": result.vocabSize, "merges": result.merges])
    }
}
