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

    /// The ok images with no pixels row for the config (argument 1), in id order. One lookup per image on the
    /// pixels (sha256, config_hash) key; duplicates of a hash are dropped by the caller, not by a correlated
    /// subquery (a per-image `MIN(id)` over equal hashes made this quadratic). `QueryCostTests` checks the growth.
    package static let pendingPixelsSQL = """
        SELECT i.sha256, i.location, i.member, i.key FROM images i
        WHERE i.status = 'ok' AND i.sha256 IS NOT NULL AND i.location IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pixels p WHERE p.sha256 = i.sha256 AND p.config_hash = ?)
        ORDER BY i.id
        """

    /// Key and content hash of every ok image with a known hash.
    public func okImageHashes() throws -> [(key: String, sha256: String)] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT key, sha256 FROM images WHERE status = 'ok' AND sha256 IS NOT NULL")
                .map { ($0["key"], $0["sha256"]) }
        }
    }

    /// The ok images with no pixels for `configHash`, in id order (`pendingPixelsSQL`; equal hashes repeat).
    public func pendingImages(pixelsConfig configHash: String) throws -> [PendingImage] {
        try read { db in
            try Row.fetchAll(db, sql: Self.pendingPixelsSQL, arguments: [configHash]).map {
                PendingImage(sha256: $0["sha256"], location: $0["location"], member: $0["member"], key: $0["key"])
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
    case ok(sha256: String, offset: Int, size: Int, tiles: Int, patchesPerTile: Int, patchDim: Int, gridRows: Int?,
            gridCols: Int?)
    case error(sha256: String, message: String)
}

extension Catalog {
    /// Writes a pixel shard's row (when `shard` is given) and the pixel rows, in one transaction. A row for the same
    /// (sha256, config) is replaced.
    public func insertPixels(_ rows: [PixelsRecord], configHash: String, configJSON: String,
                             shard: (name: String, sha256: String, bytes: Int, records: Int)?) throws {
        try write { db in
            var shardID: Int64?
            if let shard {
                try db.execute(sql: "INSERT INTO pixel_shards (config_hash, name, sha256, bytes, records) VALUES (?, ?, ?, ?, ?)",
                               arguments: [configHash, shard.name, shard.sha256, shard.bytes, shard.records])
                shardID = db.lastInsertedRowID
            }
            for row in rows {
                switch row {
                case .ok(let sha256, let offset, let size, let tiles, let patches, let patchDim, let gridRows, let gridCols):
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO pixels (sha256, config_hash, config, status, pixel_shard_id, offset, size, tiles, patches,
                                                       patch_dim, grid_rows, grid_cols)
                        VALUES (?, ?, ?, 'ok', ?, ?, ?, ?, ?, ?, ?, ?)
                        """, arguments: [sha256, configHash, configJSON, shardID, offset, size, tiles, patches, patchDim,
                                         gridRows, gridCols])
                case .error(let sha256, let message):
                    try db.execute(sql: """
                        INSERT OR REPLACE INTO pixels (sha256, config_hash, config, status, error) VALUES (?, ?, ?, 'error', ?)
                        """, arguments: [sha256, configHash, configJSON, message])
                }
            }
        }
    }
}
