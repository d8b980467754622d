import ArgumentParser
import Foundation
import VLMCore
import VLMPipeline

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the stages of a pipeline file (Pipelines/*.yaml) in order.",
        discussion: """
        Each stage is run as its own command with the file's parameters and the file's workspace; a stage whose \
        outputs are already complete does nothing, so running a pipeline again is cheap. Stops at the first stage \
        that fails.
        """
    )
    @Argument(help: "Pipeline file.") var file: String
    @Option(help: "Use this workspace instead of the file's.") var workspace: String?
    @Flag(help: "Print the commands without running them.") var dryRun = false

    func run() throws {
        let pipeline = try runOrExit { try PipelineFile(path: file, workspaceOverride: workspace) }
        for (index, step) in pipeline.steps.enumerated() {
            var args = step.arguments
            // Every stage except synth takes the workspace.
            if !step.stage.hasPrefix("synth") && !args.contains("--workspace") {
                args += ["--workspace", pipeline.workspace]
            }
            FileHandle.standardError.write(Data("[\(index + 1)/\(pipeline.steps.count)] vlmdata \(args.joined(separator: " "))\n".utf8))
            if dryRun { continue }
            var command: any ParsableCommand
            do { command = try VLMDataCommand.parseAsRoot(args) } catch {
                FileHandle.standardError.write(Data("error: \(file): stage \(index + 1) (\(step.stage)): \(VLMDataCommand.message(for: error))\n".utf8))
                throw ExitCode(2)
            }
            try command.run()
        }
    }
}
