import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMPipeline
import VLMTrain

struct TrainSmokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-smoke",
        abstract: "Build a synthetic shapes dataset with the whole pipeline, train RefVLM on it, and check it sees.",
        discussion: """
        Runs synth shapes (32×32, one shape each) → ingest coco → gen-instructions (captions) → tokenizer train → \
        tokenize --template plain → patchify --image-size 32 --patch-size 8 --mode squash → shard → the streaming \
        loader → training of RefVLM (a ~120K-parameter LLaVA: patch embedding, projector, 2-layer GPT decoder) on the \
        CPU. Then it evaluates as any model is evaluated: `eval build --kind caption` on held-out images (a separate \
        synth seed) into eval/caption-heldout/, RefVLM's greedy answers as LLaVA answer JSONL in \
        eval/answers-refvlm.jsonl, and `eval score` on them, which reads the colour, shape (category) and side \
        each answer names against its reference caption.

        Gates (exit 1 when one fails): colour ≥ 95%, side ≥ 85%, shape ≥ 75%; with --blind (images zeroed, the \
        control) every attribute at most chance + 10 points; with --max-train-seconds, the training time. The \
        workspace keeps the evaluation files (`vlmdata eval score --set WS/eval/caption-heldout --answers \
        WS/eval/answers-refvlm.jsonl` gives the same numbers), the loss curve (loss-curve.svg, loss-curve.csv) and \
        the report (train-smoke.json). A pipeline file runs the same as `stage: train-smoke`.
        """
    )

    @Option(help: "Training steps.") var steps = TrainSmoke.Options.defaultSteps
    @Option(help: "Random seed (model, data order and the training images).") var seed: UInt64 = 1
    @Flag(help: "Zero the images: the image-blind control, which must stay at chance.") var blind = false
    @Option(help: "Projector between patches and decoder: linear (LLaVA-1) or mlp2x_gelu (LLaVA-1.5).")
    var projector = ProjectorKind.linear.rawValue
    @Option(help: "Samples per batch.") var batchSize = TrainSmoke.Options.defaultBatchSize
    @Option(help: "Peak learning rate (linear warmup, cosine decay to a tenth).") var lr = TrainSmoke.Options.defaultLR
    @Option(help: "Training images to synthesize.") var trainImages = TrainSmoke.Options.defaultTrainImages
    @Option(help: "Held-out images to evaluate on.") var evalImages = TrainSmoke.Options.defaultEvalImages
    @Option(help: ArgumentHelp("Workspace folder (default: a new temporary folder, kept for inspection).", valueName: "dir"))
    var workspace: String?
    @Option(help: ArgumentHelp("Also gate on the training time (seconds); timing belongs in `make bench`.", valueName: "s"))
    var maxTrainSeconds: Double?
    @Flag(help: "Report the gates but exit 0 even when one fails (for benchmarks).") var noGate = false
    @Flag(help: "Print no progress, only results and errors.") var quiet = false
    @Flag(help: "End the output with one JSON line: steps, seconds, ms/step, final loss, accuracy per attribute.")
    var json = false

    var config: TrainSmokeStep.Config {
        var c = TrainSmokeStep.Config()
        c.steps = steps
        c.seed = seed
        c.blind = blind
        c.projector = projector
        c.batchSize = batchSize
        c.lr = lr
        c.trainImages = trainImages
        c.evalImages = evalImages
        c.workspace = workspace
        c.maxTrainSeconds = maxTrainSeconds
        c.noGate = noGate
        return c
    }

    func validate() throws {
        _ = try makeStage(TrainSmokeStep.self, config)
    }

    func run() throws {
        var config = self.config
        let folder = try runOrExit { try workspace ?? TrainSmoke.temporaryFolder() }
        config.workspace = folder
        let step = try TrainSmokeStep(config: config)
        let log: (String) -> Void = { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        let context = StageContext(workspace: folder, progress: TerminalProgress(quiet: quiet))
        let report = try runOrExit { try step.train(context, log: log) }
        print(report.summary)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report.json), as: UTF8.self))
        }
        if !report.passed && !noGate { throw ExitCode(1) }
    }
}

