import GRDB

/// What patchify reads (ok images, images still without pixels) and writes (pixel shards and pixel rows).
extension Catalog {
    /// An image to patchify: its content hash and where its bytes are.
    public struct PendingImage: Sendable {
        public var sha256: String
        public var location: String
        public var member: String?
        public var key: String
    }

    /// The ok images after id argument 1 with no pixels row for config argument 2, in id order, at most argument 3
    /// of them (equal hashes repeat; the caller keeps the first of each, not a correlated `MIN(id)`, which made
    /// this quadratic). Keyset paging on the primary key (`+status` keeps the planner off
    /// `images_status`, which would walk and sort every ok image per page).
    package static let pendingPixelsPageSQL = """
        SELECT i.id, i.sha256, i.location, i.member, i.key FROM images i
        WHERE i.id > ? AND +i.status = 'ok' AND i.sha256 IS NOT NULL AND i.location IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pixels p WHERE p.sha256 = i.sha256 AND p.config_hash = ?)
        ORDER BY i.id LIMIT ?
        """

    /// Every ok image with a known hash, in hash order (through `images_sha256`, no sort), with whether it has a
    /// location and whether its hash has pixels for config argument 1.
    package static let okImagesByHashSQL = """
        SELECT i.key, i.sha256, i.location IS NOT NULL AS located,
               EXISTS (SELECT 1 FROM pixels p WHERE p.sha256 = i.sha256 AND p.config_hash = ?) AS done
        FROM images i WHERE +i.status = 'ok' AND i.sha256 IS NOT NULL ORDER BY i.sha256
        """

    /// Walks the ok images with a known hash in hash order (equal hashes adjacent): key, hash, whether it has a
    /// location, whether the hash has pixels for `pixelsConfig`. A cursor: nothing is held.
    public func forEachOkImageByHash(pixelsConfig: String,
                                     _ body: (_ key: String, _ sha256: String, _ located: Bool, _ done: Bool) throws -> Void) throws {
        try read { db in
            let rows = try Row.fetchCursor(db, sql: Self.okImagesByHashSQL, arguments: [pixelsConfig])
            while let row = try rows.next() {
                try body(row[0], row[1], (row[2] as Int) != 0, (row[3] as Int) != 0)
            }
        }
    }

    /// Up to `limit` ok images after id `after` with no pixels for `pixelsConfig`, in id order (`pendingPixelsPageSQL`;
    /// equal hashes repeat), with their ids.
    public func pendingImages(after: Int64, pixelsConfig: String, limit: Int) throws -> [(id: Int64, image: PendingImage)] {
        try read { db in
            try Row.fetchAll(db, sql: Self.pendingPixelsPageSQL, arguments: [after, pixelsConfig, limit]).map {
                ($0[0], PendingImage(sha256: $0[1], location: $0[2], member: $0[3], key: $0[4]))
            }
        }
    }

    /// Names of the pixel shards made with `configHash`.
    public func pixelShardNames(configHash: String) throws -> [String] {
        try read { db in
            try String.fetchAll(db, sql: "SELECT name FROM pixel_shards WHERE config_hash = ?", arguments: [configHash])
        }
    }

    /// Every config hash that has pixel rows, in order.
    public func pixelsConfigHashes() throws -> [String] {
        try read { db in try String.fetchAll(db, sql: "SELECT DISTINCT config_hash FROM pixels ORDER BY config_hash") }
    }
}

/// One image's pixels for one config: where they are in a pixel shard and their geometry, or why there are none.
public enum PixelsRecord: Sendable {
    /// `xxh3`: XXH3-64 of the member's bytes, checked when `shard` copies it and by `verify`.
    case ok(sha256: String, offset: Int, size: Int, tiles: Int, patchesPerTile: Int, patchDim: Int, gridRows: Int?,
            gridCols: Int?, xxh3: UInt64)
    case error(sha256: String, message: String)
}

extension Catalog {
    /// Writes a pixel shard's row (when `shard` is given) and the pixel rows, in one transaction. A row for the same
    /// (sha256, config) is replaced.
    public func insertPixels(_ rows: [PixelsRecord], configHash: String, configJSON: String,
                             shard: (name: String, xxh3: String, bytes: Int, records: Int)?) throws {
        try write { db in
            var shardID: Int64?
            if let shard {
                try db.execute(sql: "INSERT INTO pixel_shards (config_hash, name, xxh3_128, bytes, records) VALUES (?, ?, ?, ?, ?)",
                               arguments: [configHash, shard.name, shard.xxh3, shard.bytes, shard.records])
                shardID = db.lastInsertedRowID
            }
            for row in rows {
                switch row {
                case .ok(let sha256, let offset, let size, let tiles, let patches, let patchDim, let gridRows, let gridCols,
                         let xxh3):
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO pixels (sha256, config_hash, config, status, pixel_shard_id, offset, size, tiles, patches,
                                                       patch_dim, grid_rows, grid_cols, xxh3)
                        VALUES (?, ?, ?, 'ok', ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """, arguments: [sha256, configHash, configJSON, shardID, offset, size, tiles, patches, patchDim,
                                         gridRows, gridCols, Int64(bitPattern: xxh3)])
                case .error(let sha256, let message):
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO pixels (sha256, config_hash, config, status, error) VALUES (?, ?, ?, 'error', ?)
                        """, arguments: [sha256, configHash, configJSON, message])
                }
            }
        }
    }
}
