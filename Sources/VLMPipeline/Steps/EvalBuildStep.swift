import Foundation
import VLMCatalog
import VLMCore
import VLMEval

/// `eval build` as a stage value: a held-out evaluation set from an ingested split's annotations, written into a
/// folder in the benchmarks' formats and recorded in the catalog (so `shard` leaves its images out).
///
/// A pipeline file names it `stage: eval build` with the CLI's flags as keys (`pope_sampling: [random, popular]`).
/// The run is lineage-recorded under the set's name; an unchanged rerun (same config, same ingest runs, the set's
/// files still in its folder) is skipped.
///
/// ```swift
/// var config = EvalBuildStep.Config(kind: "pope", split: "val2017", out: "eval/pope")
/// config.count = 100
/// let report = try EvalBuildStep(config: config).run(StageContext(workspace: "ws"))
/// print(report.counts["questions"]!)
/// ```
public struct EvalBuildStep: Stage, LineageStage {
    public static let name = "eval build"
    public static let summary = "build a held-out evaluation set (POPE, MME, MMBench, grounding, caption) and hold its images out of shards"
    static let reads = [IngestCOCOStep.name, IngestLLaVAStep.name, IngestURLsStep.name]

    public struct Config: StageConfig, Equatable {
        /// pope, mme, mmbench, refcoco or caption.
        public var kind: String
        /// The ingested split (source name) whose annotations make the questions.
        public var split: String
        /// The output folder.
        public var out: String
        /// Images to use (nil: every image that can carry the questions).
        public var count: Int?
        public var seed: UInt64 = 0
        /// POPE negative samplings (empty: all three).
        public var popeSampling: [String] = []
        /// Grounding box frame: original or pad.
        public var frame = BoxFrame.original.rawValue
        /// The set's name in the catalog (nil: the folder's name).
        public var name: String?

        public init(kind: String, split: String, out: String) {
            self.kind = kind
            self.split = split
            self.out = out
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case kind, split, out, count, seed, frame, name
            case popeSampling = "pope_sampling"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(kind: try c.decode(String.self, forKey: .kind), split: try c.decode(String.self, forKey: .split),
                      out: try c.decode(String.self, forKey: .out))
            count = try c.decodeIfPresent(Int.self, forKey: .count)
            seed = try c.value(.seed, default: seed)
            popeSampling = try c.value(.popeSampling, default: popeSampling)
            frame = try c.value(.frame, default: frame)
            name = try c.decodeIfPresent(String.self, forKey: .name)
        }
    }

    public let config: Config
    let options: EvalBuildOptions

    public init(config: Config) throws {
        let kinds = EvalKind.allCases.map(\.rawValue).joined(separator: ", ")
        guard let kind = EvalKind(rawValue: config.kind) else { throw invalid("kind", "must be one of \(kinds), not '\(config.kind)'") }
        if config.split.isEmpty { throw invalid("split", "needs the name of an ingested split") }
        if config.out.isEmpty { throw invalid("out", "needs a folder") }
        if let count = config.count, count < 1 { throw invalid("count", "must be at least 1") }
        var samplings: [PopeSampling] = []
        for text in config.popeSampling {
            guard let sampling = PopeSampling(rawValue: text) else {
                throw invalid("pope_sampling", "must be random, popular or adversarial, not '\(text)'")
            }
            samplings.append(sampling)
        }
        if !samplings.isEmpty, kind != .pope { throw invalid("pope_sampling", "applies to kind pope only") }
        guard let frame = BoxFrame(rawValue: config.frame) else {
            throw invalid("frame", "must be original or pad, not '\(config.frame)'")
        }
        if frame == .crop { throw invalid("frame", "crop is not built: a centre crop may cut the target off; use original or pad") }
        var options = EvalBuildOptions(kind: kind, split: config.split, out: config.out)
        options.count = config.count
        options.seed = config.seed
        if !samplings.isEmpty { options.popeSampling = samplings }
        options.frame = frame
        options.name = config.name
        self.config = config
        self.options = options
    }

    /// The set's files live outside the catalog: an unchanged rerun is skipped only while they are all there.
    var skipsUnchanged: Bool {
        [EvalFiles.manifest, EvalFiles.questions, EvalFiles.answerKey].allSatisfy {
            FileManager.default.fileExists(atPath: directory + "/" + $0)
        }
    }

    /// The set's folder as an absolute path (what the catalog records).
    public var directory: String { URL(fileURLWithPath: config.out).standardizedFileURL.path }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run `vlmdata ingest coco` first")
        return try runWithLineage(context)
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        /// What defines the set: the options with the folder made absolute (the same folder however it is named).
        struct Identity: Encodable {
            var kind: String, split: String, count: Int?, seed: UInt64, popeSampling: [String]?, frame: String?
            var name: String, directory: String
        }
        let identity = Identity(kind: options.kind.rawValue, split: options.split, count: options.count, seed: options.seed,
                                popeSampling: options.kind == .pope ? options.popeSampling.map(\.rawValue) : nil,
                                frame: options.kind == .refcoco ? options.frame.rawValue : nil,
                                name: options.setName, directory: directory)
        return LineageIdentity(name: "\(options.kind.rawValue):\(options.setName)", config: identity)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        context.progress.start("eval build", total: nil)
        let built = try EvalSetBuilder(catalog: catalog, options: options).build()
        context.progress.finish("\(built.manifest.questions) questions on \(built.manifest.images) images in \(built.directory)")
        return Self.report(built)
    }

    /// The build's figures as stage counts: `questions`, `images`, `ineligible_images`, then `questions.CATEGORY`
    /// and `labels.LABEL` per category and answer-key label.
    static func report(_ built: EvalBuildReport) -> StageReport {
        var counts = ["questions": built.manifest.questions, "images": built.manifest.images,
                      "ineligible_images": built.manifest.ineligible_images]
        for (category, n) in built.categories { counts["questions." + category] = n }
        for (label, n) in built.labels { counts["labels." + label] = n }
        return StageReport(stage: name, counts: counts)
    }
}
