import Foundation
import VLMCore
import VLMIO

/// `vlmdata synth shapes`: a COCO-format dataset of images with one to a few coloured shapes, whose captions
/// and boxes are true for the picture. It is the embedded default data of `make demo` and what the reference
/// trainer learns from, so every caption word (colour, shape, side) can only be known from the pixels.
///
/// ```swift
/// let report = try ShapesSynth(options: .init(count: 100, seed: 1, out: "shapes")).run(progress: SilentProgress())
/// // shapes/train/000000000001.png ..., shapes/annotations/captions_train.json, instances_train.json
/// ```
public struct ShapesSynth {
    public struct Options: Codable, Sendable {
        public var count: Int
        public var seed: UInt64
        public var out: String
        public var size: Int = 64
        public var minShapes: Int = 1
        public var maxShapes: Int = 3
        public var format: String = "png"
        public var split: String = "train"
        public var captionsPerImage: Int = 3
        public var noise: Int = 8
        /// First image id, so several synth runs can be ingested as disjoint sets (held-out data).
        public var firstID: Int = 1

        public init(count: Int, seed: UInt64, out: String) {
            self.count = count
            self.seed = seed
            self.out = out
        }
    }

    public static let colours: [(name: String, rgb: (Int, Int, Int))] = [
        ("red", (220, 40, 40)), ("green", (40, 170, 60)), ("blue", (40, 80, 225)),
        ("yellow", (235, 215, 40)), ("purple", (140, 50, 190)), ("orange", (245, 135, 25)),
    ]
    public static let shapes = ["circle", "square", "triangle"]

    public struct Shape: Sendable {
        public var kind: Int      // index into `shapes`
        public var colour: Int    // index into `colours`
        public var cx: Double, cy: Double, r: Double
        public var box: Box
        public var side: String { cx < 0 ? "left" : "right" }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    public func run(progress: any ProgressSink) throws -> StageReport {
        let o = options
        guard (1...100_000_000).contains(o.count) else { throw VLMError(.invalidArgument, "--count must be at least 1") }
        guard (32...512).contains(o.size) else { throw VLMError(.invalidArgument, "--size must be within 32...512, got \(o.size)") }
        guard o.minShapes >= 1, o.maxShapes >= o.minShapes, o.maxShapes <= 4 else {
            throw VLMError(.invalidArgument, "shapes per image must be within 1...4 with min <= max")
        }
        guard o.format == "png" || o.format == "jpeg" else { throw VLMError(.invalidArgument, "--format must be png or jpeg") }
        guard (1...5).contains(o.captionsPerImage) else { throw VLMError(.invalidArgument, "--captions-per-image must be within 1...5") }
        let imageDir = o.out + "/" + o.split
        let annotationDir = o.out + "/annotations"
        for dir in [imageDir, annotationDir] {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw VLMError.io(file: dir, "cannot create folder: \(error.localizedDescription)")
            }
        }
        var imagesJSON: [COCOImage] = []
        var captionsJSON: [COCOCaption] = []
        var objectsJSON: [COCOObject] = []
        progress.start("synth shapes", total: o.count)
        let ext = o.format == "png" ? "png" : "jpg"
        for n in 0..<o.count {
            let id = o.firstID + n
            var rng = SplitMix64(seed: o.seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(id))
            let (pixels, shapes) = Self.draw(size: o.size, shapeCount: o.minShapes + rng.below(o.maxShapes - o.minShapes + 1),
                                             noise: o.noise, rng: &rng)
            let fileName = String(format: "%012d.%@", id, ext)
            let bytes = o.format == "png"
                ? try ImageEncode.png(rgb: pixels, width: o.size, height: o.size)
                : try ImageEncode.jpeg(rgb: pixels, width: o.size, height: o.size, quality: 95)
            try AtomicFile.write(bytes, to: imageDir + "/" + fileName, durable: false)
            imagesJSON.append(COCOImage(id: id, file_name: fileName, width: o.size, height: o.size))
            for (c, text) in Self.captions(for: shapes, count: o.captionsPerImage, rng: &rng).enumerated() {
                captionsJSON.append(COCOCaption(id: id * 10 + c, image_id: id, caption: text))
            }
            for (s, shape) in shapes.enumerated() {
                objectsJSON.append(COCOObject(id: id * 10 + s, image_id: id, category_id: shape.kind + 1,
                                              bbox: [shape.box.x, shape.box.y, shape.box.width, shape.box.height],
                                              area: shape.box.width * shape.box.height, iscrowd: 0,
                                              attributes: ["colour": Self.colours[shape.colour].name, "side": shape.side]))
            }
            progress.advance(by: 1)
        }
        let categories = Self.shapes.enumerated().map { COCOCategory(id: $0.offset + 1, name: $0.element, supercategory: "shape") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let info = ["description": "vlmdata synthetic shapes", "seed": String(o.seed)]
        let captionsPath = annotationDir + "/captions_\(o.split).json"
        let instancesPath = annotationDir + "/instances_\(o.split).json"
        do {
            try AtomicFile.write(Array(try encoder.encode(COCOFile(info: info, images: imagesJSON, annotations: captionsJSON, categories: nil))), to: captionsPath)
            try AtomicFile.write(Array(try encoder.encode(COCOFile(info: info, images: imagesJSON, annotations: objectsJSON, categories: categories))), to: instancesPath)
        } catch let error as VLMError { throw error } catch {
            throw VLMError.io(file: annotationDir, "cannot encode annotations: \(error)")
        }
        progress.finish("\(o.count) images in \(imageDir)")
        return StageReport(stage: "synth shapes", counts: ["images": o.count, "captions": captionsJSON.count, "objects": objectsJSON.count])
    }

    /// Draws `shapeCount` non-overlapping shapes on a noisy light background. Shape centres sit clearly left or
    /// right of the vertical midline, so "left"/"right" is never ambiguous.
    public static func draw(size: Int, shapeCount: Int, noise: Int, rng: inout SplitMix64) -> ([UInt8], [Shape]) {
        let s = Double(size)
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        for i in 0..<(size * size) {
            let base = 232 + rng.below(2 * noise + 1) - noise
            for c in 0..<3 { pixels[i * 3 + c] = UInt8(clamping: base + rng.below(5) - 2) }
        }
        var shapes: [Shape] = []
        var attempts = 0
        while shapes.count < shapeCount, attempts < 200 {
            attempts += 1
            let single = shapeCount == 1
            let r = s * (single ? 0.14 + 0.10 * rng.unit() : 0.09 + 0.07 * rng.unit())
            let left = rng.below(2) == 0
            let lo = left ? r + 1 : s * 0.62
            let hi = left ? s * 0.38 : s - r - 1
            guard hi > lo else { continue }
            let cx = lo + (hi - lo) * rng.unit()
            let cy = r + 1 + (s - 2 * r - 2) * rng.unit()
            let overlaps = shapes.contains { other in
                abs(other.cx + s / 2 - cx) < other.r + r + 2 && abs(other.cy - cy) < other.r + r + 2
            }
            if overlaps { continue }
            let shapeKind = rng.below(Self.shapes.count)
            let colour = rng.below(Self.colours.count)
            guard let box = fill(&pixels, size: size, kind: shapeKind, colour: colour, cx: cx, cy: cy, r: r, noise: noise, rng: &rng) else { continue }
            // cx is stored relative to the midline: negative is left.
            shapes.append(Shape(kind: shapeKind, colour: colour, cx: cx - s / 2, cy: cy, r: r, box: box))
        }
        return (pixels, shapes)
    }

    /// Paints one shape; returns its tight pixel box.
    static func fill(_ pixels: inout [UInt8], size: Int, kind: Int, colour: Int, cx: Double, cy: Double, r: Double,
                     noise: Int, rng: inout SplitMix64) -> Box? {
        let (cr, cg, cb) = colours[colour].rgb
        var minX = Int.max, minY = Int.max, maxX = -1, maxY = -1
        for y in max(0, Int(cy - r) - 1)...min(size - 1, Int(cy + r) + 1) {
            for x in max(0, Int(cx - r) - 1)...min(size - 1, Int(cx + r) + 1) {
                let px = Double(x) + 0.5, py = Double(y) + 0.5
                let inside: Bool
                switch kind {
                case 0: inside = (px - cx) * (px - cx) + (py - cy) * (py - cy) <= r * r
                case 1: inside = abs(px - cx) <= r * 0.9 && abs(py - cy) <= r * 0.9
                default:
                    // Upward triangle: apex (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r).
                    let t = (py - (cy - r)) / (2 * r)
                    inside = t >= 0 && t <= 1 && abs(px - cx) <= r * t
                }
                guard inside else { continue }
                let i = (y * size + x) * 3
                let jitter = noise > 0 ? rng.below(noise + 1) - noise / 2 : 0
                pixels[i] = UInt8(clamping: cr + jitter)
                pixels[i + 1] = UInt8(clamping: cg + jitter)
                pixels[i + 2] = UInt8(clamping: cb + jitter)
                minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
            }
        }
        guard maxX >= 0 else { return nil }
        return Box(x: Double(minX), y: Double(minY), width: Double(maxX - minX + 1), height: Double(maxY - minY + 1))
    }

    /// Captions that are true for the picture: every shape with its colour and side, left to right.
    static func captions(for shapes: [Shape], count: Int, rng: inout SplitMix64) -> [String] {
        let ordered = shapes.sorted { $0.cx < $1.cx }
        let phrases = ordered.map { "\(colours[$0.colour].name) \(Self.shapes[$0.kind])" }
        func a(_ phrase: String) -> String { (phrase.first.map { "aeiou".contains($0) } ?? false) ? "an \(phrase)" : "a \(phrase)" }
        let sides = ordered.map(\.side)
        let templates: [([String], [String]) -> String] = [
            { p, s in zip(p, s).map { "\(a($0)) on the \($1)" }.joined(separator: " and ") },
            { p, s in "there is " + zip(p, s).map { "\(a($0)) on the \($1)" }.joined(separator: " and ") },
            { p, s in zip(p, s).map { "\(a($0)) on the \($1) side" }.joined(separator: " and ") + " of the image" },
            { p, s in "an image with " + zip(p, s).map { "\(a($0)) on the \($1)" }.joined(separator: " and ") },
            { p, s in zip(p, s).map { "on the \($1), \(a($0))" }.joined(separator: "; ") },
        ]
        var order = Array(templates.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
        // The first caption always uses the plainest form, so a one-caption dataset is uniform.
        order.removeAll { $0 == 0 }
        order.insert(0, at: 0)
        return order.prefix(count).map { templates[$0](phrases, sides) }
    }
}

struct COCOImage: Encodable { var id: Int; var file_name: String; var width: Int; var height: Int }
struct COCOCaption: Encodable { var id: Int; var image_id: Int; var caption: String }
struct COCOObject: Encodable {
    var id: Int; var image_id: Int; var category_id: Int; var bbox: [Double]; var area: Double; var iscrowd: Int
    var attributes: [String: String]
}
struct COCOCategory: Encodable { var id: Int; var name: String; var supercategory: String }
struct COCOFile<A: Encodable>: Encodable {
    var info: [String: String]
    var images: [COCOImage]
    var annotations: [A]
    var categories: [COCOCategory]?
}
