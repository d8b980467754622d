// libFuzzer target: a COCO captions/instances file as `ingest coco` reads it. The bytes are written to a file
// and walked by JSONStreamReader the way IngestCOCO walks it (images, categories, then annotations with
// "segmentation" skipped unread), with ingest's record limits or much smaller ones, through the same field
// accessors and BoxCheck. Every record must be handed over or rejected with a VLMError naming the file; the
// walk may end in a VLMError (truncated or broken JSON); it must never crash, hang or read out of bounds.
// IngestCOCO reads records by field (`eachFields`); the annotations are also walked as whole records
// (`eachRecord`), and both walks must see the same named values, the same rejections and the same end.
import Foundation
import VLMCore
import VLMIO

private let path = FuzzScratch.file("coco.json")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCOCO(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzScratch.write(data, size, to: path)
    var images: [Int64: (width: Int?, height: Int?)] = [:]
    var categories = Set<Int64>()
    var verdicts = 0
    // Pass 1: images and categories.
    FuzzScratch.walk(path, size: size) { reader in
        try reader.forEachTopLevelMember { key in
            switch key {
            case "images":
                return .eachRecord({ value, index in
                    FuzzScratch.record(path, index) {
                        guard case .object = value else { throw VLMError.badInput(file: path, record: "images[\(index)]", "not an object") }
                        let record = "images[\(index)]"
                        let id = try value.int("id", file: path, record: record)
                        _ = try value.string("file_name", file: path, record: record)
                        let width = try value["width"].map { _ in Int(try value.int("width", file: path, record: record)) }
                        let height = try value["height"].map { _ in Int(try value.int("height", file: path, record: record)) }
                        images[id] = (width, height)
                    }
                }, rejected: FuzzScratch.rejected(path))
            case "categories":
                return .eachRecord({ value, index in
                    FuzzScratch.record(path, index) {
                        let record = "categories[\(index)]"
                        categories.insert(try value.int("id", file: path, record: record))
                        _ = try value.string("name", file: path, record: record)
                        _ = try value.optionalString("supercategory", file: path, record: record)
                    }
                }, rejected: FuzzScratch.rejected(path))
            default:
                return .skip
            }
        }
    }
    // Pass 2: annotations, boxes checked against the image sizes pass 1 found.
    FuzzScratch.walk(path, size: size, skip: ["segmentation"]) { reader in
        try reader.forEachTopLevelMember { key in
            guard key == "annotations" else { return .skip }
            return .eachRecord({ value, index in
                FuzzScratch.record(path, index) {
                    let record = "annotations[\(index)]"
                    precondition(value["segmentation"] == nil, "\(record): a skipped key was materialized")
                    _ = try value.int("id", file: path, record: record)
                    let image = images[try value.int("image_id", file: path, record: record)]
                    if value["caption"] != nil {
                        _ = try value.string("caption", file: path, record: record)
                    } else if case .array(let box)? = value["bbox"], box.count == 4 {
                        _ = try value.int("category_id", file: path, record: record)
                        let n = box.map { v -> Double in
                            switch v { case .int(let i): Double(i); case .double(let d): d; default: .nan }
                        }
                        let verdict = BoxCheck.check(x: n[0], y: n[1], w: n[2], h: n[3],
                                                     imageWidth: image?.width ?? nil, imageHeight: image?.height ?? nil)
                        if case .clipped(let x, let y, let w, let h, _, _) = verdict {
                            precondition(x >= 0 && y >= 0 && w > 0 && h > 0, "\(record): clipped to an empty or negative box")
                            if let W = image?.width ?? nil, let H = image?.height ?? nil {
                                precondition(x + w <= Double(W) && y + h <= Double(H), "\(record): clipped box leaves the image")
                            }
                        }
                        verdicts += 1
                        _ = try value["area"].map { _ in try value.double("area", file: path, record: record) }
                        _ = try value["iscrowd"].map { _ in try value.int("iscrowd", file: path, record: record) }
                    }
                }
            }, rejected: FuzzScratch.rejected(path))
        }
    }
    // The same annotations read by field, as IngestCOCO reads them, against the whole-record walk.
    let names = ["id", "image_id", "caption", "bbox", "category_id", "area", "iscrowd", "segmentation"]
    var byRecord: [String] = []
    var byFields: [String] = []
    FuzzScratch.walk(path, size: size, skip: ["segmentation"]) { reader in
        do {
            try reader.forEachTopLevelMember { key in
                guard key == "annotations" else { return .skip }
                return .eachRecord({ value, index in
                    if case .object = value {
                        byRecord.append("\(index): \(names.map { value[$0].map { "\($0)" } ?? "-" })")
                    } else {
                        byRecord.append("\(index): not an object: \(value.typeName)")
                    }
                }, rejected: { error, index in byRecord.append("\(index): \(error.description)") })
            }
        } catch { byRecord.append("end: \(error)"); throw error }
    }
    FuzzScratch.walk(path, size: size, skip: ["segmentation"]) { reader in
        do {
            try reader.forEachTopLevelMember { key in
                guard key == "annotations" else { return .skip }
                return .eachFields(JSONFields(names), { fields, index in
                    if let typeName = fields.notAnObject {
                        byFields.append("\(index): not an object: \(typeName)")
                    } else {
                        byFields.append("\(index): \(names.indices.map { fields[$0].map { "\($0)" } ?? "-" })")
                    }
                }, rejected: { error, index in byFields.append("\(index): \(error.description)") })
            }
        } catch { byFields.append("end: \(error)"); throw error }
    }
    precondition(byRecord == byFields, "eachFields differs from eachRecord:\n\(byRecord)\n\(byFields)")
    _ = (categories, verdicts)
    return 0
}
