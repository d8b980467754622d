import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// Flags every command that touches a workspace shares.
struct WorkspaceOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Workspace folder (catalog.sqlite + shards/). Default: $VLMDATA_WORKSPACE or ./vlmdata-work.", valueName: "dir"))
    var workspace: String?

    @Flag(name: .long, help: "Print no progress, only results and errors.")
    var quiet = false

    @Flag(name: .long, help: "Writing stages: when another process is writing this stage into the workspace, wait for it instead of failing.")
    var wait = false

    func validate() throws {
        // One writer per stage per workspace: the stages take the lock; this sets whether they wait for it.
        if wait { WorkspaceLock.waitByDefault = true }
    }

    var path: String {
        workspace ?? ProcessInfo.processInfo.environment["VLMDATA_WORKSPACE"] ?? "./vlmdata-work"
    }

    func progress(json: Bool = false) -> TerminalProgress {
        TerminalProgress(quiet: quiet)
    }
}

extension WorkspaceOptions {
    /// The context a stage runs in from the command line.
    func context() -> StageContext {
        StageContext(workspace: path, progress: progress())
    }
}

/// Prints a stage report: a line of counts (and the run that made the outputs), or one JSON object with `--json`
/// that carries up to `StageReport.problemLimit` problem messages and `problem_count`, the total.
func printReport(_ report: StageReport, json: Bool, problemsShown: Bool = true) {
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(report.cappingProblems()) { print(String(decoding: data, as: UTF8.self)) }
        return
    }
    let counts = report.counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    print("\(report.stage): \(report.skipped ? "already done, nothing to do; " : "")\(counts)")
    if let run = report.run {
        print("  run #\(run.id): \(run.name)" + (run.output.map { " (output config \($0.prefix(12)))" } ?? ""))
    }
    guard problemsShown else { return }
    for problem in report.problems.prefix(20) { print("  problem: \(problem)") }
    let total = max(report.problemCount, report.problems.count)
    if total > 20 { print("  ... and \(total - 20) more problems") }
}

/// Runs a stage value and prints its report. A failed stage prints what it did before failing and the error, and
/// exits 1; so does a stage with problems under `strict`. With `problemsOnStderr` the text report lists its
/// problems on stderr (the JSON report always carries them).
func runStage(_ stage: some Stage, _ context: StageContext, json: Bool, strict: Bool = false, problemsOnStderr: Bool = false,
              failureHint: String? = nil) throws {
    // Per-record problems go to stderr in both modes (the README's promise); `--json` also carries them.
    func show(_ report: StageReport) {
        if problemsOnStderr { printProblems(report.problems, total: report.problemCount) }
        printReport(report, json: json, problemsShown: !problemsOnStderr)
    }
    let report: StageReport
    do {
        report = try stage.run(context)
    } catch let failure as StageFailure {
        if let partial = failure.report { show(partial) }
        let hint = failure.report == nil ? nil : failureHint
        FileHandle.standardError.write(Data("error: \(failure.error)\n\(hint.map { "(\($0))\n" } ?? "")".utf8))
        throw ExitCode(1)
    } catch let error as VLMError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
    show(report)
    if strict && report.problemCount > 0 { throw ExitCode(1) }
}

/// Builds a stage value in a command's `validate()`: a bad value becomes a usage error naming the flag.
func makeStage<S: Stage>(_ type: S.Type, _ config: S.Config) throws -> S {
    do { return try S(config: config) } catch let error as VLMError {
        let flag = error.record.map { "--" + $0.replacingOccurrences(of: "_", with: "-") + " " } ?? ""
        throw ValidationError(flag + error.message + ".")
    }
}

func printProblems(_ problems: [String], total: Int? = nil) {
    for problem in problems.prefix(50) { FileHandle.standardError.write(Data("problem: \(problem)\n".utf8)) }
    let total = max(total ?? problems.count, problems.count)
    if total > 50 { FileHandle.standardError.write(Data("... and \(total - 50) more problems\n".utf8)) }
}

/// Runs library code, turning a `VLMError` into a message on stderr and exit code 1.
func runOrExit<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as VLMError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
