import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `vlmdata export llava`: instructions as a LLaVA JSON file (`[{"id", "image", "conversations"}, ...]`), in key
/// order, written atomically. Valid against `Schemas/instruction.schema.json`; `ingest llava` reads it back.
///
/// Image paths: with `imageRoot`, an image stored as a plain file is written relative to that folder (it must be
/// inside it) and one inside an archive as its member name; without it, the file name the annotation gave.
public struct ExportLLaVA {
    public struct Options: Codable, Sendable {
        public var out: String
        public var kinds: [String]?
        public var generators: [String]?
        public var imageRoot: String?

        public init(out: String, kinds: [String]? = nil, generators: [String]? = nil, imageRoot: String? = nil) {
            self.out = out
            self.kinds = kinds
            self.generators = generators
            self.imageRoot = imageRoot
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let root = options.imageRoot.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        let encoder = JSONEncoder()
        // Sorted keys make the bytes stable; a record's own keys are written in LLaVA's order by hand.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var counts: [String: Int] = ["records": 0, "with_image": 0, "text_only": 0]
        let rows = try catalog.instructionsForExport(kinds: options.kinds, generators: options.generators)
        progress.start("exporting", total: rows.count)
        try AtomicFile.withWriter(to: options.out) { writer in
            try writer.write(Array("[".utf8))
            for (index, row) in rows.enumerated() {
                let key = row.key
                let kind = row.kind
                let turnsText = row.conversations
                guard let turns = try? JSONDecoder().decode([Turn].self, from: Data(turnsText.utf8)) else {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "instructions \(key)",
                                   "conversations is not a JSON array of {from, value}")
                }
                var image: String?
                if row.imageID != nil {
                    image = try imagePath(fileName: row.fileName ?? "", location: row.location, member: row.member, root: root, key: key)
                }
                let record = Conversation(id: key, image: image, conversations: turns)
                do { try record.validate() } catch let error as VLMError {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "instructions \(key)", error.message)
                }
                try writer.write(Array((index == 0 ? "\n" : ",\n").utf8))
                var line = "{\"id\":" + String(decoding: try encoder.encode(key), as: UTF8.self)
                if let image { line += ",\"image\":" + String(decoding: try encoder.encode(image), as: UTF8.self) }
                line += ",\"conversations\":" + String(decoding: try encoder.encode(record.conversations), as: UTF8.self) + "}"
                try writer.write(Array(line.utf8))
                counts["records", default: 0] += 1
                counts[image == nil ? "text_only" : "with_image", default: 0] += 1
                counts["kind_\(kind)", default: 0] += 1
                progress.advance(by: 1)
            }
            try writer.write(Array("\n]\n".utf8))
        }
        progress.finish("\(counts["records"]!) records to \(options.out)")
        return StageReport(stage: "export llava", counts: counts)
    }

    private func imagePath(fileName: String, location: String?, member: String?, root: String?, key: String) throws -> String {
        guard let root else { return fileName }
        if let member { return member }
        guard let location else { return fileName }
        let absolute = URL(fileURLWithPath: location).standardizedFileURL.path
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard absolute.hasPrefix(prefix) else {
            throw VLMError(.invalidArgument, record: "instructions \(key)",
                           "image \(absolute) is not inside --image-root \(root)")
        }
        return String(absolute.dropFirst(prefix.count))
    }
}
