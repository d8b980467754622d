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
        offset and size with the recorded XXH3. --deep also checks each shard's sha256 and parses every json and
        npy, checking shapes and lengths against the json and the index. Every problem is listed.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Flag(help: "Also check each shard's sha256, and parse every json and npy member and compare shapes and counts.")
    var deep = false

    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func run() throws {
        let ws = Workspace(root: workspace.path)
        guard FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace.")
        }
        let summary = try runOrExit { try ShardStage.verify(workspace: ws, deep: deep, progress: workspace.progress()) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            for problem in summary.problems { print("problem: \(problem)") }
            print("verify\(deep ? " --deep" : ""): \(summary.shards) shards, \(summary.samples) samples, \(summary.bytes) bytes, "
                + (summary.problems.isEmpty ? "all well" : "\(summary.problems.count) problems"))
        }
        if !summary.problems.isEmpty { throw ExitCode(1) }
    }
}
