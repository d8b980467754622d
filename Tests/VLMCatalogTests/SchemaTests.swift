import Foundation
import GRDB
import Testing
@testable import VLMCatalog

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// `Schemas/catalog.sql` must be exactly the migrations' DDL. Regenerate with VLMDATA_UPDATE_SCHEMA=1 swift test --filter Schema.
@Test func schemaFileMatchesMigrations() throws {
    let path = packageRoot.appendingPathComponent("Schemas/catalog.sql").path
    if ProcessInfo.processInfo.environment["VLMDATA_UPDATE_SCHEMA"] == "1" {
        try Schema.sqlText.write(toFile: path, atomically: true, encoding: .utf8)
    }
    let onDisk = try String(contentsOfFile: path, encoding: .utf8)
    #expect(onDisk == Schema.sqlText, "Schemas/catalog.sql differs from VLMCatalog/Schema.swift")
}

@Test func migrationsCreateEveryTableInWALMode() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-schema-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let catalog = try Catalog(workspace: Workspace(root: dir))
    let tables = try catalog.read { db in
        try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'grdb%' AND name NOT LIKE 'sqlite%' ORDER BY name")
    }
    #expect(Set(tables) == ["sources", "images", "categories", "captions", "objects", "instructions", "runs",
                            "pixel_shards", "pixels", "tokenized", "llm_calls", "shards", "samples", "sample_parts",
                            "eval_sets", "eval_images", "urls"])
    let mode = try catalog.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
    #expect(mode == "wal")
    // Opening again migrates nothing and keeps the data.
    _ = try Catalog(workspace: Workspace(root: dir))
    #expect(try catalog.integrityCheck() == "ok")
}

@Test func runsAreFoundByParamsAndFingerprint() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-runs-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let catalog = try Catalog(workspace: Workspace(root: dir))
    let params = ["size": "336"]
    #expect(try catalog.completedRun(stage: "x", paramsHash: Catalog.paramsHash(params), inputFingerprint: "f") == nil)
    let id = try catalog.beginRun(stage: "x", params: params, inputFingerprint: "f")
    #expect(try catalog.completedRun(stage: "x", paramsHash: Catalog.paramsHash(params), inputFingerprint: "f") == nil)
    try catalog.endRun(id, counts: ["n": 3])
    #expect(try catalog.completedRun(stage: "x", paramsHash: Catalog.paramsHash(params), inputFingerprint: "f")?.counts == ["n": 3])
    #expect(try catalog.completedRun(stage: "x", paramsHash: Catalog.paramsHash(params), inputFingerprint: "g") == nil)
}

/// v13 rebuilds `shards` so that `sha256` may be NULL: a catalog made by v12 keeps every shard row (ids, sha256,
/// xxh3-128, url) and its samples, and takes a shard without a sha256 afterwards.
@Test func v13KeepsShardRowsAndAllowsNoSHA256() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-v13-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/catalog.sqlite"
    do {
        let queue = try DatabaseQueue(path: path)
        try Catalog.migrator.migrate(queue, upTo: "v12_shard_urls")
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO shards (id, name, path, sha256, bytes, samples, params_hash, part, xxh3_128, url)
                VALUES (7, 'train-000000.tar', 'shards/train-000000.tar', 'abc', 10, 1, 'p', NULL, 'x128', 's3://b/t.tar');
                INSERT INTO samples (key, shard_id, index_in_shard, offset, size, tokens, supervised, image_tokens, has_image)
                VALUES ('k', 7, 0, 0, 10, 1, 1, 0, 0);
                """)
            #expect(throws: (any Error).self) {
                try db.execute(sql: "INSERT INTO shards (name, path, sha256, bytes, samples, params_hash) VALUES ('n', 'p', NULL, 1, 0, 'p')")
            }
        }
    }
    let catalog = try Catalog(workspace: Workspace(root: dir))
    let shard = try #require(try catalog.shardRecords().first)
    #expect(shard.id == 7 && shard.sha256 == "abc" && shard.xxh3_128 == "x128" && shard.bytes == 10)
    #expect(try catalog.shardFiles().first?.url == "s3://b/t.tar")
    try catalog.insertShard(NewShard(name: "train-000001.tar", path: "shards/train-000001.tar", sha256: nil, xxh3_128: "y128",
                                     bytes: 0, paramsHash: "p", part: nil, samples: []))
    #expect(try catalog.shardRecords().map(\.sha256) == ["abc", nil])
    let broken = try catalog.read { db in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") }
    #expect(broken.isEmpty)
    #expect(try catalog.read { db in try Int.fetchOne(db, sql: "SELECT shard_id FROM samples WHERE key = 'k'") } == 7)
    #expect(try catalog.integrityCheck() == "ok")
}
