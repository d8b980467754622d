import Foundation
import VLMCatalog
import VLMCore
import VLMEval
import VLMImage
import VLMInstruct
import VLMIO
import VLMLoader
import VLMShard
import VLMText
import VLMTrain

/// `vlmdata train-smoke`: the whole pipeline on synthetic shapes, then RefVLM trained from the streaming loader and
/// evaluated on held-out images, with gates that fail when the answers do not depend on the image.
///
/// The evaluation goes the way any model's does: `eval build --kind caption` on the held-out split
/// (`eval/caption-heldout/`), RefVLM's answers written as LLaVA answer JSONL (`eval/answers-refvlm.jsonl`), and
/// `eval score` on them; the gates read that score, so `vlmdata eval score` on the same files gives the same numbers.
///
/// ```swift
/// let report = try TrainSmoke(options: .init()).run(progress: SilentProgress(), log: { print($0) })
/// print(report.summary)   // accuracies, ms/step, loss-curve path, workspace path
/// ```
public struct TrainSmoke {
    public struct Options: Sendable {
        public static let defaultSteps = 2000
        public static let defaultBatchSize = 64
        public static let defaultLR = 3e-3
        public static let defaultTrainImages = 8000
        public static let defaultEvalImages = 500

        public var steps = defaultSteps
        public var seed: UInt64 = 1
        public var blind = false
        public var projector = ProjectorKind.linear
        public var batchSize = defaultBatchSize
        public var learningRate = defaultLR
        public var trainImages = defaultTrainImages
        public var evalImages = defaultEvalImages
        /// Where to build; a new temporary folder when nil.
        public var workspace: String?
        public var imageSize = 32
        public var patchSize = 8
        /// A training-time gate (seconds), off by default: timing belongs in benchmarks (`make bench`), and the
        /// accuracy gates are fixed by the issue.
        public var maxTrainSeconds: Double?

        public init() {}
    }

    public struct Gate: Sendable, Codable {
        public var name: String
        public var value: Double
        public var limit: Double
        /// "min" (value must be ≥ limit) or "max" (≤ limit).
        public var kind: String
        public var passed: Bool
    }

    public struct ModelShape: Sendable, Codable {
        public var batch: Int
        public var seq_len: Int
        public var vocab: Int
        public var patches: Int
        public var patch_dim: Int
        public var channels: Int
        public var layers: Int
        public var heads: Int
        public var projector: String
        public var parameters: Int
    }

    /// The `--json` line.
    public struct JSONReport: Sendable, Codable {
        public var steps: Int
        public var seconds: Double
        public var cpu_seconds: Double
        public var ms_per_step: Double
        public var ms_per_step_median: Double
        public var tokens_per_s: Double
        public var initial_loss: Double
        public var final_loss: Double
        public var accuracy: [String: Double]
        public var chance: [String: Double]
        public var blind: Bool
        public var passed: Bool
        public var gates: [Gate]
        public var train_images: Int
        public var eval_images: Int
        public var pipeline_seconds: Double
        public var workspace: String
        public var loss_curve_svg: String
        public var loss_curve_csv: String
        public var model: ModelShape
        /// The evaluation set folder (`eval build --kind caption`) and RefVLM's answers to it.
        public var eval_set: String
        public var eval_answers: String
        /// `vlmdata eval score --set eval_set --answers eval_answers`, from which `accuracy` is read.
        public var eval: EvalReport
    }

    public struct Report: Sendable {
        public var json: JSONReport
        public var passed: Bool { json.passed }
        public var summary: String {
            let j = json
            var lines: [String] = []
            lines.append(String(format: "train-smoke%@: %d steps in %.1f s (%.2f ms/step, median %.2f; %.0f tokens/s), loss %.3f -> %.3f",
                                j.blind ? " (blind control)" : "", j.steps, j.seconds, j.ms_per_step, j.ms_per_step_median,
                                j.tokens_per_s, j.initial_loss, j.final_loss))
            for attr in ["colour", "shape", "side"] {
                lines.append(String(format: "  %-6@ accuracy %5.1f%%  (chance %.1f%%)", attr as NSString,
                                    100 * (j.accuracy[attr] ?? 0), 100 * (j.chance[attr] ?? 0)))
            }
            for g in j.gates {
                lines.append(String(format: "  gate %-22@ %@ %.3f %@ %.3f", g.name as NSString, g.passed ? "pass" : "FAIL",
                                    g.value, g.kind == "min" ? ">=" : "<=", g.limit))
            }
            lines.append("  eval score: vlmdata eval score --set \(j.eval_set) --answers \(j.eval_answers)")
            lines.append("  loss curve: \(j.loss_curve_svg) (numbers: \(j.loss_curve_csv))")
            lines.append("  workspace:  \(j.workspace)")
            lines.append(j.passed ? "train-smoke: passed" : "train-smoke: FAILED")
            return lines.joined(separator: "\n")
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }
}

extension TrainSmoke {
    static let colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    static let shapes = ["circle", "square", "triangle"]

    /// Chance accuracy of each attribute (uniformly drawn by `synth shapes`).
    static var chance: [String: Double] {
        ["colour": 1 / Double(colours.count), "shape": 1 / Double(shapes.count), "side": 0.5]
    }

    /// Each attribute's accuracy from the caption set's score: colour, shape (the category) and side.
    static func accuracy(_ report: EvalReport) -> [String: Double] {
        let rows = Dictionary(report.categories.map { ($0.name, $0.metrics["accuracy"] ?? 0) }, uniquingKeysWith: { a, _ in a })
        return ["colour": rows["colour"] ?? 0, "shape": rows["category"] ?? 0, "side": rows["side"] ?? 0]
    }

    /// The gates of the issue: seeing runs must reach the accuracies, the blind control must stay near chance.
    static func gates(accuracy acc: [String: Double], blind: Bool, trainSeconds: Double, maxTrainSeconds: Double?) -> [Gate] {
        var gates: [Gate] = []
        for attr in ["colour", "shape", "side"] {
            let value = acc[attr]!
            if blind {
                let limit = chance[attr]! + 0.10
                gates.append(Gate(name: "\(attr) (blind)", value: value, limit: limit, kind: "max", passed: value <= limit))
            } else {
                let limit = ["colour": 0.95, "side": 0.85, "shape": 0.75][attr]!
                gates.append(Gate(name: attr, value: value, limit: limit, kind: "min", passed: value >= limit))
            }
        }
        if let maxTrainSeconds {
            gates.append(Gate(name: "training seconds", value: trainSeconds, limit: maxTrainSeconds, kind: "max",
                              passed: trainSeconds <= maxTrainSeconds))
        }
        return gates
    }
}

extension TrainSmoke {
    public func run(progress: any ProgressSink, log: (String) -> Void) throws -> Report {
        let o = options
        let root = try o.workspace ?? Self.temporaryFolder()
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let pipelineStart = Date()
        let trainWS = Workspace(root: root + "/train"), evalWS = Workspace(root: root + "/heldout")
        let tokenizerPath = root + "/tokenizer.json"
        log("train-smoke: building \(o.trainImages) training images in \(trainWS.root)")
        try buildDataset(trainWS, synthOut: root + "/shapes-train", split: "train", count: o.trainImages,
                         seed: o.seed, firstID: 1, tokenizerPath: tokenizerPath, trainTokenizer: true, progress: progress)
        log("train-smoke: building \(o.evalImages) held-out images (synth seed \(o.seed &+ 1_000_003)) in \(evalWS.root)")
        let heldoutImages = root + "/shapes-heldout/heldout"
        let evalCatalog = try ingestSplit(evalWS, synthOut: root + "/shapes-heldout", split: "heldout", count: o.evalImages,
                                          seed: o.seed &+ 1_000_003, firstID: 50_000_001, progress: progress)
        var build = EvalBuildOptions(kind: .caption, split: "heldout", out: root + "/eval/caption-heldout")
        build.seed = o.seed
        let evalSet = try EvalSetBuilder(catalog: evalCatalog, options: build).build()
        log("train-smoke: eval build --kind caption: \(evalSet.manifest.questions) questions in \(evalSet.directory)")
        let pipelineSeconds = Date().timeIntervalSince(pipelineStart)
        let tokenizer = try Tokenizer(contentsOf: tokenizerPath)

        // the model's shape comes from the data: vocabulary from the tokenizer, context from the longest sample
        let grid = PatchGrid(imageSize: o.imageSize, patchSize: o.patchSize)
        let patches = grid.patchesPerTile, patchDim = grid.patchDim
        let trainLoader = try Loader(workspace: trainWS.root, options: Self.loaderOptions(seed: o.seed, batch: o.batchSize))
        let longest = trainLoader.datasets[0].index.samples.map(\.modelLength).max() ?? 0
        let config = RefVLMConfig(vocabSize: tokenizer.vocabSize, maxSeqLen: longest + 16, patches: patches,
                                  patchDim: patchDim, projector: o.projector)
        let hyper = AdamWHyper(maxLR: o.learningRate, warmupSteps: min(100, max(o.steps / 20, 1)), totalSteps: o.steps)
        let trainer = try Trainer<Float>(config: config, hyper: hyper, seed: o.seed)
        trainer.model.blind = o.blind
        log("train-smoke: RefVLM \(trainer.model.parameterCount) parameters, vocabulary \(config.vocabSize), "
            + "\(patches) patches of \(patchDim), projector \(o.projector.rawValue)\(o.blind ? ", images zeroed (blind)" : "")")

        // training: samples from the streaming loader, epoch after epoch
        var epoch = 0
        var stream = try trainLoader.samples(epoch: epoch)
        func nextSample() throws -> LoadedSample {
            while true {
                if let s = try stream.next() { return s }
                epoch += 1
                stream = try trainLoader.samples(epoch: epoch)
            }
        }
        progress.start("train", total: o.steps)
        let result = try TrainingRun.run(trainer, steps: o.steps, progress: { _ in progress.advance(by: 1) }) {
            var samples: [LoadedSample] = []
            while samples.count < o.batchSize { samples.append(try nextSample()) }
            return try TrainBatch(samples: samples, grid: grid)
        }
        progress.finish(String(format: "%d steps, loss %.3f", result.steps, result.finalLoss))

        // evaluation: greedy answers to every question of the caption set, written and scored as any model's
        let answersPath = root + "/eval/answers-refvlm.jsonl"
        let answers = try answer(set: evalSet.directory, images: heldoutImages, model: trainer.model, tokenizer: tokenizer,
                                 grid: grid)
        try EvalFiles.writeAnswers(answers, to: answersPath)
        let evalReport = try EvalScorer(setDirectory: evalSet.directory, answers: answersPath).score()
        guard evalReport.missing == 0, evalReport.answered == evalSet.manifest.questions else {
            throw VLMError(.corrupt, file: answersPath, "\(evalReport.missing) of \(evalReport.questions) questions have no answer")
        }
        let accuracy = Self.accuracy(evalReport)
        for a in answers.prefix(5) { log("  held-out question \(a.question_id): \(a.text.debugDescription)") }

        // outputs: loss curve (CSV + SVG), report
        let csvPath = root + "/loss-curve.csv", svgPath = root + "/loss-curve.svg"
        try AtomicFile.write(Array(LossCurve.csv(result).utf8), to: csvPath)
        let title = "RefVLM train-smoke\(o.blind ? " (blind)" : ""): \(o.steps) steps, batch \(o.batchSize), \(o.projector.rawValue)"
        try AtomicFile.write(Array(LossCurve.svg(result, title: title).utf8), to: svgPath)
        let gates = Self.gates(accuracy: accuracy, blind: o.blind, trainSeconds: result.trainSeconds + result.batchWaitSeconds,
                               maxTrainSeconds: o.maxTrainSeconds)
        let seqLen = result.steps > 0 ? result.positions / (result.steps * o.batchSize) : 0
        let json = JSONReport(
            steps: result.steps, seconds: result.trainSeconds + result.batchWaitSeconds, cpu_seconds: result.trainCPUSeconds,
            ms_per_step: result.msPerStep, ms_per_step_median: result.msPerStepMedian, tokens_per_s: result.tokensPerSecond,
            initial_loss: result.losses.first ?? .nan, final_loss: result.finalLoss,
            accuracy: accuracy, chance: Self.chance, blind: o.blind, passed: gates.allSatisfy(\.passed), gates: gates,
            train_images: o.trainImages, eval_images: evalReport.questions, pipeline_seconds: pipelineSeconds, workspace: root,
            loss_curve_svg: svgPath, loss_curve_csv: csvPath,
            model: ModelShape(batch: o.batchSize, seq_len: seqLen, vocab: config.vocabSize, patches: patches,
                              patch_dim: patchDim, channels: config.channels, layers: config.layers, heads: config.heads,
                              projector: o.projector.rawValue, parameters: trainer.model.parameterCount),
            eval_set: evalSet.directory, eval_answers: answersPath, eval: evalReport)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try AtomicFile.write(Array(try encoder.encode(json)), to: root + "/train-smoke.json")
        return Report(json: json)
    }

    /// synth shapes → ingest coco → gen-instructions (captions) → [tokenizer train] → tokenize (plain) → patchify → shard.
    func buildDataset(_ ws: Workspace, synthOut: String, split: String, count: Int, seed: UInt64, firstID: Int,
                      tokenizerPath: String, trainTokenizer: Bool, progress: any ProgressSink) throws {
        let o = options
        let catalog = try ingestSplit(ws, synthOut: synthOut, split: split, count: count, seed: seed, firstID: firstID,
                                      progress: progress)

        // gen-instructions --generator templates --kinds caption: one caption instruction per image
        let templateOptions = TemplateOptions(seed: seed, kinds: [.caption], perImage: 1)
        _ = try GenInstructionsStage(.templates(templateOptions)).run(catalog: catalog, progress: progress)

        if trainTokenizer {
            let texts = try TokenizeStage.catalogTexts(catalog)
            let result = try BPETrainer(vocabSize: Self.vocabularySize).train(texts: texts)
            try AtomicFile.write(result.json, to: tokenizerPath)
        }
        let grid = PatchGrid(imageSize: o.imageSize, patchSize: o.patchSize)
        _ = try TokenizeStage(options: .init(tokenizer: tokenizerPath, template: .plain, imageTokens: grid.imageTokens))
            .run(catalog: catalog, progress: progress)
        let config = PreprocessConfig(imageSize: o.imageSize, patchSize: o.patchSize, mode: .squash)
        _ = try PatchifyStage.run(catalog: catalog, options: .init(config: config), progress: progress)
        var shard = ShardOptions()
        shard.targetBytes = 8 << 20
        _ = try ShardStage.run(workspace: ws, options: shard, progress: progress)
    }

    /// synth shapes (32×32, one shape, one caption each) → ingest coco, as split `split` of `ws`.
    func ingestSplit(_ ws: Workspace, synthOut: String, split: String, count: Int, seed: UInt64, firstID: Int,
                     progress: any ProgressSink) throws -> Catalog {
        var synth = ShapesSynth.Options(count: count, seed: seed, out: synthOut)
        synth.size = options.imageSize
        synth.minShapes = 1
        synth.maxShapes = 1
        synth.captionsPerImage = 1
        synth.split = split
        synth.firstID = firstID
        _ = try ShapesSynth(options: synth).run(progress: progress)

        try ws.create()
        let catalog = try Catalog(workspace: ws)
        _ = try IngestCOCO(options: .init(captions: "\(synthOut)/annotations/captions_\(split).json",
                                          instances: "\(synthOut)/annotations/instances_\(split).json",
                                          images: "\(synthOut)/\(split)", split: split))
            .run(catalog: catalog, progress: progress)
        return catalog
    }

    /// RefVLM's greedy answer to every question of an evaluation set, as LLaVA's `model_vqa_loader.py` would write
    /// them: the question in the chat template the model was trained with (plain: the image, then the answer),
    /// the image preprocessed as `patchify` did for training, decoding up to 24 tokens or an end token.
    func answer(set: String, images: String, model: RefVLM<Float>, tokenizer: Tokenizer, grid: PatchGrid) throws -> [EvalAnswer] {
        let questions = try EvalFiles.loadQuestions(set: set)
        let masker = LLaVAMasker(tokenizer: tokenizer, template: .plain)
        let preprocessor = Preprocessor(config: PreprocessConfig(imageSize: options.imageSize, patchSize: options.patchSize,
                                                                 mode: .squash))
        let stop = Self.stopTokens(tokenizer)
        var out: [EvalAnswer] = []
        for start in stride(from: 0, to: questions.count, by: 64) {
            let batch = questions[start..<min(start + 64, questions.count)]
            var prompts: [[Int32]] = [], pixels: [UInt8] = []
            for q in batch {
                // The answer turn is a placeholder: the prompt is every token before its first supervised one.
                let tokens = try masker.tokenize(Conversation(id: String(q.question_id), image: q.image, conversations: [
                    Turn(from: .human, value: Conversation.imagePlaceholder + "\n" + q.text), Turn(from: .gpt, value: "x"),
                ]))
                guard let first = tokens.labels.firstIndex(where: { $0 != TrainBatch.ignoreIndex }) else {
                    throw VLMError(.badInput, file: set + "/" + EvalFiles.questions, record: "question \(q.question_id)",
                                   "the prompt leaves no room for an answer")
                }
                prompts.append(Array(tokens.inputIDs[..<first]))
                let image = try preprocessor.process(file: images + "/" + q.image)
                pixels += Patchify.patchify(image.stacked, tiles: 1, size: grid.imageSize, patch: grid.patchSize)
            }
            let generated = try model.generate(prompts: prompts, pixels: pixels, maxNewTokens: 24, stopTokens: stop)
            for (q, ids) in zip(batch, generated) {
                let text = tokenizer.decode(ids, skipSpecialTokens: true).trimmingCharacters(in: .whitespacesAndNewlines)
                out.append(EvalAnswer(question_id: q.question_id, prompt: q.text, text: text, model_id: "RefVLM"))
            }
        }
        return out
    }

    /// The BPE vocabulary `tokenizer train` is asked for: the special tokens, 256 bytes and ~120 merges, enough for
    /// every caption word to be one or two tokens.
    static let vocabularySize = 384

    static func loaderOptions(seed: UInt64, batch: Int) -> LoaderOptions {
        LoaderOptions(order: OrderSpec(seed: seed), workers: 1, prefetch: max(64, 2 * batch), unit: batch)
    }

    /// Tokens that end an answer: EOS, and any token that decodes to text with a newline (the plain template's end).
    static func stopTokens(_ tokenizer: Tokenizer) -> Set<Int32> {
        var stop: Set<Int32> = []
        for id in 0..<Int32(tokenizer.vocabSize) {
            if tokenizer.token(id) == "</s>" || tokenizer.decode([id], skipSpecialTokens: false).contains("\n") {
                stop.insert(id)
            }
        }
        return stop
    }

    /// A new folder under $TMPDIR (or /tmp) for a run that was given none.
    public static func temporaryFolder() throws -> String {
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let path = base + "/vlmdata-train-smoke-" + String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
            + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
