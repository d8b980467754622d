import Foundation
import GRDB
import VLMCore
import VLMIO

/// A workspace: a folder holding `catalog.sqlite` and `shards/`.
public struct Workspace: Sendable {
    public let root: String

    public init(root: String) {
        self.root = URL(fileURLWithPath: root).standardizedFileURL.path
    }

    public var catalogPath: String { root + "/catalog.sqlite" }
    public var shardsDirectory: String { root + "/shards" }
    public var pixelShardsDirectory: String { root + "/shards/pixels" }

    /// Creates the folder and its `shards/` subfolders if needed.
    public func create() throws {
        for dir in [root, shardsDirectory, pixelShardsDirectory] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw VLMError.io(file: dir, "cannot create folder: \(error.localizedDescription)")
            }
        }
    }

    /// An absolute path for a path stored relative to the workspace.
    public func resolve(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : root + "/" + relative
    }
}

/// The SQLite catalog (GRDB `DatabasePool`, WAL mode). Thread-safe: GRDB serializes writes.
///
/// ```swift
/// let catalog = try Catalog(workspace: Workspace(root: "./vlmdata-work"))
/// let stats = try catalog.stats()
/// ```
public final class Catalog: Sendable {
    public let workspace: Workspace
    package let pool: DatabasePool

    public init(workspace: Workspace) throws {
        self.workspace = workspace
        try workspace.create()
        var config = Configuration()
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            pool = try DatabasePool(path: workspace.catalogPath, configuration: config)
            try Catalog.migrator.migrate(pool)
        } catch {
            throw VLMError(.io, file: workspace.catalogPath, "cannot open catalog: \(error)")
        }
    }

    /// Opens a catalog read-only: no migration, no write, no file created beside it (a published index, a
    /// cached copy). Refuses a catalog whose schema is not exactly this build's: a newer one names the migrations
    /// it does not know, an older one the migration it needs (`Catalog.checkSchema`).
    ///
    /// ```swift
    /// let index = try Catalog(readOnly: Workspace(root: "/cache/.index"))   // reads .../catalog.sqlite
    /// ```
    public init(readOnly workspace: Workspace) throws {
        self.workspace = workspace
        guard FileManager.default.fileExists(atPath: workspace.catalogPath) else {
            throw VLMError(.notFound, file: workspace.catalogPath, "no catalog here")
        }
        var config = Configuration()
        config.readonly = true
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA foreign_keys = ON") }
        do { pool = try DatabasePool(path: workspace.catalogPath, configuration: config) } catch {
            throw VLMError(.io, file: workspace.catalogPath, "cannot open catalog read-only: \(error)")
        }
        try checkSchema()
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in Schema.migrations {
            migrator.registerMigration(migration.name) { db in
                try db.execute(sql: migration.sql)
            }
        }
        return migrator
    }

    /// Runs `body` in a read transaction, mapping database errors to `VLMError` naming the catalog.
    package func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try pool.read(body) } catch { throw wrap(error) }
    }

    /// Runs `body` in a write transaction (committed on return, rolled back on throw).
    package func write<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try pool.write(body) } catch { throw wrap(error) }
    }

    private func wrap(_ error: any Error) -> VLMError {
        if let error = error as? VLMError { return error }
        if let error = error as? DatabaseError {
            return VLMError(.io, file: workspace.catalogPath, "\(error.message ?? "SQLite error \(error.resultCode)") (SQL: \(error.sql ?? "-"))")
        }
        return VLMError(.io, file: workspace.catalogPath, "\(error)")
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound.
    public func integrityCheck() throws -> String {
        try read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "; ") }
    }

    public static func now() -> String {
        ISO8601DateFormatter().string(from: Date())
    }
}
