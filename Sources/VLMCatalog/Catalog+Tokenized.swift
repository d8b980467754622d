import Foundation
import GRDB
import VLMCore
import VLMIO

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

    /// The next images after image id argument 1 with an instruction that has no tokenized row for config
    /// argument 2, in id order (argument 3 of them). Walks `instructions_image` in order; one unique-key lookup per
    /// instruction.
    package static let pendingTokenizeImagesSQL = """
        SELECT DISTINCT i.image_id FROM instructions i
        WHERE i.image_id > ? AND NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
        ORDER BY i.image_id LIMIT ?
        """

    /// Every instruction of the images with ids from argument 2 to argument 3, in (image, id) order, with their
    /// pixels row for config argument 1.
    package static let imageInstructionsSQL = """
        SELECT i.id, i.key, i.image_id, i.conversations, img.key AS image_key, p.status AS pixel_status, p.error,
               p.tiles, p.patches, p.patch_dim, p.grid_rows, p.grid_cols, i.kind, i.generator, i.meta
        FROM instructions i JOIN images img ON img.id = i.image_id
        LEFT JOIN pixels p ON p.sha256 = img.sha256 AND p.config_hash = ?
        WHERE i.image_id BETWEEN ? AND ?
        ORDER BY i.image_id, i.id
        """

    /// The next batch of untokenized text-only instructions (no image) after id argument 1 for config argument 2
    /// (batch size argument 3).
    package static let pendingTextOnlyBatchSQL = """
        SELECT i.id, i.key, i.image_id, i.conversations, NULL AS image_key, NULL AS pixel_status, NULL AS error,
               NULL AS tiles, NULL AS patches, NULL AS patch_dim, NULL AS grid_rows, NULL AS grid_cols, i.kind, i.generator, i.meta
        FROM instructions i
        WHERE i.image_id IS NULL AND i.id > ? AND NOT EXISTS (SELECT 1 FROM tokenized t WHERE t.instruction_id = i.id AND t.config_hash = ?)
        ORDER BY i.id LIMIT ?
        """

    /// The box frame an instruction's metadata states (`meta.box_frame`, a string), NULL when none: the frame
    /// tokenize groups by (`TokenizeStage.processImage` reads the same key).
    package static func statedFrameSQL(_ alias: String) -> String {
        "(CASE WHEN json_valid(\(alias).meta) AND json_type(\(alias).meta, '$.box_frame') = 'text' THEN json_extract(\(alias).meta, '$.box_frame') END)"
    }

    /// The distinct box frames the workspace's image instructions state. One pass over the instructions; only
    /// metadata that names `box_frame` is parsed.
    package static let instructionBoxFramesSQL = """
        SELECT DISTINCT \(statedFrameSQL("i")) AS frame FROM instructions i
        WHERE i.image_id IS NOT NULL AND i.meta LIKE '%box_frame%' AND \(statedFrameSQL("i")) IS NOT NULL
        ORDER BY frame
        """

    /// The rows of config argument 1 in a grouped sample whose head (`sample_of`) states another frame than they
    /// do (a frame and none, or two frames): grouped while the workspace held at most one frame. Walks the
    /// config's rows, with two primary-key lookups for each row of a grouped sample.
    static let groupedAcrossFramesRows = """
        FROM tokenized t
        JOIN instructions i ON i.id = t.instruction_id
        JOIN instructions h ON h.id = t.sample_of
        WHERE t.config_hash = ? AND t.sample_of IS NOT NULL AND \(statedFrameSQL("i")) IS NOT \(statedFrameSQL("h"))
        """

    /// Images (id, key, number of instructions) holding such a sample (`groupedAcrossFramesRows`), in id order.
    package static let imagesGroupedAcrossFramesSQL = """
        SELECT img.id, img.key, (SELECT COUNT(*) FROM instructions n WHERE n.image_id = img.id)
        FROM images img WHERE img.id IN (SELECT i.image_id \(groupedAcrossFramesRows))
        ORDER BY img.id
        """

    /// The first instructions (`sample_of`) of such samples.
    package static let groupedSampleHeadsAcrossFramesSQL = "SELECT DISTINCT t.sample_of \(groupedAcrossFramesRows)"

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
        /// Read by the grouped queries only (a grouped sample names its kinds and box frame).
        public var kind: String = ""
        public var generator: String = ""
        public var meta: String?
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

    /// The distinct box frames stated by the workspace's image instructions (`meta.box_frame`), sorted.
    public func instructionBoxFrames() throws -> [String] {
        try read { db in try String.fetchAll(db, sql: Self.instructionBoxFramesSQL) }
    }

    /// Images whose grouped samples of `configHash` join instructions of different stated frames (grouped under
    /// the one-frame rule before the workspace held a second frame), with their keys and instruction counts.
    public func imagesGroupedAcrossFrames(configHash: String) throws -> [(id: Int64, key: String, instructions: Int)] {
        try read { db in
            try Row.fetchAll(db, sql: Self.imagesGroupedAcrossFramesSQL, arguments: [configHash]).map { ($0[0], $0[1], $0[2]) }
        }
    }

    /// Up to `limit` image ids after `after` with an instruction not yet tokenized for `configHash`, in id order.
    public func pendingTokenizeImages(after: Int64, configHash: String, limit: Int) throws -> [Int64] {
        try read { db in try Int64.fetchAll(db, sql: Self.pendingTokenizeImagesSQL, arguments: [after, configHash, limit]) }
    }

    /// Every instruction of the images with ids in `first...last`, in (image, id) order, with pixels for `pixelsConfig`.
    public func imageInstructions(from first: Int64, through last: Int64, pixelsConfig: String?) throws -> [PendingInstruction] {
        try read { db in
            try Row.fetchAll(db, sql: Self.imageInstructionsSQL, arguments: [pixelsConfig, first, last]).map(Self.pendingInstruction)
        }
    }

    /// Up to `limit` text-only instructions after id `after` with no tokenized row for `configHash`, in id order.
    public func pendingTextOnlyInstructions(after: Int64, configHash: String, limit: Int) throws -> [PendingInstruction] {
        try read { db in
            try Row.fetchAll(db, sql: Self.pendingTextOnlyBatchSQL, arguments: [after, configHash, limit]).map(Self.pendingInstruction)
        }
    }

    private static func pendingInstruction(_ row: Row) -> PendingInstruction {
        PendingInstruction(id: row[0], key: row[1], imageID: row[2], conversations: row[3], imageKey: row["image_key"],
                           pixelStatus: row["pixel_status"], pixelError: row["error"], tiles: row["tiles"],
                           patches: row["patches"], patchDim: row["patch_dim"], gridRows: row["grid_rows"],
                           gridCols: row["grid_cols"], kind: row["kind"], generator: row["generator"], meta: row["meta"])
    }

    /// Removes config `configHash`'s rows of every instruction of images `imageIDs` (a grouped image is tokenized
    /// again whole when an instruction was added to it).
    public func deleteTokenized(imageIDs: [Int64], configHash: String) throws {
        guard !imageIDs.isEmpty else { return }
        try write { db in
            let statement = try db.makeStatement(sql: """
                DELETE FROM tokenized WHERE config_hash = ? AND instruction_id IN (SELECT id FROM instructions WHERE image_id = ?)
                """)
            for id in imageIDs { try statement.execute(arguments: [configHash, id]) }
        }
    }

    /// Sample counts of config `configHash` by status (a grouped sample counts once; `instructions` then counts
    /// every instruction) (`ok`, `truncated`, `dropped`, `error` always present), plus
    /// `tokenized` (all) and `unsupervised` (not dropped, no supervised token).
    public func tokenizedCounts(configHash: String) throws -> [String: Int] {
        try read { db in
            var c: [String: Int] = ["ok": 0, "truncated": 0, "dropped": 0, "error": 0]
            var grouped = 0
            for row in try Row.fetchAll(db, sql: """
                SELECT status, sample_of IS NOT NULL, COUNT(*) FROM tokenized WHERE config_hash = ? GROUP BY status, sample_of IS NOT NULL
                """, arguments: [configHash]) {
                if row[1] as Bool { grouped += row[2] as Int } else { c[row[0] as String] = row[2] }
            }
            c["tokenized"] = c.values.reduce(0, +)
            c["unsupervised"] = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM tokenized WHERE config_hash = ? AND n_supervised = 0 AND status != 'dropped' AND sample_of IS NULL
                """, arguments: [configHash]) ?? 0
            // Grouped configs: every instruction has a row; `instructions` counts them, the statuses count samples.
            let hasGroups = try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM tokenized WHERE config_hash = ? AND sample IS NOT NULL)",
                                              arguments: [configHash]) ?? false
            if grouped > 0 || hasGroups {
                c["instructions"] = c["tokenized"]! + grouped
            }
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
    /// A grouped sample's description (JSON, `tokenized.sample`) on the row of its first instruction.
    public var sample: String?
    /// For another instruction of a grouped sample: the id of the instruction whose row holds the sample.
    public var sampleOf: Int64?

    public init(instructionID: Int64, status: String, error: String?, inputIDs: Data?, labels: Data?, tokens: Int?,
                imageTokens: Int?, supervised: Int?, sample: String? = nil, sampleOf: Int64? = nil) {
        self.sample = sample
        self.sampleOf = sampleOf
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
                                       input_ids, labels, n_tokens, n_image_tokens, n_supervised, sample, sample_of)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (instruction_id, config_hash) DO NOTHING
                """)
            for r in rows {
                try statement.execute(arguments: [
                    r.instructionID, configHash, tokenizerSHA256, template, r.status, r.error,
                    r.inputIDs, r.labels, r.tokens, r.imageTokens, r.supervised, r.sample, r.sampleOf,
                ])
            }
        }
    }
}

/// What `tokenized.sample` holds for a grouped sample (on the row of its first instruction): the instructions it
/// joins, in catalog order, and the turns that were tokenized.
///
/// ```swift
/// let info = try GroupedSampleInfo.decode(row.sample!)   // info.keys.count instructions, info.conversations turns
/// ```
public struct GroupedSampleInfo: Codable, Sendable, Equatable {
    /// The instructions' keys, in catalog (id) order; the first is the sample's key.
    public var keys: [String]
    /// Their kinds and generators, each once, in order of first appearance.
    public var kinds: [String]
    public var generators: [String]
    /// The frame the boxes in the turns are stated in, when an instruction states one (`instructions.meta.box_frame`).
    public var boxFrame: String?
    /// True when an instruction's metadata holds a box.
    public var statesBox: Bool
    /// The merged turns: the first instruction's as stored, the others' with `<image>` taken out (LLaVA's 665K
    /// layout: the image once, in the first human turn).
    public var conversations: [Turn]

    enum CodingKeys: String, CodingKey {
        case keys, kinds, generators, conversations
        case boxFrame = "box_frame", statesBox = "states_box"
    }

    public init(keys: [String], kinds: [String], generators: [String], boxFrame: String?, statesBox: Bool, conversations: [Turn]) {
        self.keys = keys
        self.kinds = kinds
        self.generators = generators
        self.boxFrame = boxFrame
        self.statesBox = statesBox
        self.conversations = conversations
    }

    /// The canonical JSON stored in `tokenized.sample` (sorted keys, so equal samples store equal text).
    public var json: String { String(decoding: Hashing.canonicalJSON(self), as: UTF8.self) }

    public static func decode(_ json: String) throws -> GroupedSampleInfo {
        do { return try JSONDecoder().decode(GroupedSampleInfo.self, from: Data(json.utf8)) } catch {
            throw VLMError(.corrupt, record: "tokenized.sample", "not a grouped sample description: \(error)")
        }
    }
}
