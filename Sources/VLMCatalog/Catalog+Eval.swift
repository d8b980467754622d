import Foundation
import GRDB
import VLMCore
import VLMIO

/// Evaluation sets (`eval_sets`, `eval_images`): which images are held out, so training shards can leave them out
/// and `vlmdata eval check` can prove that they did.
///
/// ```swift
/// let held = try catalog.evalImageSHA256s()          // the bytes no training shard may hold
/// let leaks = try catalog.evalTrainingOverlaps()     // empty when no shard holds one of them
/// ```
extension Catalog {
    /// One image of an evaluation set, as recorded.
    public struct EvalImageRef: Sendable, Hashable {
        public var imageID: Int64
        public var sha256: String

        public init(imageID: Int64, sha256: String) {
            self.imageID = imageID
            self.sha256 = sha256
        }
    }

    /// An evaluation set as `eval build` records it.
    public struct EvalSetRecord: Sendable {
        public var name: String
        public var kind: String
        public var split: String
        public var params: String
        public var paramsHash: String
        public var directory: String
        public var questions: Int
        public var images: [EvalImageRef]

        public init(name: String, kind: String, split: String, params: String, paramsHash: String, directory: String,
                    questions: Int, images: [EvalImageRef]) {
            self.name = name
            self.kind = kind
            self.split = split
            self.params = params
            self.paramsHash = paramsHash
            self.directory = directory
            self.questions = questions
            self.images = images
        }
    }

    /// One training sample whose image bytes are also in an evaluation set.
    public struct EvalOverlap: Sendable, Hashable, Codable {
        public var evalSet: String
        public var sha256: String
        /// The image key as the evaluation set holds it.
        public var evalImage: String
        /// The image key the training sample was made from (another name for the same bytes, or the same image).
        public var trainImage: String
        public var sample: String
        public var shard: String

        enum CodingKeys: String, CodingKey {
            case sha256, sample, shard
            case evalSet = "eval_set", evalImage = "eval_image", trainImage = "train_image"
        }
    }

    /// The source id of split `name` (a `sources.name`); an error that lists the splits when there is none.
    public func sourceID(split name: String) throws -> Int64 {
        try read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, kind, name FROM sources ORDER BY id")
            let matches = rows.filter { ($0["name"] as String) == name }
            guard let match = matches.first else {
                let names = rows.map { "\($0["name"] as String) (\($0["kind"] as String))" }
                throw VLMError(.notFound, file: workspace.catalogPath, record: "--split \(name)",
                               "no ingested split has this name; the catalog has: \(names.isEmpty ? "none" : names.joined(separator: ", "))")
            }
            guard matches.count == 1 else {
                throw VLMError(.invalidArgument, file: workspace.catalogPath, record: "--split \(name)",
                               "several sources share this name: \(matches.map { "\($0["kind"] as String)" }.joined(separator: ", "))")
            }
            return match["id"]
        }
    }

    /// Where each image's bytes are: (sha256, location, member), for the `ok` images among `ids`.
    public func imageFiles(ids: [Int64]) throws -> [Int64: (sha256: String, location: String, member: String?)] {
        try read { db in
            var out: [Int64: (sha256: String, location: String, member: String?)] = [:]
            for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
                let marks = chunk.map { _ in "?" }.joined(separator: ",")
                for row in try Row.fetchAll(db, sql: """
                    SELECT id, sha256, location, member FROM images
                    WHERE status = 'ok' AND sha256 IS NOT NULL AND location IS NOT NULL AND id IN (\(marks))
                    """, arguments: StatementArguments(chunk)) {
                    let id: Int64 = row["id"]
                    out[id] = (sha256: row["sha256"] as String, location: row["location"] as String, member: row["member"] as String?)
                }
            }
            return out
        }
    }

    /// Records an evaluation set and its images, replacing an earlier set of the same name built into the same
    /// folder. The same name in another folder is a conflict: replacing it would silently release its images.
    @discardableResult
    public func recordEvalSet(_ set: EvalSetRecord) throws -> Int64 {
        try write { db in
            if let old = try Row.fetchOne(db, sql: "SELECT id, directory FROM eval_sets WHERE name = ?", arguments: [set.name]) {
                let directory: String = old["directory"]
                guard directory == set.directory else {
                    throw VLMError(.conflict, file: workspace.catalogPath, record: "eval set \(set.name)",
                                   "a set of this name was built into \(directory); give another --name, or rebuild into that folder")
                }
                let id: Int64 = old["id"]
                try db.execute(sql: "DELETE FROM eval_images WHERE eval_set_id = ?", arguments: [id])
                try db.execute(sql: "DELETE FROM eval_sets WHERE id = ?", arguments: [id])
            }
            try db.execute(sql: """
                INSERT INTO eval_sets (name, kind, split, params_hash, params, directory, questions, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [set.name, set.kind, set.split, set.paramsHash, set.params, set.directory, set.questions,
                                 Catalog.now()])
            let id = db.lastInsertedRowID
            let insert = try db.makeStatement(sql: "INSERT OR IGNORE INTO eval_images (eval_set_id, image_id, sha256) VALUES (?, ?, ?)")
            for image in set.images {
                try insert.execute(arguments: [id, image.imageID, image.sha256])
            }
            return id
        }
    }

    /// `catalog merge`: copies the evaluation sets of the catalog attached as `schema` into this one, inside the
    /// merge's transaction and after its images (matched by image key). A set name already here is the same set
    /// only when its parameters and folder are too (its images are then joined); otherwise it is a conflict, since
    /// keeping either would silently release the other's images into training.
    package static func mergeEvalSets(_ db: Database, from schema: String, part: String) throws -> [String: Int] {
        let clashes = try String.fetchAll(db, sql: """
            SELECT ps.name FROM \(schema).eval_sets ps JOIN main.eval_sets ms ON ms.name = ps.name
            WHERE ms.params_hash != ps.params_hash OR ms.directory != ps.directory ORDER BY ps.name LIMIT 6
            """)
        guard clashes.isEmpty else {
            throw VLMError(.conflict, file: part, record: "eval sets \(clashes.prefix(5).joined(separator: ", "))",
                           "a set of this name with other parameters or another folder is already in the merged catalog; "
                           + "build the parts' sets with distinct --name")
        }
        var counts: [String: Int] = [:]
        try db.execute(sql: """
            INSERT INTO main.eval_sets (name, kind, split, params_hash, params, directory, questions, created_at)
            SELECT name, kind, split, params_hash, params, directory, questions, created_at FROM \(schema).eval_sets ps
            WHERE NOT EXISTS (SELECT 1 FROM main.eval_sets ms WHERE ms.name = ps.name) ORDER BY ps.id
            """)
        counts["eval_sets"] = db.changesCount
        try db.execute(sql: """
            INSERT OR IGNORE INTO main.eval_images (eval_set_id, image_id, sha256)
            SELECT ms.id, mi.id, pe.sha256 FROM \(schema).eval_images pe
            JOIN \(schema).eval_sets ps ON ps.id = pe.eval_set_id JOIN main.eval_sets ms ON ms.name = ps.name
            JOIN \(schema).images pi ON pi.id = pe.image_id JOIN main.images mi ON mi.key = pi.key
            ORDER BY ps.id, pe.image_id
            """)
        counts["eval_images"] = db.changesCount
        let lost = try Int.fetchOne(db, sql: """
            SELECT COUNT(*) FROM \(schema).eval_images pe JOIN \(schema).images pi ON pi.id = pe.image_id
            WHERE NOT EXISTS (SELECT 1 FROM main.images mi WHERE mi.key = pi.key)
            """) ?? 0
        guard lost == 0 else {
            throw VLMError(.corrupt, file: part, "\(lost) evaluation images have no image row to merge into")
        }
        return counts
    }

    /// The sha256 of every image held by an evaluation set.
    public func evalImageSHA256s() throws -> Set<String> {
        try read { db in Set(try String.fetchAll(db, sql: "SELECT DISTINCT sha256 FROM eval_images")) }
    }

    /// Names and sizes of the recorded evaluation sets: (name, kind, split, questions, images).
    public func evalSets() throws -> [(name: String, kind: String, split: String, questions: Int, images: Int)] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT s.name, s.kind, s.split, s.questions, COUNT(i.image_id) AS images
                FROM eval_sets s LEFT JOIN eval_images i ON i.eval_set_id = s.id
                GROUP BY s.id ORDER BY s.name
                """).map { row -> (name: String, kind: String, split: String, questions: Int, images: Int) in
                (name: row["name"], kind: row["kind"], split: row["split"], questions: row["questions"], images: row["images"])
            }
        }
    }

    /// Every training sample whose image has the same sha256 as an image of an evaluation set.
    public func evalTrainingOverlaps() throws -> [EvalOverlap] {
        try read { db in
            try Row.fetchAll(db, sql: """
                SELECT es.name AS eval_set, ei.sha256, eimg.key AS eval_image, timg.key AS train_image,
                       s.key AS sample, sh.name AS shard
                FROM samples s
                JOIN shards sh ON sh.id = s.shard_id
                JOIN instructions i ON i.id = s.instruction_id
                JOIN images timg ON timg.id = i.image_id
                JOIN eval_images ei ON ei.sha256 = timg.sha256
                JOIN eval_sets es ON es.id = ei.eval_set_id
                JOIN images eimg ON eimg.id = ei.image_id
                ORDER BY es.name, s.key, eimg.key
                """).map {
                EvalOverlap(evalSet: $0["eval_set"], sha256: $0["sha256"], evalImage: $0["eval_image"],
                            trainImage: $0["train_image"], sample: $0["sample"], shard: $0["shard"])
            }
        }
    }

    /// Training samples in the catalog's shards (how many the leakage check looked at).
    public func trainingSampleCount() throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM samples") ?? 0 }
    }

    /// The stored reply body of an `ok` LLM call, if the cache has one (`llm_calls`, keyed by request sha256).
    public func cachedLLMResponse(requestHash: String) throws -> String? {
        try read { db in
            try String.fetchOne(db, sql: "SELECT response FROM llm_calls WHERE request_hash = ? AND status = 'ok'",
                                arguments: [requestHash])
        }
    }

    /// Stores one LLM call in the cache (replacing an earlier row of the same request).
    public func storeLLMCall(requestHash: String, kind: String, model: String, request: String, status: String,
                             response: String?, reason: String?, httpStatus: Int?, attempts: Int,
                             promptTokens: Int?, completionTokens: Int?) throws {
        try write { db in
            try db.execute(sql: """
                INSERT INTO llm_calls (request_hash, image_id, kind, model, request, status, response, reason, http_status,
                                       attempts, prompt_tokens, completion_tokens, created_at)
                VALUES (?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(request_hash) DO UPDATE SET status = excluded.status, response = excluded.response,
                    reason = excluded.reason, http_status = excluded.http_status,
                    attempts = llm_calls.attempts + excluded.attempts, prompt_tokens = excluded.prompt_tokens,
                    completion_tokens = excluded.completion_tokens
                """, arguments: [requestHash, kind, model, request, status, response, reason, httpStatus, attempts,
                                 promptTokens, completionTokens, Catalog.now()])
        }
    }
}
