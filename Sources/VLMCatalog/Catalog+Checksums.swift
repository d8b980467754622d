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
