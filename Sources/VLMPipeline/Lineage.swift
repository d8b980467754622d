import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// What defines a run's output: a readable name, the canonical config, and the config hash of the rows it makes.
struct LineageIdentity {
    var name: String
    var config: String
    /// `tokenized.config_hash` / `pixels.config_hash` of the rows the run makes, when the stage makes such rows.
    var output: String?
    /// What the run was given beyond its identity (e.g. `tokenizer_path`): recorded in the run's params under
    /// `recorded`, not hashed, so the same tokenizer bytes at another path are the same config.
    var recorded: [String: String] = [:]

    /// The config JSON with `"recorded": {...}` added (the run's `params`).
    var params: String {
        guard !recorded.isEmpty, config.hasPrefix("{"), config.hasSuffix("}") else { return config }
        let extra = String(decoding: Hashing.canonicalJSON(recorded), as: UTF8.self)
        return String(config.dropLast()) + (config == "{}" ? "" : ",") + "\"recorded\":" + extra + "}"
    }

    init(name: String, config: some Encodable, output: String? = nil) {
        self.name = name
        self.config = String(decoding: Hashing.canonicalJSON(config), as: UTF8.self)
        self.output = output
    }
}

/// A stage that reads and writes the workspace catalog and records lineage there.
protocol LineageStage: Stage {
    /// The stages whose current runs this one reads by default.
    static var reads: [String] { get }
    /// Derived tables whose new rows this stage makes (stamped with its run id).
    static var derived: [Catalog.DerivedTable] { get }
    /// True when unchanged config and inputs mean unchanged output, so the stage need not run at all. False when
    /// the stage reads something outside the catalog that may change (files), or checks rather than makes.
    var skipsUnchanged: Bool { get }
    /// The workspace lock a run of this stage holds (one writer per stage per workspace); nil for stages that only
    /// read the catalog. Default: the stage's name.
    static var writerLock: String? { get }
    /// The runs this one reads (default: the current runs of `reads`).
    func inputs(_ catalog: Catalog) throws -> [Catalog.LineageRun]
    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity
    /// The stage's work, with the chosen inputs.
    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport
}

extension LineageStage {
    static var derived: [Catalog.DerivedTable] { [] }
    static var writerLock: String? { name }
    var skipsUnchanged: Bool { true }

    func inputs(_ catalog: Catalog) throws -> [Catalog.LineageRun] {
        try catalog.currentLineageRuns(stages: Self.reads)
    }

    /// Runs the stage under lineage: skipped when a done run has the same config and inputs; otherwise a run row
    /// is opened, the work done, the new derived rows stamped, and the row closed. A run that found nothing to do
    /// and counted what an earlier run with the same config and inputs counted reuses that run.
    func runWithLineage(_ context: StageContext) throws -> StageReport {
        let catalog: Catalog
        do { catalog = try Catalog(workspace: Workspace(root: context.workspace)) } catch {
            throw StageFailure(stage: Self.name, error: Self.vlmError(error))
        }
        // The stage's lock before anything is read or recorded: a second writer fails (or waits) leaving no run row.
        let lock: WorkspaceLock?
        do { lock = try Self.writerLock.map { try WorkspaceLock.acquire(catalog.workspace, stage: $0) } } catch {
            throw StageFailure(stage: Self.name, error: Self.vlmError(error))
        }
        defer { lock?.release() }
        let inputs: [Catalog.LineageRun]
        let identity: LineageIdentity
        do {
            inputs = try self.inputs(catalog)
            identity = try self.identity(catalog, inputs: inputs)
        } catch {
            throw StageFailure(stage: Self.name, error: Self.vlmError(error))
        }
        let configHash = Hashing.sha256(Self.name + "\n" + identity.config)
        let inputIDs = inputs.map(\.id)
        let previous = try catalog.doneLineageRun(stage: Self.name, configHash: configHash, inputs: inputIDs)
        if skipsUnchanged, let previous {
            try catalog.touchLineageRun(previous.id)
            var report = StageReport(stage: Self.name, counts: previous.counts, skipped: true)
            report.run = .init(id: previous.id, name: previous.name, configHash: configHash, output: previous.output)
            return report
        }
        let runID = try catalog.beginLineageRun(stage: Self.name, name: identity.name, config: identity.config,
                                                configHash: configHash, inputs: inputIDs, params: identity.params)
        var report: StageReport
        do {
            report = try Catalog.withLineageRun(runID) { try perform(catalog, context, inputs: inputs) }
        } catch {
            let failure = Self.failure(error)
            try? catalog.failLineageRun(runID, error: failure.error.description)
            throw failure
        }
        if let previous, previous.counts == report.counts || report.skipped {
            try catalog.replaceLineageRun(runID, with: previous.id, derived: Self.derived)
            report.run = .init(id: previous.id, name: previous.name, configHash: configHash, output: previous.output)
            return report
        }
        try catalog.finishLineageRun(runID, counts: report.counts, output: identity.output, derived: Self.derived)
        report.run = .init(id: runID, name: identity.name, configHash: configHash, output: identity.output)
        return report
    }

    static func vlmError(_ error: any Error) -> VLMError {
        if let error = error as? VLMError { return error }
        if let failure = error as? StageFailure { return failure.error }
        return VLMError(.io, "\(error)")
    }

    /// Every way a stage body fails becomes one `StageFailure` (keeping the partial report stages attach).
    static func failure(_ error: any Error) -> StageFailure {
        switch error {
        case let failure as StageFailure: return failure
        case let failure as IngestFailure: return StageFailure(stage: name, error: failure.error, report: failure.report)
        case let failure as GenInstructionsFailure: return StageFailure(stage: name, error: failure.error, report: failure.report)
        default: return StageFailure(stage: name, error: vlmError(error))
        }
    }
}

/// Helpers for configs decoded from the CLI or a pipeline file.
extension KeyedDecodingContainer {
    func value<T: Decodable>(_ key: Key, default fallback: T) throws -> T {
        try decodeIfPresent(T.self, forKey: key) ?? fallback
    }
}

/// A config value out of range: names the key (the pipeline-file spelling; the CLI flag is `--` + dashes).
func invalid(_ key: String, _ message: String) -> VLMError {
    VLMError(.invalidArgument, record: key, message)
}
