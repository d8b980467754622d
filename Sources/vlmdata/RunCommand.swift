import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMPipeline

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the stages of a pipeline file (Pipelines/*.yaml) in order.",
        discussion: """
        The whole file is checked first: an unknown stage, an unknown key, a value of the wrong type or out of range, \
        or an unknown {VARIABLE} is reported with the file and line (and the allowed stages or keys), and nothing \
        runs. Then each stage is called directly with the file's workspace. A stage whose config and inputs are \
        unchanged since its last run is skipped; a changed config reruns that stage and the stages that read from \
        it (see docs/stages.md). Stops at the first stage that fails.
        """
    )
    @Argument(help: "Pipeline file.") var file: String?
    @Option(help: "Use this workspace instead of the file's.") var workspace: String?
    @Option(name: .customLong("set"), help: ArgumentHelp("Set a variable the file declares (repeatable).", valueName: "NAME=VALUE"))
    var assignments: [String] = []
    @Flag(help: "Check the file and print the plan without running it (exit 1 on any problem).") var dryRun = false
    @Flag(help: "List the pipeline files in --dir with their one-line description and variables.") var list = false
    @Option(help: ArgumentHelp("Folder --list reads.", valueName: "dir")) var dir = "Pipelines"
    @Option(help: ArgumentHelp("Run part I of N (0-based) in every stage (ingest, gen-instructions, tokenize, patchify, shard; a stage's own part: key wins), for one task of a job array (Pipelines/slurm/).", valueName: "I/N"))
    var part: String?
    @Flag(help: "Print no progress, only reports and errors.") var quiet = false
    @Flag(help: "Print each stage's report as one JSON object per line.") var json = false

    func validate() throws {
        if !list && file == nil { throw ValidationError("give a pipeline file, or --list.") }
        if let part, PartSpec(parsing: part) == nil { throw ValidationError("--part must look like 0/4 (index/count, index < count).") }
        for assignment in assignments where !assignment.contains("=") {
            throw ValidationError("--set takes NAME=VALUE, not '\(assignment)'.")
        }
    }

    var overrides: [String: String] {
        Dictionary(assignments.map { item in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        }, uniquingKeysWith: { _, last in last })
    }

    func run() throws {
        if list { return try listRecipes() }
        guard let file else { return }
        let pipeline: PipelineFile
        do { pipeline = try PipelineFile(path: file, workspaceOverride: workspace, set: overrides) } catch let invalid as PipelineFile.Invalid {
            FileHandle.standardError.write(Data("error: \(file) is not a valid pipeline (\(invalid.problems.count) problems; nothing was run):\n".utf8))
            for problem in invalid.problems { FileHandle.standardError.write(Data("  \(problem)\n".utf8)) }
            throw ExitCode(1)
        } catch let error as VLMError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(1)
        }
        let count = pipeline.steps.count
        if dryRun {
            print("workspace: \(pipeline.workspace)")
            for (index, step) in pipeline.steps.enumerated() {
                let parameters = step.parameters.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print("[\(index + 1)/\(count)] \(step.name)\(parameters.isEmpty ? "" : "  \(parameters)")")
            }
            return
        }
        for (index, step) in pipeline.steps.enumerated() {
            FileHandle.standardError.write(Data("[\(index + 1)/\(count)] \(step.name) (\(file):\(step.line))\n".utf8))
            let context = StageContext(workspace: pipeline.workspace, progress: TerminalProgress(quiet: quiet),
                                       part: part.flatMap(PartSpec.init(parsing:)))
            do {
                try runStage(step.stage, context, json: json)
            } catch let exit as ExitCode {
                FileHandle.standardError.write(Data("error: \(file): stage \(index + 1) (\(step.name)) failed; the stages after it did not run\n".utf8))
                throw exit
            }
        }
    }

    /// One line per recipe: name, description, variables with their defaults.
    func listRecipes() throws {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else {
            throw ValidationError("no folder '\(dir)'; give --dir.")
        }
        for name in names.filter({ $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }).sorted() {
            let path = dir + "/" + name
            do {
                let pipeline = try PipelineFile(path: path)
                let variables = pipeline.variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print("\(path): \(pipeline.summary)\(variables.isEmpty ? "" : "  [\(variables)]")")
            } catch {
                print("\(path): INVALID (run `vlmdata run \(path) --dry-run` to see why)")
            }
        }
    }
}
