import Foundation
import GRDB
import VLMCore

/// Queries ingest makes before it writes: the image keys already stored under a split's prefix.
extension Catalog {
    public struct StoredImageKey: Sendable {
        public var key: String
        public var sourceID: Int64
        public var externalID: Int64?
        public var fileName: String
    }

    /// Every image whose key starts with `prefix` (e.g. "train2017_"), from any source.
    public func imageKeys(prefix: String) throws -> [StoredImageKey] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT key, source_id, external_id, file_name FROM images WHERE substr(key, 1, ?) = ?",
                             arguments: [prefix.count, prefix]).map { row in
                StoredImageKey(key: row["key"], sourceID: row["source_id"], externalID: row["external_id"], fileName: row["file_name"])
            }
        }
    }

    /// Keys of instructions under `prefix` that belong to other sources (or to none).
    public func instructionKeys(prefix: String, excludingSource sourceID: Int64) throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db, sql: """
                SELECT key FROM instructions WHERE substr(key, 1, ?) = ? AND (source_id IS NULL OR source_id != ?)
                """, arguments: [prefix.count, prefix, sourceID]))
        }
    }
}

/// What ingest learned of one image file: where it is and what its header says.
public struct ImageRecord: Sendable {
    public var sourceID: Int64
    public var key: String
    /// COCO's image id; nil for sources without one (LLaVA).
    public var externalID: Int64?
    public var fileName: String
    public var location: String?
    public var member: String?
    public var sha256: String?
    public var byteSize: Int?
    public var width: Int?
    public var height: Int?
    public var format: String?
    public var status: String
    public var error: String?

    public init(sourceID: Int64, key: String, externalID: Int64?, fileName: String, location: String?, member: String?,
                sha256: String?, byteSize: Int?, width: Int?, height: Int?, format: String?, status: String,
                error: String?) {
        self.sourceID = sourceID
        self.key = key
        self.externalID = externalID
        self.fileName = fileName
        self.location = location
        self.member = member
        self.sha256 = sha256
        self.byteSize = byteSize
        self.width = width
        self.height = height
        self.format = format
        self.status = status
        self.error = error
    }
}

/// One COCO annotation: a caption or an object box.
public enum AnnotationRecord: Sendable {
    case caption(imageID: Int64, externalID: Int64, text: String)
    case object(imageID: Int64, categoryID: Int64, externalID: Int64, x: Double, y: Double, w: Double, h: Double,
                area: Double?, isCrowd: Int)
}

extension Catalog {
    /// The id of source (`kind`, `name`), added with these details if it is not there yet.
    public func ensureSource(kind: String, name: String, uri: String, imagesRoot: String?, fingerprint: String,
                             categories: [(externalID: Int64, name: String, supercategory: String?)] = []) throws -> Int64 {
        try write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO sources (kind, name, uri, images_root, fingerprint, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [kind, name, uri, imagesRoot, fingerprint, Catalog.now()])
            let id = try Int64.fetchOne(db, sql: "SELECT id FROM sources WHERE kind = ? AND name = ?", arguments: [kind, name])!
            for category in categories {
                try db.cachedStatement(sql: """
                    INSERT OR IGNORE INTO categories (source_id, external_id, name, supercategory) VALUES (?, ?, ?, ?)
                    """).execute(arguments: [id, category.externalID, category.name, category.supercategory])
            }
            return id
        }
    }

    /// External ids of the source's images whose status is `ok`, ascending (8 bytes each: a rerun over a large
    /// source holds them all; look one up with `binarySearch`-style search or `contains` on small sets).
    public func okImageExternalIDs(sourceID: Int64) throws -> [Int64] {
        try read { db in
            try Int64.fetchAll(db, sql: """
                SELECT external_id FROM images WHERE source_id = ? AND status = 'ok' AND external_id IS NOT NULL ORDER BY external_id
                """, arguments: [sourceID])
        }
    }

    /// File names of the source's images whose status is `ok`.
    public func okImageFileNames(sourceID: Int64) throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db, sql: "SELECT file_name FROM images WHERE source_id = ? AND status = 'ok'", arguments: [sourceID]))
        }
    }

    /// Writes image rows in one transaction. A COCO image (with an external id) replaces the row of the same
    /// (source, external id); one without replaces the row of the same key.
    public func upsertImages(_ images: [ImageRecord]) throws {
        try write { db in
            // Prepared once per batch and bound through the C API (`BoundStatement`): no argument boxing per row.
            let byExternalID = try BoundStatement(db, sql: """
                INSERT INTO images (source_id, key, external_id, file_name, location, member, sha256, byte_size,
                                    width, height, format, status, error)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (source_id, external_id) DO UPDATE SET
                    location = excluded.location, member = excluded.member, sha256 = excluded.sha256,
                    byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                    format = excluded.format, status = excluded.status, error = excluded.error
                """)
            let byKey = try BoundStatement(db, sql: """
                INSERT INTO images (source_id, key, file_name, location, member, sha256, byte_size, width, height,
                                    format, status, error)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (key) DO UPDATE SET
                    location = excluded.location, member = excluded.member, sha256 = excluded.sha256,
                    byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                    format = excluded.format, status = excluded.status, error = excluded.error
                """)
            for image in images {
                let statement = image.externalID != nil ? byExternalID : byKey
                var column: Int32 = 1
                func next() -> Int32 { defer { column += 1 }; return column }
                statement.bind(next(), image.sourceID)
                statement.bindCopy(next(), image.key)
                if let externalID = image.externalID { statement.bind(next(), externalID) }
                statement.bindCopy(next(), image.fileName)
                statement.bindCopy(next(), image.location)
                statement.bindCopy(next(), image.member)
                statement.bindCopy(next(), image.sha256)
                statement.bind(next(), image.byteSize)
                statement.bind(next(), image.width)
                statement.bind(next(), image.height)
                statement.bindCopy(next(), image.format)
                statement.bindCopy(next(), image.status)
                statement.bindCopy(next(), image.error)
                try statement.step()
            }
        }
    }

    /// Calls `row` with each image of the source: external id (nil for sources without), row id and stored size.
    /// Rows are streamed from the query, never collected: memory stays flat however many images the source has.
    public func forEachImage(sourceID: Int64,
                             _ row: (_ externalID: Int64?, _ id: Int64, _ width: Int?, _ height: Int?) throws -> Void) throws {
        try read { db in
            let query = try BoundStatement(db, sql: "SELECT external_id, id, width, height FROM images WHERE source_id = ?")
            query.bind(1, sourceID)
            try query.forEachRow { r in
                try row(r.optionalInt64(0), r.int64(1), r.optionalInt64(2).map(Int.init), r.optionalInt64(3).map(Int.init))
            }
        }
    }

    /// The source's image row ids by file name.
    public func imageIDsByFileName(sourceID: Int64) throws -> [String: Int64] {
        try read { db in
            var map: [String: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT file_name, id FROM images WHERE source_id = ?", arguments: [sourceID]) {
                map[row[0]] = row[1]
            }
            return map
        }
    }

    /// The source's category row ids by external id.
    public func categoryIDsByExternalID(sourceID: Int64) throws -> [Int64: Int64] {
        try read { db in
            var map: [Int64: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT external_id, id FROM categories WHERE source_id = ?", arguments: [sourceID]) {
                map[row[0]] = row[1]
            }
            return map
        }
    }

    /// Writes annotations in one transaction; one already present (same image and external id) is left as it is.
    public func insertAnnotations(_ annotations: [AnnotationRecord]) throws {
        try write { db in
            // Prepared once per batch and bound through the C API (`BoundStatement`): per row, GRDB's argument
            // boxing cost more CPU than SQLite's insert itself.
            let caption = try BoundStatement(db, sql: "INSERT OR IGNORE INTO captions (image_id, external_id, text) VALUES (?, ?, ?)")
            let object = try BoundStatement(db, sql: "INSERT OR IGNORE INTO objects (image_id, category_id, external_id, x, y, w, h, area, iscrowd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            for annotation in annotations {
                switch annotation {
                case .caption(let imageID, let externalID, let text):
                    caption.bind(1, imageID)
                    caption.bind(2, externalID)
                    try caption.step(text: text, at: 3)
                case .object(let imageID, let categoryID, let externalID, let x, let y, let w, let h, let area, let crowd):
                    object.bind(1, imageID)
                    object.bind(2, categoryID)
                    object.bind(3, externalID)
                    object.bind(4, x)
                    object.bind(5, y)
                    object.bind(6, w)
                    object.bind(7, h)
                    object.bind(8, area)
                    object.bind(9, Int64(crowd))
                    try object.step()
                }
            }
        }
    }

    /// Row counts of what source `sourceID` holds: `images`, `images_STATUS` per status, `captions`, `objects`,
    /// `categories`, `instructions`.
    public func sourceCounts(sourceID: Int64) throws -> [String: Int] {
        try read { db in
            var counts: [String: Int] = [:]
            for status in ImageStatus.allCases {
                counts["images_\(status.rawValue)"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE source_id = ? AND status = ?", arguments: [sourceID, status.rawValue]) ?? 0
            }
            counts["images"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE source_id = ?", arguments: [sourceID]) ?? 0
            counts["captions"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM captions JOIN images ON images.id = captions.image_id WHERE images.source_id = ?", arguments: [sourceID]) ?? 0
            counts["objects"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM objects JOIN images ON images.id = objects.image_id WHERE images.source_id = ?", arguments: [sourceID]) ?? 0
            counts["categories"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM categories WHERE source_id = ?", arguments: [sourceID]) ?? 0
            counts["instructions"] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM instructions WHERE source_id = ?", arguments: [sourceID]) ?? 0
            return counts
        }
    }
}
