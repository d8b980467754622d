import Foundation
import GRDB

/// Queries ingest makes before it writes: the image keys already stored under a split's prefix.
extension Catalog {
    public struct StoredImageKey: Sendable {
        public var key: String
        public var sourceID: Int64
        public var externalID: Int64?
        public var fileName: String
    }

    /// Every image whose key starts with `prefix` (e.g. "train2017_"), from any source.
    public func imageKeys(prefix: String) throws -> [StoredImageKey] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT key, source_id, external_id, file_name FROM images WHERE substr(key, 1, ?) = ?",
                             arguments: [prefix.count, prefix]).map { row in
                StoredImageKey(key: row["key"], sourceID: row["source_id"], externalID: row["external_id"], fileName: row["file_name"])
            }
        }
    }

    /// Keys of instructions under `prefix` that belong to other sources (or to none).
    public func instructionKeys(prefix: String, excludingSource sourceID: Int64) throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db, sql: """
                SELECT key FROM instructions WHERE substr(key, 1, ?) = ? AND (source_id IS NULL OR source_id != ?)
                """, arguments: [prefix.count, prefix, sourceID]))
        }
    }
}
