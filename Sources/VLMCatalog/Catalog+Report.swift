import Foundation
import GRDB
import VLMCore

/// What `vlmdata view` draws from the catalog: row counts per table, problem counts per kind, and the per-item
/// numbers its histograms show.
public struct ReportFigures: Sendable {
    /// `(table, rows)` for every table of the catalog, in name order.
    public var tables: [(name: String, rows: Int)] = []
    /// `(kind, count)` of every problem the stages recorded (images not ok by status, pixel errors, tokenized rows
    /// truncated / dropped / in error, LLM calls rejected / failed, failed runs), in a fixed order, zeros included.
    public var problems: [(kind: String, count: Int)] = []
    /// Per sample: tokens as the model sees them (text plus the image's positions), supervised tokens, image tokens.
    public var tokensPerSample: [Int] = []
    public var supervisedPerSample: [Int] = []
    public var imageTokensPerSample: [Int] = []
    /// Per image that has instructions: how many.
    public var instructionsPerImage: [Int] = []
    /// Per training shard: how many distinct images its samples show.
    public var imagesPerShard: [Int] = []

    public init() {}
}

extension Catalog {
    /// The figures of the report page (`vlmdata view`), read in one transaction.
    public func reportFigures() throws -> ReportFigures {
        try read { db in
            var f = ReportFigures()
            let tables = try String.fetchAll(db, sql: """
                SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%'
                ORDER BY name
                """)
            func count(_ sql: String, _ arguments: StatementArguments = []) throws -> Int {
                try Int.fetchOne(db, sql: sql, arguments: arguments) ?? 0
            }
            for table in tables {
                let rows = try count("SELECT COUNT(*) FROM \"\(table)\"")
                f.tables.append((table, rows))
            }
            var problems: [(String, String, StatementArguments)] = []
            for status in ImageStatus.allCases where status != .ok {
                problems.append(("image \(status.rawValue)", "SELECT COUNT(*) FROM images WHERE status = ?", [status.rawValue]))
            }
            problems.append(("pixels error", "SELECT COUNT(*) FROM pixels WHERE status = 'error'", []))
            for status in ["truncated", "dropped", "error"] {
                problems.append(("tokenized \(status)", "SELECT COUNT(*) FROM tokenized WHERE status = ?", [status]))
            }
            problems.append(("llm call rejected", "SELECT COUNT(*) FROM llm_calls WHERE status = 'rejected'", []))
            problems.append(("llm call failed", "SELECT COUNT(*) FROM llm_calls WHERE status NOT IN ('ok', 'rejected')", []))
            problems.append(("run failed", "SELECT COUNT(*) FROM runs WHERE status IN ('failed', 'interrupted')", []))
            for (kind, sql, arguments) in problems {
                let n = try count(sql, arguments)
                f.problems.append((kind, n))
            }
            for row in try Row.fetchAll(db, sql: "SELECT tokens - has_image + image_tokens, supervised, image_tokens FROM samples ORDER BY id") {
                f.tokensPerSample.append(row[0])
                f.supervisedPerSample.append(row[1])
                f.imageTokensPerSample.append(row[2])
            }
            f.instructionsPerImage = try Int.fetchAll(db, sql: """
                SELECT COUNT(*) FROM instructions WHERE image_id IS NOT NULL GROUP BY image_id ORDER BY image_id
                """)
            f.imagesPerShard = try Int.fetchAll(db, sql: """
                SELECT COUNT(DISTINCT i.image_id) FROM shards s
                LEFT JOIN samples x ON x.shard_id = s.id LEFT JOIN instructions i ON i.id = x.instruction_id
                GROUP BY s.id ORDER BY s.id
                """)
            return f
        }
    }

    /// Every sample key in index order (shard, then position), for the report's sampling.
    public func sampleKeys() throws -> [String] {
        try read { db in
            try String.fetchAll(db, sql: "SELECT x.key FROM samples x JOIN shards s ON s.id = x.shard_id ORDER BY s.name, x.index_in_shard")
        }
    }
}

/// The breakdowns `vlmdata stats` prints as tables: per split, per status, per stage config by readable name.
public struct StatsBreakdown: Sendable {
    public struct Split: Sendable {
        public var name: String, kind: String, images: Int, ok: Int, instructions: Int, samples: Int
    }
    public struct Status: Sendable {
        public var table: String, status: String, rows: Int
    }
    public struct Config: Sendable {
        /// Stage of the run that made the rows, its readable name (or config hash), and the rows it holds.
        public var stage: String, name: String, rows: Int
    }
    public var splits: [Split] = []
    public var statuses: [Status] = []
    public var configs: [Config] = []
}

extension Catalog {
    public func statsBreakdown() throws -> StatsBreakdown {
        try read { db in
            var b = StatsBreakdown()
            for row in try Row.fetchAll(db, sql: """
                SELECT s.name, s.kind,
                       (SELECT COUNT(*) FROM images i WHERE i.source_id = s.id),
                       (SELECT COUNT(*) FROM images i WHERE i.source_id = s.id AND i.status = 'ok'),
                       (SELECT COUNT(*) FROM instructions n JOIN images i ON i.id = n.image_id WHERE i.source_id = s.id),
                       (SELECT COUNT(*) FROM samples x JOIN instructions n ON n.id = x.instruction_id
                            JOIN images i ON i.id = n.image_id WHERE i.source_id = s.id)
                FROM sources s ORDER BY s.name, s.kind
                """) {
                b.splits.append(.init(name: row[0], kind: row[1], images: row[2], ok: row[3], instructions: row[4], samples: row[5]))
            }
            for table in ["images", "pixels", "tokenized", "llm_calls", "runs"] {
                for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM \(table) GROUP BY status ORDER BY status") {
                    b.statuses.append(.init(table: table, status: row[0], rows: row[1]))
                }
            }
            // Rows per config: each derived row names the run that made it; older rows (no run) by their config hash.
            let derived: [(table: String, stage: String, hash: String?)] = [
                ("instructions", "gen-instructions", "params_hash"), ("tokenized", "tokenize", "config_hash"),
                ("pixels", "patchify", "config_hash"), ("samples", "shard", nil),
            ]
            for (table, stage, hash) in derived {
                let fallback = hash.map { "'config ' || substr(t.\($0), 1, 12)" } ?? "'(no run recorded)'"
                for row in try Row.fetchAll(db, sql: """
                    SELECT COALESCE(r.stage, ?), COALESCE(r.name, \(fallback)), COUNT(*)
                    FROM \(table) t LEFT JOIN runs r ON r.id = t.run_id
                    GROUP BY 1, 2 ORDER BY MIN(t.id)
                    """, arguments: [stage]) {
                    b.configs.append(.init(stage: row[0], name: row[1], rows: row[2]))
                }
            }
            return b
        }
    }
}
