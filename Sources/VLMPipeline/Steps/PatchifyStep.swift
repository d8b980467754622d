import Foundation
import VLMCatalog
import VLMCore
import VLMImage

/// `patchify` as a stage value: every ok image into ViT patches in pixel shards, once per bytes and config.
///
/// Its run is named `MODE-SIZE/PATCH` (e.g. `pad-336/14`); `shard --pixels` accepts the name.
public struct PatchifyStep: Stage, LineageStage {
    public static let name = "patchify"
    public static let summary = "preprocess every ok catalog image into ViT patches in pixel shards"
    static let reads = [IngestCOCOStep.name, IngestLLaVAStep.name, IngestURLsStep.name]
    static let derived: [Catalog.DerivedTable] = [.pixels]
    /// The stage's own check (rows missing for this config) is as cheap as lineage's and also sees rows removed
    /// since the last run: it always runs, and a run that finds nothing to do reuses the earlier run.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var imageSize = 336
        public var patchSize = 14
        public var mode = "crop"
        public var resample = "bicubic"
        public var passOrder = "pillow13"
        public var fastDecode = false
        public var exifTranspose = false
        /// anyres candidates, `WxH,WxH,...`.
        public var gridPinpoints: String?
        public var jobs: Int?
        public var shardMib = 256
        public var part: String?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case mode, resample, jobs, part
            case imageSize = "image_size", patchSize = "patch_size", passOrder = "pass_order", fastDecode = "fast_decode"
            case exifTranspose = "exif_transpose", gridPinpoints = "grid_pinpoints", shardMib = "shard_mib"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init()
            imageSize = try c.value(.imageSize, default: imageSize)
            patchSize = try c.value(.patchSize, default: patchSize)
            mode = try c.value(.mode, default: mode)
            resample = try c.value(.resample, default: resample)
            passOrder = try c.value(.passOrder, default: passOrder)
            fastDecode = try c.value(.fastDecode, default: fastDecode)
            exifTranspose = try c.value(.exifTranspose, default: exifTranspose)
            gridPinpoints = try c.decodeIfPresent(String.self, forKey: .gridPinpoints)
            jobs = try c.decodeIfPresent(Int.self, forKey: .jobs)
            shardMib = try c.value(.shardMib, default: shardMib)
            part = try c.decodeIfPresent(String.self, forKey: .part)
        }
    }

    public let config: Config
    public let preprocess: PreprocessConfig

    public init(config: Config) throws {
        func pick<E: RawRepresentable & CaseIterable>(_ key: String, _ value: String, _: E.Type) throws -> E where E.RawValue == String {
            guard let e = E(rawValue: value) else {
                throw invalid(key, "must be one of \(E.allCases.map(\.rawValue).joined(separator: ", ")), not '\(value)'")
            }
            return e
        }
        var pinpoints: [[Int]]?
        if let text = config.gridPinpoints {
            pinpoints = try text.split(separator: ",").map { item in
                let parts = item.lowercased().split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard parts.count == 2 else { throw invalid("grid_pinpoints", "holds '\(item)', which is not WIDTHxHEIGHT") }
                return parts
            }
        }
        let preprocess = PreprocessConfig(
            imageSize: config.imageSize, patchSize: config.patchSize, mode: try pick("mode", config.mode, ResizeMode.self),
            resample: try pick("resample", config.resample, ResampleFilter.self),
            passOrder: try pick("pass_order", config.passOrder, ResizePassOrder.self), fastDecode: config.fastDecode,
            exifTranspose: config.exifTranspose, gridPinpoints: pinpoints)
        try preprocess.validate()
        if let jobs = config.jobs, jobs < 1 { throw invalid("jobs", "must be at least 1") }
        if config.shardMib < 1 { throw invalid("shard_mib", "must be at least 1") }
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        self.config = config
        self.preprocess = preprocess
    }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run an ingest first")
        return try runWithLineage(context)
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        struct Identity: Encodable {
            var preprocess: PreprocessConfig
            var part: String?
        }
        return LineageIdentity(name: "\(preprocess.mode.rawValue)-\(preprocess.imageSize)/\(preprocess.patchSize)",
                               config: Identity(preprocess: preprocess, part: config.part), output: preprocess.hash)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        let options = PatchifyStage.Options(config: preprocess, jobs: config.jobs ?? ImageWorkers.defaultJobs,
                                            shardBytes: config.shardMib << 20,
                                            part: config.part.flatMap(PartSpec.init(parsing:)) ?? context.part)
        return try PatchifyStage.run(catalog: catalog, options: options, progress: context.progress)
    }
}

/// Throws a `StageFailure` when the workspace has no catalog yet.
func requireCatalog(_ context: StageContext, stage: String, hint: String) throws {
    let workspace = Workspace(root: context.workspace)
    guard FileManager.default.fileExists(atPath: workspace.catalogPath) else {
        throw StageFailure(stage: stage, error: VLMError(.notFound, file: workspace.catalogPath, "no catalog here (\(hint))"))
    }
}
