import Foundation
import GRDB
import VLMCatalog
import VLMCore

/// One annotated object of an image, as the catalog holds it.
public struct ObjectFact: Sendable, Hashable {
    public var externalID: Int64
    public var categoryID: Int64
    public var category: String
    public var supercategory: String?
    /// COCO box in pixels.
    public var box: Box
    public var isCrowd: Bool

    public init(externalID: Int64, categoryID: Int64, category: String, supercategory: String?, box: Box, isCrowd: Bool) {
        self.externalID = externalID
        self.categoryID = categoryID
        self.category = category
        self.supercategory = supercategory
        self.box = box
        self.isCrowd = isCrowd
    }
}

/// A category of a source (COCO's `categories`).
public struct CategoryFact: Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var supercategory: String?

    public init(id: Int64, name: String, supercategory: String?) {
        self.id = id
        self.name = name
        self.supercategory = supercategory
    }
}

/// Everything the generators know about one image: size, captions and objects.
public struct ImageFacts: Sendable {
    public var id: Int64
    public var key: String
    public var sourceID: Int64
    public var fileName: String
    public var width: Int
    public var height: Int
    /// In annotation order (caption external id).
    public var captions: [(id: Int64, text: String)]
    /// In annotation order (object external id).
    public var objects: [ObjectFact]

    public init(id: Int64, key: String, sourceID: Int64, fileName: String, width: Int, height: Int,
                captions: [(id: Int64, text: String)], objects: [ObjectFact]) {
        self.id = id
        self.key = key
        self.sourceID = sourceID
        self.fileName = fileName
        self.width = width
        self.height = height
        self.captions = captions
        self.objects = objects
    }

    /// `[x1, y1, x2, y2]` normalized to `frame` (the image, LLaVA-1.5's padded square, or the centre crop) and
    /// rounded to 2 decimals, as the text shows it; nil when the crop cuts the box off.
    public func normalizedBox(_ object: ObjectFact, in frame: BoxFrame = .original) -> [Double]? {
        frame.normalized(object.box, imageWidth: width, imageHeight: height)?.map { ($0 * 100).rounded() / 100 }
    }

    /// The fraction of the image the box covers.
    public func areaFraction(_ object: ObjectFact) -> Double {
        (object.box.width * object.box.height) / Double(max(1, width * height))
    }
}

/// Reads images with their captions and objects from the catalog, in key order.
public enum ImageFactsReader {
    /// The usable images in key order; captions and objects in image order (read through their (image_id,
    /// external_id) keys, no sort). `QueryCostTests` (VLMPipelineTests) checks the growth.
    package static let imagesSQL = """
        SELECT id, key, source_id, file_name, width, height FROM images
        WHERE status = 'ok' AND width > 0 AND height > 0 ORDER BY key
        """
    package static let captionsSQL = "SELECT image_id, external_id, text FROM captions ORDER BY image_id, external_id"
    package static let objectsSQL = """
        SELECT o.image_id, o.external_id, o.category_id, c.name, c.supercategory, o.x, o.y, o.w, o.h, o.iscrowd
        FROM objects o JOIN categories c ON c.id = o.category_id ORDER BY o.image_id, o.external_id
        """

    /// Images with status `ok` and a known size, optionally limited to `keys`. Images are read in batches so a
    /// large catalog is never held twice.
    ///
    /// With `part`, only the images whose key falls in it (`PartSpec.owns`); `limit` then counts within the part.
    public static func read(_ catalog: Catalog, limit: Int? = nil, part: PartSpec? = nil) throws -> [ImageFacts] {
        try catalog.read { db in
            var images: [Int64: ImageFacts] = [:]
            var order: [Int64] = []
            let sql = Self.imagesSQL + (part == nil ? limit.map { " LIMIT \($0)" } ?? "" : "")
            for row in try Row.fetchAll(db, sql: sql) {
                if let part, !part.owns(imageKey: row[1], sampleKey: row[1]) { continue }
                if let limit, order.count >= limit { break }
                let id: Int64 = row[0]
                images[id] = ImageFacts(id: id, key: row[1], sourceID: row[2], fileName: row[3], width: row[4],
                                        height: row[5], captions: [], objects: [])
                order.append(id)
            }
            for row in try Row.fetchAll(db, sql: Self.captionsSQL) {
                let imageID: Int64 = row[0]
                images[imageID]?.captions.append((id: row[1], text: row[2]))
            }
            for row in try Row.fetchAll(db, sql: Self.objectsSQL) {
                let imageID: Int64 = row[0]
                guard images[imageID] != nil else { continue }
                images[imageID]!.objects.append(ObjectFact(
                    externalID: row[1], categoryID: row[2], category: row[3], supercategory: row[4],
                    box: Box(x: row[5], y: row[6], width: row[7], height: row[8]), isCrowd: (row[9] as Int) != 0))
            }
            return order.map { images[$0]! }
        }
    }

    /// Categories per source, in external-id order.
    public static func categories(_ catalog: Catalog) throws -> [Int64: [CategoryFact]] {
        try catalog.read { db in
            var out: [Int64: [CategoryFact]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT source_id, id, name, supercategory FROM categories ORDER BY source_id, external_id") {
                out[row[0], default: []].append(CategoryFact(id: row[1], name: row[2], supercategory: row[3]))
            }
            return out
        }
    }
}
