import Foundation
import GRDB

/// What tokenize reads (instructions still untokenized, with their pixels' geometry) and writes (tokenized rows).
extension Catalog {
    /// How many instructions have no tokenized row for the config (argument 1): one key lookup per instruction.
    package static let pendingTokenizeCountSQL = """
        SELECT COUNT(*) FROM instructions i
        WHERE NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
        """

    /// The next batch of untokenized instructions after id argument 2, with their pixels row for config argument 1
    /// (tokenized config argument 3, batch size argument 4). Keyset paging on the primary key: each batch costs
    /// its own size, not the rows before it. The pixels row is found by a per-row key lookup in a subquery: as a
    /// plain join, an analyzed catalog gets a Bloom filter built over the whole pixels table for every batch.
    /// `QueryCostTests` checks the growth.
    package static let pendingTokenizeBatchSQL = """
        SELECT i.id, i.key, i.image_id, i.conversations, img.key AS image_key, p.status AS pixel_status, p.error,
               p.tiles, p.patches, p.patch_dim, p.grid_rows, p.grid_cols
        FROM instructions i LEFT JOIN images img ON img.id = i.image_id
        LEFT JOIN pixels p ON p.id = (SELECT q.id FROM pixels q WHERE q.sha256 = img.sha256 AND q.config_hash = ?)
        WHERE i.id > ? AND NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
        ORDER BY i.id LIMIT ?
        """

    /// An instruction to tokenize, with its image's pixels (for the config asked for) when there are any.
    public struct PendingInstruction: Sendable {
        public var id: Int64
        public var key: String
        public var imageID: Int64?
        public var conversations: String
        public var imageKey: String?
        public var pixelStatus: String?
        public var pixelError: String?
        public var tiles: Int?
        public var patches: Int?
        public var patchDim: Int?
        public var gridRows: Int?
        public var gridCols: Int?
    }

    /// `instructions:COUNT:MAX(id)`: changes when an instruction is added.
    public func instructionsFingerprint() throws -> String {
        try read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM instructions")!
            let n: Int = row[0]
            let m: Int = row[1]
            return "instructions:\(n):\(m)"
        }
    }

    /// How many instructions have no tokenized row for `configHash`.
    public func pendingTokenizeCount(configHash: String) throws -> Int {
        try read { db in try Int.fetchOne(db, sql: Self.pendingTokenizeCountSQL, arguments: [configHash]) ?? 0 }
    }

    /// (instruction key, image key) of every instruction with no tokenized row for `configHash`.
    public func pendingTokenizeKeys(configHash: String) throws -> [(key: String, imageKey: String?)] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT i.key, img.key FROM instructions i LEFT JOIN images img ON img.id = i.image_id
                WHERE NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
                """, arguments: [configHash]).map { ($0[0], $0[1]) }
        }
    }

    /// Up to `limit` instructions after id `after` with no tokenized row for `configHash`, in id order, with their
    /// pixels for `pixelsConfig`.
    public func pendingInstructions(after: Int64, configHash: String, pixelsConfig: String?, limit: Int) throws -> [PendingInstruction] {
        try read { db in
            try Row.fetchAll(db, sql: Self.pendingTokenizeBatchSQL, arguments: [pixelsConfig, after, configHash, limit]).map { row in
                PendingInstruction(id: row[0], key: row[1], imageID: row[2], conversations: row[3], imageKey: row["image_key"],
                                   pixelStatus: row["pixel_status"], pixelError: row["error"], tiles: row["tiles"],
                                   patches: row["patches"], patchDim: row["patch_dim"], gridRows: row["grid_rows"],
                                   gridCols: row["grid_cols"])
            }
        }
    }

    /// Row counts of config `configHash` by status (`ok`, `truncated`, `dropped`, `error` always present), plus
    /// `tokenized` (all) and `unsupervised` (not dropped, no supervised token).
    public func tokenizedCounts(configHash: String) throws -> [String: Int] {
        try read { db in
            var c: [String: Int] = ["ok": 0, "truncated": 0, "dropped": 0, "error": 0]
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM tokenized WHERE config_hash = ? GROUP BY status",
                                        arguments: [configHash]) {
                c[row[0] as String] = row[1]
            }
            c["tokenized"] = c.values.reduce(0, +)
            c["unsupervised"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tokenized WHERE config_hash = ? AND n_supervised = 0 AND status != 'dropped'",
                                                 arguments: [configHash]) ?? 0
            return c
        }
    }

    /// The catalog's text: every caption, then every instruction's conversation JSON, in id order.
    public func captionsAndConversations() throws -> (captions: [String], conversations: [String]) {
        try read { db in
            (try String.fetchAll(db, sql: "SELECT text FROM captions ORDER BY id"),
             try String.fetchAll(db, sql: "SELECT conversations FROM instructions ORDER BY id"))
        }
    }
}

/// One tokenized instruction for the `tokenized` table.
public struct TokenizedRecord: Sendable {
    public var instructionID: Int64
    public var status: String
    public var error: String?
    public var inputIDs: Data?
    public var labels: Data?
    public var tokens: Int?
    public var imageTokens: Int?
    public var supervised: Int?

    public init(instructionID: Int64, status: String, error: String?, inputIDs: Data?, labels: Data?, tokens: Int?,
                imageTokens: Int?, supervised: Int?) {
        self.instructionID = instructionID
        self.status = status
        self.error = error
        self.inputIDs = inputIDs
        self.labels = labels
        self.tokens = tokens
        self.imageTokens = imageTokens
        self.supervised = supervised
    }
}

extension Catalog {
    /// Writes tokenized rows in one transaction; an instruction already tokenized with `configHash` is left alone.
    public func insertTokenized(_ rows: [TokenizedRecord], configHash: String, tokenizerSHA256: String, template: String) throws {
        try write { db in
            let statement = try db.makeStatement(sql: """
                INSERT INTO tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, error,
                                       input_ids, labels, n_tokens, n_image_tokens, n_supervised)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (instruction_id, config_hash) DO NOTHING
                """)
            for r in rows {
                try statement.execute(arguments: [
                    r.instructionID, configHash, tokenizerSHA256, template, r.status, r.error,
                    r.inputIDs, r.labels, r.tokens, r.imageTokens, r.supervised,
                ])
            }
        }
    }
}
