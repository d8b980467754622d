import Foundation
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
    /// Images with status `ok` and a known size, optionally limited to `keys`.
    ///
    /// With `part`, only the images whose key falls in it (`PartSpec.owns`); `limit` then counts within the part.
    public static func read(_ catalog: Catalog, limit: Int? = nil, part: PartSpec? = nil) throws -> [ImageFacts] {
        var images: [Int64: ImageFacts] = [:]
        var order: [Int64] = []
        let keep: ((String) -> Bool)? = part.map { part in { part.owns(imageKey: $0, sampleKey: $0) } }
        try catalog.readUsableImages(limit: limit, keep: keep, image: { image in
            if let limit, order.count >= limit { return false }
            images[image.id] = ImageFacts(id: image.id, key: image.key, sourceID: image.sourceID, fileName: image.fileName,
                                          width: image.width, height: image.height, captions: [], objects: [])
            order.append(image.id)
            return true
        }, caption: { caption in
            images[caption.imageID]?.captions.append((id: caption.externalID, text: caption.text))
        }, object: { object in
            guard images[object.imageID] != nil else { return }
            images[object.imageID]!.objects.append(ObjectFact(
                externalID: object.externalID, categoryID: object.categoryID, category: object.category,
                supercategory: object.supercategory, box: object.box, isCrowd: object.isCrowd))
        })
        return order.map { images[$0]! }
    }

    /// The same images as `read(catalog, part:)`, in the same order, handed over a page at a time (at most
    /// `pageSize` images): memory holds one page, not the catalog.
    public static func forEachPage(_ catalog: Catalog, part: PartSpec? = nil, pageSize: Int = 500,
                                   _ body: ([ImageFacts]) throws -> Void) throws {
        let keep: ((String) -> Bool)? = part.map { part in { part.owns(imageKey: $0, sampleKey: $0) } }
        try catalog.forEachUsableImagePage(pageSize: pageSize, keep: keep) { images, captions, objects in
            var position: [Int64: Int] = [:]
            var page = images.enumerated().map { i, image in
                position[image.id] = i
                return ImageFacts(id: image.id, key: image.key, sourceID: image.sourceID, fileName: image.fileName,
                                  width: image.width, height: image.height, captions: [], objects: [])
            }
            for caption in captions {
                if let i = position[caption.imageID] { page[i].captions.append((id: caption.externalID, text: caption.text)) }
            }
            for object in objects {
                guard let i = position[object.imageID] else { continue }
                page[i].objects.append(ObjectFact(
                    externalID: object.externalID, categoryID: object.categoryID, category: object.category,
                    supercategory: object.supercategory, box: object.box, isCrowd: object.isCrowd))
            }
            try body(page)
            return true
        }
    }

    /// How many images `forEachPage` hands over.
    public static func count(_ catalog: Catalog, part: PartSpec? = nil) throws -> Int {
        try catalog.usableImageCount(keep: part.map { part in { part.owns(imageKey: $0, sampleKey: $0) } })
    }

    /// Categories per source, in external-id order.
    public static func categories(_ catalog: Catalog) throws -> [Int64: [CategoryFact]] {
        var out: [Int64: [CategoryFact]] = [:]
        for category in try catalog.categories() {
            out[category.sourceID, default: []].append(CategoryFact(id: category.id, name: category.name,
                                                                    supercategory: category.supercategory))
        }
        return out
    }
}
