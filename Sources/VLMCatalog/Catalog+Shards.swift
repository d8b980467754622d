import Foundation
import GRDB
import VLMCore
import VLMIO

/// A consistent read of several queries (one read transaction), as `Catalog.snapshot` hands it to its body.
public struct CatalogSnapshot {
    package let db: Database

    package init(_ db: Database) {
        self.db = db
    }
}

extension Catalog {
    /// Runs `body` in one read transaction, so every query it makes sees the same catalog.
    public func snapshot<T>(_ body: (CatalogSnapshot) throws -> T) throws -> T {
        try read { db in try body(CatalogSnapshot(db)) }
    }
}

/// The tables whose rows are keyed by a stage config hash.
public enum ConfigTable: String, Sendable {
    case tokenized, pixels
}

/// A row of `shards`.
public struct ShardRecord: Sendable {
    public var id: Int64
    public var name: String
    public var path: String
    /// Recorded only when asked for (`shard --sha256`) and in indexes from before v13.
    public var sha256: String?
    /// The integrity hash recorded at write time (nil only in indexes from before v8).
    public var xxh3_128: String?
    public var bytes: Int
    public var samples: Int
    public var paramsHash: String
}

/// A sample of the training index, as `samples` holds it.
public struct IndexedSampleRecord: Sendable {
    public var id: Int64
    public var key: String
    public var shardID: Int64
    public var indexInShard: Int
    public var offset: Int
    public var size: Int
    public var tokens: Int
    public var supervised: Int
    public var imageTokens: Int
    public var hasImage: Bool
}

/// A member of a sample (`sample_parts`); `xxh3` as written (nil for rows from before checksums).
public struct SamplePartRecord: Sendable {
    public var sampleID: Int64
    public var name: String
    public var offset: Int
    public var size: Int
    public var xxh3: UInt64?
}

/// One row of the shard plan (`Catalog.shardPlanSQL`): a tokenized instruction with its image and pixels.
public struct ShardPlanRow: Sendable {
    public var key: String
    public var instructionID: Int64
    public var tokenizedID: Int64
    public var kind: String
    public var generator: String
    public var imageID: Int64?
    public var meta: String?
    public var imageTokensCounted: Int?
    public var sourceKind: String?
    public var sourceName: String?
    public var imageKey: String?
    public var externalID: Int64?
    public var fileName: String?
    public var imageSHA256: String?
    public var location: String?
    public var member: String?
    public var format: String?
    public var imageStatus: String?
    public var width: Int?
    public var height: Int?
    public var pixelStatus: String?
    public var offset: Int?
    public var size: Int?
    public var tiles: Int?
    public var patches: Int?
    public var patchDim: Int?
    public var gridRows: Int?
    public var gridCols: Int?
    /// XXH3-64 patchify recorded for the pixel member (nil for rows written before migration v10).
    public var pixelXXH3: UInt64?
    public var pixelShard: String?
    /// The pixel shard's XXH3-128, or its sha256 where none was recorded (pixel shards written before v15): what
    /// the shard plan's fingerprint names it by.
    public var pixelShardChecksum: String?
    /// A grouped sample's description (`tokenized.sample` JSON); nil for a sample of one instruction.
    public var sample: String?
}

/// A tokenized row with its instruction's conversation, as a shard sample is built from it.
public struct TokenizedSampleRecord: Sendable {
    public var inputIDs: [UInt8]
    public var labels: [UInt8]
    public var tokens: Int
    public var imageTokens: Int
    public var supervised: Int
    public var status: String
    public var tokenizerSHA256: String
    public var template: String
    /// The turns tokenized: the grouped sample's merged turns, else the instruction's conversation (JSON).
    public var conversations: String
}

/// A shard written and to be indexed, with its samples.
public struct NewShard: Sendable {
    public struct Sample: Sendable {
        public var key: String
        public var indexInShard: Int
        public var offset: Int
        public var size: Int
        public var tokens: Int
        public var supervised: Int
        public var imageTokens: Int
        public var hasImage: Bool
        public var source: String?
        public var instructionID: Int64
        public var parts: [Part]

        public init(key: String, indexInShard: Int, offset: Int, size: Int, tokens: Int, supervised: Int,
                    imageTokens: Int, hasImage: Bool, source: String?, instructionID: Int64, parts: [Part]) {
            self.key = key
            self.indexInShard = indexInShard
            self.offset = offset
            self.size = size
            self.tokens = tokens
            self.supervised = supervised
            self.imageTokens = imageTokens
            self.hasImage = hasImage
            self.source = source
            self.instructionID = instructionID
            self.parts = parts
        }
    }

    public struct Part: Sendable {
        public var name: String
        public var offset: Int
        public var size: Int
        public var xxh3: UInt64

        public init(name: String, offset: Int, size: Int, xxh3: UInt64) {
            self.name = name
            self.offset = offset
            self.size = size
            self.xxh3 = xxh3
        }
    }

    public var name: String
    public var path: String
    /// nil unless asked for (`shard --sha256`).
    public var sha256: String?
    public var xxh3_128: String
    public var bytes: Int
    public var paramsHash: String
    public var part: String?
    public var samples: [Sample]

    public init(name: String, path: String, sha256: String?, xxh3_128: String, bytes: Int, paramsHash: String,
                part: String?, samples: [Sample]) {
        self.name = name
        self.path = path
        self.sha256 = sha256
        self.xxh3_128 = xxh3_128
        self.bytes = bytes
        self.paramsHash = paramsHash
        self.part = part
        self.samples = samples
    }
}

extension CatalogSnapshot {
    /// Each config hash of `table` with its row count, in hash order.
    public func configCounts(_ table: ConfigTable) throws -> [(hash: String, rows: Int)] {
        try Row.fetchAll(db, sql: "SELECT config_hash, COUNT(*) AS n FROM \(table.rawValue) GROUP BY config_hash ORDER BY config_hash")
            .map { ($0["config_hash"], $0["n"]) }
    }

    /// The stored config JSON of pixels made with `hash`, if any row records it.
    public func pixelsConfigJSON(hash: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT config FROM pixels WHERE config_hash = ? AND config IS NOT NULL LIMIT 1",
                            arguments: [hash])
    }

    /// True when config `tokenizedConfig` grouped instructions into samples (a row holds a grouped sample).
    public func tokenizedConfigGroups(_ tokenizedConfig: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM tokenized WHERE config_hash = ? AND sample IS NOT NULL)",
                          arguments: [tokenizedConfig]) ?? false
    }

    /// The first instructions of config `tokenizedConfig`'s grouped samples that join instructions of different
    /// stated box frames (grouped before the workspace held a second frame; `tokenize` regroups them).
    public func groupedSampleHeadsAcrossFrames(tokenizedConfig: String) throws -> Set<Int64> {
        Set(try Int64.fetchAll(db, sql: Catalog.groupedSampleHeadsAcrossFramesSQL, arguments: [tokenizedConfig]))
    }

    /// Walks the shard plan in key order until `body` returns false.
    public func forEachShardPlanRow(pixelsConfig: String?, tokenizedConfig: String,
                                    _ body: (ShardPlanRow) throws -> Bool) throws {
        let cursor = try Row.fetchCursor(db, sql: Catalog.shardPlanSQL, arguments: [pixelsConfig, tokenizedConfig])
        while let row = try cursor.next() {
            guard try body(ShardPlanRow(row)) else { break }
        }
    }
}

extension ShardPlanRow {
    init(_ row: Row) {
        self.init(
                key: row["key"], instructionID: row["instruction_id"], tokenizedID: row["tokenized_id"], kind: row["kind"],
                generator: row["generator"], imageID: row["image_id"], meta: row["meta"],
                imageTokensCounted: row["n_image_tokens"], sourceKind: row["source_kind"], sourceName: row["source_name"],
                imageKey: row["image_key"], externalID: row["external_id"], fileName: row["file_name"],
                imageSHA256: row["image_sha256"], location: row["location"], member: row["member"], format: row["format"],
                imageStatus: row["image_status"], width: row["width"], height: row["height"],
                pixelStatus: row["pixel_status"], offset: row["offset"], size: row["size"], tiles: row["tiles"],
                patches: row["patches"], patchDim: row["patch_dim"], gridRows: row["grid_rows"], gridCols: row["grid_cols"],
                pixelXXH3: (row["pixel_xxh3"] as Int64?).map { UInt64(bitPattern: $0) }, pixelShard: row["pixel_shard"], pixelShardChecksum: row["pixel_shard_checksum"],
                sample: row["sample"])
    }
}

extension Catalog {
    /// Every sample of the plan: tokenized rows of config argument 2 with their instruction, image and pixels
    /// (config argument 1), in key order. One primary-key or unique-key lookup per joined row.
    /// `QueryCostTests` (VLMPipelineTests) checks the growth.
    package static let shardPlanSQL = """
        SELECT i.key, i.id AS instruction_id, t.id AS tokenized_id, i.kind, i.generator, i.image_id, i.meta,
               t.n_image_tokens, s.kind AS source_kind, s.name AS source_name,
               img.key AS image_key, img.external_id, img.file_name, img.sha256 AS image_sha256,
               img.location, img.member, img.format, img.status AS image_status, img.width, img.height,
               p.status AS pixel_status, p.offset, p.size, p.tiles, p.patches, p.patch_dim,
               p.grid_rows, p.grid_cols, p.xxh3 AS pixel_xxh3, ps.name AS pixel_shard,
               COALESCE(ps.xxh3_128, ps.sha256) AS pixel_shard_checksum,
               t.sample
        FROM tokenized t
        JOIN instructions i ON i.id = t.instruction_id
        LEFT JOIN sources s ON s.id = i.source_id
        LEFT JOIN images img ON img.id = i.image_id
        LEFT JOIN pixels p ON p.sha256 = img.sha256 AND p.config_hash = ?
        LEFT JOIN pixel_shards ps ON ps.id = p.pixel_shard_id
        WHERE t.config_hash = ? AND t.status IN ('ok', 'truncated') AND t.sample_of IS NULL
        ORDER BY i.key
        """

    /// The plan rows of the tokenized ids in the JSON array argument 3 (pixels config argument 1, tokenized
    /// config argument 2), in no particular order: what `shard` re-reads for each batch it writes, so the plan
    /// itself holds only ids. One key lookup per id on every table, written as subqueries so that the planner
    /// never scans a small table (sources, pixel shards) in the inner loop or builds a Bloom filter over the whole
    /// pixels table for a batch of a few hundred rows.
    package static let shardPlanRowsByIDSQL = """
        SELECT i.key, i.id AS instruction_id, t.id AS tokenized_id, i.kind, i.generator, i.image_id, i.meta,
               t.n_image_tokens,
               (SELECT s.kind FROM sources s WHERE s.id = i.source_id) AS source_kind,
               (SELECT s.name FROM sources s WHERE s.id = i.source_id) AS source_name,
               img.key AS image_key, img.external_id, img.file_name, img.sha256 AS image_sha256,
               img.location, img.member, img.format, img.status AS image_status, img.width, img.height,
               p.status AS pixel_status, p.offset, p.size, p.tiles, p.patches, p.patch_dim,
               p.grid_rows, p.grid_cols, p.xxh3 AS pixel_xxh3,
               (SELECT ps.name FROM pixel_shards ps WHERE ps.id = p.pixel_shard_id) AS pixel_shard,
               (SELECT COALESCE(ps.xxh3_128, ps.sha256) FROM pixel_shards ps WHERE ps.id = p.pixel_shard_id) AS pixel_shard_checksum,
               t.sample
        FROM tokenized t
        JOIN instructions i ON i.id = t.instruction_id
        LEFT JOIN images img ON img.id = i.image_id
        LEFT JOIN pixels p ON p.id = (SELECT q.id FROM pixels q WHERE q.sha256 = img.sha256 AND q.config_hash = ?)
        WHERE t.config_hash = ? AND t.status IN ('ok', 'truncated') AND t.id IN (SELECT value FROM json_each(?))
        """

    /// The plan rows (`shardPlanSQL`'s columns) of `tokenizedIDs`, by tokenized id.
    public func shardPlanRows(tokenizedIDs: [Int64], pixelsConfig: String?, tokenizedConfig: String) throws -> [Int64: ShardPlanRow] {
        try read { db in
            let ids = "[" + tokenizedIDs.map { String($0) }.joined(separator: ",") + "]"
            var out: [Int64: ShardPlanRow] = [:]
            let rows = try Row.fetchCursor(db, sql: Self.shardPlanRowsByIDSQL, arguments: [pixelsConfig, tokenizedConfig, ids])
            while let row = try rows.next() {
                let plan = ShardPlanRow(row)
                out[plan.tokenizedID] = plan
            }
            return out
        }
    }

    /// The instruction id of every sample of `shardIDs`, shard by shard in that order, each in shard order (nil
    /// where a sample records none).
    public func sampleInstructionIDs(shardIDs: [Int64]) throws -> [Int64?] {
        try read { db in
            var ids: [Int64?] = []
            for id in shardIDs {
                ids += try Optional<Int64>.fetchAll(db, sql: "SELECT instruction_id FROM samples WHERE shard_id = ? ORDER BY index_in_shard",
                                                    arguments: [id])
            }
            return ids
        }
    }

    /// Every shard row, in name order.
    public func shardRecords() throws -> [ShardRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, path, sha256, xxh3_128, bytes, samples, params_hash FROM shards ORDER BY name").map {
                ShardRecord(id: $0["id"], name: $0["name"], path: $0["path"], sha256: $0["sha256"], xxh3_128: $0["xxh3_128"],
                            bytes: $0["bytes"], samples: $0["samples"], paramsHash: $0["params_hash"])
            }
        }
    }

    /// Records the sha256 of shard `name` (`shard --sha256` on shards written without one).
    public func setShardSHA256(name: String, sha256: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE shards SET sha256 = ? WHERE name = ?", arguments: [sha256, name])
        }
    }

    /// Total bytes of the shards written with `paramsHash`.
    public func shardBytes(paramsHash: String) throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(bytes), 0) FROM shards WHERE params_hash = ?",
                             arguments: [paramsHash]) ?? 0
        }
    }

    /// The sample keys of `shardIDs`, shard by shard in that order, each in shard order.
    public func sampleKeys(shardIDs: [Int64]) throws -> [String] {
        try read { db in
            var keys: [String] = []
            for id in shardIDs {
                keys += try String.fetchAll(db, sql: "SELECT key FROM samples WHERE shard_id = ? ORDER BY index_in_shard",
                                            arguments: [id])
            }
            return keys
        }
    }

    /// Removes the shard rows `ids` with their samples and parts (not the files).
    public func deleteShards(ids: [Int64]) throws {
        try write { db in
            for id in ids {
                try db.execute(sql: "DELETE FROM sample_parts WHERE sample_id IN (SELECT id FROM samples WHERE shard_id = ?)",
                               arguments: [id])
                try db.execute(sql: "DELETE FROM samples WHERE shard_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM shards WHERE id = ?", arguments: [id])
            }
        }
    }

    /// The tokenized rows `ids` with their instruction's conversation, by tokenized id.
    public func tokenizedSamples(ids: [Int64]) throws -> [Int64: TokenizedSampleRecord] {
        try read { db in
            var out: [Int64: TokenizedSampleRecord] = [:]
            let marks = Array(repeating: "?", count: ids.count).joined(separator: ",")
            let rows = try Row.fetchCursor(db, sql: """
                SELECT t.id, t.input_ids, t.labels, t.n_tokens, t.n_image_tokens, t.n_supervised, t.status,
                       t.tokenizer_sha256, t.template, i.conversations, json_extract(t.sample, '$.conversations') AS turns
                FROM tokenized t JOIN instructions i ON i.id = t.instruction_id WHERE t.id IN (\(marks))
                """, arguments: StatementArguments(ids))
            while let row = try rows.next() {
                let input: Data = row["input_ids"] ?? Data()
                let labels: Data = row["labels"] ?? Data()
                out[row["id"]] = TokenizedSampleRecord(
                    inputIDs: Array(input), labels: Array(labels), tokens: row["n_tokens"] ?? 0,
                    imageTokens: row["n_image_tokens"] ?? 0, supervised: row["n_supervised"] ?? 0, status: row["status"],
                    tokenizerSHA256: row["tokenizer_sha256"], template: row["template"],
                    conversations: row["turns"] ?? row["conversations"])
            }
            return out
        }
    }

    /// Indexes a written shard: its row, its samples and their members, in one transaction.
    public func insertShard(_ shard: NewShard) throws {
        try write { db in
            try db.execute(sql: """
                INSERT INTO shards (name, path, sha256, xxh3_128, bytes, samples, params_hash, part) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [shard.name, shard.path, shard.sha256, shard.xxh3_128, shard.bytes, shard.samples.count,
                                 shard.paramsHash, shard.part])
            let shardID = db.lastInsertedRowID
            let insertSample = try db.makeStatement(sql: """
                INSERT INTO samples (key, shard_id, index_in_shard, offset, size, tokens, supervised, image_tokens,
                                     has_image, source, instruction_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            let insertPart = try db.makeStatement(sql: "INSERT INTO sample_parts (sample_id, name, offset, size, xxh3) VALUES (?, ?, ?, ?, ?)")
            for sample in shard.samples {
                try insertSample.execute(arguments: [sample.key, shardID, sample.indexInShard, sample.offset, sample.size,
                                                     sample.tokens, sample.supervised, sample.imageTokens,
                                                     sample.hasImage ? 1 : 0, sample.source, sample.instructionID])
                let sampleID = db.lastInsertedRowID
                for part in sample.parts {
                    try insertPart.execute(arguments: [sampleID, part.name, part.offset, part.size, XXH3.stored(part.xxh3)])
                }
            }
        }
    }

    /// The sample stored under `key`: its shard's name and path, its index there, and its members in offset order.
    public func indexedSample(key: String) throws -> (shard: String, path: String, index: Int, parts: [SamplePartRecord])? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT s.id, s.index_in_shard, sh.name, sh.path FROM samples s JOIN shards sh ON sh.id = s.shard_id WHERE s.key = ?
                """, arguments: [key]) else { return nil }
            let id: Int64 = row["id"]
            let parts = try Row.fetchAll(db, sql: "SELECT name, offset, size, xxh3 FROM sample_parts WHERE sample_id = ? ORDER BY offset",
                                         arguments: [id]).map {
                SamplePartRecord(sampleID: id, name: $0["name"], offset: $0["offset"], size: $0["size"],
                                 xxh3: ($0["xxh3"] as Int64?).map(XXH3.loaded))
            }
            return (row["name"], row["path"], row["index_in_shard"], parts)
        }
    }

    /// The samples of shard `shardID` in shard order, each with its members in offset order.
    public func indexedSamples(shardID: Int64) throws -> [(sample: IndexedSampleRecord, parts: [SamplePartRecord])] {
        try read { db in
            var byID: [Int64: Int] = [:]
            var samples: [(sample: IndexedSampleRecord, parts: [SamplePartRecord])] = []
            for row in try Row.fetchAll(db, sql: """
                SELECT id, key, index_in_shard, offset, size, tokens, supervised, image_tokens, has_image
                FROM samples WHERE shard_id = ? ORDER BY index_in_shard
                """, arguments: [shardID]) {
                byID[row["id"]] = samples.count
                samples.append((IndexedSampleRecord(
                    id: row["id"], key: row["key"], shardID: shardID, indexInShard: row["index_in_shard"],
                    offset: row["offset"], size: row["size"], tokens: row["tokens"], supervised: row["supervised"],
                    imageTokens: row["image_tokens"], hasImage: row["has_image"]), []))
            }
            for row in try Row.fetchAll(db, sql: """
                SELECT p.sample_id, p.name, p.offset, p.size, p.xxh3 FROM sample_parts p JOIN samples s ON s.id = p.sample_id
                WHERE s.shard_id = ? ORDER BY p.offset
                """, arguments: [shardID]) {
                if let i = byID[row["sample_id"]] {
                    samples[i].parts.append(SamplePartRecord(sampleID: row["sample_id"], name: row["name"],
                                                             offset: row["offset"], size: row["size"],
                                                             xxh3: (row["xxh3"] as Int64?).map(XXH3.loaded)))
                }
            }
            return samples
        }
    }
}
