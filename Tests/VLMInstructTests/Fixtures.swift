import Foundation
import GRDB
import VLMCatalog
import VLMCore
@testable import VLMInstruct

/// coco-mini's annotations, read straight from the JSON (independently of the catalog) for truth checks.
struct CocoMini {
    struct Image { var id: Int; var fileName: String; var width: Int; var height: Int }
    struct Annotation { var id: Int; var imageID: Int; var categoryID: Int; var bbox: [Double]; var iscrowd: Bool }
    struct Category { var id: Int; var name: String; var supercategory: String }

    var images: [Image] = []
    var annotations: [Annotation] = []
    var categories: [Category] = []
    var captions: [(id: Int, imageID: Int, text: String)] = []

    static let shared: CocoMini = try! CocoMini()

    init() throws {
        let dir = TestPaths.sharedData.appendingPathComponent("coco-mini/annotations")
        let instances = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("instances_train2017.json"))) as! [String: Any]
        let captionsJSON = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("captions_train2017.json"))) as! [String: Any]
        for image in instances["images"] as! [[String: Any]] {
            images.append(Image(id: image["id"] as! Int, fileName: image["file_name"] as! String,
                                width: image["width"] as! Int, height: image["height"] as! Int))
        }
        for a in instances["annotations"] as! [[String: Any]] {
            annotations.append(Annotation(id: a["id"] as! Int, imageID: a["image_id"] as! Int, categoryID: a["category_id"] as! Int,
                                          bbox: (a["bbox"] as! [Any]).map { ($0 as! NSNumber).doubleValue },
                                          iscrowd: (a["iscrowd"] as? Int ?? 0) != 0))
        }
        for c in instances["categories"] as! [[String: Any]] {
            categories.append(Category(id: c["id"] as! Int, name: c["name"] as! String, supercategory: c["supercategory"] as! String))
        }
        for c in captionsJSON["annotations"] as! [[String: Any]] {
            captions.append((id: c["id"] as! Int, imageID: c["image_id"] as! Int, text: c["caption"] as! String))
        }
    }

    static func key(_ image: Image) -> String {
        "train2017_" + SampleKey.sanitize((image.fileName as NSString).deletingPathExtension)
    }

    /// A workspace whose catalog holds coco-mini, written through `Catalog.write` as `ingest coco` would.
    func catalog(in dir: URL) throws -> Catalog {
        let catalog = try Catalog(workspace: Workspace(root: dir.path))
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO sources (kind, name, uri, fingerprint, created_at) VALUES ('coco', 'train2017', 'coco-mini', 'x', 'now')
                """)
            let source = db.lastInsertedRowID
            var categoryRow: [Int: Int64] = [:]
            for c in categories {
                try db.execute(sql: "INSERT INTO categories (source_id, external_id, name, supercategory) VALUES (?, ?, ?, ?)",
                               arguments: [source, c.id, c.name, c.supercategory])
                categoryRow[c.id] = db.lastInsertedRowID
            }
            var imageRow: [Int: Int64] = [:]
            for image in images {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, location, width, height, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 'ok')
                    """, arguments: [source, CocoMini.key(image), image.id, image.fileName,
                                     TestPaths.sharedData.appendingPathComponent("coco-mini/train2017/\(image.fileName)").path,
                                     image.width, image.height])
                imageRow[image.id] = db.lastInsertedRowID
            }
            for c in captions {
                try db.execute(sql: "INSERT INTO captions (image_id, external_id, text) VALUES (?, ?, ?)",
                               arguments: [imageRow[c.imageID]!, c.id, c.text])
            }
            for a in annotations {
                try db.execute(sql: """
                    INSERT INTO objects (image_id, category_id, external_id, x, y, w, h, area, iscrowd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [imageRow[a.imageID]!, categoryRow[a.categoryID]!, a.id, a.bbox[0], a.bbox[1], a.bbox[2],
                                     a.bbox[3], a.bbox[2] * a.bbox[3], a.iscrowd ? 1 : 0])
            }
        }
        return catalog
    }
}

/// An instruction row as stored.
struct StoredInstruction {
    var key: String
    var imageKey: String
    var kind: String
    var groupID: String?
    var turns: [Turn]
    var meta: [String: Any]
    var conversationsText: String
    var metaText: String
}

func storedInstructions(_ catalog: Catalog, generator: String = "templates") throws -> [StoredInstruction] {
    try catalog.read { db in
        try Row.fetchAll(db, sql: """
            SELECT i.key, m.key, i.kind, i.group_id, i.conversations, i.meta FROM instructions i
            JOIN images m ON m.id = i.image_id WHERE i.generator = ? ORDER BY i.key
            """, arguments: [generator]).map { row in
            let conversations: String = row[4]
            let meta: String = row[5]
            return StoredInstruction(
                key: row[0], imageKey: row[1], kind: row[2], groupID: row[3],
                turns: try JSONDecoder().decode([Turn].self, from: Data(conversations.utf8)),
                meta: try JSONSerialization.jsonObject(with: Data(meta.utf8)) as! [String: Any],
                conversationsText: conversations, metaText: meta)
        }
    }
}

func generateTemplates(_ catalog: Catalog, _ options: TemplateOptions) throws -> Int {
    let generator = TemplateGenerator(options: options, categories: try ImageFactsReader.categories(catalog))
    let rows = try ImageFactsReader.read(catalog).flatMap { generator.generate($0) }
    return try InstructionStore.insert(rows, paramsHash: "test", into: catalog)
}
