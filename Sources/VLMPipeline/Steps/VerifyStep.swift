import Foundation
import VLMCatalog
import VLMCore
import VLMShard

/// `verify` as a stage value: every training shard against the catalog index. Problems fail the stage.
public struct VerifyStep: Stage, LineageStage {
    public static let name = "verify"
    /// Reads the catalog only.
    static let writerLock: String? = nil
    public static let summary = "check the training shards against the catalog index"
    static let reads = [ShardStep.name]
    /// A check, not a product: it always runs.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var deep = false

        public init(deep: Bool = false) { self.deep = deep }

        enum CodingKeys: String, CodingKey, CaseIterable { case deep }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(deep: try c.value(.deep, default: false))
        }
    }

    public let config: Config

    public init(config: Config) throws { self.config = config }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "give the workspace that holds the shards")
        return try runWithLineage(context)
    }

    func inputs(_ catalog: Catalog) throws -> [Catalog.LineageRun] {
        Array(try catalog.currentLineageRuns(stages: Self.reads).prefix(1))
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: config.deep ? "deep" : "index", config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        let summary = try ShardStage.verify(workspace: catalog.workspace, deep: config.deep, progress: context.progress)
        let report = StageReport(stage: Self.name, counts: ["shards": summary.shards, "samples": summary.samples, "bytes": summary.bytes,
                                                                     "pixel_shards": summary.pixelShards,
                                                                     "sha256_checked": summary.sha256Checked,
                                                                     "sha256_computed": summary.sha256Computed.count,
                                                                     "pixel_sha256_checked": summary.pixelSHA256Checked,
                                                                     "pixel_sha256_computed": summary.pixelSHA256Computed.count],
                                 problems: summary.problems)
        if !summary.problems.isEmpty {
            throw StageFailure(stage: Self.name, error: VLMError(.corrupt, file: catalog.workspace.shardsDirectory,
                                                                  "\(summary.problems.count) problems in the shards"), report: report)
        }
        return report
    }
}
