import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `ingest coco` as a stage value: COCO captions/instances JSON and their images into the catalog.
public struct IngestCOCOStep: Stage, LineageStage {
    public static let name = "ingest coco"
    /// Ingest coco and ingest llava write the same tables: one lock.
    static let writerLock: String? = "ingest"
    public static let summary = "import COCO captions/instances JSON and their images (folder, zip or tar)"
    static let reads: [String] = []
    /// The annotation files may change under the same paths: the stage always runs; its own fingerprint decides.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var captions: String?
        public var instances: String?
        public var images: String?
        public var split: String
        public var part: String?

        public init(captions: String? = nil, instances: String? = nil, images: String? = nil, split: String = "train", part: String? = nil) {
            self.captions = captions
            self.instances = instances
            self.images = images
            self.split = split
            self.part = part
        }

        enum CodingKeys: String, CodingKey, CaseIterable { case captions, instances, images, split, part }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(captions: try c.decodeIfPresent(String.self, forKey: .captions),
                      instances: try c.decodeIfPresent(String.self, forKey: .instances),
                      images: try c.decodeIfPresent(String.self, forKey: .images),
                      split: try c.value(.split, default: "train"), part: try c.decodeIfPresent(String.self, forKey: .part))
        }
    }

    public let config: Config

    public init(config: Config) throws {
        if config.captions == nil && config.instances == nil { throw invalid("captions", "or instances (or both) must be given") }
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport { try runWithLineage(context) }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: "coco:\(config.split)", config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        let options = IngestCOCO.Options(captions: config.captions, instances: config.instances, images: config.images,
                                         split: config.split, part: config.part.flatMap(PartSpec.init(parsing:)) ?? context.part)
        return try IngestCOCO(options: options).run(catalog: catalog, progress: context.progress)
    }
}

/// `ingest llava` as a stage value: an existing LLaVA JSON as images and instructions.
public struct IngestLLaVAStep: Stage, LineageStage {
    public static let name = "ingest llava"
    /// Ingest coco and ingest llava write the same tables: one lock.
    static let writerLock: String? = "ingest"
    public static let summary = "import an existing LLaVA-format JSON file as images and instructions"
    static let reads: [String] = []
    static let derived: [Catalog.DerivedTable] = [.instructions]
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var json: String
        public var images: String?
        public var split: String
        /// `--part I/N`: only the records whose image key (sample key if text-only) falls in this part.
        public var part: String?
        /// The frame of the boxes the records state (`original`, `pad`, `crop`); nil is `original`.
        public var boxFrame: String?

        public init(json: String, images: String? = nil, split: String = "llava", part: String? = nil, boxFrame: String? = nil) {
            self.json = json
            self.images = images
            self.split = split
            self.part = part
            self.boxFrame = boxFrame == BoxFrame.original.rawValue ? nil : boxFrame
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case json, images, split, part
            case boxFrame = "box_frame"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(json: try c.decode(String.self, forKey: .json), images: try c.decodeIfPresent(String.self, forKey: .images),
                      split: try c.value(.split, default: "llava"), part: try c.decodeIfPresent(String.self, forKey: .part),
                      boxFrame: try c.decodeIfPresent(String.self, forKey: .boxFrame))
        }
    }

    public let config: Config

    public init(config: Config) throws {
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        if let frame = config.boxFrame, BoxFrame(rawValue: frame) == nil {
            throw invalid("box_frame", "must be one of \(BoxFrame.allCases.map(\.rawValue).joined(separator: ", ")), not '\(frame)'")
        }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport { try runWithLineage(context) }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: "llava:\(config.split)", config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        var options = IngestLLaVA.Options(json: config.json, images: config.images, split: config.split,
                                          part: config.part.flatMap(PartSpec.init(parsing:)) ?? context.part)
        options.boxFrame = config.boxFrame.flatMap(BoxFrame.init(rawValue:)) ?? .original
        return try IngestLLaVA(options: options).run(catalog: catalog, progress: context.progress)
    }
}

/// `synth shapes` as a stage value: writes a COCO-format dataset of coloured shapes (files, not catalog rows).
public struct SynthShapesStep: Stage {
    public static let name = "synth shapes"
    public static let summary = "write a COCO-format dataset of coloured shapes with true captions and boxes"

    public struct Config: StageConfig, Equatable {
        public var count: Int
        public var seed: UInt64
        public var out: String
        public var size = 64
        public var minShapes = 1
        public var maxShapes = 3
        public var format = "png"
        public var split = "train"
        public var captionsPerImage = 3
        public var firstID = 1

        public init(count: Int, seed: UInt64 = 0, out: String) {
            self.count = count
            self.seed = seed
            self.out = out
        }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case count, seed, out, size, format, split
            case minShapes = "min_shapes", maxShapes = "max_shapes", captionsPerImage = "captions_per_image", firstID = "first_id"
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(count: try c.decode(Int.self, forKey: .count), seed: try c.value(.seed, default: 0),
                      out: try c.decode(String.self, forKey: .out))
            size = try c.value(.size, default: size)
            minShapes = try c.value(.minShapes, default: minShapes)
            maxShapes = try c.value(.maxShapes, default: maxShapes)
            format = try c.value(.format, default: format)
            split = try c.value(.split, default: split)
            captionsPerImage = try c.value(.captionsPerImage, default: captionsPerImage)
            firstID = try c.value(.firstID, default: firstID)
        }
    }

    public let config: Config

    public init(config: Config) throws {
        guard config.count >= 1 else { throw invalid("count", "must be at least 1") }
        guard (32...512).contains(config.size) else { throw invalid("size", "must be within 32...512") }
        guard ["png", "jpeg"].contains(config.format) else { throw invalid("format", "must be png or jpeg, not '\(config.format)'") }
        guard config.minShapes >= 1, config.maxShapes >= config.minShapes, config.maxShapes <= 4 else {
            throw invalid("min_shapes", "must satisfy 1 <= min_shapes <= max_shapes <= 4")
        }
        self.config = config
    }

    public func run(_ context: StageContext) throws -> StageReport {
        var options = ShapesSynth.Options(count: config.count, seed: config.seed, out: config.out)
        options.size = config.size
        options.minShapes = config.minShapes
        options.maxShapes = config.maxShapes
        options.format = config.format
        options.split = config.split
        options.captionsPerImage = config.captionsPerImage
        options.firstID = config.firstID
        do { return try ShapesSynth(options: options).run(progress: context.progress) } catch {
            throw StageFailure(stage: Self.name, error: (error as? VLMError) ?? VLMError(.io, "\(error)"))
        }
    }
}
