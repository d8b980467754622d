import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMText

/// `vlmdata export llava`: instructions as a LLaVA JSON file (`[{"id", "image", "conversations"}, ...]`), in id
/// order, written atomically. Valid against `Schemas/instruction.schema.json`; `ingest llava` reads it back.
///
/// Layouts (docs/export.md):
/// - `.perImage` (the default): one record per image, as LLaVA's 665K mix is laid out and as `tokenize` groups: an
///   image's instructions in catalog (id) order become one multi-turn conversation (`TurnGrouping.merge`: `<image>`
///   only in the first human turn), split only where they state different box frames
///   (`TokenizeStage.frameGroups`). The record's id is its first instruction's key, the key `tokenize` gives the
///   sample. Text-only instructions are a record each. No length limit applies: that needs a tokenizer.
/// - `.perInstruction`: one record per instruction, the instruction's turns as stored.
/// - `tokenizedConfig`: one record per sample of that tokenize config, exactly the samples it made (its
///   `--max-length` splits included); error and dropped rows are left out and counted.
///
/// An instruction whose conversation is not LLaVA's shape is left out and named in the report's problems; the
/// others are written (its image's other instructions still make one record).
///
/// Image paths: with `imageRoot`, an image stored as a plain file is written relative to that folder (it must be
/// inside it) and one inside an archive as its member name; without it, the file name the annotation gave.
public struct ExportLLaVA {
    /// How instructions become records.
    public enum Layout: String, Codable, Sendable {
        /// One record per image (per box frame its instructions state), the instructions' turns merged in order.
        case perImage = "per-image"
        /// One record per instruction (`--per-instruction`).
        case perInstruction = "per-instruction"
    }

    public struct Options: Codable, Sendable {
        public var out: String
        public var kinds: [String]?
        public var generators: [String]?
        public var imageRoot: String?
        public var layout: Layout = .perImage
        /// Export the samples of this tokenize config (a full hash) instead of grouping here.
        public var tokenizedConfig: String?

        public init(out: String, kinds: [String]? = nil, generators: [String]? = nil, imageRoot: String? = nil,
                    layout: Layout = .perImage, tokenizedConfig: String? = nil) {
            self.out = out
            self.kinds = kinds
            self.generators = generators
            self.imageRoot = imageRoot
            self.layout = layout
            self.tokenizedConfig = tokenizedConfig
        }
    }

    /// One LLaVA record and the instructions it holds.
    struct Record {
        var id: String
        var image: String?
        var conversations: [Turn]
        var instructions: Int
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let root = options.imageRoot.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        var counts: [String: Int] = ["records": 0, "instructions": 0, "with_image": 0, "text_only": 0, "bad": 0]
        var problems: [String] = []
        let records: [Record]
        let available: Int
        if let config = options.tokenizedConfig {
            let stored = try catalog.tokenizedSamplesForExport(configHash: config)
            available = stored.instructions
            progress.start("exporting", total: stored.samples.count)
            records = try tokenizedRecords(stored.samples, catalog: catalog, root: root, counts: &counts, progress: progress)
        } else {
            let rows = try catalog.instructionsForExport(kinds: options.kinds, generators: options.generators)
            available = rows.count
            progress.start("exporting", total: rows.count)
            var valid: [(row: Catalog.ExportedInstruction, turns: [Turn])] = []
            for row in rows {
                defer { progress.advance(by: 1) }
                switch Self.turns(row, catalog: catalog) {
                case .success(let turns):
                    valid.append((row, turns))
                    counts["kind_\(row.kind)", default: 0] += 1
                case .failure(let error):
                    counts["bad", default: 0] += 1
                    if problems.count < 1000 { problems.append(error.description) }
                }
            }
            records = options.layout == .perInstruction
                ? try valid.map { try record([$0], root: root) }
                : try grouped(valid, root: root, byFrame: try catalog.instructionBoxFrames().count > 1)
        }
        // The invariants the file promises: every record is LLaVA's shape, ids are unique, and every instruction
        // read is in exactly one record or reported.
        var ids = Set<String>()
        for record in records {
            do { try Conversation(id: record.id, image: record.image, conversations: record.conversations).validate() } catch let error as VLMError {
                throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "record \(record.id)", error.message)
            }
            guard ids.insert(record.id).inserted else {
                throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "record \(record.id)", "two records have this id")
            }
            counts["records", default: 0] += 1
            counts["instructions", default: 0] += record.instructions
            counts[record.image == nil ? "text_only" : "with_image", default: 0] += 1
        }
        let accounted = counts["instructions"]! + counts["bad"]! + counts["not_trained", default: 0]
        guard accounted == available else {
            throw VLMError(.corrupt, file: catalog.workspace.catalogPath,
                           "\(available) instructions read but \(accounted) exported or reported")
        }
        if records.isEmpty, available > 0 {
            throw VLMError(.badInput, file: catalog.workspace.catalogPath,
                           "no record to export: every instruction read was left out (first: \(problems.first ?? "none"))")
        }
        try write(records)
        progress.finish("\(records.count) records (\(counts["instructions"]!) instructions) to \(options.out)")
        return StageReport(stage: "export llava", counts: counts, problems: problems, problemCount: counts["bad"]!)
    }

    /// The instruction's turns, or the error naming it when they are not LLaVA's shape (as `tokenize` checks them).
    static func turns(_ row: Catalog.ExportedInstruction, catalog: Catalog) -> Result<[Turn], VLMError> {
        let name = "instruction \(row.key)"
        guard let turns = try? JSONDecoder().decode([Turn].self, from: Data(row.conversations.utf8)) else {
            return .failure(VLMError(.corrupt, file: catalog.workspace.catalogPath, record: name,
                                     "conversations is not a JSON array of {from, value}"))
        }
        do {
            try Conversation(id: row.key, image: row.imageID == nil ? nil : "image", conversations: turns).validate()
        } catch let error as VLMError {
            return .failure(VLMError(.corrupt, file: catalog.workspace.catalogPath, record: name, error.message))
        } catch {
            return .failure(VLMError(.corrupt, file: catalog.workspace.catalogPath, record: name, "\(error)"))
        }
        return .success(turns)
    }

    /// One record of these instructions of one image (or one text-only instruction): the first one's key and image,
    /// the turns merged as `tokenize` merges them.
    func record(_ items: [(row: Catalog.ExportedInstruction, turns: [Turn])], root: String?) throws -> Record {
        let head = items[0].row
        let image = try head.imageID.map { _ in try imagePath(head, root: root) }
        let turns = items.count == 1 ? items[0].turns : TurnGrouping.merge(items.map { $0.turns })
        return Record(id: head.key, image: image, conversations: turns, instructions: items.count)
    }

    /// The per-image records: each image's instructions in id order, one record per box-frame group; text-only
    /// instructions one record each. In the order of the records' ids.
    func grouped(_ valid: [(row: Catalog.ExportedInstruction, turns: [Turn])], root: String?, byFrame: Bool) throws -> [Record] {
        var byImage: [Int64: [Int]] = [:]
        var records: [Record] = []
        for (index, item) in valid.enumerated() {
            if let image = item.row.imageID { byImage[image, default: []].append(index) } else { records.append(try record([item], root: root)) }
        }
        for indices in byImage.values {
            let items = indices.map { valid[$0] }.sorted { $0.row.id < $1.row.id }
            let frames = items.map { Self.boxFrame($0.row.meta) }
            for group in TokenizeStage.frameGroups(frames, byFrame: byFrame) where !group.isEmpty {
                records.append(try record(group.map { items[$0] }, root: root))
            }
        }
        return records.sorted { $0.id < $1.id }
    }

    /// The records of a tokenize config's samples: a grouped sample's merged turns as it stored them, else its one
    /// instruction's turns. Error and dropped rows were not trained on: counted (`not_trained`), not written.
    func tokenizedRecords(_ samples: [Catalog.ExportedSample], catalog: Catalog, root: String?, counts: inout [String: Int],
                          progress: any ProgressSink) throws -> [Record] {
        var records: [Record] = []
        for stored in samples {
            defer { progress.advance(by: 1) }
            let row = stored.instruction
            guard stored.status == "ok" || stored.status == "truncated" else {
                counts["not_trained", default: 0] += 1
                counts["not_trained_\(stored.status)", default: 0] += 1
                continue
            }
            if stored.status == "truncated" { counts["truncated", default: 0] += 1 }
            let image = try row.imageID.map { _ in try imagePath(row, root: root) }
            if let json = stored.sample {
                let info: GroupedSampleInfo
                do { info = try GroupedSampleInfo.decode(json) } catch let error as VLMError {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "tokenized sample \(row.key)", error.message)
                }
                records.append(Record(id: row.key, image: image, conversations: info.conversations, instructions: info.keys.count))
            } else {
                switch Self.turns(row, catalog: catalog) {
                case .success(let turns): records.append(Record(id: row.key, image: image, conversations: turns, instructions: 1))
                case .failure(let error): throw error   // tokenize wrote tokens for it: the catalog changed since
                }
            }
        }
        return records
    }

    /// The box frame an instruction's metadata states (`meta.box_frame`), as `tokenize` reads it.
    static func boxFrame(_ meta: String?) -> String? {
        guard let meta, let object = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any] else { return nil }
        return object["box_frame"] as? String
    }

    /// Writes the records, one a line, LLaVA's keys in LLaVA's order.
    private func write(_ records: [Record]) throws {
        let encoder = JSONEncoder()
        // Sorted keys make the bytes stable; a record's own keys are written in LLaVA's order by hand.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.withWriter(to: options.out) { writer in
            try writer.write(Array("[".utf8))
            for (index, record) in records.enumerated() {
                try writer.write(Array((index == 0 ? "\n" : ",\n").utf8))
                var line = "{\"id\":" + String(decoding: try encoder.encode(record.id), as: UTF8.self)
                if let image = record.image { line += ",\"image\":" + String(decoding: try encoder.encode(image), as: UTF8.self) }
                line += ",\"conversations\":" + String(decoding: try encoder.encode(record.conversations), as: UTF8.self) + "}"
                try writer.write(Array(line.utf8))
            }
            try writer.write(Array("\n]\n".utf8))
        }
    }

    private func imagePath(_ row: Catalog.ExportedInstruction, root: String?) throws -> String {
        let fileName = row.fileName ?? ""
        guard let root else { return fileName }
        if let member = row.member { return member }
        guard let location = row.location else { return fileName }
        let absolute = URL(fileURLWithPath: location).standardizedFileURL.path
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard absolute.hasPrefix(prefix) else {
            throw VLMError(.invalidArgument, record: "instructions \(row.key)",
                           "image \(absolute) is not inside --image-root \(root)")
        }
        return String(absolute.dropFirst(prefix.count))
    }
}
