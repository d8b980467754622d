import Foundation
import GRDB
import VLMCatalog
import VLMCore
import VLMIO
import VLMText

/// `vlmdata tokenize`: every instruction of the catalog through a tokenizer.json and a LLaVA chat template into
/// `tokenized` rows (input_ids with -200 at the image, labels with -100 where not supervised).
///
/// Idempotent per configuration (tokenizer sha256, template, limits): rows already present for the configuration
/// are kept, so a rerun after a crash finishes the rest. Rows are written in batches, each in one transaction.
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
        public var legacy: Bool
        public var jobs: Int
        public var batchSize: Int

        public init(tokenizer: String, template: ChatTemplate, maxLength: Int = 2048, imageTokens: Int = 576,
                    overflow: Overflow = .truncate, legacy: Bool = true, jobs: Int = 1, batchSize: Int = 2000) {
            self.tokenizer = tokenizer
            self.template = template
            self.maxLength = maxLength
            self.imageTokens = imageTokens
            self.overflow = overflow
            self.legacy = legacy
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
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    struct Pending {
        var id: Int64
        var key: String
        var hasImage: Bool
        var conversations: String
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
    }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "tokenize")   // one writer per stage per workspace
        defer { lock.release() }
        guard options.maxLength > 0 else { throw VLMError(.invalidArgument, "--max-length must be positive") }
        guard options.imageTokens >= 1 else { throw VLMError(.invalidArgument, "--image-tokens must be at least 1") }
        let tokenizer = try Tokenizer(contentsOf: options.tokenizer)
        let config = Config(tokenizer_sha256: tokenizer.sha256, template: options.template.rawValue, max_length: options.maxLength,
                            image_tokens: options.imageTokens, overflow: options.overflow.rawValue, legacy: options.legacy)
        let configHash = Hashing.canonicalHash(config)
        let fingerprint: String = try catalog.read { db in
            let row = try GRDB.Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM instructions")!
            let n: Int = row[0]
            let m: Int = row[1]
            return "instructions:\(n):\(m)"
        }
        let pendingCount: Int = try catalog.read { db in
            try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM instructions i
                WHERE NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
                """, arguments: [configHash]) ?? 0
        }
        if pendingCount == 0 {
            var report = StageReport(stage: "tokenize", counts: try counts(catalog, configHash), skipped: true)
            report.counts["written"] = 0
            return report
        }
        let runID = try catalog.beginRun(stage: "tokenize", params: config, inputFingerprint: fingerprint)
        var written = 0
        var mismatches = 0
        var problems: [String] = []
        progress.start("tokenizing (\(options.template.rawValue))", total: pendingCount)
        do {
            var lastID: Int64 = 0
            let jobs = max(1, options.jobs)
            // One masker (tokenizer session + cache) per worker; worker w only touches maskers[w].
            nonisolated(unsafe) let maskers = (0..<jobs).map { _ in
                LLaVAMasker(tokenizer: tokenizer, template: options.template, legacy: options.legacy, modelMaxLength: options.maxLength)
            }
            while true {
                let batch: [Pending] = try catalog.read { db in
                    try GRDB.Row.fetchAll(db, sql: """
                        SELECT i.id, i.key, i.image_id, i.conversations FROM instructions i
                        WHERE i.id > ? AND NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
                        ORDER BY i.id LIMIT ?
                        """, arguments: [lastID, configHash, options.batchSize]).map { row in
                        Pending(id: row[0], key: row[1], hasImage: (row[2] as Int64?) != nil, conversations: row[3])
                    }
                }
                guard let last = batch.last else { break }
                lastID = last.id
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
                try catalog.write { db in
                    let statement = try db.makeStatement(sql: """
                        INSERT INTO tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, error,
                                               input_ids, labels, n_tokens, n_image_tokens, n_supervised)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (instruction_id, config_hash) DO NOTHING
                        """)
                    for r in done {
                        try statement.execute(arguments: [
                            r.instructionID, configHash, tokenizer.sha256, options.template.rawValue, r.status, r.error,
                            r.inputIDs.map(Self.blob), r.labels.map(Self.blob), r.nTokens, r.nImageTokens, r.nSupervised,
                        ])
                    }
                }
                for r in done {
                    if r.mismatch { mismatches += 1 }
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
        try catalog.endRun(runID, counts: result)
        return StageReport(stage: "tokenize", counts: result, problems: problems)
    }

    /// Counts of this configuration's rows by status.
    private func counts(_ catalog: Catalog, _ configHash: String) throws -> [String: Int] {
        try catalog.read { db in
            var c: [String: Int] = ["ok": 0, "truncated": 0, "dropped": 0, "error": 0]
            for row in try GRDB.Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM tokenized WHERE config_hash = ? GROUP BY status",
                                             arguments: [configHash]) {
                c[row[0] as String] = row[1]
            }
            c["tokenized"] = c.values.reduce(0, +)
            return c
        }
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
            let sample = try masker.tokenize(conversation)
            let imagePositions = p.hasImage ? options.imageTokens : 0
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
                    let cost = id == LLaVAMasker.imageTokenIndex ? options.imageTokens : 1
                    if used + cost > options.maxLength { break }
                    used += cost
                    keep += 1
                }
                if p.hasImage, !ids[..<keep].contains(LLaVAMasker.imageTokenIndex) {
                    return Row(instructionID: p.id, status: "dropped",
                               error: "the image does not fit in --max-length \(options.maxLength) with --image-tokens \(options.imageTokens)",
                               nTokens: sample.inputIDs.count, nImageTokens: imagePositions, nSupervised: 0)
                }
                ids = Array(ids[..<keep])
                labels = Array(labels[..<keep])
                status = "truncated"
            }
            let supervised = labels.reduce(0) { $0 + ($1 != LLaVAMasker.ignoreIndex ? 1 : 0) }
            return Row(instructionID: p.id, status: status, error: nil, inputIDs: ids, labels: labels, nTokens: ids.count,
                       nImageTokens: imagePositions, nSupervised: supervised, mismatch: sample.mismatch)
        } catch {
            return Row(instructionID: p.id, status: "error", error: "\(error)")
        }
    }
}

extension TokenizeStage {
    /// The catalog's text for tokenizer training: every caption, then every turn of every instruction, in id order.
    public static func catalogTexts(_ catalog: Catalog) throws -> [String] {
        try catalog.read { db in
            var texts = try String.fetchAll(db, sql: "SELECT text FROM captions ORDER BY id")
            for json in try String.fetchAll(db, sql: "SELECT conversations FROM instructions ORDER BY id") {
                if let turns = try? JSONDecoder().decode([Turn].self, from: Data(json.utf8)) {
                    texts.append(contentsOf: turns.map { $0.value.replacingOccurrences(of: Conversation.imagePlaceholder, with: "") })
                }
            }
            return texts
        }
    }
}
