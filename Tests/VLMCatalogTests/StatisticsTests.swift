import Foundation
import GRDB
import Testing
@testable import VLMCatalog

/// The planner's statistics are refreshed when a stage run ends (issue 19): with them SQLite looks up equal
/// hashes through `images_sha256`; without them it walked `images_status`, every ok image once per image.
struct StatisticsTests {
    /// A correlated per-image lookup of the first image with the same bytes, as patchify once ran it.
    static let firstOfHash = """
        SELECT i.id FROM images i
        WHERE i.status = 'ok' AND i.id = (SELECT MIN(j.id) FROM images j WHERE j.sha256 = i.sha256 AND j.status = 'ok')
        """

    static func catalog(images n: Int) throws -> Catalog {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-stats-\(UUID().uuidString)").path
        let catalog = try Catalog(workspace: Workspace(root: dir))
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO sources (id, kind, name, uri, fingerprint, created_at) VALUES (1, 'coco', 'train', 'c.json', 'f', 'now')
                """)
            let insert = try db.makeStatement(sql: """
                INSERT INTO images (source_id, key, external_id, file_name, sha256, status) VALUES (1, ?, ?, ?, ?, ?)
                """)
            for i in 1...n {
                try insert.execute(arguments: ["train-\(i)", i, "\(i).png", "sha\(i / 2)", i % 10 == 0 ? "missing" : "ok"])
            }
        }
        return catalog
    }

    static func innerLookup(_ catalog: Catalog) throws -> String {
        try catalog.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + firstOfHash).map { $0["detail"] as String }
                .first { $0.hasPrefix("SEARCH j") || $0.hasPrefix("SCAN j") } ?? "-"
        }
    }

    @Test func endingARunGivesThePlannerStatistics() throws {
        let catalog = try Self.catalog(images: 400)
        defer { try? FileManager.default.removeItem(atPath: catalog.workspace.root) }
        // Before: no statistics, and a read connection is open (it must not keep planning without them).
        #expect(try Self.innerLookup(catalog).contains("images_status"))
        let id = try catalog.beginRun(stage: "ingest", params: ["split": "train"], inputFingerprint: "f")
        try catalog.endRun(id, counts: ["images": 400])
        let analyzed = try catalog.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'images'") ?? 0
        }
        #expect(analyzed > 0)
        let after = try Self.innerLookup(catalog)
        #expect(after.contains("images_sha256"), "\(after)")
    }

    @Test func aFailedRunLeavesTheStatisticsAlone() throws {
        let catalog = try Self.catalog(images: 50)
        defer { try? FileManager.default.removeItem(atPath: catalog.workspace.root) }
        let id = try catalog.beginRun(stage: "ingest", params: ["split": "train"], inputFingerprint: "f")
        try catalog.endRun(id, counts: [:], error: "stopped")
        let tables = try catalog.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'") ?? 0
        }
        #expect(tables == 0)
    }
}
