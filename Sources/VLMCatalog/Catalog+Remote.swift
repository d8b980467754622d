import Foundation
import GRDB
import VLMCore

/// One training shard as upload and remote reading need it.
public struct ShardFileRecord: Sendable, Equatable {
    public var name: String
    /// Relative to the workspace (e.g. `shards/train-000000.tar`).
    public var path: String
    public var bytes: Int
    /// nil unless the shard was written with `shard --sha256`.
    public var sha256: String?
    /// Where `shard --upload` put it (nil when never uploaded).
    public var url: String?
}

extension Catalog {
    /// Every training shard, by name.
    public func shardFiles() throws -> [ShardFileRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT name, path, bytes, sha256, url FROM shards ORDER BY name").map { row in
                ShardFileRecord(name: row["name"], path: row["path"], bytes: row["bytes"], sha256: row["sha256"], url: row["url"])
            }
        }
    }

    /// Records where a shard was uploaded.
    public func setShardURL(name: String, url: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE shards SET url = ? WHERE name = ?", arguments: [url, name])
        }
    }

    /// Writes a consistent copy of the whole catalog to `path` (`VACUUM INTO`: one read transaction, so shards
    /// indexed meanwhile are either wholly in it or not at all). The copy is a plain rollback-journal database,
    /// readable with nothing beside it. Fails if `path` exists.
    public func snapshot(to path: String) throws {
        try pool.writeWithoutTransaction { db in
            do { try db.execute(sql: "VACUUM INTO ?", arguments: [path]) } catch {
                throw VLMError(.io, file: path, "cannot write a snapshot of \(workspace.catalogPath): \(error)")
            }
        }
    }
}
