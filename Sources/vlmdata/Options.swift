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

/// Prints a stage report: a line per count, or one JSON object with `--json`.
func printReport(_ report: StageReport, json: Bool) {
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        if let data = try? encoder.encode(report) { print(String(decoding: data, as: UTF8.self)) }
        return
    }
    let counts = report.counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    print("\(report.stage): \(report.skipped ? "already done, nothing to do; " : "")\(counts)")
    for problem in report.problems.prefix(20) { print("  problem: \(problem)") }
    if report.problems.count > 20 { print("  ... and \(report.problems.count - 20) more problems") }
}

/// Runs library code, turning a `VLMError` into a message on stderr and exit code 1.
func runOrExit<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as VLMError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
