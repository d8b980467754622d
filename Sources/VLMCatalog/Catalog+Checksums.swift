import GRDB
import VLMCore

/// One pixel shard member as the catalog indexes it, with the XXH3-64 recorded when it was written.
public struct PixelMemberChecksum: Sendable, Equatable {
    /// `pixel_shards.name`, a file under `Workspace.pixelShardsDirectory`.
    public var shard: String
    /// The image bytes' sha256: the member is `SHA256.npy`.
    public var sha256: String
    public var offset: Int
    public var size: Int
    /// Nil for rows written before checksums were recorded (migration v10).
    public var xxh3: UInt64?
}

extension Catalog {
    /// Every `ok` pixel row with its shard and checksum, by shard and offset (the order `verify` reads them in).
    public func pixelMemberChecksums() throws -> [PixelMemberChecksum] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT ps.name, p.sha256, p.offset, p.size, p.xxh3 FROM pixels p JOIN pixel_shards ps ON ps.id = p.pixel_shard_id
                WHERE p.status = 'ok' ORDER BY ps.name, p.offset
                """).map { row in
                PixelMemberChecksum(shard: row[0], sha256: row[1], offset: row[2], size: row[3],
                                    xxh3: (row[4] as Int64?).map { UInt64(bitPattern: $0) })
            }
        }
    }
}

/// A pixel shard's row: the file and the checksums recorded for it.
public struct PixelShardRecord: Sendable, Equatable {
    public var name: String
    public var bytes: Int
    /// XXH3-128 computed as `patchify` wrote the file (nil for pixel shards written before migration v15).
    public var xxh3_128: String?
    /// Recorded by `patchify` before v15, or computed on demand (`verify --deep`); nil otherwise.
    public var sha256: String?
}

/// A sha256 computed by `verify --deep` from a file whose bytes matched the XXH3-128 the index records.
public struct ComputedSHA256: Sendable, Equatable {
    public var name: String
    /// The XXH3-128 the file matched: the row is updated only while it still records this one.
    public var xxh3_128: String
    public var sha256: String

    public init(name: String, xxh3_128: String, sha256: String) {
        self.name = name
        self.xxh3_128 = xxh3_128
        self.sha256 = sha256
    }
}

extension Catalog {
    /// Every pixel shard row, in name order.
    public func pixelShardRecords() throws -> [PixelShardRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT name, bytes, xxh3_128, sha256 FROM pixel_shards ORDER BY name").map {
                PixelShardRecord(name: $0["name"], bytes: $0["bytes"], xxh3_128: $0["xxh3_128"], sha256: $0["sha256"])
            }
        }
    }

    /// Records sha256s computed on demand for training shards (`shards`) and pixel shards (`pixelShards`), in one
    /// transaction. A row is updated only while it has no sha256 and still records the XXH3-128 the file matched, so
    /// a shard rewritten meanwhile (another run replaced it) keeps its own. Returns how many rows were updated.
    @discardableResult
    public func recordComputedSHA256(shards: [ComputedSHA256], pixelShards: [ComputedSHA256]) throws -> Int {
        guard !shards.isEmpty || !pixelShards.isEmpty else { return 0 }
        return try write { db in
            var updated = 0
            for (table, rows) in [("shards", shards), ("pixel_shards", pixelShards)] {
                let statement = try db.makeStatement(sql: """
                    UPDATE \(table) SET sha256 = ? WHERE name = ? AND sha256 IS NULL AND xxh3_128 = ?
                    """)
                for row in rows {
                    try statement.execute(arguments: [row.sha256, row.name, row.xxh3_128])
                    updated += db.changesCount
                }
            }
            return updated
        }
    }
}
