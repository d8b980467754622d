import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the training shards against the catalog index; exit 0 only if all is well.",
        discussion: """
        Checks each shard's size and XXH3-128 (recorded at write time; as `xxhsum -H2` prints it), that its tar
        structure reads to the end, and that every indexed member is the tar member KEY.SUFFIX at the recorded
        offset and size with the recorded XXH3. --deep also checks each shard's sha256 where one was recorded
        (`shard --sha256`, or an earlier --deep); where none was, it is computed from bytes that matched their
        XXH3-128, recorded in the catalog (one transaction) and counted as sha256_computed, so the next --deep
        checks it. It parses every json and npy, checking shapes and lengths against the json and the index.
        Pixel shards are checked too: the whole file against the XXH3-128 patchify recorded, every member against
        its XXH3, and with --deep the sha256 as above (pixel_sha256_checked, pixel_sha256_computed). Every problem
        is listed.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Flag(help: "Also check each shard's and pixel shard's sha256 (where recorded; else compute and record it), and parse every json and npy member and compare shapes and counts.")
    var deep = false

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        let ws = Workspace(root: workspace.path)
        guard FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace.")
        }
        let stage = try makeStage(VerifyStep.self, .init(deep: deep))
        let report: StageReport
        do { report = try stage.run(workspace.context()) } catch let failure as StageFailure {
            guard let partial = failure.report else {
                FileHandle.standardError.write(Data("error: \(failure.error)\n".utf8))
                throw ExitCode(1)
            }
            report = partial
        }
        if json {
            // The counts at the top level, as before, and the problems (capped) with their total.
            var object: [String: Any] = report.counts
            object["problems"] = Array(report.problems.prefix(StageReport.problemLimit))
            object["problem_count"] = report.problemCount
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for problem in report.problems { print("problem: \(problem)") }
            let c = report.counts
            print("verify\(deep ? " --deep" : ""): \(c["shards"] ?? 0) shards, \(c["samples"] ?? 0) samples, \(c["bytes"] ?? 0) bytes, \(c["pixel_shards"] ?? 0) pixel shards, "
                + (report.problems.isEmpty ? "all well" : "\(report.problemCount) problems"))
        }
        if report.problemCount > 0 { throw ExitCode(1) }
    }
}
