import GRDB

/// One write transaction, as `Catalog.transaction` hands it to its body. Other modules never see GRDB's
/// `Database`: they write through this value's methods (in the `Catalog+Topic.swift` files), so a caller keeps its
/// one-transaction batches (and their crash safety) without holding SQL.
///
/// ```swift
/// let added = try catalog.transaction { tx in try tx.insertInstructions(rows, paramsHash: hash, now: Catalog.now()) }
/// ```
public struct CatalogTransaction {
    package let db: Database

    package init(_ db: Database) {
        self.db = db
    }

    /// Rows changed by the last statement.
    public var changesCount: Int { db.changesCount }
}

extension Catalog {
    /// Runs `body` in one write transaction (committed on return, rolled back on throw).
    public func transaction<T>(_ body: (CatalogTransaction) throws -> T) throws -> T {
        try write { db in try body(CatalogTransaction(db)) }
    }
}
