import Foundation
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
