import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMEval
import VLMPipeline

extension EvalKind: ExpressibleByArgument {}
extension PopeSampling: ExpressibleByArgument {}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Build held-out evaluation sets from the catalog and score a model's answers as the benchmarks do.",
        discussion: """
        `build` writes LLaVA question JSONL and an answer key (POPE, MME, MMBench circular, RefCOCO-style \
        grounding) and records the set's images, which `vlmdata shard` then leaves out of training shards. \
        `score` reads LLaVA answer JSONL (question_id, text) and prints a table per category and overall. \
        `check` reports training samples that hold an evaluation image (same sha256). See docs/eval.md.
        """,
        subcommands: [EvalBuildCommand.self, EvalScoreCommand.self, EvalCheckCommand.self])
}

struct EvalBuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build an evaluation set from a split's annotations into a folder.",
        discussion: """
        Writes eval_set.json, questions.jsonl (question_id, image, text, category) and answer_key.jsonl; for POPE
        also coco_pope/coco_pope_<sampling>.json (LLaVA's eval_pope.py --annotation-dir), for MMBench also
        mmbench.tsv (index, question, A-D, answer, category, image as base64). Images are picked by --seed.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: "Benchmark: pope, mme, mmbench, refcoco or caption.")
    var kind: EvalKind

    @Option(help: ArgumentHelp("The ingested split (source name) whose annotations make the questions.", valueName: "name"))
    var split: String

    @Option(help: ArgumentHelp("Images to use (default: every image that can carry the questions).", valueName: "n"))
    var count: Int?

    @Option(help: ArgumentHelp("Seed of the image and object choices.", valueName: "s"))
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("POPE negative sampling: random, popular or adversarial (repeat for several; default all three).", valueName: "mode"))
    var popeSampling: [PopeSampling] = []

    @Option(help: ArgumentHelp("Grounding box frame, as patchify --mode makes the pixels: original (normalized to the image; squash, anyres) or pad (the centered square of LLaVA-1.5's pad).", valueName: "frame"))
    var frame: BoxFrame = .original

    @Option(help: ArgumentHelp("Name of the set in the catalog (default: the folder's name).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("Output folder.", valueName: "dir"))
    var out: String

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    var config: EvalBuildStep.Config {
        var c = EvalBuildStep.Config(kind: kind.rawValue, split: split, out: out)
        c.count = count
        c.seed = seed
        c.popeSampling = popeSampling.map(\.rawValue)
        c.frame = frame.rawValue
        c.name = name
        return c
    }

    func validate() throws {
        _ = try makeStage(EvalBuildStep.self, config)
    }

    func run() throws {
        let stage = try makeStage(EvalBuildStep.self, config)
        if json { return try runStage(stage, workspace.context(), json: true) }
        let report: StageReport
        do { report = try stage.run(workspace.context()) } catch let failure as StageFailure {
            FileHandle.standardError.write(Data("error: \(failure.error)\n".utf8))
            throw ExitCode(1)
        }
        let c = report.counts
        func listed(_ prefix: String) -> String {
            c.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }
                .map { "\($0.key.dropFirst(prefix.count))=\($0.value)" }.joined(separator: " ")
        }
        print("eval build: \(kind.rawValue) set \(name ?? URL(fileURLWithPath: stage.directory).lastPathComponent) from \(split): "
              + "\(c["questions"] ?? 0) questions on \(c["images"] ?? 0) images (\(c["ineligible_images"] ?? 0) images of the split "
              + "could not carry them) in \(stage.directory)\(report.skipped ? " (already built, unchanged)" : "")")
        print("  questions: " + listed("questions."))
        let labels = listed("labels.")
        if !labels.isEmpty { print("  labels:    " + labels) }
        if let run = report.run { print("  run #\(run.id): \(run.name)") }
    }
}

struct EvalScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score a model's answers (LLaVA answer JSONL) against an evaluation set.",
        discussion: """
        POPE as LLaVA's eval_pope.py, MME as its calculation.py (acc, acc+, score = (acc + acc+) x 100), MMBench
        circularly (a question counts only if all 4 rotations are right; the choice from the letter, then the
        option text, then with --judge llm from an OpenAI-compatible model), grounding by the first
        [x1, y1, x2, y2] in the answer (accuracy at IoU >= 0.5, mean IoU). Missing answers are listed and counted wrong.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Option(name: .customLong("set"), help: ArgumentHelp("The evaluation set folder (from `eval build`).", valueName: "dir"))
    var setDirectory: String

    @Option(help: ArgumentHelp("The model's answers: JSON lines with question_id and text.", valueName: "file"))
    var answers: String

    @Option(help: ArgumentHelp("MMBench: ask an LLM when the rules find no option (only value: llm).", valueName: "llm"))
    var judge: String?

    @Option(help: ArgumentHelp("Judge endpoint base URL (OpenAI-compatible, e.g. http://127.0.0.1:8000/v1); key from $OPENAI_API_KEY.", valueName: "url"))
    var judgeURL = "https://api.openai.com/v1"

    @Option(help: ArgumentHelp("Judge model.", valueName: "name"))
    var judgeModel = "gpt-4o-mini"

    @Option(help: ArgumentHelp("Judge budget: at most this many requests sent (cached replies are free).", valueName: "n"))
    var judgeMaxRequests: Int?

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    func validate() throws {
        if let judge, judge != "llm" { throw ValidationError("--judge takes only 'llm'.") }
        if let judgeMaxRequests, judgeMaxRequests < 0 { throw ValidationError("--judge-max-requests must not be negative.") }
    }

    func run() throws {
        let report = try runOrExit {
            var scorer = EvalScorer(setDirectory: setDirectory, answers: answers)
            if judge == "llm" {
                let catalog = try Catalog(workspace: Workspace(root: workspace.path))
                scorer.judge = LLMChoiceJudge(catalog: catalog, baseURL: judgeURL, model: judgeModel,
                                              apiKey: ProcessInfo.processInfo.environment["OPENAI_API_KEY"],
                                              maxRequests: judgeMaxRequests)
            }
            return try scorer.score()
        }
        if json { return printJSON(report) }
        print(report.table())
    }
}

struct EvalCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Report training samples that hold an evaluation image (same sha256); exit 1 when there are any.")

    @OptionGroup var workspace: WorkspaceOptions

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    func run() throws {
        let ws = Workspace(root: workspace.path)
        guard FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace.")
        }
        let report = try runOrExit { try LeakageCheck.run(catalog: Catalog(workspace: ws)) }
        if json { printJSON(report) } else { print(report.render()) }
        if !report.clean { throw ExitCode(1) }
    }
}

private func printJSON(_ value: some Encodable) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}
