import Foundation
import VLMCatalog
import VLMCore

/// `export llava` as a stage value: the catalog's instructions as a LLaVA JSON file, one record per image by
/// default (`per_instruction: true` for one per instruction, `tokenized: NAME|HASH` for a tokenize config's samples).
public struct ExportLLaVAStep: Stage, LineageStage {
    public static let name = "export llava"
    /// Reads the catalog only.
    static let writerLock: String? = nil
    public static let summary = "write instructions as a LLaVA JSON file"
    static let reads = [GenInstructionsStep.name, IngestLLaVAStep.name]
    /// The output is a file outside the catalog: the stage always runs (it is deterministic).
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var out: String
        /// Comma-separated kinds (all when nil).
        public var kinds: String?
        /// Comma-separated generators: templates, llm, import (all when nil).
        public var generators: String?
        public var imageRoot: String?
        /// One record per instruction instead of one per image.
        public var perInstruction: Bool
        /// A tokenize config (readable name or hash prefix) whose samples are exported as they are.
        public var tokenized: String?

        public init(out: String, kinds: String? = nil, generators: String? = nil, imageRoot: String? = nil,
                    perInstruction: Bool = false, tokenized: String? = nil) {
            self.out = out
            self.kinds = kinds
            self.generators = generators
            self.imageRoot = imageRoot
            self.perInstruction = perInstruction
            self.tokenized = tokenized
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case out, kinds, generators, tokenized
            case imageRoot = "image_root"
            case perInstruction = "per_instruction"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(out: try c.decode(String.self, forKey: .out), kinds: try c.decodeIfPresent(String.self, forKey: .kinds),
                      generators: try c.decodeIfPresent(String.self, forKey: .generators),
                      imageRoot: try c.decodeIfPresent(String.self, forKey: .imageRoot),
                      perInstruction: try c.decodeIfPresent(Bool.self, forKey: .perInstruction) ?? false,
                      tokenized: try c.decodeIfPresent(String.self, forKey: .tokenized))
        }
    }

    public let config: Config

    public init(config: Config) throws {
        if config.out.isEmpty { throw invalid("out", "needs a file name") }
        if let root = config.imageRoot {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw invalid("image_root", "\(root) is not a folder")
            }
        }
        if config.tokenized != nil {
            if config.perInstruction { throw invalid("tokenized", "exports the samples tokenize made; it cannot be combined with per_instruction") }
            if config.kinds != nil || config.generators != nil {
                throw invalid("tokenized", "exports every sample of the config; it cannot be combined with kinds or generators")
            }
        }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run an ingest and gen-instructions first")
        return try runWithLineage(context)
    }

    /// The chosen tokenize config with `tokenized`, else nil.
    func tokenizedChoice(_ catalog: Catalog) throws -> LineageChoice.Candidate? {
        guard let requested = config.tokenized else { return nil }
        return try LineageChoice.choose(catalog, stage: TokenizeStep.name, table: .tokenized, requested: requested,
                                        flag: "--tokenized", what: "tokenization")
    }

    func inputs(_ catalog: Catalog) throws -> [Catalog.LineageRun] {
        let tokenize = try tokenizedChoice(catalog)?.run
        return try catalog.currentLineageRuns(stages: Self.reads) + [tokenize].compactMap { $0 }
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: URL(fileURLWithPath: config.out).lastPathComponent, config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        func list(_ text: String?) -> [String]? {
            text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        }
        let options = ExportLLaVA.Options(out: config.out, kinds: list(config.kinds), generators: list(config.generators),
                                          imageRoot: config.imageRoot, layout: config.perInstruction ? .perInstruction : .perImage,
                                          tokenizedConfig: try tokenizedChoice(catalog)?.hash)
        return try ExportLLaVA(options: options).run(catalog: catalog, progress: context.progress)
    }
}
