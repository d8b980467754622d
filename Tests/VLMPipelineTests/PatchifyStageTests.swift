import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMImage
import VLMIO
@testable import VLMPipeline
import VLMShard

/// The patchify stage over a catalog filled through `Catalog.write` from coco-mini files.
struct PatchifyStageTests {
    static let shared: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.deletingLastPathComponent().appendingPathComponent("shared/data").path
    }()

    static func cocoFiles(_ n: Int) -> [String] {
        let dir = shared + "/coco-mini/train2017"
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".jpg") }.sorted()
        return names.prefix(n).map { dir + "/" + $0 }
    }

    /// A fresh workspace with a source and `files` as ok images (plus whatever `extra` inserts).
    static func workspace(_ files: [String], extra: [(key: String, location: String, member: String?, sha: String)] = []) throws -> Catalog {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("patchify-\(UUID().uuidString)").path
        let catalog = try Catalog(workspace: Workspace(root: root))
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO sources (kind, name, uri, images_root, fingerprint, created_at) VALUES ('coco', 'mini', 'x.json', '/', 'f', 'now')
                """)
            let source = db.lastInsertedRowID
            var rows = try files.map { (key: "coco_" + URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent,
                                        location: $0, member: String?.none, sha: try Hashing.sha256(file: $0)) }
            rows += extra
            for (i, row) in rows.enumerated() {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, location, member, sha256, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 'ok')
                    """, arguments: [source, row.key, i, row.key + ".jpg", row.location, row.member, row.sha])
            }
        }
        return catalog
    }

    static func pixelRows(_ catalog: Catalog, config: String) throws -> [Row] {
        try catalog.read { db in
            try Row.fetchAll(db, sql: """
                SELECT p.*, ps.name AS shard FROM pixels p LEFT JOIN pixel_shards ps ON ps.id = p.pixel_shard_id
                WHERE p.config_hash = ? ORDER BY p.sha256
                """, arguments: [config])
        }
    }

    /// The .npy member the row points at, read by byte range from its shard.
    static func member(_ catalog: Catalog, _ row: Row) throws -> [UInt8] {
        let path = catalog.workspace.pixelShardsDirectory + "/" + (row["shard"] as String)
        let all = try ImageFileReader.read(path)
        let offset: Int = row["offset"], size: Int = row["size"]
        return Array(all[offset..<(offset + size)])
    }

    @Test func patchifiesOncePerHashAndIsIdempotent() throws {
        let files = Self.cocoFiles(6)
        try #require(files.count == 6)
        // A second catalog image with the same bytes as the first, and an "ok" image whose bytes are garbage.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("patchify-bad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let bad = dir + "/bad.jpg"
        try AtomicFile.write(Array("not a jpeg".utf8), to: bad)
        let catalog = try Self.workspace(files, extra: [
            ("dup", files[0], nil, try Hashing.sha256(file: files[0])),
            ("bad", bad, nil, try Hashing.sha256(file: bad)),
        ])
        let config = PreprocessConfig(imageSize: 336, patchSize: 14, mode: .crop)
        let report = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2, shardBytes: 1 << 20))
        #expect(report.counts["pixels"] == 6)
        #expect(report.counts["errors"] == 1)
        #expect(report.counts["shards", default: 0] >= 2)   // 1 MiB shards of ~340 KB records

        let rows = try Self.pixelRows(catalog, config: config.hash)
        #expect(rows.count == 7)
        let pre = Preprocessor(config: config)
        for row in rows where (row["status"] as String) == "ok" {
            let file = files.first { (try? Hashing.sha256(file: $0)) == (row["sha256"] as String) }!
            let expected = try pre.process(file: file)
            let npy = try Self.member(catalog, row)
            let decoded: (shape: [Int], values: [UInt8]) = try Npy.decode(npy)
            #expect(decoded.shape == [1, 576, 588])
            #expect(decoded.values == Patchify.patchify(expected.stacked, tiles: 1, size: 336, patch: 14))
            #expect((row["patches"] as Int) == 576 && (row["patch_dim"] as Int) == 588 && (row["tiles"] as Int) == 1)
            // The member's XXH3-64 is recorded when the pixel shard is written, so every later read can be checked.
            #expect((row["xxh3"] as Int64?).map(XXH3.loaded) == XXH3.hash64(npy))
        }
        let errorRow = rows.first { (row: Row) in (row["status"] as String) == "error" }
        #expect((errorRow?["error"] as String?)?.contains("bad.jpg") == true)
        // Each pixel shard's XXH3-128 is computed as it is written (as `xxhsum -H2` gives it); no sha256 unless asked.
        let shards = try catalog.pixelShardRecords()
        #expect(shards.count == report.counts["shards"])
        for shard in shards {
            let path = catalog.workspace.pixelShardsDirectory + "/" + shard.name
            #expect(shard.xxh3_128 == (try XXH3.hash128(file: path)) && shard.sha256 == nil, "\(shard.name)")
        }

        // Same inputs, same config: nothing to do.
        let again = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2))
        #expect(again.skipped)
        // Another config is a separate set of rows and shards.
        let pad = PreprocessConfig(imageSize: 224, patchSize: 16, mode: .pad)
        let padReport = try PatchifyStage.run(catalog: catalog, options: .init(config: pad, jobs: 1))
        #expect(padReport.counts["pixels"] == 6)
        let padRows = try Self.pixelRows(catalog, config: pad.hash)
        let first = try #require(padRows.first { (row: Row) in (row["status"] as String) == "ok" })
        let decoded: (shape: [Int], values: [UInt8]) = try Npy.decode(try Self.member(catalog, first))
        #expect(decoded.shape == [1, 196, 768])
    }

    /// Pending images come in pages; a copy of bytes already written (committed in an earlier shard, or still in
    /// the open one) on a later page is not patchified again.
    @Test func equalBytesOnLaterPagesArePatchifiedOnce() throws {
        let files = Self.cocoFiles(6)
        try #require(files.count == 6)
        let catalog = try Self.workspace(files, extra: [
            ("dup0", files[0], nil, try Hashing.sha256(file: files[0])),
            ("dup5", files[5], nil, try Hashing.sha256(file: files[5])),
            ("dup3", files[3], nil, try Hashing.sha256(file: files[3])),
        ])
        let config = PreprocessConfig(imageSize: 336, patchSize: 14, mode: .crop)
        var options = PatchifyStage.Options(config: config, jobs: 1, shardBytes: 1 << 20, batchSize: 2)
        options.pageSize = 2
        let report = try PatchifyStage.run(catalog: catalog, options: options)
        #expect(report.counts["pixels"] == 6)
        #expect(report.counts["errors"] == 0)
        let rows = try Self.pixelRows(catalog, config: config.hash)
        #expect(rows.count == 6)
        let members = try catalog.read { db in try Int.fetchOne(db, sql: "SELECT SUM(records) FROM pixel_shards") }
        #expect(members == 6)
    }

    @Test func resumesWithOnlyTheMissingImages() throws {
        let files = Self.cocoFiles(8)
        let catalog = try Self.workspace(Array(files.prefix(4)))
        let config = PreprocessConfig(mode: .squash)
        _ = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2))
        let shardsBefore = try catalog.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pixel_shards")! }
        // A temporary left by a killed run, and four more images (a partial earlier run looks the same).
        let stale = catalog.workspace.pixelShardsDirectory + "/.pixels-x-000009.tar.tmp-1"
        try AtomicFile.write([1, 2, 3], to: stale)
        try catalog.write { db in
            for (i, file) in files.suffix(4).enumerated() {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, location, sha256, status) VALUES (1, ?, ?, 'f', ?, ?, 'ok')
                    """, arguments: ["late\(i)", 100 + i, file, try Hashing.sha256(file: file)])
            }
        }
        let report = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2))
        #expect(report.counts["pixels"] == 4)
        #expect(report.counts["already_done"] == 4)
        #expect(!FileManager.default.fileExists(atPath: stale))
        let names = try catalog.read { db in try String.fetchAll(db, sql: "SELECT name FROM pixel_shards ORDER BY name") }
        #expect(names.count == shardsBefore + 1 && Set(names).count == names.count)
        #expect(try Self.pixelRows(catalog, config: config.hash).count == 8)
    }

    @Test func partsSplitTheImagesWithoutOverlap() throws {
        let files = Self.cocoFiles(10)
        let catalog = try Self.workspace(files)
        let config = PreprocessConfig(imageSize: 224, patchSize: 16, mode: .squash)
        let a = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2, part: PartSpec(index: 0, count: 2)))
        let b = try PatchifyStage.run(catalog: catalog, options: .init(config: config, jobs: 2, part: PartSpec(index: 1, count: 2)))
        #expect(a.counts["pixels", default: 0] + b.counts["pixels", default: 0] == 10)
        #expect(a.counts["pixels", default: 0] > 0 && b.counts["pixels", default: 0] > 0)
        #expect(try Self.pixelRows(catalog, config: config.hash).count == 10)
        let names = try catalog.read { db in try String.fetchAll(db, sql: "SELECT name FROM pixel_shards") }
        #expect(names.contains { $0.contains("part0of2") } && names.contains { $0.contains("part1of2") })
    }

    @Test func readsArchiveMembers() throws {
        let files = Self.cocoFiles(3)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("patchify-tar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tarPath = dir + "/images.tar"
        try AtomicFile.withWriter(to: tarPath) { file in
            let tar = TarWriter(file)
            for (i, f) in files.enumerated() { _ = try tar.add(name: "train/\(i).jpg", bytes: try ImageFileReader.read(f)) }
            try tar.finish()
        }
        let extra = try files.enumerated().map { i, f in (key: "m\(i)", location: tarPath, member: String?.some("train/\(i).jpg"), sha: try Hashing.sha256(file: f)) }
            + [(key: "gone", location: tarPath, member: String?.some("train/missing.jpg"), sha: "0000")]
        let catalog = try Self.workspace([], extra: extra)
        let report = try PatchifyStage.run(catalog: catalog, options: .init(config: PreprocessConfig(), jobs: 2))
        #expect(report.counts["pixels"] == 3)
        #expect(report.counts["errors"] == 1)
    }
}
