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
        CPU. Then it greedy-decodes answers for held-out images (a separate synth seed) and scores colour, shape and \
        side against the true annotation.

        Gates (exit 1 when one fails): colour ≥ 95%, side ≥ 85%, shape ≥ 75%; with --blind (images zeroed, the \
        control) every attribute at most chance + 10 points; training time under 4 minutes. The workspace keeps the \
        loss curve (loss-curve.svg, loss-curve.csv) and the report (train-smoke.json).
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
    @Flag(help: "Report the gates but exit 0 even when one fails (for benchmarks).") var noGate = false
    @Flag(help: "Print no progress, only results and errors.") var quiet = false
    @Flag(help: "End the output with one JSON line: steps, seconds, ms/step, final loss, accuracy per attribute.")
    var json = false

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1.") }
        guard ProjectorKind(rawValue: projector) != nil else {
            throw ValidationError("--projector must be linear or mlp2x_gelu, not '\(projector)'.")
        }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1.") }
        guard lr > 0, lr < 1 else { throw ValidationError("--lr must be between 0 and 1.") }
        guard trainImages >= batchSize else { throw ValidationError("--train-images must be at least --batch-size.") }
        guard evalImages >= 10 else { throw ValidationError("--eval-images must be at least 10.") }
    }

    func run() throws {
        var options = TrainSmoke.Options()
        options.steps = steps
        options.seed = seed
        options.blind = blind
        options.projector = ProjectorKind(rawValue: projector)!
        options.batchSize = batchSize
        options.learningRate = lr
        options.trainImages = trainImages
        options.evalImages = evalImages
        options.workspace = workspace
        let log: (String) -> Void = { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } }
        let report = try runOrExit { try TrainSmoke(options: options).run(progress: TerminalProgress(quiet: quiet), log: log) }
        print(report.summary)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(report.json), as: UTF8.self))
        }
        if !report.passed && !noGate { throw ExitCode(1) }
    }
}

