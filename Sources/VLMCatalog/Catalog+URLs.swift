import Foundation
import GRDB

/// What `ingest urls` stores: one `urls` row per list record with a result, and for each good image an `images`
/// row (its bytes a content-addressed file in the workspace) and its caption, as COCO images and captions are.
extension Catalog {
    /// The result of one list record.
    public struct URLResult: Sendable {
        public var key: String
        public var url: String
        public var caption: String?
        public var line: Int
        public var status: String
        public var httpStatus: Int?
        public var error: String?
        public var finalURL: String?
        public var bytes: Int64?
        public var width: Int?
        public var height: Int?
        public var sha256: String?
        public var format: String?
        /// The stored image file (absolute), for `ok` results.
        public var location: String?
        public var attempts: Int

        public init(key: String, url: String, caption: String?, line: Int, status: String, attempts: Int) {
            self.key = key
            self.url = url
            self.caption = caption
            self.line = line
            self.status = status
            self.attempts = attempts
        }
    }

    /// `vlmdata stats --json`'s `urls` object.
    public struct URLStats: Codable, Sendable, Equatable {
        public var total = 0
        public var ok = 0
        /// Records that did not give an image, by status (duplicate included).
        public var failed: [String: Int] = [:]

        public init() {}
    }

    /// The `sources` row of a URL list split, made if missing.
    public func urlSource(split: String, uri: String, fingerprint: String) throws -> Int64 {
        try write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO sources (kind, name, uri, images_root, fingerprint, created_at)
                VALUES ('urls', ?, ?, NULL, ?, ?)
                """, arguments: [split, uri, fingerprint, Catalog.now()])
            return try Int64.fetchOne(db, sql: "SELECT id FROM sources WHERE kind = 'urls' AND name = ?", arguments: [split])!
        }
    }

    /// The status of each of `keys` that has a result.
    public func urlStatuses(keys: [String]) throws -> [String: String] {
        guard !keys.isEmpty else { return [:] }
        return try read { db in
            var out: [String: String] = [:]
            for chunk in stride(from: 0, to: keys.count, by: 500) {
                let part = Array(keys[chunk..<min(chunk + 500, keys.count)])
                let marks = Array(repeating: "?", count: part.count).joined(separator: ",")
                for row in try Row.fetchAll(db, sql: "SELECT key, status FROM urls WHERE key IN (\(marks))",
                                            arguments: StatementArguments(part)) {
                    out[row[0]] = row[1]
                }
            }
            return out
        }
    }

    /// For each of `urls` already recorded under `sourceID` other than as a duplicate: the key of its first record.
    public func urlFirstKeys(urls: [String], sourceID: Int64) throws -> [String: String] {
        guard !urls.isEmpty else { return [:] }
        return try read { db in
            var out: [String: String] = [:]
            for chunk in stride(from: 0, to: urls.count, by: 500) {
                let part = Array(urls[chunk..<min(chunk + 500, urls.count)])
                let marks = Array(repeating: "?", count: part.count).joined(separator: ",")
                var values: [(any DatabaseValueConvertible)?] = [sourceID]
                values.append(contentsOf: part.map { $0 as (any DatabaseValueConvertible)? })
                for row in try Row.fetchAll(db, sql: """
                    SELECT url, MIN(line), key FROM urls
                    WHERE source_id = ? AND status != 'duplicate' AND url IN (\(marks)) GROUP BY url
                    """, arguments: StatementArguments(values)) {
                    out[row[0]] = row[2]
                }
            }
            return out
        }
    }

    /// Writes `results` in one transaction: each `urls` row (replacing an earlier result of the same key) and, for
    /// `ok` ones, the image row and its caption.
    public func commitURLResults(_ results: [URLResult], sourceID: Int64) throws {
        guard !results.isEmpty else { return }
        let now = Catalog.now()
        try write { db in
            for r in results {
                var imageID: Int64?
                if r.status == "ok" {
                    try db.cachedStatement(sql: """
                        INSERT INTO images (source_id, key, external_id, file_name, location, member, sha256, byte_size,
                                            width, height, format, status, error)
                        VALUES (?, ?, NULL, ?, ?, NULL, ?, ?, ?, ?, ?, 'ok', NULL)
                        ON CONFLICT (key) DO UPDATE SET
                            file_name = excluded.file_name, location = excluded.location, sha256 = excluded.sha256,
                            byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                            format = excluded.format, status = 'ok', error = NULL
                        """).execute(arguments: [sourceID, r.key, r.url, r.location, r.sha256, r.bytes, r.width, r.height, r.format])
                    imageID = try Int64.fetchOne(db, sql: "SELECT id FROM images WHERE key = ?", arguments: [r.key])
                    if let imageID, let caption = r.caption, !caption.isEmpty {
                        try db.cachedStatement(sql: "INSERT OR IGNORE INTO captions (image_id, external_id, text) VALUES (?, 0, ?)")
                            .execute(arguments: [imageID, caption])
                    }
                }
                try db.cachedStatement(sql: """
                    INSERT INTO urls (source_id, key, url, caption, line, status, http_status, error, final_url, bytes,
                                      width, height, sha256, attempts, image_id, fetched_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (key) DO UPDATE SET
                        url = excluded.url, caption = excluded.caption, line = excluded.line, status = excluded.status,
                        http_status = excluded.http_status, error = excluded.error, final_url = excluded.final_url,
                        bytes = excluded.bytes, width = excluded.width, height = excluded.height, sha256 = excluded.sha256,
                        attempts = urls.attempts + excluded.attempts, image_id = excluded.image_id,
                        fetched_at = excluded.fetched_at
                    """).execute(arguments: [sourceID, r.key, r.url, r.caption, r.line, r.status, r.httpStatus, r.error,
                                             r.finalURL, r.bytes, r.width, r.height, r.sha256, r.attempts, imageID, now])
            }
        }
    }

    /// Counts of `urls` rows by status, for one source or all.
    public func urlStats(sourceID: Int64? = nil) throws -> URLStats {
        try read { db in
            var stats = URLStats()
            let rows = try sourceID.map {
                try Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM urls WHERE source_id = ? GROUP BY status", arguments: [$0])
            } ?? Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM urls GROUP BY status")
            for row in rows {
                let status: String = row[0]
                let n: Int = row[1]
                stats.total += n
                if status == "ok" { stats.ok = n } else { stats.failed[status] = n }
            }
            return stats
        }
    }

    /// `ok` rows of a source whose image row is missing or not ok (an invariant `ingest urls` checks before it
    /// reports success).
    public func urlOrphans(sourceID: Int64) throws -> Int {
        try read { db in
            try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM urls LEFT JOIN images ON images.id = urls.image_id
                WHERE urls.source_id = ? AND urls.status = 'ok' AND (images.id IS NULL OR images.status != 'ok')
                """, arguments: [sourceID]) ?? 0
        }
    }
}
