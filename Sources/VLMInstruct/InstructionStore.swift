import Foundation
import GRDB
import VLMCatalog
import VLMCore

/// Writes generated instructions to the catalog's `instructions` table. A key already present is left as it is,
/// so running a generator twice adds nothing.
public enum InstructionStore {
    /// Inserts `rows` in one transaction; returns how many were new.
    @discardableResult
    public static func insert(_ rows: [GeneratedInstruction], paramsHash: String?, into catalog: Catalog) throws -> Int {
        guard !rows.isEmpty else { return 0 }
        let now = Catalog.now()
        return try catalog.write { db in try insert(rows, paramsHash: paramsHash, now: now, db: db) }
    }

    static func insert(_ rows: [GeneratedInstruction], paramsHash: String?, now: String, db: Database) throws -> Int {
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
}
