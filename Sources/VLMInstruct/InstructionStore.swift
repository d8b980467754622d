import Foundation
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
        return try catalog.transaction { tx in try insert(rows, paramsHash: paramsHash, now: now, tx: tx) }
    }

    /// Inserts `rows` inside the transaction `tx`; returns how many were new.
    static func insert(_ rows: [GeneratedInstruction], paramsHash: String?, now: String, tx: CatalogTransaction) throws -> Int {
        try tx.insertInstructions(rows.map(\.record), paramsHash: paramsHash, now: now)
    }
}

extension GeneratedInstruction {
    /// The row the catalog stores.
    public var record: InstructionRecord {
        InstructionRecord(key: key, imageID: imageID, sourceID: sourceID, generator: generator, kind: kind,
                          groupID: groupID, conversationsJSON: conversationsJSON, metaJSON: metaJSON)
    }
}
