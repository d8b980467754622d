import Foundation

/// One step of the data chain as a library value: a `Codable` config, a name, and `run`.
///
/// The CLI parses its flags into `Config` and prints the report; `vlmdata run` decodes `Config` from a pipeline
/// file's stage entry and calls the same `run`, so a command line and a pipeline file always mean the same thing.
///
/// ```swift
/// let stage = try TokenizeStep(config: .init(tokenizer: "tokenizer.json", template: "vicuna_v1"))
/// let report = try stage.run(StageContext(workspace: "./vlmdata-work"))
/// ```
public protocol Stage: Sendable {
    associatedtype Config: StageConfig
    /// The stage's name as a pipeline file and the CLI write it: `tokenize`, `ingest coco`.
    static var name: String { get }
    /// One line for `vlmdata run --list` and for error messages.
    static var summary: String { get }
    var config: Config { get }
    /// Checks the config (values in range, files named exist) before anything runs.
    init(config: Config) throws
    /// Does the work, checks the stage's invariants, and reports.
    func run(_ context: StageContext) throws -> StageReport
}

/// A stage's parameters. Keys are the CLI flags' names with underscores (`max_length` is `--max-length`).
public protocol StageConfig: Codable, Sendable {
    /// Every key the config accepts (a pipeline file may use no other).
    static var keys: [String] { get }
}

/// What a running stage may use: where the workspace is, where progress goes, whether to stop, which part.
public struct StageContext: Sendable {
    /// The workspace folder (catalog.sqlite + shards/).
    public var workspace: String
    public var progress: any ProgressSink
    public var cancellation: StageCancellation
    /// `--part I/N` of a job array, when the stage takes one.
    public var part: PartSpec?

    public init(workspace: String, progress: any ProgressSink = SilentProgress(),
                cancellation: StageCancellation = StageCancellation(), part: PartSpec? = nil) {
        self.workspace = workspace
        self.progress = progress
        self.cancellation = cancellation
        self.part = part
    }
}

/// A flag a runner sets to ask running stages to stop at their next checkpoint.
public final class StageCancellation: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    public init() {}

    public var isCancelled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }

    public func cancel() {
        lock.lock()
        cancelled = true
        lock.unlock()
    }

    /// Throws when cancelled; stages call it between units of work.
    public func check(_ stage: String) throws {
        if isCancelled { throw VLMError(.conflict, record: stage, "cancelled") }
    }
}

/// The one error a stage run ends with: which stage, what went wrong, and what was done before it.
public struct StageFailure: Error, CustomStringConvertible, Sendable {
    public var stage: String
    public var error: VLMError
    /// Counts and problems up to the failure (the records before it were kept).
    public var report: StageReport?

    public init(stage: String, error: VLMError, report: StageReport? = nil) {
        self.stage = stage
        self.error = error
        self.report = report
    }

    public var description: String { "\(stage): \(error)" }
}

/// What every stage reports when it ends: named counts, printed by the CLI and stored in the `runs` row.
public struct StageReport: Sendable, Codable, Equatable {
    public var stage: String
    /// Counts by name, e.g. "images": 80, "captions": 400.
    public var counts: [String: Int]
    /// True when the stage found its outputs already complete and did nothing.
    public var skipped: Bool
    /// Per-record problems kept going past (file/record: message). Stages keep up to `problemLimit` of them.
    public var problems: [String]
    /// How many problems there were in all (`problems` may hold fewer).
    public var problemCount: Int
    /// The run that made (or, when skipped, already held) the stage's outputs: id, readable name, config hash.
    public var run: RunInfo?

    /// At most this many problem messages are printed or stored in a report.
    public static let problemLimit = 100

    public struct RunInfo: Sendable, Codable, Equatable {
        public var id: Int64
        /// Readable name of the config, e.g. `vicuna_v1@mistral-v1`.
        public var name: String
        /// sha256 of the stage's canonical config.
        public var configHash: String
        /// The config hash of the rows the run made (`tokenized.config_hash`, `pixels.config_hash`), if any.
        public var output: String?

        public init(id: Int64, name: String, configHash: String, output: String? = nil) {
            self.id = id
            self.name = name
            self.configHash = configHash
            self.output = output
        }

        enum CodingKeys: String, CodingKey {
            case id, name, output
            case configHash = "config_hash"
        }
    }

    public init(stage: String, counts: [String: Int] = [:], skipped: Bool = false, problems: [String] = [],
                problemCount: Int? = nil) {
        self.stage = stage
        self.counts = counts
        self.skipped = skipped
        self.problems = problems
        self.problemCount = problemCount ?? problems.count
    }

    /// The same report with at most `limit` problem messages (the count keeps the total).
    public func cappingProblems(at limit: Int = StageReport.problemLimit) -> StageReport {
        var copy = self
        copy.problemCount = max(problemCount, problems.count)
        copy.problems = Array(problems.prefix(limit))
        return copy
    }

    enum CodingKeys: String, CodingKey {
        case stage, counts, skipped, problems, run
        case problemCount = "problem_count"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stage = try c.decode(String.self, forKey: .stage)
        counts = try c.decodeIfPresent([String: Int].self, forKey: .counts) ?? [:]
        skipped = try c.decodeIfPresent(Bool.self, forKey: .skipped) ?? false
        problems = try c.decodeIfPresent([String].self, forKey: .problems) ?? []
        problemCount = try c.decodeIfPresent(Int.self, forKey: .problemCount) ?? problems.count
        run = try c.decodeIfPresent(RunInfo.self, forKey: .run)
    }
}
