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

    /// External ids of the source's images whose status is `ok`.
    public func okImageExternalIDs(sourceID: Int64) throws -> Set<Int64> {
        try read { db in
            Set(try Int64.fetchAll(db, sql: "SELECT external_id FROM images WHERE source_id = ? AND status = 'ok'", arguments: [sourceID]))
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
            // Prepared once per batch, bound without re-validation (as `insertAnnotations`).
            let byExternalID = try db.makeStatement(sql: """
                INSERT INTO images (source_id, key, external_id, file_name, location, member, sha256, byte_size,
                                    width, height, format, status, error)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (source_id, external_id) DO UPDATE SET
                    location = excluded.location, member = excluded.member, sha256 = excluded.sha256,
                    byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                    format = excluded.format, status = excluded.status, error = excluded.error
                """)
            let byKey = try db.makeStatement(sql: """
                INSERT INTO images (source_id, key, file_name, location, member, sha256, byte_size, width, height,
                                    format, status, error)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (key) DO UPDATE SET
                    location = excluded.location, member = excluded.member, sha256 = excluded.sha256,
                    byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                    format = excluded.format, status = excluded.status, error = excluded.error
                """)
            for image in images {
                if image.externalID != nil {
                    byExternalID.setUncheckedArguments([image.sourceID, image.key, image.externalID, image.fileName, image.location,
                                                        image.member, image.sha256, image.byteSize, image.width, image.height,
                                                        image.format, image.status, image.error])
                    try byExternalID.execute()
                } else {
                    byKey.setUncheckedArguments([image.sourceID, image.key, image.fileName, image.location, image.member,
                                                 image.sha256, image.byteSize, image.width, image.height, image.format,
                                                 image.status, image.error])
                    try byKey.execute()
                }
            }
        }
    }

    /// The source's images by external id: row id and stored size.
    public func imagesByExternalID(sourceID: Int64) throws -> [Int64: (id: Int64, width: Int?, height: Int?)] {
        try read { db in
            var map: [Int64: (id: Int64, width: Int?, height: Int?)] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT external_id, id, width, height FROM images WHERE source_id = ?", arguments: [sourceID]) {
                map[row[0]] = (row[1], row[2], row[3])
            }
            return map
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
            // Prepared once per batch and bound without re-validation: the statement-cache lookup (hashing the SQL
            // text) and argument checks were a visible share of a caption file's ingest.
            let caption = try db.makeStatement(sql: "INSERT OR IGNORE INTO captions (image_id, external_id, text) VALUES (?, ?, ?)")
            let object = try db.makeStatement(sql: "INSERT OR IGNORE INTO objects (image_id, category_id, external_id, x, y, w, h, area, iscrowd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
            for annotation in annotations {
                switch annotation {
                case .caption(let imageID, let externalID, let text):
                    caption.setUncheckedArguments([imageID, externalID, text])
                    try caption.execute()
                case .object(let imageID, let categoryID, let externalID, let x, let y, let w, let h, let area, let crowd):
                    object.setUncheckedArguments([imageID, categoryID, externalID, x, y, w, h, area, crowd])
                    try object.execute()
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
