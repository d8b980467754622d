import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMText

/// `vlmdata tokenize`: every instruction of the catalog through a tokenizer (tokenizer.json, or a SentencePiece
/// tokenizer.model as transformers' slow LlamaTokenizer) and a LLaVA chat template into `tokenized` rows
/// (input_ids with -200 at the image, labels with -100 where not supervised).
///
/// Labels are LLaVA's where LLaVA's arithmetic finds the assistant turns, and come from the turn boundaries
/// where it does not (counted as `llava_differs`; `mismatch` counts LLaVA's own "tokenization mismatch").
/// A sample left with no supervised token is an error row (counted as `unsupervised`, never sharded) unless
/// `allowUnsupervised`; a run in which no sample is supervised fails.
///
/// Idempotent per configuration (tokenizer identity, template, limits): rows already present for the
/// configuration are kept, so a rerun after a crash finishes the rest. Rows are written in batches, each in one
/// transaction.
public struct TokenizeStage: Sendable {
    public enum Overflow: String, Codable, Sendable, CaseIterable {
        /// Keep the first positions that fit (the image counts as `imageTokens`); status 'truncated'.
        case truncate
        /// Keep no tokens; status 'dropped'.
        case drop
    }

    public struct Options: Codable, Sendable {
        public var tokenizer: String
        public var template: ChatTemplate
        public var maxLength: Int
        public var imageTokens: Int
        public var overflow: Overflow
        /// LLaVA's `tokenizer.legacy`; for a tokenizer.model also the tokenizer's mode. nil: the
        /// `tokenizer_config.json` beside a tokenizer.model, else true.
        public var legacy: Bool?
        /// Keep samples with no supervised token (status ok) instead of making them error rows.
        public var allowUnsupervised: Bool
        public var jobs: Int
        public var batchSize: Int
        /// Take each image's positions from its stored pixels (`PatchGrid.imageTokens`) instead of `imageTokens`:
        /// anyres images differ, and `shard` refuses a count that is not the pixels'. Needs `patchify` first.
        public var imageTokensFromPixels = false
        /// The pixel config to count from; nil when the catalog holds one.
        public var pixelsConfig: String?
        /// Only the instructions whose image key (sample key if text-only) falls in this part (`PartSpec.owns`).
        public var part: PartSpec?

        public init(tokenizer: String, template: ChatTemplate, maxLength: Int = 2048, imageTokens: Int = PatchGrid.clipViTL14at336.imageTokens,
                    overflow: Overflow = .truncate, legacy: Bool? = nil, allowUnsupervised: Bool = false, jobs: Int = 1,
                    batchSize: Int = 2000) {
            self.tokenizer = tokenizer
            self.template = template
            self.maxLength = maxLength
            self.imageTokens = imageTokens
            self.overflow = overflow
            self.legacy = legacy
            self.allowUnsupervised = allowUnsupervised
            self.jobs = jobs
            self.batchSize = batchSize
        }
    }

    /// What the config hash covers (not the path, not the job count).
    struct Config: Codable {
        var tokenizer_sha256: String
        var template: String
        var max_length: Int
        var image_tokens: Int
        var overflow: String
        var legacy: Bool
        /// "pixels:HASH" when each image counts its stored pixels' tokens (then `image_tokens` is 0).
        var image_tokens_from: String?
        var allow_unsupervised: Bool
        /// Recorded in the run row only; not part of the config hash, so every part's rows share one config.
        var part: PartSpec?
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    /// A readable name of the configuration: `template@tokenizer`, the tokenizer named by its folder for
    /// tokenizer.json / tokenizer.model, else by its file's stem (`vicuna_v1@mistral-v1`).
    public var readableName: String { "\(options.template.rawValue)@\(tokenizerDisplayName(options.tokenizer))" }

    /// The config these options make with this tokenizer; its canonical hash is `tokenized.config_hash`.
    /// `catalog` resolves the pixel config with `imageTokensFromPixels`.
    func config(_ tokenizer: any TextTokenizer, catalog: Catalog) throws -> Config {
        let pixelsConfig = options.imageTokensFromPixels ? try Self.resolvePixelsConfig(catalog, requested: options.pixelsConfig) : nil
        return Config(tokenizer_sha256: tokenizer.sha256, template: options.template.rawValue, max_length: options.maxLength,
                      image_tokens: pixelsConfig == nil ? options.imageTokens : 0, overflow: options.overflow.rawValue,
                      legacy: options.legacy ?? tokenizer.legacyMode ?? true, image_tokens_from: pixelsConfig.map { "pixels:" + $0 },
                      allow_unsupervised: options.allowUnsupervised)
    }

    struct Pending {
        var id: Int64
        var key: String
        var hasImage: Bool
        var conversations: String
        /// Positions of this instruction's image from its pixels (with `imageTokensFromPixels`), or why there are none.
        var pixelTokens: Result<Int, VLMError>?
    }

    struct Row {
        var instructionID: Int64
        var status: String
        var error: String?
        var inputIDs: [Int32]?
        var labels: [Int32]?
        var nTokens: Int?
        var nImageTokens: Int?
        var nSupervised: Int?
        var mismatch = false
        var llavaDiffers = false
        var unsupervised = false
    }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "tokenize")   // one writer per stage per workspace
        defer { lock.release() }
        guard options.maxLength > 0 else { throw VLMError(.invalidArgument, "--max-length must be positive") }
        guard options.imageTokensFromPixels || options.imageTokens >= 1 else {
            throw VLMError(.invalidArgument, "--image-tokens must be at least 1")
        }
        let tokenizer = try loadTokenizer(options.tokenizer, legacy: options.legacy)
        var config = try self.config(tokenizer, catalog: catalog)
        let pixelsConfig = config.image_tokens_from.map { String($0.dropFirst("pixels:".count)) }
        let configHash = Hashing.canonicalHash(config)
        config.part = options.part
        let fingerprint = try catalog.instructionsFingerprint()
        let part = options.part
        let pendingCount: Int
        if let part {
            pendingCount = try catalog.pendingTokenizeKeys(configHash: configHash)
                .filter { part.owns(imageKey: $0.imageKey, sampleKey: $0.key) }.count
        } else {
            pendingCount = try catalog.pendingTokenizeCount(configHash: configHash)
        }
        if pendingCount == 0 {
            var report = StageReport(stage: "tokenize", counts: try counts(catalog, configHash), skipped: true)
            report.counts["written"] = 0
            return report
        }
        let runID = try catalog.beginRun(stage: "tokenize", params: config, inputFingerprint: fingerprint)
        var written = 0
        var mismatches = 0
        var llavaDiffers = 0
        var unsupervised = 0
        var supervisedRows = 0
        var examples: [String] = []
        var problems: [String] = []
        progress.start("tokenizing (\(options.template.rawValue))", total: pendingCount)
        do {
            var lastID: Int64 = 0
            let jobs = max(1, options.jobs)
            // One masker (tokenizer session + cache) per worker; worker w only touches maskers[w].
            nonisolated(unsafe) let maskers = (0..<jobs).map { _ in
                LLaVAMasker(tokenizer: tokenizer, template: options.template, legacy: config.legacy, modelMaxLength: options.maxLength)
            }
            while true {
                let fetched: [(Pending, imageKey: String?)] = try catalog.pendingInstructions(
                    after: lastID, configHash: configHash, pixelsConfig: pixelsConfig, limit: options.batchSize
                ).map { row in
                    var pending = Pending(id: row.id, key: row.key, hasImage: row.imageID != nil, conversations: row.conversations)
                    if let pixelsConfig, pending.hasImage { pending.pixelTokens = Self.pixelTokens(row, config: pixelsConfig) }
                    return (pending, imageKey: row.imageKey)
                }
                guard let last = fetched.last else { break }
                lastID = last.0.id
                let batch = fetched.filter { part?.owns(imageKey: $0.imageKey, sampleKey: $0.0.key) ?? true }.map(\.0)
                if batch.isEmpty { continue }
                var rows = [Row?](repeating: nil, count: batch.count)
                if jobs == 1 || batch.count < 64 {
                    for (i, p) in batch.enumerated() { rows[i] = process(p, maskers[0]) }
                } else {
                    let chunk = (batch.count + jobs - 1) / jobs
                    rows.withUnsafeMutableBufferPointer { out in
                        nonisolated(unsafe) let out = out
                        let batch = batch
                        DispatchQueue.concurrentPerform(iterations: jobs) { w in
                            let lo = w * chunk, hi = min(batch.count, lo + chunk)
                            guard lo < hi else { return }
                            for i in lo..<hi { out[i] = process(batch[i], maskers[w]) }
                        }
                    }
                }
                let done = rows.compactMap { $0 }
                try catalog.insertTokenized(done.map { r in
                    TokenizedRecord(instructionID: r.instructionID, status: r.status, error: r.error,
                                    inputIDs: r.inputIDs.map(Self.blob), labels: r.labels.map(Self.blob), tokens: r.nTokens,
                                    imageTokens: r.nImageTokens, supervised: r.nSupervised)
                }, configHash: configHash, tokenizerSHA256: tokenizer.sha256, template: options.template.rawValue)
                for r in done {
                    if r.mismatch { mismatches += 1 }
                    if r.llavaDiffers {
                        llavaDiffers += 1
                        if examples.count < 5 {
                            examples.append("instruction \(r.instructionID): LLaVA's \(r.mismatch ? "round lengths do not add up (it would mask the whole sample)" : "mask is not the assistant turns"); labels taken from the turn boundaries")
                        }
                    }
                    if r.unsupervised { unsupervised += 1 }
                    if (r.status == "ok" || r.status == "truncated"), (r.nSupervised ?? 0) > 0 { supervisedRows += 1 }
                    if let e = r.error, problems.count < 1000 { problems.append("instruction \(r.instructionID): \(e)") }
                }
                written += done.count
                progress.advance(by: done.count)
            }
        } catch {
            try? catalog.endRun(runID, counts: ["written": written], error: "\(error)")
            throw error
        }
        progress.finish("\(written) tokenized")
        var result = try counts(catalog, configHash)
        result["written"] = written
        result["mismatch"] = mismatches
        result["llava_differs"] = llavaDiffers
        result["unsupervised"] = unsupervised
        // Invariant: the run produced supervised samples. A run in which every sample lost its supervision
        // (a template that does not fit the tokenizer) is an error, not an empty success.
        if written > 0, supervisedRows == 0, !options.allowUnsupervised {
            let message = "tokenize \(readableName): none of the \(written) samples has a supervised token; first problems: "
                + problems.prefix(3).joined(separator: "; ")
            try? catalog.endRun(runID, counts: result, error: message)
            throw VLMError(.invalidArgument, message)
        }
        try catalog.endRun(runID, counts: result)
        return StageReport(stage: "tokenize", counts: result, problems: examples + problems)
    }

    /// Counts of this configuration's rows by status.
    private func counts(_ catalog: Catalog, _ configHash: String) throws -> [String: Int] {
        try catalog.tokenizedCounts(configHash: configHash)
    }

    static func blob(_ values: [Int32]) -> Data {
        var data = Data(capacity: values.count * 4)
        for v in values {
            withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Tokenizes one instruction, applying the length limit.
    func process(_ p: Pending, _ masker: LLaVAMasker) -> Row {
        do {
            guard let turns = try? JSONDecoder().decode([Turn].self, from: Data(p.conversations.utf8)) else {
                throw VLMError.badInput(record: p.key, "conversations is not a JSON array of {\"from\", \"value\"}")
            }
            let conversation = Conversation(id: p.key, image: p.hasImage ? "image" : nil, conversations: turns)
            try conversation.validate()
            let perImage: Int
            switch p.pixelTokens {
            case .success(let n)?: perImage = n
            case .failure(let error)?: throw error
            case nil: perImage = options.imageTokens
            }
            let sample = try masker.tokenize(conversation)
            let imagePositions = p.hasImage ? perImage : 0
            let modelLength = sample.inputIDs.count - (p.hasImage ? 1 : 0) + imagePositions
            var ids = sample.inputIDs, labels = sample.labels
            var status = "ok"
            if modelLength > options.maxLength {
                if options.overflow == .drop {
                    return Row(instructionID: p.id, status: "dropped", error: "\(modelLength) positions > --max-length \(options.maxLength)",
                               nTokens: sample.inputIDs.count, nImageTokens: imagePositions, nSupervised: 0)
                }
                // Keep the longest prefix whose positions fit; an image that does not fit whole ends the prefix.
                var used = 0
                var keep = 0
                for id in ids {
                    let cost = id == LLaVAMasker.imageTokenIndex ? perImage : 1
                    if used + cost > options.maxLength { break }
                    used += cost
                    keep += 1
                }
                if p.hasImage, !ids[..<keep].contains(LLaVAMasker.imageTokenIndex) {
                    return Row(instructionID: p.id, status: "dropped",
                               error: "the image does not fit in --max-length \(options.maxLength) with \(perImage) image tokens",
                               nTokens: sample.inputIDs.count, nImageTokens: imagePositions, nSupervised: 0)
                }
                ids = Array(ids[..<keep])
                labels = Array(labels[..<keep])
                status = "truncated"
            }
            let supervised = labels.reduce(0) { $0 + ($1 != LLaVAMasker.ignoreIndex ? 1 : 0) }
            if supervised == 0, !options.allowUnsupervised {
                let why = sample.supervisedCount == 0
                    ? "no token of an assistant turn survives tokenization (empty answers, or answers merged into the next turn)"
                    : "the truncation to --max-length \(options.maxLength) removed every supervised token"
                return Row(instructionID: p.id, status: "error", error: "no supervised token: \(why) (--allow-unsupervised keeps it)",
                           nTokens: ids.count, nImageTokens: imagePositions, nSupervised: 0, mismatch: sample.mismatch,
                           llavaDiffers: sample.llavaDiffers, unsupervised: true)
            }
            return Row(instructionID: p.id, status: status, error: nil, inputIDs: ids, labels: labels, nTokens: ids.count,
                       nImageTokens: imagePositions, nSupervised: supervised, mismatch: sample.mismatch,
                       llavaDiffers: sample.llavaDiffers, unsupervised: supervised == 0)
        } catch {
            return Row(instructionID: p.id, status: "error", error: "\(error)")
        }
    }
}

extension TokenizeStage {
    /// The one pixel config of the catalog, or the requested one; a clear error otherwise.
    static func resolvePixelsConfig(_ catalog: Catalog, requested: String?) throws -> String {
        let available = try catalog.pixelsConfigHashes()
        if let requested {
            guard available.contains(requested) else {
                throw VLMError(.notFound, file: catalog.workspace.catalogPath, record: "--pixels",
                               "no pixels with config \(requested); the catalog has: \(available.isEmpty ? "none" : available.joined(separator: ", "))")
            }
            return requested
        }
        guard available.count == 1 else {
            throw VLMError(available.isEmpty ? .notFound : .invalidArgument, file: catalog.workspace.catalogPath, record: "--image-tokens pixels",
                           available.isEmpty ? "the catalog holds no pixels: run `vlmdata patchify` before tokenizing with --image-tokens pixels"
                                             : "the catalog holds \(available.count) pixel configs; choose one with --pixels HASH: \(available.joined(separator: ", "))")
        }
        return available[0]
    }

    /// The image tokens of one instruction's stored pixels (`PatchGrid`), or an error naming what is missing.
    static func pixelTokens(_ row: Catalog.PendingInstruction, config: String) -> Result<Int, VLMError> {
        let key = row.imageKey ?? "?"
        guard let status = row.pixelStatus else {
            return .failure(VLMError(.notFound, record: key, "image has no pixels in config \(config): run `vlmdata patchify` first"))
        }
        guard status == "ok" else {
            return .failure(VLMError(.badInput, record: key, "image has no usable pixels: \(row.pixelError ?? status)"))
        }
        let rows = row.gridRows, cols = row.gridCols
        do {
            let grid = try PatchGrid(shape: [row.tiles ?? 0, row.patches ?? 0, row.patchDim ?? 0],
                                     grid: rows.flatMap { r in cols.map { [r, $0] } })
            return .success(grid.imageTokens)
        } catch let error as VLMError {
            return .failure(VLMError(.corrupt, record: key, "pixels: \(error.message)"))
        } catch {
            return .failure(VLMError(.corrupt, record: key, "pixels: \(error)"))
        }
    }

    /// The catalog's text for tokenizer training: every caption, then every turn of every instruction, in id order.
    public static func catalogTexts(_ catalog: Catalog) throws -> [String] {
        let stored = try catalog.captionsAndConversations()
        var texts = stored.captions
        for json in stored.conversations {
            if let turns = try? JSONDecoder().decode([Turn].self, from: Data(json.utf8)) {
                texts.append(contentsOf: turns.map { $0.value.replacingOccurrences(of: Conversation.imagePlaceholder, with: "") })
            }
        }
        return texts
    }
}
