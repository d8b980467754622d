import Foundation
import GRDB
import VLMCatalog
import VLMCore
import VLMIO

/// `vlmdata ingest llava`: an existing LLaVA-format file (the 558k/665k shape) as images plus instructions.
/// The file is streamed one record at a time; each record's turn structure and single `<image>` placeholder are
/// validated, and a bad record is reported by index and id while the good ones are kept.
public struct IngestLLaVA {
    public struct Options: Codable, Sendable {
        public var json: String
        public var images: String?
        public var split: String

        public init(json: String, images: String? = nil, split: String = "llava") {
            self.json = json
            self.images = images
            self.split = split
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    struct Record {
        var key: String
        var image: String?
        var conversation: Conversation
    }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "ingest")   // one writer per stage per workspace
        defer { lock.release() }
        let file = options.json
        guard FileManager.default.fileExists(atPath: file) else {
            throw VLMError(.notFound, file: file, "LLaVA JSON file does not exist")
        }
        guard SampleKey.sanitize(options.split) == options.split, !options.split.isEmpty else {
            throw VLMError(.invalidArgument, "--split '\(options.split)' may contain only letters, digits, '_' and '-'")
        }
        let imageSource = try ImageSource(options.images)
        let fingerprint = try Hashing.sha256(file: file)
        let runID = try catalog.beginRun(stage: "ingest-llava", params: options, inputFingerprint: fingerprint)
        let split = options.split
        var problems: [String] = []
        var fatal: VLMError?

        let sourceID: Int64 = try catalog.write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO sources (kind, name, uri, images_root, fingerprint, created_at)
                VALUES ('llava', ?, ?, ?, ?, ?)
                """, arguments: [split, file, imageSource.location, fingerprint, Catalog.now()])
            return try Int64.fetchOne(db, sql: "SELECT id FROM sources WHERE kind = 'llava' AND name = ?", arguments: [split])!
        }

        // Pass 1: records, validated; images named by them.
        var records: [Record] = []
        var seenKeys: [String: Int] = [:]
        var imagePaths: [String] = []
        var imageSeen = Set<String>()
        progress.start("reading \(file)", total: nil)
        do {
            let reader = try JSONStreamReader(path: file)
            try reader.forEachTopLevelElement { value, index in
                let record = "record \(index)"
                do {
                    let id: String
                    switch value["id"] {
                    case .string(let s)?: id = s
                    case .int(let n)?: id = String(n)
                    case nil: throw VLMError.badInput(file: file, record: record, "missing field 'id'")
                    case let other?: throw VLMError.badInput(file: file, record: record, "field 'id' is \(other.typeName), expected a string")
                    }
                    let where_ = "record \(index) (id \(id))"
                    let image = try value.optionalString("image", file: file, record: where_)
                    guard case .array(let turns)? = value["conversations"] else {
                        throw VLMError.badInput(file: file, record: where_, value["conversations"] == nil
                            ? "missing field 'conversations'" : "field 'conversations' is not an array")
                    }
                    let parsed = try turns.enumerated().map { t, turn -> Turn in
                        let from = try turn.string("from", file: file, record: "\(where_) turn \(t)")
                        let text = try turn.string("value", file: file, record: "\(where_) turn \(t)")
                        guard let role = Turn.Role(rawValue: from) else {
                            throw VLMError.badInput(file: file, record: "\(where_) turn \(t)", "'from' is '\(from)', expected 'human' or 'gpt'")
                        }
                        return Turn(from: role, value: text)
                    }
                    let conversation = Conversation(id: id, image: image, conversations: parsed)
                    do { try conversation.validate() } catch let error as VLMError {
                        throw VLMError.badInput(file: file, record: where_, error.message)
                    }
                    if let image {
                        guard ArchiveReader.isSafeMemberName(image) else {
                            throw VLMError.badInput(file: file, record: where_, "image path '\(image)' is absolute or has '..'")
                        }
                        if imageSeen.insert(image).inserted { imagePaths.append(image) }
                    }
                    var key = "\(split)_\(SampleKey.sanitize(id))"
                    let n = seenKeys[key, default: 0]
                    seenKeys[key] = n + 1
                    if n > 0 { key += "_dup\(n)" }
                    records.append(Record(key: key, image: image, conversation: conversation))
                    progress.advance(by: 1)
                } catch let error as VLMError {
                    problems.append(error.description)
                }
            }
        } catch let error as VLMError {
            fatal = error
        }
        progress.finish("\(records.count) records, \(imagePaths.count) images")

        // Images.
        let done: Set<String> = try catalog.read { db in
            Set(try String.fetchAll(db, sql: "SELECT file_name FROM images WHERE source_id = ? AND status = 'ok'", arguments: [sourceID]))
        }
        let pending = imagePaths.filter { !done.contains($0) }.map { path in
            PendingImage(externalID: nil, fileName: path, key: Self.imageKey(split: split, path: path), expected: nil)
        }
        progress.start("checking images", total: pending.count)
        try ImageScanner.scan(pending, source: imageSource, progress: progress, problems: &problems) { batch in
            try catalog.write { db in
                for (image, probe, location, member) in batch {
                    try db.cachedStatement(sql: """
                        INSERT INTO images (source_id, key, file_name, location, member, sha256, byte_size, width, height,
                                            format, status, error)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (key) DO UPDATE SET
                            location = excluded.location, member = excluded.member, sha256 = excluded.sha256,
                            byte_size = excluded.byte_size, width = excluded.width, height = excluded.height,
                            format = excluded.format, status = excluded.status, error = excluded.error
                        """).execute(arguments: [sourceID, image.key, image.fileName, location, member, probe.sha256,
                                         probe.byteSize, probe.width, probe.height, probe.format,
                                         probe.status.rawValue, probe.error])
                }
            }
        }
        progress.finish("\(pending.count) checked")

        // Instructions.
        let imageRows: [String: Int64] = try catalog.read { db in
            var map: [String: Int64] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT file_name, id FROM images WHERE source_id = ?", arguments: [sourceID]) {
                map[row[0]] = row[1]
            }
            return map
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let now = Catalog.now()
        for start in stride(from: 0, to: records.count, by: 5000) {
            let chunk = records[start..<min(start + 5000, records.count)]
            try catalog.write { db in
                for record in chunk {
                    let turns = String(decoding: try encoder.encode(record.conversation.conversations), as: UTF8.self)
                    let meta = String(decoding: try encoder.encode(["id": record.conversation.id, "image": record.image ?? ""]), as: UTF8.self)
                    try db.cachedStatement(sql: """
                        INSERT OR IGNORE INTO instructions (key, image_id, source_id, generator, kind, conversations, meta, created_at)
                        VALUES (?, ?, ?, 'import', 'llava', ?, ?, ?)
                        """).execute(arguments: [record.key, record.image.flatMap { imageRows[$0] }, sourceID, turns, meta, now])
                }
            }
        }

        let counts = try catalog.read { db -> [String: Int] in
            [
                "images": try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE source_id = ?", arguments: [sourceID]) ?? 0,
                "images_ok": try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE source_id = ? AND status = 'ok'", arguments: [sourceID]) ?? 0,
                "instructions": try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM instructions WHERE source_id = ?", arguments: [sourceID]) ?? 0,
                "problems": problems.count,
            ]
        }
        let report = StageReport(stage: "ingest llava", counts: counts, problems: problems)
        try catalog.endRun(runID, counts: counts, error: fatal?.description)
        if let fatal { throw IngestFailure(report: report, error: fatal) }
        return report
    }

    static func imageKey(split: String, path: String) -> String {
        "\(split)_\(SampleKey.sanitize((path as NSString).deletingPathExtension))"
    }
}
