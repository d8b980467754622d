import Foundation
import GRDB
import VLMCore

/// What instruction generation reads (usable images with their captions and objects, categories, cached LLM
/// replies) and writes (instructions, LLM calls).
extension Catalog {
    /// A usable image (status `ok`, known size).
    public struct UsableImage: Sendable {
        public var id: Int64
        public var key: String
        public var sourceID: Int64
        public var fileName: String
        public var width: Int
        public var height: Int
    }

    /// One caption of an image.
    public struct CaptionRecord: Sendable {
        public var imageID: Int64
        public var externalID: Int64
        public var text: String
    }

    /// One annotated object with its category's names.
    public struct ObjectRecord: Sendable {
        public var imageID: Int64
        public var externalID: Int64
        public var categoryID: Int64
        public var category: String
        public var supercategory: String?
        public var box: Box
        public var isCrowd: Bool
    }

    /// One category of a source.
    public struct CategoryRecord: Sendable {
        public var sourceID: Int64
        public var id: Int64
        public var name: String
        public var supercategory: String?
    }

    /// The usable images in key order; captions and objects in image order (read through their (image_id,
    /// external_id) keys, no sort). `QueryCostTests` (VLMPipelineTests) checks the growth.
    package static let usableImagesSQL = """
        SELECT id, key, source_id, file_name, width, height FROM images
        WHERE status = 'ok' AND width > 0 AND height > 0 ORDER BY key
        """
    package static let captionsInImageOrderSQL = "SELECT image_id, external_id, text FROM captions ORDER BY image_id, external_id"
    package static let objectsInImageOrderSQL = """
        SELECT o.image_id, o.external_id, o.category_id, c.name, c.supercategory, o.x, o.y, o.w, o.h, o.iscrowd
        FROM objects o JOIN categories c ON c.id = o.category_id ORDER BY o.image_id, o.external_id
        """

    /// In one read transaction: the usable images `keep` accepts (in key order; `limit` without a `keep` is applied
    /// in SQL), then every caption and every object, in image order. `image` returns false to stop taking images.
    public func readUsableImages(limit: Int?, keep: ((String) -> Bool)?, image: (UsableImage) -> Bool,
                                 caption: (CaptionRecord) -> Void, object: (ObjectRecord) -> Void) throws {
        try read { db in
            let sql = Self.usableImagesSQL + (keep == nil ? limit.map { " LIMIT \($0)" } ?? "" : "")
            for row in try Row.fetchAll(db, sql: sql) {
                if let keep, !keep(row[1]) { continue }
                guard image(UsableImage(id: row[0], key: row[1], sourceID: row[2], fileName: row[3], width: row[4],
                                        height: row[5])) else { break }
            }
            for row in try Row.fetchAll(db, sql: Self.captionsInImageOrderSQL) {
                caption(CaptionRecord(imageID: row[0], externalID: row[1], text: row[2]))
            }
            for row in try Row.fetchAll(db, sql: Self.objectsInImageOrderSQL) {
                object(ObjectRecord(imageID: row[0], externalID: row[1], categoryID: row[2], category: row[3],
                                    supercategory: row[4], box: Box(x: row[5], y: row[6], width: row[7], height: row[8]),
                                    isCrowd: (row[9] as Int) != 0))
            }
        }
    }

    /// One page of usable images after key argument 1, in key order, at most argument 2 of them: keyset paging
    /// on the `key` index, so a page costs its own size whatever the table holds. `+status` keeps the planner off
    /// `images_status` (walking every ok image and sorting them, per page, made paging quadratic).
    package static let usableImagesPageSQL = """
        SELECT id, key, source_id, file_name, width, height FROM images
        WHERE key > ? AND +status = 'ok' AND width > 0 AND height > 0 ORDER BY key LIMIT ?
        """
    /// The captions of the images whose ids are in the JSON array argument 1, in image order (one key lookup each).
    package static let captionsOfImagesSQL = """
        SELECT image_id, external_id, text FROM captions
        WHERE image_id IN (SELECT value FROM json_each(?)) ORDER BY image_id, external_id
        """
    /// The objects of the images whose ids are in the JSON array argument 1, in image order.
    package static let objectsOfImagesSQL = """
        SELECT o.image_id, o.external_id, o.category_id, c.name, c.supercategory, o.x, o.y, o.w, o.h, o.iscrowd
        FROM objects o JOIN categories c ON c.id = o.category_id
        WHERE o.image_id IN (SELECT value FROM json_each(?)) ORDER BY o.image_id, o.external_id
        """

    /// The usable images `keep` accepts, in key order, handed over `pageSize` at a time (fewer when `keep` drops
    /// some) with their captions and objects. Each page is its own read, so memory holds one page, not the table.
    /// `body` returns false to stop.
    public func forEachUsableImagePage(pageSize: Int = 500, keep: ((String) -> Bool)?,
                                       _ body: ([UsableImage], [CaptionRecord], [ObjectRecord]) throws -> Bool) throws {
        var after = ""
        while true {
            let page: (images: [UsableImage], captions: [CaptionRecord], objects: [ObjectRecord], last: String?) = try read { db in
                var images: [UsableImage] = []
                var last: String?
                for row in try Row.fetchAll(db, sql: Self.usableImagesPageSQL, arguments: [after, pageSize]) {
                    let key: String = row[1]
                    last = key
                    if let keep, !keep(key) { continue }
                    images.append(UsableImage(id: row[0], key: key, sourceID: row[2], fileName: row[3], width: row[4],
                                              height: row[5]))
                }
                guard !images.isEmpty else { return ([], [], [], last) }
                let ids = "[" + images.map { String($0.id) }.joined(separator: ",") + "]"
                let captions = try Row.fetchAll(db, sql: Self.captionsOfImagesSQL, arguments: [ids]).map {
                    CaptionRecord(imageID: $0[0], externalID: $0[1], text: $0[2])
                }
                let objects = try Row.fetchAll(db, sql: Self.objectsOfImagesSQL, arguments: [ids]).map { row in
                    ObjectRecord(imageID: row[0], externalID: row[1], categoryID: row[2], category: row[3],
                                 supercategory: row[4], box: Box(x: row[5], y: row[6], width: row[7], height: row[8]),
                                 isCrowd: (row[9] as Int) != 0)
                }
                return (images, captions, objects, last)
            }
            guard let last = page.last else { return }
            after = last
            if !page.images.isEmpty, try !body(page.images, page.captions, page.objects) { return }
        }
    }

    /// How many usable images `keep` accepts (all of them without `keep`), read through a cursor.
    public func usableImageCount(keep: ((String) -> Bool)?) throws -> Int {
        try read { db in
            guard let keep else {
                return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE status = 'ok' AND width > 0 AND height > 0") ?? 0
            }
            var n = 0
            let keys = try String.fetchCursor(db, sql: "SELECT key FROM images WHERE status = 'ok' AND width > 0 AND height > 0")
            while let key = try keys.next() { if keep(key) { n += 1 } }
            return n
        }
    }

    /// Every category, by source then external id.
    public func categories() throws -> [CategoryRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT source_id, id, name, supercategory FROM categories ORDER BY source_id, external_id").map {
                CategoryRecord(sourceID: $0[0], id: $0[1], name: $0[2], supercategory: $0[3])
            }
        }
    }

    /// Request hashes of LLM calls whose answer is final (`ok` or `rejected`).
    public func finalLLMCallHashes() throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db, sql: "SELECT request_hash FROM llm_calls WHERE status IN ('ok', 'rejected')"))
        }
    }

    /// The raw response of every `ok` LLM call, by request hash.
    public func okLLMResponses() throws -> [String: String] {
        try read { db in
            var map: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT request_hash, response FROM llm_calls WHERE status = 'ok'") {
                map[row[0]] = row[1]
            }
            return map
        }
    }

    /// Keys of the instructions made by `generator`.
    public func instructionKeys(generator: String) throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db, sql: "SELECT key FROM instructions WHERE generator = ?", arguments: [generator]))
        }
    }
}

/// One row for the `instructions` table.
public struct InstructionRecord: Sendable {
    public var key: String
    public var imageID: Int64?
    public var sourceID: Int64?
    public var generator: String
    public var kind: String
    public var groupID: String?
    public var conversationsJSON: String
    public var metaJSON: String

    public init(key: String, imageID: Int64?, sourceID: Int64?, generator: String, kind: String, groupID: String?,
                conversationsJSON: String, metaJSON: String) {
        self.key = key
        self.imageID = imageID
        self.sourceID = sourceID
        self.generator = generator
        self.kind = kind
        self.groupID = groupID
        self.conversationsJSON = conversationsJSON
        self.metaJSON = metaJSON
    }
}

/// One LLM request and its outcome, for the `llm_calls` table.
public struct LLMCallRecord: Sendable {
    public var requestHash: String
    public var imageID: Int64
    public var kind: String
    public var model: String
    public var request: String
    public var status: String
    public var response: String?
    public var reason: String?
    public var httpStatus: Int?
    public var attempts: Int
    public var promptTokens: Int?
    public var completionTokens: Int?

    public init(requestHash: String, imageID: Int64, kind: String, model: String, request: String, status: String,
                response: String?, reason: String?, httpStatus: Int?, attempts: Int, promptTokens: Int?,
                completionTokens: Int?) {
        self.requestHash = requestHash
        self.imageID = imageID
        self.kind = kind
        self.model = model
        self.request = request
        self.status = status
        self.response = response
        self.reason = reason
        self.httpStatus = httpStatus
        self.attempts = attempts
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
    }
}

extension CatalogTransaction {
    /// Inserts `rows`; a key already present is left as it is. Returns how many were new.
    public func insertInstructions(_ rows: [InstructionRecord], paramsHash: String?, now: String) throws -> Int {
        var added = 0
        let statement = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO instructions (key, image_id, source_id, generator, kind, group_id, conversations, meta,
                                                params_hash, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for row in rows {
            try statement.execute(arguments: [row.key, row.imageID, row.sourceID, row.generator, row.kind, row.groupID,
                                              row.conversationsJSON, row.metaJSON, paramsHash, now])
            added += db.changesCount
        }
        return added
    }

    /// Records an LLM call; a request already recorded takes the new outcome and adds its attempts.
    public func upsertLLMCall(_ call: LLMCallRecord, now: String) throws {
        try db.cachedStatement(sql: """
            INSERT INTO llm_calls (request_hash, image_id, kind, model, request, status, response, reason, http_status,
                                   attempts, prompt_tokens, completion_tokens, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (request_hash) DO UPDATE SET
                status = excluded.status, response = excluded.response, reason = excluded.reason,
                http_status = excluded.http_status, attempts = llm_calls.attempts + excluded.attempts,
                prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
                created_at = excluded.created_at
            """).execute(arguments: [call.requestHash, call.imageID, call.kind, call.model, call.request, call.status,
                                     call.response, call.reason, call.httpStatus, call.attempts, call.promptTokens,
                                     call.completionTokens, now])
    }
}

extension Catalog {
    /// An instruction with the file its image came from, as `export llava` writes it.
    public struct ExportedInstruction: Sendable {
        public var key: String
        public var kind: String
        public var conversations: String
        public var imageID: Int64?
        public var fileName: String?
        public var location: String?
        public var member: String?
        /// The instruction's id (catalog order, the order an image's instructions are grouped in) and metadata
        /// (its `box_frame` separates groups).
        public var id: Int64 = 0
        public var meta: String?
    }

    /// `export llava`'s read: every instruction in key order with its image's file, only `kinds` kinds and
    /// `generators` generators when those counts of `?` placeholders are not zero.
    package static func exportInstructionsSQL(kinds: Int, generators: Int) -> String {
        var sql = """
            SELECT i.key, i.kind, i.conversations, m.file_name, m.location, m.member, i.image_id, i.id, i.meta
            FROM instructions i LEFT JOIN images m ON m.id = i.image_id
            """
        var conditions: [String] = []
        if kinds > 0 { conditions.append("i.kind IN (\(Array(repeating: "?", count: kinds).joined(separator: ", ")))") }
        if generators > 0 { conditions.append("i.generator IN (\(Array(repeating: "?", count: generators).joined(separator: ", ")))") }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        return sql + " ORDER BY i.key"
    }

    /// The instructions of these kinds and generators (nil or empty: any), in key order, with their image's file.
    public func instructionsForExport(kinds: [String]?, generators: [String]?) throws -> [ExportedInstruction] {
        let kinds = kinds ?? [], generators = generators ?? []
        let sql = Self.exportInstructionsSQL(kinds: kinds.count, generators: generators.count)
        return try read { db in
            try Row.fetchAll(db, sql: sql, arguments: StatementArguments(kinds + generators)).map { row in
                ExportedInstruction(key: row[0], kind: row[1], conversations: row[2], imageID: row[6], fileName: row[3],
                                    location: row[4], member: row[5], id: row[7], meta: row[8])
            }
        }
    }

    /// One sample of a tokenize config as `export llava --tokenized` writes it: its first instruction (with its
    /// image's file) and the row's status and grouped-sample description (`tokenized.sample`, nil for a sample of
    /// one instruction).
    public struct ExportedSample: Sendable {
        public var instruction: ExportedInstruction
        public var status: String
        public var sample: String?
        public var error: String?
    }

    /// `export llava --tokenized`'s read: the samples of a tokenize config (`?`), first instructions in key order.
    package static let exportTokenizedSamplesSQL = """
        SELECT i.key, i.kind, i.conversations, m.file_name, m.location, m.member, i.image_id, i.id, i.meta,
               t.status, t.sample, t.error
        FROM tokenized t JOIN instructions i ON i.id = t.instruction_id LEFT JOIN images m ON m.id = i.image_id
        WHERE t.config_hash = ? AND t.sample_of IS NULL ORDER BY i.key
        """

    /// The samples of tokenize config `configHash` (rows that are not `sample_of` another), in key order, and how
    /// many instructions the config's rows cover.
    public func tokenizedSamplesForExport(configHash: String) throws -> (samples: [ExportedSample], instructions: Int) {
        try read { db in
            let samples = try Row.fetchAll(db, sql: Self.exportTokenizedSamplesSQL, arguments: [configHash]).map { row in
                ExportedSample(instruction: ExportedInstruction(key: row[0], kind: row[1], conversations: row[2], imageID: row[6],
                                                                fileName: row[3], location: row[4], member: row[5], id: row[7],
                                                                meta: row[8]),
                               status: row[9], sample: row[10], error: row[11])
            }
            let instructions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tokenized WHERE config_hash = ?",
                                                arguments: [configHash]) ?? 0
            return (samples: samples, instructions: instructions)
        }
    }

    /// A fingerprint of what the instruction generators read: row count, id maximum and id sum of `images`,
    /// `captions`, `objects` and `categories`, and the count of ok images.
    public func annotationsFingerprint() throws -> String {
        try read { db in
            var parts: [String] = []
            for table in ["images", "captions", "objects", "categories"] {
                let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(id), 0) FROM \(table)")!
                parts.append("\(table):\(row[0] as Int64):\(row[1] as Int64):\(row[2] as Int64)")
            }
            let ok = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE status = 'ok'") ?? 0
            parts.append("ok:\(ok)")
            return parts.joined(separator: ",")
        }
    }

    /// How many sources of `kind` are named `name`.
    public func sourceCount(kind: String, name: String) throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sources WHERE kind = ? AND name = ?", arguments: [kind, name]) ?? 0
        }
    }
}
