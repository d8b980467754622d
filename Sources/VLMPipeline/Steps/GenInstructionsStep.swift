import Foundation
import VLMCatalog
import VLMCore
import VLMInstruct

/// `gen-instructions` as a stage value: LLaVA instructions from annotations (templates) or through an LLM.
public struct GenInstructionsStep: Stage, LineageStage {
    public static let name = "gen-instructions"
    public static let summary = "generate LLaVA instructions from annotations (templates) or through an OpenAI-compatible LLM"
    static let reads = [IngestCOCOStep.name, IngestLLaVAStep.name, IngestURLsStep.name]
    static let derived: [Catalog.DerivedTable] = [.instructions]
    /// Templates are a pure function of config and inputs. An LLM run stopped by a budget or by failed requests
    /// is continued by running it again: it always runs, and its reply cache makes an unchanged rerun send nothing.
    var skipsUnchanged: Bool { config.generator == .templates }

    public enum Generator: String, Codable, Sendable, CaseIterable { case templates, llm }

    public struct Config: StageConfig, Equatable {
        public var generator = Generator.templates
        /// Comma-separated kinds; nil for all of the generator's kinds.
        public var kinds: String?
        public var seed: UInt64 = 0
        public var perImage = 1
        public var circular = false
        public var minBox = 0.01
        public var baseURL: String?
        public var model: String?
        public var concurrency = 4
        public var rpm: Int?
        public var tpm: Int?
        public var maxRequests: Int?
        public var maxTokens: Int?
        public var replyMaxTokens = 1024
        public var timeout = 120.0
        public var maxRetries = 5
        public var temperature = 0.0
        public var jsonMode = false
        /// llm: send no Authorization header (an endpoint that needs no key).
        public var noAuth = false
        public var limit: Int?
        /// templates: the frame boxes are stated in (`pad`, `crop` or `original`), matching patchify's mode.
        public var boxFrame = BoxFrame.original.rawValue
        /// `--part I/N`: only this part's images.
        public var part: String?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case generator, kinds, seed, circular, model, concurrency, rpm, tpm, timeout, temperature, limit, part
            case boxFrame = "box_frame"
            case perImage = "per_image", minBox = "min_box", baseURL = "base_url", maxRequests = "max_requests"
            case maxTokens = "max_tokens", replyMaxTokens = "reply_max_tokens", maxRetries = "max_retries", jsonMode = "json_mode"
            case noAuth = "no_auth"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init()
            let name = try c.value(.generator, default: generator.rawValue)
            guard let generator = Generator(rawValue: name) else {
                throw DecodingError.dataCorruptedError(forKey: .generator, in: c, debugDescription: "must be templates or llm, not '\(name)'")
            }
            self.generator = generator
            kinds = try c.decodeIfPresent(String.self, forKey: .kinds)
            seed = try c.value(.seed, default: seed)
            perImage = try c.value(.perImage, default: perImage)
            circular = try c.value(.circular, default: circular)
            minBox = try c.value(.minBox, default: minBox)
            baseURL = try c.decodeIfPresent(String.self, forKey: .baseURL)
            model = try c.decodeIfPresent(String.self, forKey: .model)
            concurrency = try c.value(.concurrency, default: concurrency)
            rpm = try c.decodeIfPresent(Int.self, forKey: .rpm)
            tpm = try c.decodeIfPresent(Int.self, forKey: .tpm)
            maxRequests = try c.decodeIfPresent(Int.self, forKey: .maxRequests)
            maxTokens = try c.decodeIfPresent(Int.self, forKey: .maxTokens)
            replyMaxTokens = try c.value(.replyMaxTokens, default: replyMaxTokens)
            timeout = try c.value(.timeout, default: timeout)
            maxRetries = try c.value(.maxRetries, default: maxRetries)
            temperature = try c.value(.temperature, default: temperature)
            jsonMode = try c.value(.jsonMode, default: jsonMode)
            noAuth = try c.value(.noAuth, default: noAuth)
            limit = try c.decodeIfPresent(Int.self, forKey: .limit)
            boxFrame = try c.value(.boxFrame, default: boxFrame)
            part = try c.decodeIfPresent(String.self, forKey: .part)
        }

        /// The kinds named by `kinds` (all when nil), each once, in the given order.
        func parsedKinds<K: RawRepresentable>(all: [K]) throws -> [K] where K.RawValue == String {
            guard let kinds else { return all }
            var out: [K] = []
            for name in kinds.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !name.isEmpty {
                guard let kind = K(rawValue: name) else {
                    throw invalid("kinds", "names an unknown kind '\(name)' for generator \(generator.rawValue); choose from \(all.map(\.rawValue).joined(separator: ", "))")
                }
                if !out.contains(where: { $0.rawValue == kind.rawValue }) { out.append(kind) }
            }
            if out.isEmpty { throw invalid("kinds", "is empty") }
            return out
        }
    }

    public let config: Config

    public init(config: Config) throws {
        if config.perImage < 1 { throw invalid("per_image", "must be at least 1") }
        if !(0..<1).contains(config.minBox) { throw invalid("min_box", "must be in [0, 1)") }
        switch config.generator {
        case .templates:
            _ = try config.parsedKinds(all: TemplateKind.allCases)
        case .llm:
            _ = try config.parsedKinds(all: LLMKind.allCases)
            guard let baseURL = config.baseURL, baseURL.hasPrefix("http://") || baseURL.hasPrefix("https://") else {
                let given = (config.baseURL ?? "").isEmpty ? "none was given" : "not '\(config.baseURL!)'"
                throw invalid("base_url", "must be the endpoint's http(s):// URL for generator llm (e.g. https://api.openai.com/v1); \(given)")
            }
            if config.model?.isEmpty ?? true { throw invalid("model", "is required by generator llm") }
            if config.concurrency < 1 { throw invalid("concurrency", "must be at least 1") }
            if let rpm = config.rpm, rpm < 1 { throw invalid("rpm", "must be at least 1") }
            if let tpm = config.tpm, tpm < 1 { throw invalid("tpm", "must be at least 1") }
            if let n = config.maxRequests, n < 0 { throw invalid("max_requests", "must not be negative") }
            if let n = config.maxTokens, n < 0 { throw invalid("max_tokens", "must not be negative") }
            if config.replyMaxTokens < 1 { throw invalid("reply_max_tokens", "must be at least 1") }
            if config.timeout <= 0 { throw invalid("timeout", "must be positive") }
            if config.maxRetries < 0 { throw invalid("max_retries", "must not be negative") }
        }
        if let limit = config.limit, limit < 1 { throw invalid("limit", "must be at least 1") }
        guard BoxFrame(rawValue: config.boxFrame) != nil else {
            throw invalid("box_frame", "must be one of \(BoxFrame.allCases.map(\.rawValue).joined(separator: ", ")), not '\(config.boxFrame)'")
        }
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport { try runWithLineage(context) }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        switch config.generator {
        case .templates:
            return LineageIdentity(name: "templates-seed\(config.seed)", config: try templateOptions())
        case .llm:
            var content = config
            // Speed and budget settings do not change what is asked.
            (content.concurrency, content.rpm, content.tpm, content.maxRequests, content.maxTokens) = (0, nil, nil, nil, nil)
            (content.timeout, content.maxRetries) = (0, 0)
            return LineageIdentity(name: "llm-\(config.model ?? "")-seed\(config.seed)", config: content)
        }
    }

    func templateOptions() throws -> TemplateOptions {
        TemplateOptions(seed: config.seed, kinds: try config.parsedKinds(all: TemplateKind.allCases), perImage: config.perImage,
                        circular: config.circular, minBoxFraction: config.minBox, boxFrame: BoxFrame(rawValue: config.boxFrame)!)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        let stage: GenInstructionsStage
        let part = config.part.flatMap(PartSpec.init(parsing:)) ?? context.part
        switch config.generator {
        case .templates:
            stage = GenInstructionsStage(.templates(try templateOptions()), part: part)
        case .llm:
            var options = LLMOptions(
                baseURL: config.baseURL!, model: config.model!, kinds: try config.parsedKinds(all: LLMKind.allCases), seed: config.seed,
                concurrency: config.concurrency, requestsPerMinute: config.rpm, tokensPerMinute: config.tpm,
                maxRequests: config.maxRequests, maxTokens: config.maxTokens, replyMaxTokens: config.replyMaxTokens,
                temperature: config.temperature, timeout: config.timeout, jsonMode: config.jsonMode, maxRetries: config.maxRetries,
                limit: config.limit, noAuth: config.noAuth)
            options.boxFrame = BoxFrame(rawValue: config.boxFrame)!
            stage = GenInstructionsStage(.llm(options, apiKey: ProcessInfo.processInfo.environment["OPENAI_API_KEY"]), part: part)
        }
        return try stage.run(catalog: catalog, progress: context.progress)
    }
}
