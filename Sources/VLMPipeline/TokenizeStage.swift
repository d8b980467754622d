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

    /// How instructions become samples.
    public enum Grouping: String, Codable, Sendable, CaseIterable {
        /// An image's instructions form one multi-turn sample (in catalog order), split into several samples only
        /// where `maxLength` needs it; each split starts with the image again. The plain template has one turn by
        /// definition and is never grouped.
        case perImage = "per-image"
        /// One sample per instruction (`--sample-per-instruction`), each with its own copy of the image.
        case perInstruction = "per-instruction"
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
        /// `.perImage` (the default) or `.perInstruction`.
        public var grouping: Grouping = .perImage

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
        /// "per-image" when an image's instructions are grouped into samples; absent for one sample per
        /// instruction, so that layout keeps the hash (and the shards) it had before grouping existed.
        var samples: String?
        /// Recorded in the run row only; not part of the config hash, so every part's rows share one config.
        var part: PartSpec?
    }

    /// True when this run groups an image's instructions (never for `plain`, whose samples have one turn).
    public var groups: Bool { options.grouping == .perImage && options.template != .plain }

    public var options: Options

    public init(options: Options) { self.options = options }

    /// A readable name of the configuration: `template@tokenizer`, the tokenizer named by its folder for
    /// tokenizer.json / tokenizer.model, else by its file's stem (`vicuna_v1@mistral-v1`).
    public var readableName: String {
        "\(options.template.rawValue)@\(tokenizerDisplayName(options.tokenizer))" + (groups ? "" : Self.perInstructionSuffix(options.template))
    }

    /// `/per-instruction` for the ungrouped layout of a template that can group; nothing for `plain`.
    static func perInstructionSuffix(_ template: ChatTemplate) -> String {
        template == .plain ? "" : "/per-instruction"
    }

    /// The config these options make with this tokenizer; its canonical hash is `tokenized.config_hash`.
    /// `catalog` resolves the pixel config with `imageTokensFromPixels`.
    func config(_ tokenizer: any TextTokenizer, catalog: Catalog) throws -> Config {
        let pixelsConfig = options.imageTokensFromPixels ? try Self.resolvePixelsConfig(catalog, requested: options.pixelsConfig) : nil
        return Config(tokenizer_sha256: tokenizer.sha256, template: options.template.rawValue, max_length: options.maxLength,
                      image_tokens: pixelsConfig == nil ? options.imageTokens : 0, overflow: options.overflow.rawValue,
                      legacy: options.legacy ?? tokenizer.legacyMode ?? true, image_tokens_from: pixelsConfig.map { "pixels:" + $0 },
                      allow_unsupervised: options.allowUnsupervised, samples: groups ? Grouping.perImage.rawValue : nil)
    }

    struct Pending {
        var id: Int64
        var key: String
        var hasImage: Bool
        var conversations: String
        /// Positions of this instruction's image from its pixels (with `imageTokensFromPixels`), or why there are none.
        var pixelTokens: Result<Int, VLMError>?
        /// Read for grouping: the instruction's image, kind, generator and metadata.
        var imageID: Int64? = nil
        var kind = ""
        var generator = ""
        var meta: String? = nil
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
        /// A grouped sample's description (`tokenized.sample`), on its first instruction's row.
        var sample: String? = nil
        /// The first instruction of the grouped sample this instruction's turns are in.
        var sampleOf: Int64? = nil
        /// Instructions this row accounts for (a grouped sample's row counts all of them).
        var instructions = 1
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
        var pendingCount: Int
        if let part {
            pendingCount = try catalog.pendingTokenizeKeys(configHash: configHash)
                .filter { part.owns(imageKey: $0.imageKey, sampleKey: $0.key) }.count
        } else {
            pendingCount = try catalog.pendingTokenizeCount(configHash: configHash)
        }
        // Grouping follows the workspace's frames: with more than one, each image is grouped per stated frame and
        // its frameless instructions apart, so any frame shard takes keeps them. Images grouped whole before a
        // second frame appeared are grouped again (their rows replaced), whichever part gained the new frame.
        let byFrame: Bool
        let regroup: [(id: Int64, key: String, instructions: Int)]
        if groups, try catalog.instructionBoxFrames().count > 1 {
            byFrame = true
            regroup = try catalog.imagesGroupedAcrossFrames(configHash: configHash)
                .filter { part?.owns(imageKey: $0.key, sampleKey: $0.key) ?? true }
        } else {
            byFrame = false
            regroup = []
        }
        pendingCount += regroup.reduce(0) { $0 + $1.instructions }
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
            // Writes one batch of rows and tallies them.
            func store(_ done: [Row]) throws {
                try catalog.insertTokenized(done.map { r in
                    TokenizedRecord(instructionID: r.instructionID, status: r.status, error: r.error,
                                    inputIDs: r.inputIDs.map(Self.blob), labels: r.labels.map(Self.blob), tokens: r.nTokens,
                                    imageTokens: r.nImageTokens, supervised: r.nSupervised, sample: r.sample, sampleOf: r.sampleOf)
                }, configHash: configHash, tokenizerSHA256: tokenizer.sha256, template: options.template.rawValue)
                for r in done where r.sampleOf == nil {
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
            // Runs `work` over `items` on `jobs` workers (worker w uses maskers[w]); results in item order.
            func parallel<T>(_ items: [T], _ work: @escaping (T, LLaVAMasker) -> [Row]) -> [Row] {
                var out = [[Row]](repeating: [], count: items.count)
                if jobs == 1 || items.count < 8 {
                    for (i, item) in items.enumerated() { out[i] = work(item, maskers[0]) }
                } else {
                    let chunk = (items.count + jobs - 1) / jobs
                    out.withUnsafeMutableBufferPointer { buffer in
                        nonisolated(unsafe) let buffer = buffer
                        nonisolated(unsafe) let items = items
                        nonisolated(unsafe) let work = work
                        DispatchQueue.concurrentPerform(iterations: jobs) { w in
                            let lo = w * chunk, hi = min(items.count, lo + chunk)
                            guard lo < hi else { return }
                            for i in lo..<hi { buffer[i] = work(items[i], maskers[w]) }
                        }
                    }
                }
                return out.flatMap { $0 }
            }
            if groups {
                let imagesPerBatch = max(1, options.batchSize / 8)
                // Tokenizes images `ids` (ascending) whole: the rows they already had for this config are replaced,
                // so an instruction added since is grouped with the others, and the groups follow `byFrame`.
                func groupImages(_ ids: [Int64]) throws {
                    guard let first = ids.first, let last = ids.last else { return }
                    let wanted = Set(ids)
                    var groupsOfImage: [[Pending]] = []
                    for row in try catalog.imageInstructions(from: first, through: last, pixelsConfig: pixelsConfig) {
                        guard let imageID = row.imageID, wanted.contains(imageID) else { continue }
                        var pending = Pending(id: row.id, key: row.key, hasImage: true, conversations: row.conversations,
                                              imageID: imageID, kind: row.kind, generator: row.generator, meta: row.meta)
                        if let pixelsConfig { pending.pixelTokens = Self.pixelTokens(row, config: pixelsConfig) }
                        if groupsOfImage.last?.first?.imageID == imageID {
                            groupsOfImage[groupsOfImage.count - 1].append(pending)
                        } else {
                            if let part, !part.owns(imageKey: row.imageKey, sampleKey: row.key) { continue }
                            groupsOfImage.append([pending])
                        }
                    }
                    if groupsOfImage.isEmpty { return }
                    try catalog.deleteTokenized(imageIDs: groupsOfImage.compactMap { $0.first?.imageID }, configHash: configHash)
                    try store(parallel(groupsOfImage) { group, masker in processImage(group, masker, byFrame: byFrame) })
                }
                // Images grouped under the one-frame rule, now that the workspace holds several frames.
                var start = 0
                while start < regroup.count {
                    let end = min(regroup.count, start + imagesPerBatch)
                    try groupImages(regroup[start..<end].map(\.id))
                    start = end
                }
                // Images with an instruction still to tokenize, a batch of images at a time.
                var lastImage: Int64 = 0
                while true {
                    let ids = try catalog.pendingTokenizeImages(after: lastImage, configHash: configHash, limit: imagesPerBatch)
                    guard let last = ids.last else { break }
                    lastImage = last
                    try groupImages(ids)
                }
            }
            while !groups {
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
                try store(parallel(batch) { p, masker in [process(p, masker)] })
            }
            // Text-only instructions have no image to group by: one sample each.
            var lastText: Int64 = 0
            while groups {
                let batch = try catalog.pendingTextOnlyInstructions(after: lastText, configHash: configHash, limit: options.batchSize)
                guard let last = batch.last else { break }
                lastText = last.id
                let owned = batch.filter { part?.owns(imageKey: nil, sampleKey: $0.key) ?? true }
                    .map { Pending(id: $0.id, key: $0.key, hasImage: false, conversations: $0.conversations) }
                if owned.isEmpty { continue }
                try store(parallel(owned) { p, masker in [process(p, masker)] })
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
        if !regroup.isEmpty { result["regrouped_images"] = regroup.count }
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
    /// An instruction of an image being grouped: its turns and the box frame its metadata states.
    struct Parsed {
        var pending: Pending
        var turns: [Turn]
        var frame: String?
        var statesBox: Bool
    }

    /// One image's instructions (catalog order) as grouped samples: every instruction gets exactly one row, either a
    /// sample's own or one naming the first instruction of the sample its turns are in.
    ///
    /// `byFrame` (the workspace's instructions state more than one box frame, `meta.box_frame`: several
    /// `--box-frame` runs): the instructions are grouped per stated frame, and those stating none in a group of
    /// their own, so whichever frame `shard` takes for its pixels keeps them. Otherwise an image is one group.
    /// Each group is split greedily, in order, into the longest runs whose tokens fit `maxLength`; a run of
    /// one instruction, an instruction that does not parse, and a run that would leave an answer unsupervised are
    /// tokenized on their own, exactly as with one sample per instruction.
    func processImage(_ instructions: [Pending], _ masker: LLaVAMasker, byFrame: Bool) -> [Row] {
        var rows: [Row] = []
        var parsed: [Parsed] = []
        for p in instructions {
            guard let turns = try? JSONDecoder().decode([Turn].self, from: Data(p.conversations.utf8)),
                  (try? Conversation(id: p.key, image: "image", conversations: turns).validate()) != nil else {
                rows.append(process(p, masker))   // the same error row as one sample per instruction makes
                continue
            }
            var frame: String?
            var statesBox = false
            if let meta = p.meta, let object = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any] {
                frame = object["box_frame"] as? String
                statesBox = Self.statesBox(object)
            }
            parsed.append(Parsed(pending: p, turns: turns, frame: frame, statesBox: statesBox))
        }
        if let first = parsed.first?.pending, case .failure? = first.pixelTokens {
            return rows + parsed.map { process($0.pending, masker) }
        }
        // Groups by stated frame when the workspace states several (also on an image that states one frame or
        // none: its frameless instructions must not share a group with a frame another image's pixels may not
        // take); all together otherwise. The image's own frames are a subset of the workspace's.
        for group in Self.frameGroups(parsed.map(\.frame), byFrame: byFrame) where !group.isEmpty {
            var start = 0
            while start < group.count {
                // The longest run from `start` that fits: the whole rest first (the usual case), else grown one by one.
                var best: (end: Int, row: Row)?
                if let row = groupRow(group[start...].map { parsed[$0] }, masker) {
                    best = (group.count, row)
                } else {
                    var end = start + 2
                    while end <= group.count, let row = groupRow(group[start..<end].map { parsed[$0] }, masker) {
                        best = (end, row)
                        end += 1
                    }
                }
                guard let chosen = best else {
                    rows.append(process(parsed[group[start]].pending, masker))
                    start += 1
                    continue
                }
                let (end, row) = chosen
                rows.append(row)
                for i in group[(start + 1)..<end] {
                    rows.append(Row(instructionID: parsed[i].pending.id, status: row.status, error: nil, sampleOf: row.instructionID))
                }
                start = end
            }
        }
        return rows
    }

    /// One image's instructions (catalog order, given by the box frame each states) as the groups a sample is made
    /// of before any length limit: all together when the workspace states at most one frame (`byFrame` false) and
    /// the image at most one, else one group per stated frame (those stating none together), each in order.
    /// `export llava` groups an image's instructions with it too.
    static func frameGroups(_ frames: [String?], byFrame: Bool) -> [[Int]] {
        guard byFrame || Set(frames.compactMap { $0 }).count > 1 else { return [Array(frames.indices)] }
        var groups: [[Int]] = []
        var byFrame: [String: Int] = [:]
        for (i, frame) in frames.enumerated() {
            let label = frame ?? ""
            if let g = byFrame[label] { groups[g].append(i) } else { byFrame[label] = groups.count; groups.append([i]) }
        }
        return groups
    }

    /// The row of one grouped sample of `items` (at least two), or nil when they do not fit `maxLength` whole, do
    /// not tokenize, or leave an answer without a supervised token.
    func groupRow(_ items: [Parsed], _ masker: LLaVAMasker) -> Row? {
        guard items.count >= 2, let head = items.first?.pending else { return nil }
        let perImage: Int
        switch head.pixelTokens {
        case .success(let n)?: perImage = n
        case .failure?: return nil
        case nil: perImage = options.imageTokens
        }
        let turns = TurnGrouping.merge(items.map(\.turns))
        guard let sample = try? masker.tokenize(Conversation(id: head.key, image: "image", conversations: turns)) else { return nil }
        let modelLength = sample.inputIDs.count - 1 + perImage
        guard modelLength <= options.maxLength, sample.unsupervisedTurns == 0 else { return nil }
        let supervised = sample.supervisedCount
        guard supervised > 0 else { return nil }
        func distinct(_ values: [String]) -> [String] {
            var seen = Set<String>()
            return values.filter { seen.insert($0).inserted }
        }
        let info = GroupedSampleInfo(keys: items.map(\.pending.key), kinds: distinct(items.map(\.pending.kind)),
                                     generators: distinct(items.map(\.pending.generator)),
                                     boxFrame: items.lazy.compactMap(\.frame).first, statesBox: items.contains { $0.statesBox },
                                     conversations: turns)
        return Row(instructionID: head.id, status: "ok", error: nil, inputIDs: sample.inputIDs, labels: sample.labels,
                   nTokens: sample.inputIDs.count, nImageTokens: perImage, nSupervised: supervised, mismatch: sample.mismatch,
                   llavaDiffers: sample.llavaDiffers, unsupervised: false, sample: info.json, instructions: items.count)
    }

    /// True when an instruction's metadata (or one of its turns') holds a box (as `shard`'s frame choice reads it).
    static func statesBox(_ meta: [String: Any]) -> Bool {
        if meta["box"] != nil || meta["states_box"] as? Bool == true { return true }
        if let turns = meta["turns"] as? [[String: Any]] { return turns.contains { statesBox($0) } }
        return false
    }

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
