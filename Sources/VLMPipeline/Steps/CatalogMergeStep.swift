import Foundation
import VLMCatalog
import VLMCore

/// `catalog merge` as a stage value: the part workspaces of a partitioned run (`--part I/N`) joined into the
/// context's workspace (see `CatalogMerge`). A refused merge (missing or doubled part, overlapping samples,
/// conflicting rows) is a `StageFailure`.
public struct CatalogMergeStep: Stage {
    public static let name = "catalog merge"
    public static let summary = "join the workspaces of a partitioned run (--part I/N) into this one"

    public struct Config: StageConfig, Equatable {
        /// The part workspaces, each holding a catalog.sqlite.
        public var parts: [String]
        /// Index the parts' training shards where they are instead of linking them in.
        public var reference = false
        /// Merge even when parts of the split are missing.
        public var partial = false

        public init(parts: [String], reference: Bool = false, partial: Bool = false) {
            self.parts = parts
            self.reference = reference
            self.partial = partial
        }

        enum CodingKeys: String, CodingKey, CaseIterable { case parts, reference, partial }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(parts: try c.value(.parts, default: []), reference: try c.value(.reference, default: false),
                      partial: try c.value(.partial, default: false))
        }
    }

    public let config: Config

    public init(config: Config) throws {
        if config.parts.isEmpty { throw invalid("parts", "give at least one part workspace to merge") }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport {
        do {
            return try CatalogMerge.merge(into: Workspace(root: context.workspace),
                                          parts: config.parts.map { Workspace(root: $0) },
                                          referenceShards: config.reference, allowPartial: config.partial,
                                          progress: context.progress)
        } catch let error as VLMError {
            throw StageFailure(stage: Self.name, error: error)
        }
    }

    /// One line per input workspace: the parts its stages recorded (what `catalog merge` prints before its report).
    public func coverage() throws -> [String] {
        let catalogs = try config.parts.map { try Catalog(workspace: Workspace(root: $0)) }
        return try PartCoverage.of(catalogs).map { "coverage: \($0)" }
    }
}
