import Foundation
import GRDB
import VLMCore
import VLMIO

/// Stage run bookkeeping: a run row per (stage, parameters, input fingerprint). A stage asks `completedRun`
/// first and does nothing when one exists; otherwise it calls `beginRun`, does its (idempotent) work, and `endRun`.
extension Catalog {
    public struct RunRecord: Sendable {
        public var id: Int64
        public var counts: [String: Int]
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

    /// Records the start of a run; returns its id. First marks `interrupted` every run still `running` whose
    /// process, on this host, is gone (killed or crashed).
    public func beginRun(stage: String, params: some Encodable, inputFingerprint: String) throws -> Int64 {
        let paramsJSON = String(decoding: Hashing.canonicalJSON(params), as: UTF8.self)
        let hash = Hashing.sha256(paramsJSON)
        let host = ProcessInfo.processInfo.hostName
        let pid = Int64(getpid())
        return try write { db in
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
        }
    }

    public static func paramsHash(_ params: some Encodable) -> String {
        Hashing.canonicalHash(params)
    }
}
