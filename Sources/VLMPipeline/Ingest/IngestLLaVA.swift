import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `vlmdata ingest llava`: an existing LLaVA-format file (the 558k/665k shape) as images plus instructions.
/// The file is streamed one record at a time; each record's turn structure and single `<image>` placeholder are
/// validated, and a bad record is reported by index and id while the good ones are kept.
///
/// The file is a JSON array of records or JSON Lines (one record a line, as LLaVA's eval and GPT-4 QA files are).
/// A record has `conversations`, or — the GPT-4 QA shape — `instruction` and `output`: these become a human turn
/// `"<image>\n" + instruction` (the instruction as is when it already holds `<image>`) and a gpt turn `output`, and
/// `type` (conv, detail, complex) becomes the instruction kind (conversation, detail, complex).
public struct IngestLLaVA {
    public struct Options: Codable, Sendable {
        public var json: String
        public var images: String?
        public var split: String
        /// Only the records whose image key (record key if text-only) falls in this part (`PartSpec.owns`).
        public var part: PartSpec?

        public init(json: String, images: String? = nil, split: String = "llava", part: PartSpec? = nil) {
            self.json = json
            self.images = images
            self.split = split
            self.part = part
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    struct Record {
        var key: String
        var image: String?
        var kind: String
        var conversation: Conversation
    }

    /// GPT-4 QA `type` values and the instruction kinds they become.
    static let qaKinds = ["conv": "conversation", "detail": "detail", "complex": "complex"]

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

        let sourceID = try catalog.ensureSource(kind: "llava", name: split, uri: file, imagesRoot: imageSource.location,
                                                fingerprint: fingerprint)

        // Instruction keys other sources already hold: never reused.
        let takenInstructionKeys = try catalog.instructionKeys(prefix: "\(split)_", excludingSource: sourceID)

        // Pass 1: records, validated; images named by them.
        var records: [Record] = []
        var seenKeys: [String: Int] = [:]
        var usedKeys = Set<String>()
        var firstOfID: [String: (record: String, image: String?)] = [:]
        var imagePaths: [String] = []
        var imageSeen = Set<String>()
        progress.start("reading \(file)", total: nil)
        do {
            let reader = try JSONStreamReader(path: file)
            IngestLimits.configure(reader)
            let isLines = try reader.firstSignificantByte() == UInt8(ascii: "{")
            let body: (JSONValue, Int) throws -> Void = { value, index in
                let record = isLines ? "line \(index)" : "record \(index)"
                do {
                    try IngestCOCO.expectObject(value, file: file, record: record)
                    let id: String
                    switch value["id"] {
                    case .string(let s)?: id = s
                    case .int(let n)?: id = String(n)
                    case nil: throw VLMError.badInput(file: file, record: record, "missing field 'id'")
                    case let other?: throw VLMError.badInput(file: file, record: record, "field 'id' is \(other.typeName), expected a string")
                    }
                    let where_ = "\(record) (id \(id))"
                    let image = try value.optionalString("image", file: file, record: where_)
                    let (conversation, kind) = try Self.conversation(of: value, id: id, image: image, file: file, record: where_)
                    if let image {
                        guard ArchiveReader.isSafeMemberName(image) else {
                            throw VLMError.badInput(file: file, record: where_, "image path '\(image)' is absolute or has '..'")
                        }
                    }
                    if let first = firstOfID[id], first.image != image {
                        throw VLMError.badInput(file: file, record: where_,
                            "id '\(id)' was already given to \(first.record) with image '\(first.image ?? "none")'; this record names '\(image ?? "none")': skipped")
                    }
                    if firstOfID[id] == nil { firstOfID[id] = (record, image) }
                    if let image, imageSeen.insert(image).inserted { imagePaths.append(image) }
                    // Sample keys: SPLIT_ID, then _dupN for the N-th repeat of an id; a key that another id
                    // escapes to as well, or that another source holds, gets the id's hash.
                    let base = "\(split)_\(SampleKey.sanitize(id))"
                    let n = seenKeys[id, default: 0]
                    seenKeys[id] = n + 1
                    var key = n > 0 ? "\(base)_dup\(n)" : base
                    if usedKeys.contains(key) || takenInstructionKeys.contains(key) {
                        let digest = Hashing.sha256("\(id)#\(n)")
                        var length = 8
                        key = "\(base)-\(digest.prefix(length))"
                        while (usedKeys.contains(key) || takenInstructionKeys.contains(key)) && length < digest.count {
                            length += 4
                            key = "\(base)-\(digest.prefix(length))"
                        }
                    }
                    usedKeys.insert(key)
                    records.append(Record(key: key, image: image, kind: kind, conversation: conversation))
                    progress.advance(by: 1)
                } catch let error as VLMError {
                    problems.append(error.description)
                }
            }
            let rejected: (VLMError, Int) -> Void = { error, _ in problems.append(error.description) }
            if isLines {
                try reader.forEachLine(body, rejected: rejected)
            } else {
                try reader.forEachTopLevelElement(body, rejected: rejected)
            }
        } catch let error as VLMError {
            fatal = error
        }

        // Images.
        let done = try catalog.okImageFileNames(sourceID: sourceID)
        var existing: [String: String] = [:]
        var taken = Set<String>()
        for row in try catalog.imageKeys(prefix: "\(split)_") {
            if row.sourceID == sourceID, imageSeen.contains(row.fileName) {
                existing[row.fileName] = row.key
            } else {
                taken.insert(row.key)
            }
        }
        var keys = ImageKeys.assign(split: split, items: imagePaths.map { ($0, $0) }, existing: existing, taken: taken)
        if let part = options.part {
            // Keys (and their _dupN suffixes) were given over the whole file, so every part names a record alike;
            // the part is chosen by the image's key (`PartSpec.owns`), the same function every stage uses.
            let keyOf = Dictionary(zip(imagePaths, keys), uniquingKeysWith: { first, _ in first })
            records = records.filter { record in
                part.owns(imageKey: record.image.flatMap { keyOf[$0] }, sampleKey: record.key)
            }
            let kept = zip(imagePaths, keys).filter { part.contains(key: $0.1) }
            imagePaths = kept.map(\.0)
            keys = kept.map(\.1)
        }
        progress.finish("\(records.count) records, \(imagePaths.count) images")
        let pending = zip(imagePaths, keys).filter { !done.contains($0.0) }.map { path, key in
            PendingImage(externalID: nil, fileName: path, key: key, expected: nil)
        }
        progress.start("checking images", total: pending.count)
        try ImageScanner.scan(pending, source: imageSource, progress: progress, problems: &problems) { batch in
            try catalog.upsertImages(batch.map { image, probe, location, member in
                ImageRecord(sourceID: sourceID, key: image.key, externalID: nil, fileName: image.fileName,
                            location: location, member: member, sha256: probe.sha256, byteSize: probe.byteSize,
                            width: probe.width, height: probe.height, format: probe.format,
                            status: probe.status.rawValue, error: probe.error)
            })
        }
        progress.finish("\(pending.count) checked")

        // Instructions.
        let imageRows = try catalog.imageIDsByFileName(sourceID: sourceID)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let now = Catalog.now()
        for start in stride(from: 0, to: records.count, by: 5000) {
            let chunk = records[start..<min(start + 5000, records.count)]
            let rows = try chunk.map { record in
                InstructionRecord(
                    key: record.key, imageID: record.image.flatMap { imageRows[$0] }, sourceID: sourceID,
                    generator: "import", kind: record.kind, groupID: nil,
                    conversationsJSON: String(decoding: try encoder.encode(record.conversation.conversations), as: UTF8.self),
                    metaJSON: String(decoding: try encoder.encode(["id": record.conversation.id, "image": record.image ?? ""]), as: UTF8.self))
            }
            _ = try catalog.transaction { tx in try tx.insertInstructions(rows, paramsHash: nil, now: now) }
        }

        let all = try catalog.sourceCounts(sourceID: sourceID)
        let counts: [String: Int] = ["images": all["images"] ?? 0, "images_ok": all["images_ok"] ?? 0,
                                     "instructions": all["instructions"] ?? 0, "problems": problems.count]
        let report = StageReport(stage: "ingest llava", counts: counts, problems: problems)
        try catalog.endRun(runID, counts: counts, error: fatal?.description)
        if let fatal { throw IngestFailure(report: report, error: fatal) }
        return report
    }

    /// A record's turns: its `conversations`, or a GPT-4 QA record's `instruction` and `output`; and its kind.
    static func conversation(of value: JSONValue, id: String, image: String?, file: String, record: String) throws -> (Conversation, String) {
        let parsed: [Turn]
        var kind = "llava"
        if value["conversations"] == nil, value["instruction"] != nil || value["output"] != nil {
            let instruction = try value.string("instruction", file: file, record: record)
            let output = try value.string("output", file: file, record: record)
            if let type = try value.optionalString("type", file: file, record: record) {
                guard let mapped = qaKinds[type] else {
                    throw VLMError.badInput(file: file, record: record,
                        "field 'type' is '\(type)', expected one of \(qaKinds.keys.sorted().joined(separator: ", "))")
                }
                kind = mapped
            }
            let human = image == nil || instruction.contains("<image>") ? instruction : "<image>\n" + instruction
            parsed = [Turn(from: .human, value: human), Turn(from: .gpt, value: output)]
        } else {
            guard case .array(let turns)? = value["conversations"] else {
                throw VLMError.badInput(file: file, record: record, value["conversations"] == nil
                    ? "missing field 'conversations' (or 'instruction' and 'output')" : "field 'conversations' is not an array")
            }
            parsed = try turns.enumerated().map { t, turn -> Turn in
                let from = try turn.string("from", file: file, record: "\(record) turn \(t)")
                let text = try turn.string("value", file: file, record: "\(record) turn \(t)")
                guard let role = Turn.Role(rawValue: from) else {
                    throw VLMError.badInput(file: file, record: "\(record) turn \(t)", "'from' is '\(from)', expected 'human' or 'gpt'")
                }
                return Turn(from: role, value: text)
            }
        }
        let conversation = Conversation(id: id, image: image, conversations: parsed)
        do { try conversation.validate() } catch let error as VLMError {
            throw VLMError.badInput(file: file, record: record, error.message)
        }
        return (conversation, kind)
    }
}
