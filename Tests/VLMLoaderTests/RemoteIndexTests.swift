import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMLoader

/// A published index (`catalog publish`) read over HTTP from loopback nginx: the cached copy is opened read-only
/// (no migration, no write), and an index of another schema is refused naming the versions.
@Suite(.serialized) struct RemoteIndexTests {
    /// A workspace with shards and its index snapshot at `ROOT/index.sqlite`, served by nginx.
    static func published() throws -> (ws: String, index: String, server: LoopbackNginx) {
        let ws = temporaryFolder("remote-index")
        let (catalog, _) = try makeWorkspace(ws, shards: 2, perShard: 5)
        let index = ws + "/index.sqlite"
        try catalog.snapshot(to: index)
        return (ws, index, try LoopbackNginx(serving: ws))
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed"))
    func theCachedCopyIsOpenedReadOnly() throws {
        let (_, index, server) = try Self.published()
        let cache = temporaryFolder("remote-cache")
        let remote = try RemoteIndex.open(server.base + "/index.sqlite", cacheDirectory: cache)
        #expect(remote.index.samples.count == 10)
        #expect(Set(remote.shardURLs.keys) == ["train-000000.tar", "train-000001.tar"])
        // Nothing ran on the copy: same bytes as published, no WAL beside it, and a write is refused.
        let copy = cache + "/.index/catalog.sqlite"
        #expect(try Hashing.sha256(file: copy) == Hashing.sha256(file: index))
        #expect(!FileManager.default.fileExists(atPath: copy + "-wal"))
        #expect(throws: VLMError.self) { try remote.catalog.setShardURL(name: "train-000000.tar", url: "s3://b/x.tar") }
        #expect(try Hashing.sha256(file: copy) == Hashing.sha256(file: index))
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed"))
    func anOlderSchemaIsRefusedNamingTheVersionNeeded() throws {
        let ws = temporaryFolder("remote-old")
        // An index written by a build that knew one migration less than this one.
        let queue = try DatabaseQueue(path: ws + "/index.sqlite")
        var migrator = DatabaseMigrator()
        for migration in Schema.migrations.dropLast() {
            migrator.registerMigration(migration.name) { db in try db.execute(sql: migration.sql) }
        }
        try migrator.migrate(queue)
        try queue.close()
        let server = try LoopbackNginx(serving: ws)
        let older = Schema.migrations.dropLast().last!.name, needed = Schema.migrations.last!.name
        do {
            _ = try RemoteIndex.open(server.base + "/index.sqlite", cacheDirectory: temporaryFolder("remote-cache"))
            Issue.record("an index of an older schema opened")
        } catch let error as VLMError {
            #expect(error.kind == .unsupported)
            #expect(error.file == server.base + "/index.sqlite")
            #expect(error.message.contains("older schema (up to \(older))"), "\(error)")
            #expect(error.message.contains("needs schema \(needed)"), "\(error)")
        }
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed"))
    func aNewerSchemaIsRefusedNamingWhatIsUnknown() throws {
        let (_, index, server) = try Self.published()
        let queue = try DatabaseQueue(path: index)
        try queue.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99_from_the_future')")
        }
        try queue.close()
        do {
            _ = try RemoteIndex.open(server.base + "/index.sqlite", cacheDirectory: temporaryFolder("remote-cache"))
            Issue.record("an index of a newer schema opened")
        } catch let error as VLMError {
            #expect(error.kind == .unsupported)
            #expect(error.message.contains("newer schema"), "\(error)")
            #expect(error.message.contains("v99_from_the_future"), "\(error)")
        }
    }
}
