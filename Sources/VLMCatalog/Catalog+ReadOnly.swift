import Foundation
import GRDB
import VLMCore

extension Catalog {
    /// The schema migrations applied to this catalog file, in the order they ran.
    public func appliedMigrations() throws -> [String] {
        try read { db in
            guard try db.tableExists("grdb_migrations") else { return [] }
            return try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
    }

    /// The migrations this build of vlmdata writes and reads, oldest first.
    public static var knownMigrations: [String] { Schema.migrations.map(\.name) }

    /// Throws unless the catalog's schema is exactly the one this build reads: for a read-only catalog, which
    /// cannot be migrated. Newer: names the migrations this build does not know. Older: names the last migration
    /// the file has and the one this build needs.
    func checkSchema() throws {
        let applied = try appliedMigrations()
        let known = Catalog.knownMigrations
        guard !applied.isEmpty else {
            throw VLMError(.corrupt, file: workspace.catalogPath, "not a vlmdata catalog (it records no schema migration)")
        }
        let unknown = applied.filter { !known.contains($0) }
        if !unknown.isEmpty {
            throw VLMError(.unsupported, file: workspace.catalogPath,
                           "the catalog has a newer schema than this vlmdata reads (migrations \(unknown.joined(separator: ", ")) are unknown "
                           + "here; this vlmdata reads up to \(known.last!)); read it with a newer vlmdata")
        }
        let missing = known.filter { !applied.contains($0) }
        if !missing.isEmpty {
            throw VLMError(.unsupported, file: workspace.catalogPath,
                           "the catalog has an older schema (up to \(applied.last!)) than this vlmdata reads: it needs schema "
                           + "\(known.last!) (missing \(missing.joined(separator: ", "))); open its workspace with this vlmdata "
                           + "(which migrates it) and publish it again")
        }
    }
}
