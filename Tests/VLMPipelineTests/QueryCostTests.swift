import Foundation
import GRDB
import GRDBSQLite
import Testing
import VLMCatalog
import VLMCore
import VLMInstruct
import VLMLoader
@testable import VLMPipeline
import VLMShard

/// Linear cost of the stages' hot queries (issue 19): each query is run to the end on a catalog of N and of 2N
/// images, and SQLite's own count of virtual-machine steps must grow like the data (at most 2.2x for 2x), so a
/// per-row lookup that walks a growing index range (a correlated `MIN(id)` planned on `images_status`) fails
/// here at any size. The plans are also checked: no table scan inside a correlated subquery, no scan as an
/// inner loop of a join, no automatic (missing) index. Step counts, not timings: the check is exact and fast.
struct QueryCostTests {
    struct Query {
        let name: String
        let sql: String
        let arguments: StatementArguments
    }

    static let pixelsConfig = "pix"
    static let tokenizedConfig = "tok"

    /// The queries whose cost must stay per-row, with the arguments the stages pass.
    static let hotQueries: [Query] = [
        Query(name: "patchify pending", sql: Catalog.pendingPixelsPageSQL, arguments: [0, pixelsConfig, Int64.max]),
        Query(name: "tokenize pending count", sql: Catalog.pendingTokenizeCountSQL, arguments: [tokenizedConfig]),
        Query(name: "tokenize pending batch", sql: Catalog.pendingTokenizeBatchSQL,
              arguments: [pixelsConfig, 0, tokenizedConfig, Int64.max]),
        Query(name: "tokenize pending images", sql: Catalog.pendingTokenizeImagesSQL, arguments: [0, tokenizedConfig, Int64.max]),
        Query(name: "tokenize image instructions", sql: Catalog.imageInstructionsSQL, arguments: [pixelsConfig, 0, Int64.max]),
        Query(name: "tokenize text-only batch", sql: Catalog.pendingTextOnlyBatchSQL, arguments: [0, tokenizedConfig, Int64.max]),
        Query(name: "tokenize workspace box frames", sql: Catalog.instructionBoxFramesSQL, arguments: []),
        Query(name: "tokenize images grouped across frames", sql: Catalog.imagesGroupedAcrossFramesSQL, arguments: [tokenizedConfig]),
        Query(name: "shard grouped samples across frames", sql: Catalog.groupedSampleHeadsAcrossFramesSQL, arguments: [tokenizedConfig]),
        Query(name: "shard plan", sql: Catalog.shardPlanSQL, arguments: [pixelsConfig, tokenizedConfig]),
        Query(name: "loader samples with parts", sql: Catalog.indexSamplesWithPartsSQL, arguments: []),
        Query(name: "patchify fingerprint (ok images by hash)", sql: Catalog.okImagesByHashSQL, arguments: [pixelsConfig]),
        Query(name: "gen-instructions images", sql: Catalog.usableImagesSQL, arguments: []),
        Query(name: "gen-instructions captions", sql: Catalog.captionsInImageOrderSQL, arguments: []),
        Query(name: "gen-instructions objects", sql: Catalog.objectsInImageOrderSQL, arguments: []),
        Query(name: "export instructions", sql: Catalog.exportInstructionsSQL(kinds: 0, generators: 0), arguments: []),
        Query(name: "export instructions of kinds", sql: Catalog.exportInstructionsSQL(kinds: 2, generators: 1),
              arguments: ["caption", "detail", "templates"]),
        Query(name: "export tokenized samples", sql: Catalog.exportTokenizedSamplesSQL, arguments: [tokenizedConfig]),
    ]

    /// Queries a stage runs once per page or batch (gen-instructions' pages of 500 images with their captions and
    /// objects, tokenize's batches, shard's re-read of each batch of plan rows), with a page present in both
    /// catalogs: the cost of one page must not grow with the table (a page that walks or sorts the whole table
    /// makes the stage quadratic).
    static let pageQueries: [Query] = {
        let imageIDs = "[" + (1...100).map { String($0 * 7) }.joined(separator: ",") + "]"
        let tokenizedIDs = "[" + (1...100).map { String($0 * 6) }.joined(separator: ",") + "]"
        return [
            Query(name: "gen-instructions image page", sql: Catalog.usableImagesPageSQL, arguments: ["", 100]),
            Query(name: "gen-instructions captions of a page", sql: Catalog.captionsOfImagesSQL, arguments: [imageIDs]),
            Query(name: "gen-instructions objects of a page", sql: Catalog.objectsOfImagesSQL, arguments: [imageIDs]),
            Query(name: "patchify pending page", sql: Catalog.pendingPixelsPageSQL, arguments: [0, pixelsConfig, 100]),
            Query(name: "tokenize batch", sql: Catalog.pendingTokenizeBatchSQL, arguments: [pixelsConfig, 0, tokenizedConfig, 100]),
            Query(name: "shard batch re-read", sql: Catalog.shardPlanRowsByIDSQL,
                  arguments: [pixelsConfig, tokenizedConfig, tokenizedIDs]),
        ]
    }()

    /// The pending-images query patchify had before c97da1b: the first image of each hash by a correlated
    /// `MIN(id)`, which SQLite plans on `images_status` and so walks every ok image once per image.
    static let quadraticPatchifyPending = Query(name: "old patchify pending", sql: """
        SELECT i.sha256, i.location, i.member, i.key FROM images i
        WHERE i.status = 'ok' AND i.sha256 IS NOT NULL AND i.location IS NOT NULL
          AND i.id = (SELECT MIN(j.id) FROM images j WHERE j.sha256 = i.sha256 AND j.status = 'ok' AND j.location IS NOT NULL)
          AND NOT EXISTS (SELECT 1 FROM pixels p WHERE p.sha256 = i.sha256 AND p.config_hash = ?)
        ORDER BY i.id
        """, arguments: [pixelsConfig])

    /// A catalog shaped like a pipeline run over `n` images: pairs of images share bytes, one in ten is missing,
    /// three instructions per image, half of them tokenized and sharded, half of the hashes patchified, and a
    /// text-only instruction per five images.
    static func catalog(images n: Int) throws -> Catalog {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("querycost-\(UUID().uuidString)").path
        let catalog = try Catalog(workspace: Workspace(root: root))
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO sources (id, kind, name, uri, images_root, fingerprint, created_at)
                VALUES (1, 'coco', 'train', 'c.json', '/data', 'f', 'now')
                """)
            for c in 1...10 {
                try db.execute(sql: "INSERT INTO categories (id, source_id, external_id, name) VALUES (?, 1, ?, ?)",
                               arguments: [c, c, "cat\(c)"])
            }
            try db.execute(sql: """
                INSERT INTO pixel_shards (id, config_hash, name, sha256, bytes, records) VALUES (1, ?, 'pixels-0.tar', 's', 1, 1)
                """, arguments: [pixelsConfig])
            let image = try db.makeStatement(sql: """
                INSERT INTO images (id, source_id, key, external_id, file_name, location, sha256, width, height, status)
                VALUES (?, 1, ?, ?, ?, ?, ?, 96, 96, ?)
                """)
            let caption = try db.makeStatement(sql: "INSERT INTO captions (image_id, external_id, text) VALUES (?, ?, 'a red square')")
            let object = try db.makeStatement(sql: """
                INSERT INTO objects (image_id, category_id, external_id, x, y, w, h) VALUES (?, ?, ?, 1, 2, 3, 4)
                """)
            let instruction = try db.makeStatement(sql: """
                INSERT INTO instructions (id, key, image_id, source_id, generator, kind, conversations, created_at)
                VALUES (?, ?, ?, 1, 'templates', 'caption', '[]', 'now')
                """)
            let tokenized = try db.makeStatement(sql: """
                INSERT INTO tokenized (id, instruction_id, config_hash, tokenizer_sha256, template, status, n_tokens,
                                       n_image_tokens, n_supervised)
                VALUES (?, ?, ?, 't', 'vicuna_v1', 'ok', 10, 576, 5)
                """)
            let pixel = try db.makeStatement(sql: """
                INSERT INTO pixels (sha256, config_hash, config, status, pixel_shard_id, offset, size, tiles, patches, patch_dim)
                VALUES (?, ?, '{}', 'ok', 1, 0, 10, 1, 576, 588)
                """)
            let shard = try db.makeStatement(sql: """
                INSERT INTO shards (id, name, path, sha256, bytes, samples, params_hash) VALUES (?, ?, ?, 's', 1, 0, 'p')
                """)
            let sample = try db.makeStatement(sql: """
                INSERT INTO samples (id, key, shard_id, index_in_shard, offset, size, tokens, supervised, image_tokens, has_image)
                VALUES (?, ?, ?, ?, ?, 100, 10, 5, 576, 1)
                """)
            let part = try db.makeStatement(sql: "INSERT INTO sample_parts (sample_id, name, offset, size) VALUES (?, ?, ?, 10)")
            var samples = 0
            for i in 1...n {
                let sha = "sha\(i / 2)"
                try image.execute(arguments: [i, "train-\(i)", i, "\(i).png", "/data/\(i).png", sha, i % 10 == 0 ? "missing" : "ok"])
                if i % 2 == 0, (i / 2) % 2 == 0 { try pixel.execute(arguments: [sha, pixelsConfig]) }
                for c in 0..<2 {
                    try caption.execute(arguments: [i, c])
                    try object.execute(arguments: [i, 1 + (i + c) % 10, c])
                }
                if i % 5 == 0 {   // a text-only instruction (no image) for every fifth image, none tokenized
                    try db.execute(sql: """
                        INSERT INTO instructions (id, key, image_id, source_id, generator, kind, conversations, created_at)
                        VALUES (?, ?, NULL, 1, 'import', 'conversation', '[]', 'now')
                        """, arguments: [10_000_000 + i, "text-\(i)"])
                }
                for k in 0..<3 {
                    let id = 3 * i + k
                    try instruction.execute(arguments: [id, "train-\(i)-\(k)", i])
                    guard id % 2 == 0 else { continue }
                    try tokenized.execute(arguments: [id, id, tokenizedConfig])
                    if samples % 100 == 0 {
                        try shard.execute(arguments: [samples / 100 + 1, "train-\(samples / 100).tar", "shards/train-\(samples / 100).tar"])
                    }
                    samples += 1
                    try sample.execute(arguments: [samples, "train-\(i)-\(k)", (samples - 1) / 100 + 1, (samples - 1) % 100, samples * 100])
                    for (m, name) in ["json", "input_ids.npy", "pixels.npy"].enumerated() {
                        try part.execute(arguments: [samples, name, samples * 100 + m * 20])
                    }
                }
            }
        }
        return catalog
    }

    /// Runs `query` to its last row; returns SQLite's count of virtual-machine steps.
    static func steps(_ db: Database, _ query: Query) throws -> Int {
        let statement = try db.makeStatement(sql: query.sql)
        let rows = try Row.fetchCursor(statement, arguments: query.arguments)
        var n = 0
        while try rows.next() != nil { n += 1 }
        return Int(sqlite3_stmt_status(statement.sqliteStatement, SQLITE_STMTSTATUS_VM_STEP, 0))
    }

    /// Steps at 2N images over steps at N images.
    static func growth(_ query: Query, small: Catalog, large: Catalog) throws -> Double {
        let a = try small.read { try steps($0, query) }
        let b = try large.read { try steps($0, query) }
        return Double(b) / Double(max(a, 1))
    }

    /// The plan's problems: a SCAN inside a correlated subquery, a SCAN as an inner loop of a join, an
    /// automatic index (SQLite building a temporary index because the schema lacks one).
    static func planProblems(_ db: Database, _ query: Query) throws -> [String] {
        let rows = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + query.sql, arguments: query.arguments)
        var detail: [Int: String] = [:], parent: [Int: Int] = [:]
        var loopsUnder: [Int: Int] = [:]
        var problems: [String] = []
        for row in rows {
            let id: Int = row["id"], up: Int = row["parent"], text: String = row["detail"]
            detail[id] = text
            parent[id] = up
            if text.contains("AUTOMATIC") { problems.append("missing index: \(text)") }
            guard text.hasPrefix("SCAN ") || text.hasPrefix("SEARCH ") else { continue }
            let isScan = text.hasPrefix("SCAN ") && !text.hasPrefix("SCAN CONSTANT")
            var ancestor = up, correlated = false
            while ancestor != 0, let d = detail[ancestor] {
                if d.hasPrefix("CORRELATED") { correlated = true }
                ancestor = parent[ancestor] ?? 0
            }
            let position = loopsUnder[up, default: 0]
            loopsUnder[up] = position + 1
            if isScan, correlated { problems.append("scan inside a correlated subquery: \(text)") }
            if isScan, position > 0 { problems.append("scan as an inner loop of a join: \(text)") }
        }
        return problems
    }

    @Test func hotQueriesCostTheSamePerRowAtTwiceTheSize() throws {
        let small = try Self.catalog(images: 1000), large = try Self.catalog(images: 2000)
        defer {
            try? FileManager.default.removeItem(atPath: small.workspace.root)
            try? FileManager.default.removeItem(atPath: large.workspace.root)
        }
        for query in Self.hotQueries {
            let growth = try Self.growth(query, small: small, large: large)
            #expect(growth <= 2.2, "\(query.name): \(String(format: "%.2f", growth))x the VM steps for 2x the images")
            #expect(growth >= 1.5, "\(query.name): \(String(format: "%.2f", growth))x: the query no longer reads the rows it should")
        }
    }

    @Test func pageQueriesCostTheSameAtTwiceTheSize() throws {
        let small = try Self.catalog(images: 1000), large = try Self.catalog(images: 2000)
        defer {
            try? FileManager.default.removeItem(atPath: small.workspace.root)
            try? FileManager.default.removeItem(atPath: large.workspace.root)
        }
        for analyzed in [false, true] {
            if analyzed { for catalog in [small, large] { try catalog.write { try $0.execute(sql: "ANALYZE") } } }
            for query in Self.pageQueries {
                let rows = try small.read { db in try Row.fetchAll(db, sql: query.sql, arguments: query.arguments).count }
                #expect(rows > 0, "\(query.name): the page is empty, so the check proves nothing")
                let growth = try Self.growth(query, small: small, large: large)
                let plan = try large.read { db in
                    try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + query.sql, arguments: query.arguments).map { $0["detail"] as String }
                }
                #expect(growth <= 1.2, "\(query.name)\(analyzed ? " (analyzed)" : ""): \(String(format: "%.2f", growth))x the VM steps for the same page of a 2x table; plan: \(plan.joined(separator: " | "))")
            }
        }
    }

    /// The page check can fail: the image page without `+status` is planned on `images_status` (every ok image,
    /// then a sort), once per page.
    @Test func aPageThatWalksTheTableIsCaught() throws {
        let small = try Self.catalog(images: 1000), large = try Self.catalog(images: 2000)
        defer {
            try? FileManager.default.removeItem(atPath: small.workspace.root)
            try? FileManager.default.removeItem(atPath: large.workspace.root)
        }
        let walking = Query(name: "image page on images_status", sql: Catalog.usableImagesPageSQL.replacingOccurrences(of: "+status", with: "status"),
                            arguments: ["", 100])
        let growth = try Self.growth(walking, small: small, large: large)
        #expect(growth > 1.5, "the page query without +status grew only \(growth)x")
    }

    @Test func hotQueryPlansUseAnIndexForEveryInnerLookup() throws {
        let catalog = try Self.catalog(images: 500)
        defer { try? FileManager.default.removeItem(atPath: catalog.workspace.root) }
        // Without statistics (a fresh catalog) and with them (after ANALYZE): both plans must be per-row.
        for analyzed in [false, true] {
            if analyzed { try catalog.write { try $0.execute(sql: "ANALYZE") } }
            try catalog.read { db in
                for query in Self.hotQueries + Self.pageQueries {
                    let problems = try Self.planProblems(db, query)
                    #expect(problems.isEmpty, "\(query.name)\(analyzed ? " (analyzed)" : ""): \(problems.joined(separator: "; "))")
                }
            }
        }
    }

    /// The checks above can fail: the quadratic query patchify had before is caught by its step growth.
    @Test func theOldQuadraticPatchifyQueryIsCaught() throws {
        let small = try Self.catalog(images: 1000), large = try Self.catalog(images: 2000)
        defer {
            try? FileManager.default.removeItem(atPath: small.workspace.root)
            try? FileManager.default.removeItem(atPath: large.workspace.root)
        }
        let growth = try Self.growth(Self.quadraticPatchifyPending, small: small, large: large)
        #expect(growth > 3, "the correlated MIN(id) query grew only \(growth)x")
        // A scan nested in a join is caught by the plan check.
        let nested = Query(name: "nested scan", sql: "SELECT i.id FROM images i JOIN captions c ON c.text = i.file_name", arguments: [])
        #expect(try small.read { try Self.planProblems($0, nested) }.contains { $0.contains("inner loop") || $0.contains("missing index") })
    }
}
