import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `catalog publish` as a stage value: a consistent snapshot of the workspace's catalog uploaded as the dataset's
/// index (`ShardUpload.publish`), so a trainer needs only its URL. It writes nothing to the workspace; a pipeline
/// file runs it after a `shard` stage with `upload:`.
///
/// ```swift
/// let step = try CatalogPublishStep(config: .init(to: "s3://bucket/ds/"))
/// let report = try step.run(StageContext(workspace: "ws"))
/// print(step.indexURL, report.counts["bytes"]!)      // s3://bucket/ds/index.sqlite
/// ```
public struct CatalogPublishStep: Stage {
    public static let name = "catalog publish"
    public static let summary = "upload a snapshot of the catalog as the dataset's index (s3://bucket/prefix/index.sqlite)"

    public struct Config: StageConfig, Equatable {
        /// s3://bucket/prefix/index.sqlite, or s3://bucket/prefix/ (index.sqlite is appended).
        public var to: String

        public init(to: String) { self.to = to }

        enum CodingKeys: String, CodingKey, CaseIterable { case to }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(to: try c.decode(String.self, forKey: .to))
        }
    }

    public let config: Config
    let target: S3Location

    public init(config: Config) throws {
        do { target = ShardUpload.indexLocation(try S3Location(config.to)) } catch {
            throw invalid("to", "must be an s3:// URL, not '\(config.to)'")
        }
        self.config = config
    }

    /// The URL the index is published at.
    public var indexURL: String { target.description }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run shard (with upload) first")
        do {
            let published = try ShardUpload.publish(workspace: Workspace(root: context.workspace), to: target,
                                                    config: try S3Config.fromEnvironment())
            return StageReport(stage: Self.name, counts: ["bytes": published.bytes])
        } catch {
            throw StageFailure(stage: Self.name, error: error as? VLMError ?? VLMError(.io, "\(error)"))
        }
    }
}
