import Foundation
import VLMCatalog
import VLMCore

/// `export llava` as a stage value: the catalog's instructions as a LLaVA JSON file.
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

        public init(out: String, kinds: String? = nil, generators: String? = nil, imageRoot: String? = nil) {
            self.out = out
            self.kinds = kinds
            self.generators = generators
            self.imageRoot = imageRoot
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case out, kinds, generators
            case imageRoot = "image_root"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(out: try c.decode(String.self, forKey: .out), kinds: try c.decodeIfPresent(String.self, forKey: .kinds),
                      generators: try c.decodeIfPresent(String.self, forKey: .generators),
                      imageRoot: try c.decodeIfPresent(String.self, forKey: .imageRoot))
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
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run an ingest and gen-instructions first")
        return try runWithLineage(context)
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: URL(fileURLWithPath: config.out).lastPathComponent, config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        func list(_ text: String?) -> [String]? {
            text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        }
        let options = ExportLLaVA.Options(out: config.out, kinds: list(config.kinds), generators: list(config.generators),
                                          imageRoot: config.imageRoot)
        return try ExportLLaVA(options: options).run(catalog: catalog, progress: context.progress)
    }
}
