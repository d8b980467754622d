import Foundation
import GRDB
import VLMCore
import VLMIO

/// Stage run bookkeeping: a run row per (stage, parameters, input fingerprint). A stage asks `completedRun`
/// first and does nothing when one exists; otherwise it calls `beginRun`, does its (idempotent) work, and `endRun`.
///
/// Lineage (see docs/stages.md) is kept in the same rows: a runner opens a lineage run with `beginLineageRun`
/// and runs the stage inside `Catalog.withLineageRun(id)`; a `beginRun` inside adopts that row instead of adding one.
extension Catalog {
    public struct RunRecord: Sendable {
        public var id: Int64
        public var counts: [String: Int]
    }

    /// The lineage run a stage being run now belongs to (set by the runner; nil for direct library use).
    @TaskLocal public static var currentLineageRun: Int64?

    /// Runs `body` with `beginRun` adopting the lineage run `id`.
    public static func withLineageRun<T>(_ id: Int64, _ body: () throws -> T) rethrows -> T {
        try $currentLineageRun.withValue(id, operation: body)
    }

    /// The completed run of `stage` with these parameters on this input, if there is one.
    public func completedRun(stage: String, paramsHash: String, inputFingerprint: String) throws -> RunRecord? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT id, counts FROM runs WHERE stage = ? AND params_hash = ? AND input_fingerprint = ? AND status = 'done'
                ORDER BY id DESC LIMIT 1
                """, arguments: [stage, paramsHash, inputFingerprint]) else { return nil }
            let countsText: String = row["counts"] ?? "{}"
            let counts = (try? JSONDecoder().decode([String: Int].self, from: Data(countsText.utf8))) ?? [:]
            return RunRecord(id: row["id"], counts: counts)
        }
    }

    /// Records the start of a run; returns its id. Inside `withLineageRun` it fills in that run's row instead.
    /// First marks `interrupted` every run still `running` whose process, on this host, is gone (killed or crashed).
    public func beginRun(stage: String, params: some Encodable, inputFingerprint: String) throws -> Int64 {
        let paramsJSON = String(decoding: Hashing.canonicalJSON(params), as: UTF8.self)
        let hash = Hashing.sha256(paramsJSON)
        let adopted = Catalog.currentLineageRun
        let host = ProcessInfo.processInfo.hostName
        let pid = Int64(getpid())
        return try write { db in
            if let adopted {
                // The stage's own params replace the lineage run's, keeping what the run recorded beside its config.
                try db.execute(sql: """
                    UPDATE runs SET params_hash = ?, input_fingerprint = ?,
                           params = CASE WHEN json_valid(params) AND json_type(params, '$.recorded') = 'object'
                                         THEN json_set(?, '$.recorded', json(json_extract(params, '$.recorded'))) ELSE ? END
                    WHERE id = ?
                    """, arguments: [hash, inputFingerprint, paramsJSON, paramsJSON, adopted])
                return adopted
            }
            try Catalog.markInterruptedRuns(db, host: host)
            try db.execute(sql: """
                INSERT INTO runs (stage, params_hash, params, input_fingerprint, status, started_at, pid, host)
                VALUES (?, ?, ?, ?, 'running', ?, ?, ?)
                """, arguments: [stage, hash, paramsJSON, inputFingerprint, Catalog.now(), pid, host])
            return db.lastInsertedRowID
        }
    }

    /// Marks `interrupted` the `running` rows started on `host` by a process that no longer exists.
    static func markInterruptedRuns(_ db: Database, host: String) throws {
        let rows = try Row.fetchAll(db, sql: "SELECT id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
                                    arguments: [host])
        for row in rows {
            let pid: Int64 = row["pid"]
            guard pid != Int64(getpid()), kill(pid_t(pid), 0) != 0, errno == ESRCH else { continue }
            try db.execute(sql: """
                UPDATE runs SET status = 'interrupted', ended_at = ?,
                    error = 'process ' || pid || ' ended without finishing the run (killed or crashed)'
                WHERE id = ?
                """, arguments: [Catalog.now(), row["id"] as Int64])
        }
    }

    public func endRun(_ id: Int64, counts: [String: Int], error: String? = nil) throws {
        let countsJSON = String(decoding: Hashing.canonicalJSON(counts), as: UTF8.self)
        try write { db in
            try db.execute(sql: "UPDATE runs SET status = ?, counts = ?, error = ?, ended_at = ? WHERE id = ?",
                           arguments: [error == nil ? "done" : "failed", countsJSON, error, Catalog.now(), id])
            if error == nil { try Catalog.updateStatistics(db) }
        }
        // Open read connections keep the statistics they loaded; the next read opens one that sees the new ones.
        if error == nil { pool.invalidateReadOnlyConnections() }
    }

    /// Refreshes the planner's statistics (`sqlite_stat1`) after a stage has added rows. Without them SQLite
    /// picks an index by its shape alone, and may walk a low-selectivity one (`images_status`) once per row
    /// where a selective one exists: quadratic cost (issue 19). `analysis_limit` bounds the work to a sample
    /// of each index, so this stays milliseconds at any catalog size. Only new connections load them.
    package static func updateStatistics(_ db: Database) throws {
        try db.execute(sql: "PRAGMA analysis_limit = 1000")
        try db.execute(sql: "ANALYZE")
    }

    public static func paramsHash(_ params: some Encodable) -> String {
        Hashing.canonicalHash(params)
    }
}

// MARK: - Lineage

extension Catalog {
    /// A run as lineage sees it: what stage, which config (readable name, canonical JSON, hash), read from what.
    public struct LineageRun: Sendable, Equatable {
        public var id: Int64
        public var stage: String
        public var name: String
        public var config: String
        public var configHash: String
        public var inputs: [Int64]
        /// The config hash of the rows the run made (`tokenized.config_hash`, `pixels.config_hash`), if any.
        public var output: String?
        public var status: String
        public var counts: [String: Int]

        init(row: Row) {
            id = row["id"]
            stage = row["stage"]
            name = row["name"] ?? ""
            config = row["config"] ?? "{}"
            configHash = row["config_hash"] ?? ""
            let inputsText: String = row["inputs"] ?? "[]"
            inputs = (try? JSONDecoder().decode([Int64].self, from: Data(inputsText.utf8))) ?? []
            output = row["output"]
            status = row["status"]
            let countsText: String = row["counts"] ?? "{}"
            counts = (try? JSONDecoder().decode([String: Int].self, from: Data(countsText.utf8))) ?? [:]
        }
    }

    /// The tables whose rows record the run that made them.
    public enum DerivedTable: String, Sendable, CaseIterable {
        case instructions, tokenized, pixels, shards, samples

        /// Rows carry the config hash of the run that made them (stamping picks only those).
        var hasConfigHash: Bool { self == .tokenized || self == .pixels }
    }

    static func inputsJSON(_ inputs: [Int64]) -> String {
        "[" + inputs.sorted().map(String.init).joined(separator: ",") + "]"
    }

    /// The `params` and `output` of every done run of `stage`, the latest first (see `beginLineageRun`).
    public func lineageRunParams(stage: String) throws -> [(params: String, output: String?)] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT params, output FROM runs WHERE stage = ? AND status = 'done' AND config_hash IS NOT NULL
                ORDER BY used_seq DESC, id DESC
                """, arguments: [stage]).map { (params: $0["params"] ?? "", output: $0["output"]) }
        }
    }

    /// The done run of `stage` with this config hash that read exactly `inputs`, if any.
    public func doneLineageRun(stage: String, configHash: String, inputs: [Int64]) throws -> LineageRun? {
        try read { db in
            try Row.fetchOne(db, sql: """
                SELECT * FROM runs WHERE stage = ? AND config_hash = ? AND inputs = ? AND status = 'done'
                ORDER BY id DESC LIMIT 1
                """, arguments: [stage, configHash, Catalog.inputsJSON(inputs)]).map(LineageRun.init(row:))
        }
    }

    /// The current done runs of the given stages: for each (stage, config hash) the latest, most recently used first.
    public func currentLineageRuns(stages: [String]) throws -> [LineageRun] {
        guard !stages.isEmpty else { return [] }
        let marks = Array(repeating: "?", count: stages.count).joined(separator: ", ")
        return try read { db in
            try Row.fetchAll(db, sql: """
                SELECT r.* FROM runs r
                WHERE r.status = 'done' AND r.config_hash IS NOT NULL AND r.stage IN (\(marks))
                  AND r.id = (SELECT MAX(q.id) FROM runs q WHERE q.status = 'done' AND q.stage = r.stage
                              AND q.config_hash = r.config_hash)
                ORDER BY r.used_seq DESC, r.id DESC
                """, arguments: StatementArguments(stages)).map(LineageRun.init(row:))
        }
    }

    /// Opens a lineage run (status 'running'); returns its id.
    /// `params` (default: the config) is the config plus what the run was given beyond its identity, under the key
    /// `recorded` (e.g. the tokenizer's path); it is stored in `runs.params`, does not take part in the config hash,
    /// and `recorded` survives the stage's own `beginRun`.
    public func beginLineageRun(stage: String, name: String, config: String, configHash: String, inputs: [Int64],
                                params: String? = nil) throws -> Int64 {
        let host = ProcessInfo.processInfo.hostName
        let pid = Int64(getpid())
        return try write { db in
            try Catalog.markInterruptedRuns(db, host: host)
            try db.execute(sql: """
                INSERT INTO runs (stage, params_hash, params, input_fingerprint, status, started_at,
                                  name, config, config_hash, inputs, pid, host)
                VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [stage, configHash, params ?? config, Catalog.inputsJSON(inputs), Catalog.now(),
                                 name, config, configHash, Catalog.inputsJSON(inputs), pid, host])
            return db.lastInsertedRowID
        }
    }

    /// Closes a lineage run: status done, its counts and output, rows of `derived` tables with no run yet stamped
    /// with it, and its `used_seq` raised so it becomes the latest run of its stage.
    public func finishLineageRun(_ id: Int64, counts: [String: Int], output: String?, derived: [DerivedTable]) throws {
        let countsJSON = String(decoding: Hashing.canonicalJSON(counts), as: UTF8.self)
        try write { db in
            for table in derived {
                if let output, table.hasConfigHash {
                    try db.execute(sql: "UPDATE \(table.rawValue) SET run_id = ? WHERE run_id IS NULL AND config_hash = ?",
                                   arguments: [id, output])
                } else {
                    try db.execute(sql: "UPDATE \(table.rawValue) SET run_id = ? WHERE run_id IS NULL", arguments: [id])
                }
            }
            try db.execute(sql: """
                UPDATE runs SET status = 'done', counts = ?, error = NULL, output = ?, ended_at = ?,
                       used_seq = (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM runs)
                WHERE id = ?
                """, arguments: [countsJSON, output, Catalog.now(), id])
            try Catalog.updateStatistics(db)
        }
        pool.invalidateReadOnlyConnections()
    }

    /// Marks a lineage run failed with the error.
    public func failLineageRun(_ id: Int64, error: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE runs SET status = 'failed', error = ?, ended_at = ? WHERE id = ?",
                           arguments: [error, Catalog.now(), id])
        }
    }

    /// Drops a lineage run that turned out to repeat `existing` (the stage found nothing to do) and reuses that one;
    /// rows of `derived` tables with no run yet are stamped with it.
    public func replaceLineageRun(_ id: Int64, with existing: Int64, derived: [DerivedTable]) throws {
        try write { db in
            for table in derived {
                try db.execute(sql: "UPDATE \(table.rawValue) SET run_id = ? WHERE run_id IS NULL OR run_id = ?", arguments: [existing, id])
            }
            // Same config, so the params differ only in what was recorded beside it (the latest path wins).
            try db.execute(sql: "UPDATE runs SET params = (SELECT params FROM runs WHERE id = ?) WHERE id = ?", arguments: [id, existing])
            try db.execute(sql: "DELETE FROM runs WHERE id = ?", arguments: [id])
        }
        try touchLineageRun(existing)
    }

    /// Makes a run the latest of its stage again (it was reused).
    public func touchLineageRun(_ id: Int64) throws {
        try write { db in
            try db.execute(sql: "UPDATE runs SET used_seq = (SELECT COALESCE(MAX(used_seq), 0) + 1 FROM runs) WHERE id = ?",
                           arguments: [id])
        }
    }

    /// How many rows of `table` each config hash has (for configs made before lineage was recorded).
    public func configCounts(table: DerivedTable) throws -> [(configHash: String, rows: Int, detail: String)] {
        try read { db in
            let detail: String
            switch table {
            case .tokenized: detail = "'template ' || MIN(template) || ', tokenizer ' || substr(MIN(tokenizer_sha256), 1, 12)"
            case .pixels: detail = "MIN(config)"
            default: detail = "''"
            }
            return try Row.fetchAll(db, sql: """
                SELECT config_hash, COUNT(*) AS n, \(detail) AS detail FROM \(table.rawValue) GROUP BY config_hash ORDER BY config_hash
                """).map { row -> (configHash: String, rows: Int, detail: String) in
                (row["config_hash"], row["n"], (row["detail"] as String?) ?? "")
            }
        }
    }

    /// Rows of `table` with this config hash.
    public func rowCount(table: DerivedTable, configHash: String) throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table.rawValue) WHERE config_hash = ?", arguments: [configHash]) ?? 0
        }
    }
}
