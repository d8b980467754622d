import Foundation
import VLMCatalog
import VLMCore
import VLMInstruct
import VLMIO

/// What `vlmdata eval build` was asked for.
public struct EvalBuildOptions: Codable, Sendable {
    public var kind: EvalKind
    /// The ingested split (`sources.name`) whose annotations make the questions.
    public var split: String
    /// Images to use (nil: every eligible image of the split).
    public var count: Int?
    public var seed: UInt64 = 0
    /// POPE: the samplings to build (each over the same images, as POPE's three files are).
    public var popeSampling: [PopeSampling] = PopeSampling.allCases
    /// Grounding: the frame boxes are normalized in.
    public var frame: BoxFrame = .original
    /// The output folder.
    public var out: String
    /// The set's name in the catalog (default: the output folder's name).
    public var name: String?

    public init(kind: EvalKind, split: String, out: String) {
        self.kind = kind
        self.split = split
        self.out = out
    }

    public var setName: String { name ?? URL(fileURLWithPath: out).standardizedFileURL.lastPathComponent }
}

/// What a build produced.
public struct EvalBuildReport: Sendable, Codable, Equatable {
    public var manifest: EvalSetManifest
    public var directory: String
    /// Questions per category (POPE: per sampling).
    public var categories: [String: Int]
    /// Answer-key labels: "yes"/"no" for POPE and MME, letters for MMBench.
    public var labels: [String: Int]
}

/// Builds a held-out evaluation set from a split's annotations, writes it in the formats the benchmarks' scripts
/// read, and records its images in the catalog so training shards leave them out.
///
/// ```swift
/// var options = EvalBuildOptions(kind: .pope, split: "val2017", out: "eval/pope")
/// options.count = 100
/// let report = try EvalSetBuilder(catalog: catalog, options: options).build()
/// ```
public struct EvalSetBuilder {
    public let catalog: Catalog
    public let options: EvalBuildOptions

    public init(catalog: Catalog, options: EvalBuildOptions) {
        self.catalog = catalog
        self.options = options
    }

    /// The parameters that define the set (hashed into `eval_sets.params_hash`).
    struct Params: Codable {
        var format = 1
        var kind: EvalKind
        var split: String
        var count: Int?
        var seed: UInt64
        var sampling: [PopeSampling]?
        var frame: BoxFrame?
    }

    public func build() throws -> EvalBuildReport {
        if let count = options.count, count < 1 {
            throw VLMError(.invalidArgument, record: "--count", "must be at least 1")
        }
        guard !options.popeSampling.isEmpty else {
            throw VLMError(.invalidArgument, record: "--pope-sampling", "give at least one sampling")
        }
        let sourceID = try catalog.sourceID(split: options.split)
        let all = try ImageFactsReader.read(catalog).filter { $0.sourceID == sourceID }
        let files = try catalog.imageFiles(ids: all.map(\.id))
        // Only images whose bytes are known can be held out by sha256.
        let images = all.filter { files[$0.id] != nil }
        let vocabulary = try ImageFactsReader.categories(catalog)[sourceID] ?? []
        guard !images.isEmpty else {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, record: "--split \(options.split)",
                           "the split has no readable images with annotations; ingest it with --images and --instances")
        }
        let stats = SplitStatistics(images: images, vocabulary: vocabulary.map(\.name))
        var generator = EvalQuestionGenerator(kind: options.kind, stats: stats, frame: options.frame,
                                              samplings: options.popeSampling)
        var rng = SplitMix64(seed: options.seed ^ 0x9E37_79B9_7F4A_7C15)
        var eligible = images.filter { generator.isEligible($0) }
        guard !eligible.isEmpty else {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, record: "--split \(options.split)",
                           "no image of the split can carry \(options.kind.rawValue) questions (\(EvalQuestionGenerator.requirement(options.kind)))")
        }
        let eligibleCount = eligible.count
        rng.shuffle(&eligible)
        if let count = options.count {
            guard count <= eligible.count else {
                throw VLMError(.invalidArgument, record: "--count \(count)",
                               "the split has only \(eligible.count) images that can carry \(options.kind.rawValue) questions")
            }
            eligible = Array(eligible.prefix(count))
        }
        let chosen = eligible.sorted { $0.key < $1.key }
        let items = generator.make(chosen, rng: &rng)

        try write(items: items, chosen: chosen, files: files)
        var counted: [String: Int] = [:], labels: [String: Int] = [:]
        for item in items {
            counted[item.question.category, default: 0] += 1
            if let label = item.key.label ?? item.key.answer { labels[label, default: 0] += 1 }
        }
        try check(items: items, chosen: chosen)

        var manifest = self.manifest(questions: items.count, images: chosen.count, ineligible: images.count - eligibleCount)
        if options.kind == .caption { manifest.vocabulary = generator.captionVocabulary }
        try AtomicFile.write(Array(try EvalFiles.encoder().encode(manifest)) + [0x0A], to: path(EvalFiles.manifest))
        let params = Params(kind: options.kind, split: options.split, count: options.count, seed: options.seed,
                            sampling: options.kind == .pope ? options.popeSampling : nil,
                            frame: options.kind == .refcoco ? options.frame : nil)
        try catalog.recordEvalSet(Catalog.EvalSetRecord(
            name: options.setName, kind: options.kind.rawValue, split: options.split,
            params: String(decoding: Hashing.canonicalJSON(params), as: UTF8.self), paramsHash: Hashing.canonicalHash(params),
            directory: directory, questions: items.count,
            images: chosen.map { Catalog.EvalImageRef(imageID: $0.id, sha256: files[$0.id]!.sha256) }))
        return EvalBuildReport(manifest: manifest, directory: directory, categories: counted, labels: labels)
    }

    var directory: String { URL(fileURLWithPath: options.out).standardizedFileURL.path }

    func path(_ name: String) -> String { directory + "/" + name }

    func manifest(questions: Int, images: Int, ineligible: Int) -> EvalSetManifest {
        var files = [EvalFiles.manifest, EvalFiles.questions, EvalFiles.answerKey]
        if options.kind == .pope {
            files += options.popeSampling.map { "\(EvalFiles.popeAnnotations)/coco_pope_\($0.rawValue).json" }
        }
        if options.kind == .mmbench { files.append(EvalFiles.mmbenchTSV) }
        return EvalSetManifest(name: options.setName, kind: options.kind, split: options.split, seed: options.seed,
                               count: options.count, sampling: options.kind == .pope ? options.popeSampling : nil,
                               frame: options.kind == .refcoco ? options.frame : nil, questions: questions,
                               images: images, ineligible_images: ineligible, files: files)
    }

    /// Writes the question file, the answer key and the kind's own files.
    func write(items: [EvalItem], chosen: [ImageFacts], files: [Int64: (sha256: String, location: String, member: String?)]) throws {
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw VLMError.io(file: directory, "cannot create folder: \(error.localizedDescription)")
        }
        try AtomicFile.write(try EvalFiles.jsonl(items.map(\.question)), to: path(EvalFiles.questions))
        try AtomicFile.write(try EvalFiles.jsonl(items.map(\.key)), to: path(EvalFiles.answerKey))
        switch options.kind {
        case .pope:
            // LLaVA's eval_pope.py zips each annotation file with the answers of that category in question order.
            let folder = path(EvalFiles.popeAnnotations)
            try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for sampling in options.popeSampling {
                let lines = items.filter { $0.key.sampling == sampling.rawValue }.map {
                    POPEAnnotation(question_id: $0.question.question_id, image: $0.question.image,
                                   text: String($0.question.text.prefix { $0 != "\n" }), label: $0.key.label ?? "")
                }
                try AtomicFile.write(try EvalFiles.jsonl(lines), to: folder + "/coco_pope_\(sampling.rawValue).json")
            }
        case .mmbench:
            let byID = Dictionary(uniqueKeysWithValues: chosen.map { ($0.id, $0) })
            var base64: [String: String] = [:]
            for image in byID.values {
                guard let file = files[image.id] else { continue }
                base64[image.key] = Data(try ImageBytes.read(location: file.location, member: file.member)).base64EncodedString()
            }
            try AtomicFile.write(Array(MMBenchTSV.render(items, images: base64).utf8), to: path(EvalFiles.mmbenchTSV))
        case .mme, .refcoco, .caption:
            break
        }
    }

    /// The set's invariants, checked before it is reported built.
    func check(items: [EvalItem], chosen: [ImageFacts]) throws {
        let ids = items.map(\.question.question_id)
        guard Set(ids).count == ids.count else {
            throw VLMError(.corrupt, file: path(EvalFiles.questions), "question ids are not unique")
        }
        switch options.kind {
        case .pope:
            for sampling in options.popeSampling {
                let labels = items.filter { $0.key.sampling == sampling.rawValue }.map { $0.key.label }
                let yes = labels.filter { $0 == "yes" }.count
                guard yes * 2 == labels.count, labels.count == chosen.count * 6 else {
                    throw VLMError(.corrupt, file: path(EvalFiles.answerKey), record: sampling.rawValue,
                                   "\(yes) of \(labels.count) answers are yes; POPE needs 3 yes and 3 no per image")
                }
            }
        case .mme:
            let pairs = Dictionary(grouping: items, by: { $0.key.pair ?? "" })
            for (pair, members) in pairs where members.count != 2 || Set(members.map { $0.key.label }) != ["yes", "no"] {
                throw VLMError(.corrupt, file: path(EvalFiles.answerKey), record: "pair \(pair)",
                               "an MME image needs one yes and one no question")
            }
        case .mmbench:
            let groups = Dictionary(grouping: items, by: { $0.key.group ?? -1 })
            for (group, members) in groups {
                let letters = Set(members.compactMap { $0.key.answer })
                let texts = Set(members.compactMap { $0.key.options?[$0.key.answer ?? ""] })
                guard members.count == 4, letters == ["A", "B", "C", "D"], texts.count == 1 else {
                    throw VLMError(.corrupt, file: path(EvalFiles.answerKey), record: "group \(group)",
                                   "the 4 circular rotations must each put the same answer under another letter")
                }
            }
        case .refcoco:
            for item in items {
                guard let box = item.key.bbox, box.count == 4, box[0] < box[2], box[1] < box[3],
                      box.allSatisfy({ $0 >= 0 && $0 <= 1 }) else {
                    throw VLMError(.corrupt, file: path(EvalFiles.answerKey), record: "question \(item.question.question_id)",
                                   "the box is not a normalized [x1, y1, x2, y2] with x1 < x2 and y1 < y2")
                }
            }
        case .caption:
            for item in items where (item.key.reference ?? [:]).isEmpty || item.key.caption == nil {
                throw VLMError(.corrupt, file: path(EvalFiles.answerKey), record: "question \(item.question.question_id)",
                               "a caption question needs a reference caption that names a colour, category or side")
            }
            guard items.count == chosen.count else {
                throw VLMError(.corrupt, file: path(EvalFiles.answerKey), "\(items.count) caption questions for \(chosen.count) images")
            }
        }
    }
}

/// One line of LLaVA's POPE annotation files (`coco_pope_<sampling>.json`).
struct POPEAnnotation: Codable {
    var question_id: Int
    var image: String
    var text: String
    var label: String
}

/// An image's bytes, from a plain file or an archive member.
enum ImageBytes {
    static func read(location: String, member: String?) throws -> [UInt8] {
        guard let member else {
            guard let data = FileManager.default.contents(atPath: location) else {
                throw VLMError(.notFound, file: location, "cannot read the image file")
            }
            return Array(data)
        }
        var found: [UInt8]?
        let reader = try ArchiveReader(path: location)
        try reader.forEachEntry { entry in
            guard entry.name == member else { return .skip }
            found = try entry.readAll()
            return .stop
        }
        guard let found else { throw VLMError(.notFound, file: location, record: member, "the archive has no such member") }
        return found
    }
}
