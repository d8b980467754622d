import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `vlmdata ingest coco`: COCO captions and instances files (streamed, bounded memory) plus their images
/// (folder, zip or tar) into the catalog.
///
/// Idempotent: every row is keyed (images by source + COCO id, captions and objects by COCO annotation id), so a
/// rerun — also after a kill — adds only what is missing. Images already `ok` are not read again.
///
/// ```swift
/// let report = try IngestCOCO(options: .init(captions: "captions_train2017.json", images: "train2017/", split: "train2017"))
///     .run(catalog: catalog, progress: SilentProgress())
/// ```
public struct IngestCOCO {
    public struct Options: Codable, Sendable {
        public var captions: String?
        public var instances: String?
        public var images: String?
        public var split: String
        public var part: PartSpec?

        public init(captions: String? = nil, instances: String? = nil, images: String? = nil, split: String = "train", part: PartSpec? = nil) {
            self.captions = captions
            self.instances = instances
            self.images = images
            self.split = split
            self.part = part
        }
    }

    public var options: Options

    public init(options: Options) { self.options = options }

    struct CategoryMeta {
        var name: String
        var supercategory: String?
        var record: String
    }

    public func run(catalog: Catalog, progress: any ProgressSink) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "ingest")   // one writer per stage per workspace
        defer { lock.release() }
        let files = [options.captions, options.instances].compactMap { $0 }
        guard !files.isEmpty else {
            throw VLMError(.invalidArgument, "give --captions and/or --instances")
        }
        guard SampleKey.sanitize(options.split) == options.split, !options.split.isEmpty else {
            throw VLMError(.invalidArgument, "--split '\(options.split)' may contain only letters, digits, '_' and '-'")
        }
        for file in files where !FileManager.default.fileExists(atPath: file) {
            throw VLMError(.notFound, file: file, "annotation file does not exist")
        }
        let imageSource = try ImageSource(options.images)
        var problems: [String] = []
        var fatal: VLMError?
        let fingerprint = try files.map { try Hashing.sha256(file: $0) }.joined(separator: "+")
        let runID = try catalog.beginRun(stage: "ingest-coco", params: options, inputFingerprint: fingerprint)

        // Pass 1: images and categories from every file (annotations are skipped without materializing). Records
        // are read field by field (`JSONFields`): no JSONValue tree per record.
        var images = COCOImageTable()
        var categories: [Int64: CategoryMeta] = [:]
        let imageFields = JSONFields(["id", "file_name", "width", "height"])
        let categoryFields = JSONFields(["id", "name", "supercategory"])
        for file in files {
            progress.start("reading images of \(file)", total: nil)
            do {
                let reader = try JSONStreamReader(path: file)
                IngestLimits.configure(reader)
                let rejected: (VLMError, Int) -> Void = { error, _ in problems.append(error.description) }
                try reader.forEachTopLevelMember { key in
                    switch key {
                    case "images":
                        return .eachFields(imageFields, { value, index in
                            do {
                                func record() -> String { "images[\(index)]" }   // built only when an error or a row needs it
                                try Self.expectObject(value, file: file, record: record())
                                let id = try value.int(0, file: file, record: record())
                                let name = try value.string(1, file: file, record: record())
                                var width = try value[2].map { _ in Int(try value.int(2, file: file, record: record())) }
                                var height = try value[3].map { _ in Int(try value.int(3, file: file, record: record())) }
                                if let first = images.index(of: id) {
                                    // The same image listed again (as captions and instances files both do) is fine;
                                    // the same id naming another file is not.
                                    let firstName = images.name(first)
                                    if firstName != name {
                                        throw VLMError.badInput(file: file, record: record(),
                                            "image id \(id) is already \(images.record(first)) ('\(firstName)'); this entry names '\(name)': kept the first")
                                    }
                                    return
                                }
                                if (width ?? 1) <= 0 || (height ?? 1) <= 0 {
                                    problems.append(VLMError.badInput(file: file, record: record(),
                                        "width and height must be positive, found \(width ?? 0)x\(height ?? 0): ignored, the header's size is used").description)
                                    width = nil
                                    height = nil
                                }
                                images.append(id: id, name: name, width: width, height: height, record: index)
                                progress.advance(by: 1)
                            } catch let error as VLMError {
                                problems.append(error.description)
                            }
                        }, rejected: rejected)
                    case "categories":
                        return .eachFields(categoryFields, { value, index in
                            do {
                                func record() -> String { "categories[\(index)]" }   // built only when an error or a row needs it
                                try Self.expectObject(value, file: file, record: record())
                                let id = try value.int(0, file: file, record: record())
                                let name = try value.string(1, file: file, record: record())
                                let superName = try value.optionalString(2, file: file, record: record())
                                if let first = categories[id] {
                                    if first.name != name {
                                        throw VLMError.badInput(file: file, record: record(),
                                            "category id \(id) is already \(first.record) ('\(first.name)'); this entry names '\(name)': kept the first")
                                    }
                                    return
                                }
                                categories[id] = CategoryMeta(name: name, supercategory: superName, record: record())
                            } catch let error as VLMError {
                                problems.append(error.description)
                            }
                        }, rejected: rejected)
                    default:
                        return .skip
                    }
                }
            } catch let error as VLMError {
                fatal = fatal ?? error
            }
            progress.finish("\(images.count) images, \(categories.count) categories")
        }

        // Source, categories, images.
        let split = options.split
        let sourceID = try catalog.ensureSource(
            kind: "coco", name: split, uri: files.joined(separator: ","), imagesRoot: imageSource.location,
            fingerprint: fingerprint,
            categories: categories.sorted(by: { $0.key < $1.key }).map { (Int64($0.key), $0.value.name, $0.value.supercategory) })
        let done = try catalog.okImageExternalIDs(sourceID: sourceID)   // ascending
        // Keys for every image of the file (not only this part), so that every part assigns the same ones.
        var existing: [String: String] = [:]
        var taken = Set<String>()
        for row in try catalog.imageKeys(prefix: "\(split)_") {
            if row.sourceID == sourceID, let external = row.externalID, images.index(of: external) != nil {
                existing["\(external)"] = row.key
            } else {
                taken.insert(row.key)
            }
        }
        let keys = ImageKeys.assign(split: split, names: images.names, identity: { "\(images.ids[$0])" },
                                    existing: existing, taken: taken)
        var inPart = [Bool](repeating: options.part == nil, count: images.count)
        var pending: [Int32] = []   // positions in `images`
        for i in 0..<images.count {
            if let part = options.part {
                let key = keys[i]
                guard part.owns(imageKey: key, sampleKey: key) else { continue }
                inPart[i] = true
            }
            if Self.sortedContains(done, images.ids[i]) { continue }
            pending.append(Int32(i))
        }
        progress.start("checking images", total: pending.count)
        try ImageScanner.scan(count: pending.count, pendingAt: { j in
            let i = Int(pending[j])
            return PendingImage(externalID: images.ids[i], fileName: images.name(i), key: keys[i], expected: images.expected(i))
        }, source: imageSource, progress: progress, problems: &problems) { batch in
            try catalog.upsertImages(batch.map { image, probe, location, member in
                ImageRecord(sourceID: sourceID, key: image.key, externalID: image.externalID,
                            fileName: image.fileName, location: location, member: member, sha256: probe.sha256,
                            byteSize: probe.byteSize, width: probe.width, height: probe.height, format: probe.format,
                            status: probe.status.rawValue, error: probe.error)
            })
        }
        progress.finish("\(pending.count) checked")
        pending = []

        // Row ids and sizes (the header's, else the annotation's) for pass 2, streamed from the catalog.
        try catalog.forEachImage(sourceID: sourceID) { externalID, id, width, height in
            guard let externalID, let i = images.index(of: externalID) else { return }
            images.setRow(i, id: id, width: width, height: height)
        }
        let categoryRows = try catalog.categoryIDsByExternalID(sourceID: sourceID)

        // Pass 2: annotations (captions or objects), streamed and written in batches.
        var captionCount = 0, objectCount = 0, objectsClipped = 0, objectsRejected = 0
        let annotationFields = JSONFields(["id", "image_id", "caption", "bbox", "category_id", "area", "iscrowd"])
        let (idField, imageField, captionField, bboxField, categoryField, areaField, crowdField) = (0, 1, 2, 3, 4, 5, 6)
        for file in files {
            progress.start("reading annotations of \(file)", total: nil)
            var batch: [AnnotationRecord] = []
            func flush() throws {
                guard !batch.isEmpty else { return }
                try catalog.insertAnnotations(batch)
                batch.removeAll(keepingCapacity: true)
            }
            do {
                let reader = try JSONStreamReader(path: file)
                IngestLimits.configure(reader)
                reader.elementSkipKeys = ["segmentation"]
                try reader.forEachTopLevelMember { key in
                    guard key == "annotations" else { return .skip }
                    return .eachFields(annotationFields, { value, index in
                        func record() -> String { "annotations[\(index)]" }   // built only when an error or a row needs it
                        let isObject = value[bboxField] != nil && value[captionField] == nil
                        do {
                            try Self.expectObject(value, file: file, record: record())
                            let id = try value.int(idField, file: file, record: record())
                            let imageExternal = try value.int(imageField, file: file, record: record())
                            guard let imageIndex = images.index(of: imageExternal) else {
                                throw VLMError.badInput(file: file, record: record(), "image_id \(imageExternal) is not in 'images'")
                            }
                            guard inPart[imageIndex], let image = images.row(imageIndex) else { return }
                            let imageRow = image.id
                            if value[captionField] != nil {
                                let text = try value.string(captionField, file: file, record: record())
                                batch.append(.caption(imageID: imageRow, externalID: Int64(id), text: text))
                                captionCount += 1
                            } else if value[bboxField] != nil {
                                let categoryExternal = try value.int(categoryField, file: file, record: record())
                                guard let categoryRow = categoryRows[categoryExternal] else {
                                    throw VLMError.badInput(file: file, record: record(), "category_id \(categoryExternal) is not in 'categories'")
                                }
                                guard case .array(let box)? = value[bboxField], box.count == 4 else {
                                    throw VLMError.badInput(file: file, record: record(), "field 'bbox' must be an array of 4 numbers")
                                }
                                let numbers = try box.enumerated().map { i, v -> Double in
                                    switch v {
                                    case .int(let n): return Double(n)
                                    case .double(let d): return d
                                    default: throw VLMError.badInput(file: file, record: record(), "bbox[\(i)] is \(v.typeName), expected a number")
                                    }
                                }
                                var (x, y, w, h) = (numbers[0], numbers[1], numbers[2], numbers[3])
                                switch BoxCheck.check(x: x, y: y, w: w, h: h, imageWidth: image.width, imageHeight: image.height) {
                                case .keep: break
                                case .rejected(let message):
                                    throw VLMError.badInput(file: file, record: record(), message)
                                case .clipped(let cx, let cy, let cw, let ch, let message, let report):
                                    (x, y, w, h) = (cx, cy, cw, ch)
                                    objectsClipped += 1
                                    if report { problems.append(VLMError.badInput(file: file, record: record(), message).description) }
                                }
                                let area = try value[areaField].map { _ in try value.double(areaField, file: file, record: record()) }
                                if let area, !area.isFinite || area < 0 {
                                    throw VLMError.badInput(file: file, record: record(), "area \(area) is not a finite, non-negative number")
                                }
                                let crowd = try value[crowdField].map { _ in try value.int(crowdField, file: file, record: record()) } ?? 0
                                batch.append(.object(imageID: imageRow, categoryID: categoryRow, externalID: Int64(id),
                                                     x: x, y: y, w: w, h: h, area: area, isCrowd: Int(crowd)))
                                objectCount += 1
                            } else {
                                throw VLMError.badInput(file: file, record: record(), "annotation has neither 'caption' nor 'bbox'")
                            }
                            progress.advance(by: 1)
                            if batch.count >= 5000 { try flush() }
                        } catch let error as VLMError {
                            if isObject { objectsRejected += 1 }
                            problems.append(error.description)
                        }
                    }, rejected: { error, _ in problems.append(error.description) })
                }
            } catch let error as VLMError {
                fatal = fatal ?? error
            }
            try flush()
            progress.finish("done")
        }

        var counts = try catalog.sourceCounts(sourceID: sourceID)
        counts["instructions"] = nil
        var report = StageReport(stage: "ingest coco", counts: counts, problems: problems)
        report.counts["problems"] = problems.count
        if options.instances != nil {
            report.counts["objects_clipped"] = objectsClipped
            report.counts["objects_rejected"] = objectsRejected
        }
        try catalog.endRun(runID, counts: report.counts, error: fatal?.description)
        if let fatal {
            throw IngestFailure(report: report, error: fatal)
        }
        return report
    }
}

extension IngestCOCO {
    /// A record must be a JSON object.
    static func expectObject(_ value: JSONValue, file: String, record: @autoclosure () -> String) throws {
        guard case .object = value else {
            throw VLMError.badInput(file: file, record: record(), "is \(value.typeName), expected an object")
        }
    }

    static func expectObject(_ value: JSONFields, file: String, record: @autoclosure () -> String) throws {
        if let typeName = value.notAnObject {
            throw VLMError.badInput(file: file, record: record(), "is \(typeName), expected an object")
        }
    }

    /// Whether ascending `ids` holds `id` (binary search).
    static func sortedContains(_ ids: [Int64], _ id: Int64) -> Bool {
        var lo = 0, hi = ids.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ids[mid] < id { lo = mid + 1 } else { hi = mid }
        }
        return lo < ids.count && ids[lo] == id
    }
}

/// A stage that kept its good records but hit an error it could not go past (truncated JSON, unreadable file).
public struct IngestFailure: Error, CustomStringConvertible {
    public var report: StageReport
    public var error: VLMError
    public var description: String { error.description }
}
