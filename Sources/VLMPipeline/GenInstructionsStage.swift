import Foundation
import VLMCatalog
import VLMCore
import VLMInstruct

/// `vlmdata gen-instructions`: instructions from annotations (templates) or through an LLM, into `instructions`.
///
/// Templates: images are processed in key order in batches of 500, each batch one transaction, keys
/// `<image key>-tpl-<kind>-<n>`; a rerun with the same parameters on the same catalog does nothing, and a run
/// killed midway and run again ends with the rows of a clean run (existing keys are kept).
/// LLM: see `LLMGenerator`; the `llm_calls` cache makes reruns send only what has no reply.
public struct GenInstructionsStage {
    public enum Generator {
        case templates(TemplateOptions)
        case llm(LLMOptions, apiKey: String?)
    }

    public var generator: Generator
    /// Only the images whose key falls in this part (`PartSpec.owns`); recorded in the run row.
    public var part: PartSpec?

    public init(_ generator: Generator, part: PartSpec? = nil) {
        self.generator = generator
        self.part = part
    }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "gen-instructions")   // one writer per stage per workspace
        defer { lock.release() }
        switch generator {
        case .templates(let options): return try runTemplates(options, catalog: catalog, progress: progress)
        case .llm(let options, let apiKey): return try runLLM(options, apiKey: apiKey, catalog: catalog, progress: progress)
        }
    }

    /// A fingerprint of what the generators read: row counts and id ranges of the annotation tables.
    static func inputFingerprint(_ catalog: Catalog) throws -> String {
        try catalog.annotationsFingerprint()
    }

    func runTemplates(_ options: TemplateOptions, catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let stage = "gen-instructions-templates"
        let fingerprint = try Self.inputFingerprint(catalog)
        // The instructions' params hash leaves the part out: every part's rows are those of a whole run.
        let paramsHash = Catalog.paramsHash(options)
        let runParams = PartRunParams(options, part: part)
        if let done = try catalog.completedRun(stage: stage, paramsHash: Catalog.paramsHash(runParams), inputFingerprint: fingerprint) {
            return StageReport(stage: "gen-instructions templates", counts: done.counts, skipped: true)
        }
        let runID = try catalog.beginRun(stage: stage, params: runParams, inputFingerprint: fingerprint)
        do {
            let generator = TemplateGenerator(options: options, categories: try ImageFactsReader.categories(catalog))
            // Page by page (500 images, one transaction each): memory holds one page, not the catalog.
            let imageCount = try ImageFactsReader.count(catalog, part: part)
            progress.start("generating instructions", total: imageCount)
            var counts: [String: Int] = ["images": 0, "instructions": 0, "added": 0, "existing": 0]
            try ImageFactsReader.forEachPage(catalog, part: part, pageSize: 500) { batch in
                counts["images", default: 0] += batch.count
                let rows = batch.flatMap { generator.generate($0) }
                let added = try InstructionStore.insert(rows, paramsHash: paramsHash, into: catalog)
                counts["instructions", default: 0] += rows.count
                counts["added", default: 0] += added
                counts["existing", default: 0] += rows.count - added
                for row in rows { counts["kind_\(row.kind)", default: 0] += 1 }
                progress.advance(by: batch.count)
            }
            let images = counts["images"]!
            progress.finish("\(counts["instructions"]!) instructions (\(counts["added"]!) new) from \(images) images")
            try catalog.endRun(runID, counts: counts)
            var problems: [String] = []
            if images == 0 { problems.append("the catalog has no images with status ok and a size: run ingest first") }
            return StageReport(stage: "gen-instructions templates", counts: counts, problems: problems)
        } catch {
            try? catalog.endRun(runID, counts: [:], error: "\(error)")
            throw error
        }
    }

    /// The parameters that decide the content of LLM requests (budgets and speed settings are left out).
    struct LLMContentParams: Codable {
        var model: String
        var kinds: [LLMKind]
        var seed: UInt64
        var replyMaxTokens: Int
        var temperature: Double
        var jsonMode: Bool
        var limit: Int?
    }

    func runLLM(_ options: LLMOptions, apiKey: String?, catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let params = LLMContentParams(model: options.model, kinds: options.kinds, seed: options.seed,
                                      replyMaxTokens: options.replyMaxTokens, temperature: options.temperature,
                                      jsonMode: options.jsonMode, limit: options.limit)
        var options = options
        options.part = part
        let generator = LLMGenerator(options: options, apiKey: apiKey)
        try generator.checkCredentials()
        let runID = try catalog.beginRun(stage: "gen-instructions-llm", params: PartRunParams(params, part: part),
                                         inputFingerprint: try Self.inputFingerprint(catalog))
        let counts: LLMRunCounts
        let stop: LLMStop?
        do {
            (counts, stop) = try generator.run(catalog: catalog, progress: progress)
        } catch {
            try? catalog.endRun(runID, counts: [:], error: "\(error)")
            throw error
        }
        // Rejections and failures counted by kind, each with an example; the reasons are in llm_calls.reason.
        var problems = counts.problems
        if counts.failed > 0 { problems.append("failed requests are tried again by the next run (see llm_calls.reason)") }
        let report = { StageReport(stage: "gen-instructions llm", counts: counts.dictionary, problems: problems) }
        switch stop {
        case .budget(let message)?:
            problems.insert("stopped: \(message); \(counts.skipped) requests not sent, run again to continue", at: 0)
        case .fatal(let message)?:
            try catalog.endRun(runID, counts: counts.dictionary, error: message)
            throw GenInstructionsFailure(report: report(), error: VLMError(.network, message))
        case nil:
            break
        }
        // Exit 0 means instructions came out: a run whose every answered request failed or was rejected did not.
        let answered = counts.ok + counts.rejected + counts.failed
        if answered > 0 && counts.ok == 0 {
            let message = "none of the \(answered) requests gave a usable reply (\(counts.failed) failed, " +
                "\(counts.rejected) rejected): " + counts.problems.joined(separator: "; ")
            try catalog.endRun(runID, counts: counts.dictionary, error: message)
            throw GenInstructionsFailure(report: report(), error: VLMError(counts.failed > 0 ? .network : .badInput, message))
        }
        try catalog.endRun(runID, counts: counts.dictionary)
        return report()
    }
}

/// A run that stopped for good, with what it did before.
public struct GenInstructionsFailure: Error, CustomStringConvertible {
    public var report: StageReport
    public var error: VLMError
    public var description: String { error.description }
}
