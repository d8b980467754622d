import Foundation
import VLMCore
import VLMTrain

/// `train-smoke` as a stage value: the whole pipeline on synthetic shapes in a folder of its own, RefVLM trained
/// from the streaming loader, its answers to a held-out caption set scored by `eval score`, and the gates.
///
/// A pipeline file runs it as `stage: train-smoke` (keys: the CLI's flags with underscores); it fails the
/// pipeline when a gate fails, unless `no_gate: true`. It builds in `workspace` (default: `train-smoke/` inside
/// the pipeline's workspace) and leaves every file there.
///
/// ```swift
/// var config = TrainSmokeStep.Config()
/// config.steps = 200
/// let report = try TrainSmokeStep(config: config).train(StageContext(workspace: "ws"), log: { print($0) })
/// print(report.summary)
/// ```
public struct TrainSmokeStep: Stage {
    public static let name = "train-smoke"
    public static let summary = "build synthetic shapes with every stage, train RefVLM on them, score its held-out answers"

    public struct Config: StageConfig, Equatable {
        public var steps = TrainSmoke.Options.defaultSteps
        public var seed: UInt64 = 1
        public var blind = false
        public var projector = ProjectorKind.linear.rawValue
        public var batchSize = TrainSmoke.Options.defaultBatchSize
        public var lr = TrainSmoke.Options.defaultLR
        public var trainImages = TrainSmoke.Options.defaultTrainImages
        public var evalImages = TrainSmoke.Options.defaultEvalImages
        /// The folder to build in (nil: `train-smoke/` inside the stage's workspace).
        public var workspace: String?
        /// A training-time gate in seconds (nil: none; timing belongs in `make bench`).
        public var maxTrainSeconds: Double?
        /// Report the gates but do not fail on them (benchmarks).
        public var noGate = false

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case steps, seed, blind, projector, lr, workspace
            case batchSize = "batch_size", trainImages = "train_images", evalImages = "eval_images"
            case maxTrainSeconds = "max_train_seconds", noGate = "no_gate"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init()
            steps = try c.value(.steps, default: steps)
            seed = try c.value(.seed, default: seed)
            blind = try c.value(.blind, default: blind)
            projector = try c.value(.projector, default: projector)
            batchSize = try c.value(.batchSize, default: batchSize)
            lr = try c.value(.lr, default: lr)
            trainImages = try c.value(.trainImages, default: trainImages)
            evalImages = try c.value(.evalImages, default: evalImages)
            workspace = try c.decodeIfPresent(String.self, forKey: .workspace)
            maxTrainSeconds = try c.decodeIfPresent(Double.self, forKey: .maxTrainSeconds)
            noGate = try c.value(.noGate, default: noGate)
        }
    }

    public let config: Config
    let projector: ProjectorKind

    public init(config: Config) throws {
        guard config.steps >= 1 else { throw invalid("steps", "must be at least 1") }
        guard let projector = ProjectorKind(rawValue: config.projector) else {
            throw invalid("projector", "must be linear or mlp2x_gelu, not '\(config.projector)'")
        }
        guard config.batchSize >= 1 else { throw invalid("batch_size", "must be at least 1") }
        guard config.lr > 0, config.lr < 1 else { throw invalid("lr", "must be between 0 and 1") }
        guard config.trainImages >= config.batchSize else { throw invalid("train_images", "must be at least batch_size") }
        guard config.evalImages >= 10 else { throw invalid("eval_images", "must be at least 10") }
        if let limit = config.maxTrainSeconds, !(limit > 0) { throw invalid("max_train_seconds", "must be positive") }
        self.config = config
        self.projector = projector
    }

    /// The folder train-smoke builds in for `context`.
    public func folder(_ context: StageContext) -> String {
        config.workspace ?? context.workspace + "/train-smoke"
    }

    /// Builds, trains, evaluates; returns the whole report whether or not the gates passed.
    public func train(_ context: StageContext, log: (String) -> Void) throws -> TrainSmoke.Report {
        var options = TrainSmoke.Options()
        options.steps = config.steps
        options.seed = config.seed
        options.blind = config.blind
        options.projector = projector
        options.batchSize = config.batchSize
        options.learningRate = config.lr
        options.trainImages = config.trainImages
        options.evalImages = config.evalImages
        options.workspace = folder(context)
        options.maxTrainSeconds = config.maxTrainSeconds
        return try TrainSmoke(options: options).run(progress: context.progress, log: log)
    }

    public func run(_ context: StageContext) throws -> StageReport {
        let report: TrainSmoke.Report
        do { report = try train(context, log: { _ in }) } catch let error as VLMError {
            throw StageFailure(stage: Self.name, error: error)
        }
        let j = report.json
        var counts = ["steps": j.steps, "train_images": j.train_images, "eval_questions": j.eval_images,
                      "gates": j.gates.count, "gates_failed": j.gates.filter { !$0.passed }.count]
        // Accuracies in basis points (the report's counts are integers; train-smoke.json has the exact values).
        for (attr, value) in j.accuracy { counts["\(attr)_accuracy_bp"] = Int((value * 10_000).rounded()) }
        let stageReport = StageReport(stage: Self.name, counts: counts)
        guard report.passed || config.noGate else {
            let failed = j.gates.filter { !$0.passed }.map { "\($0.name) \(String(format: "%.3f", $0.value))" }
            throw StageFailure(stage: Self.name, error: VLMError(.gateFailed, file: j.workspace + "/train-smoke.json",
                                                                 "gates failed: \(failed.joined(separator: ", "))"),
                               report: stageReport)
        }
        return stageReport
    }
}
