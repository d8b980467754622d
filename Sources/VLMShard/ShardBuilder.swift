import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// What `vlmdata shard` was asked for.
public struct ShardOptions: Codable, Hashable, Sendable {
    /// Shard file prefix: `NAME-000000.tar` (`NAME-part0of4-000000.tar` for a part).
    public var name = "train"
    /// A shard closes once it holds at least this many bytes.
    public var targetBytes = 256_000_000
    /// A shard closes once it holds this many samples (WebDataset `ShardWriter`'s `maxcount`).
    public var maxSamplesPerShard: Int?
    /// Write at most this many samples in all (the first ones in key order).
    public var limit: Int?
    /// Also store the original image file (`KEY.jpg` / `KEY.png`).
    public var includeImageBytes = false
    /// Tokenization config hash; required when the catalog holds several.
    public var tokenizedConfig: String?
    /// Pixel config hash; required when the catalog holds several.
    public var pixelsConfig: String?
    /// Write only this part of a partitioned run (`--part I/N`, 0-based).
    public var part: PartSpec?
    /// Shards written at once (each also hashes on its own thread); nil uses every core. The output is the same.
    public var jobs: Int?
    /// Keep images that an evaluation set holds (`--allow-eval-images`); by default they are left out.
    public var allowEvalImages = false
    /// Also compute and record each shard's sha256 (`--sha256`; shards already written get theirs recorded). The
    /// integrity hash is always the XXH3-128 computed at write time; the bytes are the same either way.
    public var sha256 = false

    public init() {}

    /// The shard file name for shard number `index`.
    public func shardName(_ index: Int) -> String {
        let number = String(index).leftPadded(to: 6)
        if let part { return "\(name)-part\(part.index)of\(part.count)-\(number).tar" }
        return "\(name)-\(number).tar"
    }

    /// The shard number of `file` if it is one of ours, nil otherwise.
    public func shardIndex(of file: String) -> Int? {
        let prefix = String(shardName(0).dropLast("000000.tar".count))
        guard file.hasPrefix(prefix), file.hasSuffix(".tar") else { return nil }
        let digits = file.dropFirst(prefix.count).dropLast(4)
        guard digits.count == 6, digits.allSatisfy(\.isASCII), let n = Int(digits) else { return nil }
        return n
    }
}

/// Letters, digits, `_` and `-`: the bytes a sample key may hold.
func isKeyByte(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x5F || b == 0x2D
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// The `KEY.json` member of a training sample. Keys are snake_case and written sorted, so equal samples give
/// equal bytes.
public struct SampleMetadata: Codable, Hashable, Sendable {
    public var key: String
    public var source: String?
    public var kind: String
    public var generator: String
    /// Image key in the catalog (`images.key`), its annotation id (COCO image id) and file name; nil when text-only.
    public var image: String?
    public var imageID: Int?
    public var imageFile: String?
    public var imageSHA256: String?
    /// `[width, height]` of the original image (LLaVA-NeXT's `image_sizes`, which its unpad step needs).
    public var imageSize: [Int]?
    /// The frame of the boxes in the conversations (`BoxFrame`), when they state any.
    public var boxFrame: String?
    public var conversations: [[String: String]]
    public var template: String
    public var tokenizerSHA256: String
    public var tokenizedConfig: String
    /// `ok`, or `truncated` when the conversation was cut to the length limit.
    public var status: String
    /// Length of `input_ids` (the image placeholder counts as one).
    public var length: Int
    public var tokens: Int
    public var supervised: Int
    /// Positions the image takes in the model: `PatchGrid.imageTokens` of the stored pixels (0 if text-only).
    public var imageTokens: Int
    public var pixelsConfig: String?
    /// `[tiles, patches, patch_dim]` of `KEY.pixels.npy`.
    public var pixelsShape: [Int]?
    /// `[rows, cols]` of the anyres tile grid.
    public var grid: [Int]?
    /// Member suffix of the original image bytes when stored (`jpg`, `png`).
    public var imageMember: String?
    /// A grouped sample's instruction keys, in the order of their turns (absent from the json of a sample of one
    /// instruction, so that layout keeps its bytes).
    public var instructions: [String]? = nil

    enum CodingKeys: String, CodingKey {
        case key, source, kind, generator, image, conversations, template, status, length, tokens, supervised, grid
        case imageID = "image_id", imageFile = "image_file", imageSHA256 = "image_sha256", imageSize = "image_size"
        case boxFrame = "box_frame"
        case tokenizerSHA256 = "tokenizer_sha256", tokenizedConfig = "tokenized_config"
        case imageTokens = "image_tokens", pixelsConfig = "pixels_config", pixelsShape = "pixels_shape"
        case imageMember = "image_member"
        case instructions
    }

    /// The sample's json member: the same bytes as `Hashing.canonicalJSON(self)` (sorted keys, absent values as
    /// `null`), written directly because `JSONEncoder` was the largest cost of preparing a sample.
    public var canonicalJSON: [UInt8] {
        var json = CanonicalJSONWriter()
        json.beginObject()
        json.key("box_frame"); json.value(boxFrame)
        json.key("conversations")
        json.beginArray()
        for turn in conversations { json.value(turn) }
        json.endArray()
        json.key("generator"); json.value(generator)
        json.key("grid"); json.value(grid)
        json.key("image"); json.value(image)
        json.key("image_file"); json.value(imageFile)
        json.key("image_id"); json.value(imageID)
        json.key("image_member"); json.value(imageMember)
        json.key("image_sha256"); json.value(imageSHA256)
        json.key("image_size"); json.value(imageSize)
        json.key("image_tokens"); json.value(imageTokens)
        if let instructions {
            json.key("instructions")
            json.beginArray()
            for key in instructions { json.value(key) }
            json.endArray()
        }
        json.key("key"); json.value(key)
        json.key("kind"); json.value(kind)
        json.key("length"); json.value(length)
        json.key("pixels_config"); json.value(pixelsConfig)
        json.key("pixels_shape"); json.value(pixelsShape)
        json.key("source"); json.value(source)
        json.key("status"); json.value(status)
        json.key("supervised"); json.value(supervised)
        json.key("template"); json.value(template)
        json.key("tokenized_config"); json.value(tokenizedConfig)
        json.key("tokenizer_sha256"); json.value(tokenizerSHA256)
        json.key("tokens"); json.value(tokens)
        json.endObject()
        return json.bytes
    }

    /// Absent values are written as `null`, so every sample's json has the same keys.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(key, forKey: .key)
        try c.encode(source, forKey: .source)
        try c.encode(kind, forKey: .kind)
        try c.encode(generator, forKey: .generator)
        try c.encode(image, forKey: .image)
        try c.encode(imageID, forKey: .imageID)
        try c.encode(imageFile, forKey: .imageFile)
        try c.encode(imageSHA256, forKey: .imageSHA256)
        try c.encode(imageSize, forKey: .imageSize)
        try c.encode(boxFrame, forKey: .boxFrame)
        try c.encode(conversations, forKey: .conversations)
        try c.encode(template, forKey: .template)
        try c.encode(tokenizerSHA256, forKey: .tokenizerSHA256)
        try c.encode(tokenizedConfig, forKey: .tokenizedConfig)
        try c.encode(status, forKey: .status)
        try c.encode(length, forKey: .length)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(supervised, forKey: .supervised)
        try c.encode(imageTokens, forKey: .imageTokens)
        try c.encode(pixelsConfig, forKey: .pixelsConfig)
        try c.encode(pixelsShape, forKey: .pixelsShape)
        try c.encode(grid, forKey: .grid)
        try c.encode(imageMember, forKey: .imageMember)
        try c.encodeIfPresent(instructions, forKey: .instructions)
    }
}

/// Writes WebDataset training shards from the catalog and indexes them (`shards`, `samples`, `sample_parts`).
///
/// Each tokenized instruction (status ok or truncated) is joined with its image's pixel record and written as
/// `KEY.json`, `KEY.input_ids.npy`, `KEY.labels.npy`, `KEY.pixels.npy` (copied by byte range from the pixel
/// shard) and optionally the original image bytes, in key order. A shard is written under a temporary name,
/// fsynced, renamed, and only then committed to the catalog in one transaction; a rerun after a crash
/// continues after the last committed shard and ends with the same bytes as a clean run.
///
/// ```swift
/// var options = ShardOptions()
/// options.targetBytes = 64 << 20
/// let report = try ShardBuilder(catalog: catalog, options: options).run()
/// ```
public final class ShardBuilder {
    public static let stage = "shard"
    public let catalog: Catalog
    public let options: ShardOptions
    let progress: any ProgressSink

    public init(catalog: Catalog, options: ShardOptions, progress: any ProgressSink = SilentProgress()) {
        self.catalog = catalog
        self.options = options
        self.progress = progress
    }

    /// The resolved parameters that define the output (hashed into the run row and `shards.params_hash`).
    struct Params: Codable {
        /// 2: sample json gained `image_size` and `box_frame`; image tokens come from the stored pixels.
        var format = 2
        var name: String
        var targetBytes: Int
        var maxSamplesPerShard: Int?
        var limit: Int?
        var includeImageBytes: Bool
        var tokenizedConfig: String
        var pixelsConfig: String?
        var part: String?
        /// Only present when evaluation images are allowed in, so the default keeps earlier hashes.
        var allowEvalImages: Bool?
    }

    struct PixelRef {
        var shardName: String
        var offset: Int
        var size: Int
        /// The geometry of the stored record (checked against its npy header when it is copied).
        var grid: PatchGrid
        /// XXH3-64 patchify recorded for the member (nil for rows written before checksums).
        var xxh3: UInt64? = nil
        /// The member's name in its pixel shard.
        var member: String = ""
    }

    struct ImageRef {
        var key: String
        var externalID: Int?
        var fileName: String
        var sha256: String?
        var location: String?
        var member: String?
        var format: String?
        var width: Int?
        var height: Int?
    }

    struct PlanItem {
        var key: String
        var instructionID: Int64
        var tokenizedID: Int64
        var source: String?
        var kind: String
        var generator: String
        var image: ImageRef?
        var pixels: PixelRef?
        /// The frame the instruction's boxes are stated in, when it states any.
        var boxFrame: BoxFrame?
        var pixelShardName = "-"
        /// The pixel shard's XXH3-128 (its sha256 for pixel shards written before they had one).
        var pixelShardChecksum = "-"
        /// A grouped sample's instruction keys (`tokenized.sample`); nil for a sample of one instruction.
        var instructions: [String]? = nil

        /// The class the frame choice knows this sample by (`FrameChoice.note`): in a grouped tokenization every
        /// sample, also a single instruction's, is chosen among the grouped ones, whatever kinds they join;
        /// otherwise by its generator and kind.
        func frameClass(grouped: Bool) -> (generator: String, kind: String) {
            grouped || instructions != nil ? ("grouped", "turns") : (generator, kind)
        }
    }

    // MARK: - Planning

    /// Picks the one config hash of `table`, or the requested one; a clear error otherwise.
    static func resolveConfig(_ snapshot: CatalogSnapshot, table: ConfigTable, flag: String, requested: String?, what: String) throws -> String? {
        let rows = try snapshot.configCounts(table)
        let available = rows.map { "\($0.hash) (\($0.rows) rows)" }
        if let requested {
            guard rows.contains(where: { $0.hash == requested }) else {
                throw VLMError(.notFound, record: flag,
                               "no \(what) with config \(requested); the catalog has: \(available.isEmpty ? "none" : available.joined(separator: ", "))")
            }
            return requested
        }
        if rows.count > 1 {
            throw VLMError(.invalidArgument, record: flag,
                           "the catalog holds \(rows.count) \(what) configs; choose one with \(flag) HASH: \(available.joined(separator: ", "))")
        }
        return rows.first?.hash
    }

    /// One sample of the plan, in key order: its ids and the XXH3-64 of its fingerprint line (24 bytes). The rest
    /// of a sample (`PlanItem`: key, image, pixels, names) is read again for each batch as it is written
    /// (`planItems`), so a plan of millions of samples holds no strings; the checksum proves the row read then is
    /// the one planned.
    struct PlanEntry {
        var tokenizedID: Int64
        var instructionID: Int64
        var line: UInt64
    }

    struct Plan {
        var params: Params
        var entries: [PlanEntry]
        var skipped: [String: Int]
        var fingerprint: String
        /// The pixels config, when there are pixels, and the sha256s held out for evaluation.
        var pixelsConfig: String?
        var heldOut: Set<String>
        /// Plan samples whose key a shard of another set already holds, e.g. "KEY (in SHARD)" (the first few).
        var clashes: [String]
        var clashCount: Int
    }

    /// What one plan row becomes: a sample, or the reason it is left out (nil: another part's).
    enum PlannedRow {
        case item(PlanItem, statesFrame: Bool, statesBox: Bool)
        /// A row another `--part` plans: it only counts in the frame choice.
        case otherPart(PlanItem, statesFrame: Bool, statesBox: Bool)
        /// Not planned; the reason is counted in the report (nil: not counted, e.g. another part's row).
        case skip(String?)
    }

    /// Turns a plan row into a sample, or says why it is left out. The same for the plan and for every re-read.
    func planned(_ row: ShardPlanRow, pixelsConfig: String?, heldOut: Set<String>) throws -> PlannedRow {
        let key = row.key
        guard !key.isEmpty, key.utf8.allSatisfy({ isKeyByte($0) }) else {
            throw VLMError(.badInput, file: catalog.workspace.catalogPath, record: "instructions.key '\(key)'",
                           "sample keys may hold only letters, digits, _ and - (WebDataset splits member names at the first dot)")
        }
        let inPart = options.part?.owns(imageKey: row.imageKey, sampleKey: key) ?? true
        var item = PlanItem(key: key, instructionID: row.instructionID, tokenizedID: row.tokenizedID,
                            source: row.sourceKind.map { "\($0):\(row.sourceName ?? "")" },
                            kind: row.kind, generator: row.generator)
        // A grouped sample: its kinds and generators, and the frame its instructions state.
        let grouped = try row.sample.map { json in
            do { return try GroupedSampleInfo.decode(json) } catch let error as VLMError {
                throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "tokenized \(row.tokenizedID) (\(key))", error.message)
            }
        }
        if let grouped {
            item.kind = grouped.kinds.joined(separator: ",")
            item.generator = grouped.generators.joined(separator: ",")
            item.instructions = grouped.keys
        }
        var statesFrame = false, statesBox = false
        if row.imageID != nil {
            guard row.imageStatus == "ok" else { return .skip(inPart ? "image_not_ok" : nil) }
            if let sha256 = row.imageSHA256, heldOut.contains(sha256) { return .skip(inPart ? "eval_image" : nil) }
            guard pixelsConfig != nil, row.pixelStatus == "ok",
                  let shard = row.pixelShard, let offset = row.offset, let size = row.size,
                  let imageKey = row.imageKey, let fileName = row.fileName
            else { return .skip(inPart ? "no_pixels" : nil) }
            // Boxes (and crop-frame counts) must be stated in the frame of these pixels: decided by the plan.
            if let grouped {
                // Grouped samples are chosen among themselves: tokenize grouped per stated frame.
                if let stated = grouped.boxFrame {
                    item.boxFrame = BoxFrame(rawValue: stated)
                    statesFrame = true
                    statesBox = grouped.statesBox
                }
            } else if let meta = row.meta, meta.contains("box_frame") {
                let object = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any]
                item.boxFrame = (object?["box_frame"] as? String).flatMap(BoxFrame.init(rawValue:))
                statesFrame = true
                statesBox = FrameChoice.statesBox(object)
            }
            // Another part's row only counts in the frame choice: its image and pixels are that part's to check.
            guard inPart else { return .otherPart(item, statesFrame: statesFrame, statesBox: statesBox) }
            item.image = ImageRef(key: imageKey, externalID: row.externalID.map(Int.init), fileName: fileName,
                                  sha256: row.imageSHA256, location: row.location, member: row.member,
                                  format: row.format, width: row.width, height: row.height)
            let grid: PatchGrid
            do {
                let rows = row.gridRows, cols = row.gridCols
                grid = try PatchGrid(shape: [row.tiles ?? 0, row.patches ?? 0, row.patchDim ?? 0],
                                     grid: rows.flatMap { r in cols.map { [r, $0] } })
            } catch let error as VLMError {
                throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "pixels of \(key) (image \(item.image!.key))", error.message)
            }
            item.pixels = PixelRef(shardName: shard, offset: offset, size: size, grid: grid, xxh3: row.pixelXXH3,
                                   member: (row.imageSHA256 ?? "") + ".npy")
        }
        item.pixelShardName = row.pixelShard ?? "-"
        item.pixelShardChecksum = row.pixelShardChecksum ?? "-"
        return inPart ? .item(item, statesFrame: statesFrame, statesBox: statesBox)
                      : .otherPart(item, statesFrame: statesFrame, statesBox: statesBox)
    }

    /// The line of `item` that the plan's fingerprint hashes.
    static func fingerprintLine(_ item: PlanItem) -> [UInt8] {
        let line: [String] = [item.key, "\(item.tokenizedID)", item.image?.sha256 ?? "-", item.pixelShardName, item.pixelShardChecksum,
                              "\(item.pixels?.offset ?? -1)", "\(item.pixels?.size ?? -1)"]
        return Array((line.joined(separator: "\t") + "\n").utf8)
    }

    /// Streams the plan query once (twice when instructions of another box frame are left out), keeping 24 bytes
    /// per sample. `foreign`: sample keys indexed in shards of another set, with their shard's name.
    func makePlan(foreign: [String: String] = [:]) throws -> Plan {
        let heldOut = options.allowEvalImages ? [] : try catalog.evalImageSHA256s()
        return try catalog.snapshot { snapshot in
            guard let tokenizedConfig = try Self.resolveConfig(snapshot, table: .tokenized, flag: "--tokenized",
                                                               requested: options.tokenizedConfig, what: "tokenization") else {
                throw VLMError(.notFound, file: catalog.workspace.catalogPath, "nothing is tokenized yet; run `vlmdata tokenize` first")
            }
            let pixelsConfig = try Self.resolveConfig(snapshot, table: .pixels, flag: "--pixels",
                                                      requested: options.pixelsConfig, what: "pixel")
            // The frame boxes must be in for these pixels (pad: the padded square, crop: the crop, else the image).
            let pixelFrame: BoxFrame? = try pixelsConfig.flatMap { hash in
                guard let json = try snapshot.pixelsConfigJSON(hash: hash),
                      let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                      let mode = object["mode"] as? String else { return nil }
                guard let frame = BoxFrame(pixelMode: mode) else {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "pixels config \(hash)", "unknown preprocessing mode '\(mode)'")
                }
                return frame
            }
            let params = Params(name: options.name, targetBytes: options.targetBytes,
                                maxSamplesPerShard: options.maxSamplesPerShard, limit: options.limit,
                                includeImageBytes: options.includeImageBytes, tokenizedConfig: tokenizedConfig,
                                pixelsConfig: pixelsConfig, part: options.part?.description,
                                allowEvalImages: options.allowEvalImages ? true : nil)
            var entries: [PlanEntry] = []
            var skipped: [String: Int] = [:]
            var hasher = StreamingSHA256()
            var tokenMismatches: [String] = []
            var tokenMismatchCount = 0
            var clashes: [(index: Int, text: String)] = []
            var frames = FrameChoice(pixelFrame: pixelFrame)
            let grouped = try snapshot.tokenizedConfigGroups(tokenizedConfig)
            try snapshot.forEachShardPlanRow(pixelsConfig: pixelsConfig, tokenizedConfig: tokenizedConfig) { row in
                let item: PlanItem
                switch try planned(row, pixelsConfig: pixelsConfig, heldOut: heldOut) {
                case .skip(let reason):
                    if let reason { skipped[reason, default: 0] += 1 }
                    return true
                case .otherPart(let other, let statesFrame, let statesBox):
                    // Rows of other parts are not planned, but they still count in the frame choice, so the
                    // choice is that of the whole workspace whichever part is run (see FrameChoice).
                    if statesFrame {
                        let (generator, kind) = other.frameClass(grouped: grouped)
                        frames.note(nil, key: other.key, generator: generator, kind: kind,
                                    stated: other.boxFrame, statesBox: statesBox)
                    }
                    return true
                case .item(let planned, let statesFrame, let statesBox):
                    item = planned
                    if statesFrame {
                        let (generator, kind) = item.frameClass(grouped: grouped)
                        frames.note(entries.count, key: item.key, generator: generator, kind: kind,
                                    stated: item.boxFrame, statesBox: statesBox)
                    }
                }
                // The image takes the positions its stored pixels make; tokenize must have counted the same.
                if let grid = item.pixels?.grid, (row.imageTokensCounted ?? 0) != grid.imageTokens {
                    tokenMismatchCount += 1
                    if tokenMismatches.count < 3 {
                        tokenMismatches.append("\(item.key): tokenized with \(row.imageTokensCounted ?? 0) image tokens, its pixels are \(grid)")
                    }
                }
                if let shard = foreign[item.key] { clashes.append((entries.count, "\(item.key) (in \(shard))")) }
                let line = Self.fingerprintLine(item)
                // Without left-out frames the first `limit` samples are the plan: hash them on the way.
                if options.limit.map({ entries.count < $0 }) ?? true { hasher.update(line) }
                entries.append(PlanEntry(tokenizedID: item.tokenizedID, instructionID: item.instructionID, line: XXH3.hash64(line)))
                return true
            }
            let dropped = try frames.dropped(catalogPath: catalog.workspace.catalogPath, pixelsConfig: pixelsConfig)
            if !dropped.isEmpty {
                // A grouped sample left out for its frame must hold only instructions of that frame: one grouped
                // while the workspace held one frame also holds its image's captions, which would be lost with it.
                let mixed = try snapshot.groupedSampleHeadsAcrossFrames(tokenizedConfig: tokenizedConfig)
                let lost = mixed.isEmpty ? [] : dropped.filter { mixed.contains(entries[$0].instructionID) }.sorted()
                if let first = lost.first {
                    throw VLMError(.conflict, file: catalog.workspace.catalogPath, record: "tokenized config \(tokenizedConfig)",
                                   "\(lost.count) grouped samples to leave out for their box frame also hold instructions of "
                                   + "another frame or none (e.g. instruction \(entries[first].instructionID)): they were grouped "
                                   + "before the workspace held a second frame; run `vlmdata tokenize` again with the same options "
                                   + "to regroup them")
                }
                skipped["other_box_frame"] = dropped.count
                entries = entries.enumerated().filter { !dropped.contains($0.offset) }.map(\.element)
                // A clash's position among the samples kept.
                clashes = clashes.filter { !dropped.contains($0.index) }
                    .map { clash in (clash.index - dropped.filter { $0 < clash.index }.count, clash.text) }
            }
            if let limit = options.limit, entries.count > limit {
                entries.removeLast(entries.count - limit)
                clashes = clashes.filter { $0.index < limit }
            }
            if !dropped.isEmpty {
                // The samples kept moved: hash them again, in a second pass over the same snapshot.
                hasher = StreamingSHA256()
                var index = 0, kept = 0
                try snapshot.forEachShardPlanRow(pixelsConfig: pixelsConfig, tokenizedConfig: tokenizedConfig) { row in
                    guard case .item(let item, _, _) = try planned(row, pixelsConfig: pixelsConfig, heldOut: heldOut) else { return true }
                    defer { index += 1 }
                    guard !dropped.contains(index) else { return true }
                    guard kept < entries.count else { return false }
                    hasher.update(Self.fingerprintLine(item))
                    kept += 1
                    return true
                }
            }
            if tokenMismatchCount > 0 {
                throw VLMError(.conflict, file: catalog.workspace.catalogPath, record: "tokenized config \(tokenizedConfig)",
                               "\(tokenMismatchCount) samples were tokenized for another image-token count than their stored pixels give, "
                               + "e.g. \(tokenMismatches.joined(separator: "; ")); tokenize again with --image-tokens pixels "
                               + "(or the count above) and shard with --tokenized HASH")
            }
            return Plan(params: params, entries: entries, skipped: skipped, fingerprint: hasher.finalize(),
                        pixelsConfig: pixelsConfig, heldOut: heldOut, clashes: clashes.prefix(3).map(\.text),
                        clashCount: clashes.count)
        }
    }

    /// The samples of `entries` read again from the catalog, by tokenized id. A row that changed since the plan
    /// (its fingerprint line differs) or is gone is an error: the shards would not be the ones planned.
    func planItems(_ entries: ArraySlice<PlanEntry>, plan: Plan) throws -> [Int64: PlanItem] {
        let rows = try catalog.shardPlanRows(tokenizedIDs: entries.map(\.tokenizedID), pixelsConfig: plan.pixelsConfig,
                                             tokenizedConfig: plan.params.tokenizedConfig)
        var items: [Int64: PlanItem] = [:]
        for entry in entries {
            guard let row = rows[entry.tokenizedID],
                  case .item(let item, _, _) = try planned(row, pixelsConfig: plan.pixelsConfig, heldOut: plan.heldOut),
                  item.instructionID == entry.instructionID, XXH3.hash64(Self.fingerprintLine(item)) == entry.line else {
                throw VLMError(.conflict, file: catalog.workspace.catalogPath,
                               record: "tokenized row \(entry.tokenizedID) (instruction \(entry.instructionID))",
                               "the catalog changed while sharding (this sample's row is gone or differs from the plan); run shard again")
            }
            items[entry.tokenizedID] = item
        }
        return items
    }

    // MARK: - Running

    /// Writes (or finishes writing) the shards and returns what was done.
    public func run() throws -> StageReport {
        guard !options.name.isEmpty, options.name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }) else {
            throw VLMError(.invalidArgument, record: "--name", "'\(options.name)': use letters, digits, _ and - only")
        }
        guard options.targetBytes > 0 else { throw VLMError(.invalidArgument, record: "--target-size", "must be positive") }
        // The writers' chunk buffers are faulted in on another core while this one plans (planning is one thread).
        let buffers = Self.chunks * max(1, options.jobs ?? ProcessInfo.processInfo.activeProcessorCount)
        DispatchQueue.global().async { HashingFileWriter.prepareBuffers(chunkSize: Self.chunkSize, count: buffers) }
        let existing = try committedShards()
        let plan = try makePlan(foreign: try foreignSampleKeys(ours: existing))
        let paramsHash = Catalog.paramsHash(plan.params)
        let shardParamsHash = Hashing.sha256(paramsHash + ":" + plan.fingerprint)
        var counts: [String: Int] = plan.skipped.mapValues { $0 }.reduce(into: [:]) { $0["skipped_\($1.key)"] = $1.value }

        try checkNoForeignSamples(plan: plan)
        let allCurrent = existing.allSatisfy { $0.paramsHash == shardParamsHash }
        if let done = try catalog.completedRun(stage: Self.stage, paramsHash: paramsHash, inputFingerprint: plan.fingerprint),
           allCurrent, !existing.isEmpty || plan.entries.isEmpty,
           existing.allSatisfy({ FileManager.default.fileExists(atPath: catalog.workspace.resolve($0.path)) }) {
            var counts = done.counts
            if options.sha256 { counts["sha256_added"] = try addMissingSHA256(existing) }
            return StageReport(stage: Self.stage, counts: counts, skipped: true)
        }
        let runID = try catalog.beginRun(stage: Self.stage, params: plan.params, inputFingerprint: plan.fingerprint)
        do {
            var resumeShards = 0
            var resumeSamples = 0
            if !existing.isEmpty {
                // Sample key = instruction key, so equal instruction ids in order are equal keys in order.
                let committed = try catalog.sampleInstructionIDs(shardIDs: existing.map(\.id))
                let isPrefix = allCurrent && committed.count <= plan.entries.count
                    && zip(committed, plan.entries).allSatisfy { $0 == $1.instructionID }
                    && existing.enumerated().allSatisfy { options.shardIndex(of: $1.name) == $0 }
                if isPrefix {
                    resumeShards = existing.count
                    resumeSamples = committed.count
                } else {
                    try deleteShards(existing)
                    counts["replaced_shards"] = existing.count
                }
            }
            removeStrayFiles(keepingFirst: resumeShards)
            counts["resumed_shards"] = resumeShards
            let written = try writeShards(plan: plan, startShard: resumeShards, startSample: resumeSamples,
                                          shardParamsHash: shardParamsHash)
            counts["shards"] = resumeShards + written.shards
            counts["samples"] = plan.entries.count
            counts["written_samples"] = written.samples
            if !options.allowEvalImages { try checkNoEvalImages() }
            if options.sha256 { counts["sha256_added"] = try addMissingSHA256(try committedShards()) }
            counts["bytes"] = try catalog.shardBytes(paramsHash: shardParamsHash)
            try catalog.endRun(runID, counts: counts)
            return StageReport(stage: Self.stage, counts: counts)
        } catch {
            try? catalog.endRun(runID, counts: counts, error: "\(error)")
            throw error
        }
    }

    /// With `--sha256`: records the sha256 of committed shards written without one (read back once, after their
    /// XXH3-128 is checked, so the digest is of the bytes that were indexed). Returns how many were added.
    func addMissingSHA256(_ shards: [CommittedShard]) throws -> Int {
        let missing = try catalog.shardRecords().filter { record in record.sha256 == nil && shards.contains { $0.id == record.id } }
        for shard in missing {
            let path = catalog.workspace.resolve(shard.path)
            if let recorded = shard.xxh3_128 {
                let actual = try XXH3.hash128(file: path)
                guard actual == recorded else {
                    throw VLMError(.corrupt, file: path, "xxh3-128 is \(actual) but the index recorded \(recorded); "
                                   + "the shard changed after it was written (run `vlmdata verify`, then rewrite it)")
                }
            }
            try catalog.setShardSHA256(name: shard.name, sha256: try Hashing.sha256(file: path))
        }
        return missing.count
    }

    /// The shards' invariant: no sample of this run holds an evaluation image (by sha256).
    func checkNoEvalImages() throws {
        // This run's samples are exactly those in its shards (named by its prefix).
        let leaks = try catalog.evalTrainingOverlaps().filter { options.shardIndex(of: $0.shard) != nil }
        guard let first = leaks.first else { return }
        throw VLMError(.conflict, file: catalog.workspace.catalogPath, record: "sample \(first.sample) in \(first.shard)",
                       "\(leaks.count) training sample(s) hold an image of evaluation set \(first.evalSet) " +
                       "(sha256 \(first.sha256.prefix(16))..., image \(first.evalImage)); rerun without --allow-eval-images")
    }

    struct CommittedShard {
        var id: Int64
        var name: String
        var path: String
        var paramsHash: String
    }

    /// This run's shards (by file name pattern) already in the catalog, in name order.
    func committedShards() throws -> [CommittedShard] {
        try catalog.shardRecords().compactMap { shard in
            guard options.shardIndex(of: shard.name) != nil else { return nil }
            return CommittedShard(id: shard.id, name: shard.name, path: shard.path, paramsHash: shard.paramsHash)
        }
    }

    /// The sample keys indexed in shards other than `ours` (another shard set), with their shard's name.
    func foreignSampleKeys(ours: [CommittedShard]) throws -> [String: String] {
        let ourIDs = Set(ours.map(\.id))
        var foreign: [String: String] = [:]
        for shard in try catalog.shardRecords() where !ourIDs.contains(shard.id) {
            for key in try catalog.sampleKeys(shardIDs: [shard.id]) where foreign[key] == nil { foreign[key] = shard.name }
        }
        return foreign
    }

    /// Sample keys are unique in the index: refuse to write a key that another shard set already holds.
    func checkNoForeignSamples(plan: Plan) throws {
        guard plan.clashCount == 0 else {
            throw VLMError(.conflict, file: catalog.workspace.catalogPath,
                           "\(plan.clashCount) samples are already indexed in other shards, e.g. \(plan.clashes.joined(separator: ", ")); "
                           + "shard into another workspace, or pick other inputs")
        }
    }

    func deleteShards(_ shards: [CommittedShard]) throws {
        try catalog.deleteShards(ids: shards.map(\.id))
        for shard in shards { unlink(catalog.workspace.resolve(shard.path)) }
    }

    /// Removes temporary files of killed runs and shard files of ours that no committed row names.
    func removeStrayFiles(keepingFirst committed: Int) {
        let dir = catalog.workspace.shardsDirectory
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        let prefix = String(options.shardName(0).dropLast("000000.tar".count))
        for file in files {
            if file.hasPrefix("." + prefix), file.contains(".tar.tmp-") {
                unlink(dir + "/" + file)
            } else if let index = options.shardIndex(of: file), index >= committed {
                unlink(dir + "/" + file)
            }
        }
    }

    // MARK: - Writing

    typealias TokenRow = TokenizedSampleRecord

    func fetchTokens(_ ids: [Int64]) throws -> [Int64: TokenRow] {
        try catalog.tokenizedSamples(ids: ids)
    }

    struct SampleIndexRow {
        var item: PlanItem
        var index: Int
        var offset: Int
        var size: Int
        var tokens: Int
        var supervised: Int
        var imageTokens: Int
        var parts: [Part]

        struct Part {
            var name: String
            var member: TarMember
            /// XXH3_64bits of the member's content.
            var xxh3: UInt64
        }
    }

    /// A sample ready to be written: its json and token npy bytes, and where its pixels are. The pixel content is
    /// read from the pixel shard only when the sample is written.
    struct PreparedSample: @unchecked Sendable {
        var item: PlanItem
        var token: TokenRow
        var json: [UInt8]
        var inputIDs: [UInt8]
        var labels: [UInt8]
        var image: (member: String, bytes: [UInt8])?
        /// What the sample adds to the tar (`TarWriter.footprint` of its members).
        var tarBytes: Int
    }

    /// The samples of one shard, decided before it is written.
    struct ShardJob: @unchecked Sendable {
        var number: Int
        var name: String
        var path: String
        /// Filled by the preparing thread while the shard is already being written.
        var samples: SampleStream
    }

    /// Prepares samples in key order on this thread and closes a shard once its samples reach the target size;
    /// each shard is then written, hashed and fsynced on its own thread (`options.jobs` at once) and committed to
    /// the index strictly in order. The split into shards depends only on the samples, so the output is the
    /// same whatever the number of jobs.
    func writeShards(plan: Plan, startShard: Int, startSample: Int, shardParamsHash: String) throws -> (shards: Int, samples: Int) {
        let entries = plan.entries
        progress.start("shard", total: entries.count - startSample)
        var position = startSample
        var shardNumber = startShard
        var imageCache = ImageBytesCache()
        var written = 0
        let batchSize = 256
        var tokens: [Int64: TokenRow] = [:]
        var items: [Int64: PlanItem] = [:]
        var batchEnd = startSample
        let jobs = max(1, options.jobs ?? ProcessInfo.processInfo.activeProcessorCount)
        let writers = OrderedShardWriters(jobs: jobs, firstShard: startShard)
        defer { try? writers.wait() }   // on an error, let the shards already written finish committing
        while position < entries.count {
            try writers.check()
            let name = options.shardName(shardNumber)
            let job = ShardJob(number: shardNumber, name: name, path: catalog.workspace.shardsDirectory + "/" + name,
                               samples: SampleStream())
            let catalog = self.catalog, part = options.part, workspace = catalog.workspace, sha256 = options.sha256
            // The shard starts writing with its first sample; the samples that follow stream in as they are prepared.
            writers.submit(number: shardNumber) {
                let tmp = AtomicFile.temporaryPath(for: job.path)
                let (rows, sha, xxh3, size) = try ShardBuilder.write(job, to: tmp, workspace: workspace, sha256: sha256)
                let commit: @Sendable () throws -> Void = {
                    guard rename(tmp, job.path) == 0 else {
                        throw VLMError.io(file: job.path, "rename failed: \(String(cString: strerror(errno)))")
                    }
                    AtomicFile.syncDirectory(of: job.path)
                    try ShardBuilder.commit(catalog: catalog, part: part, shardName: job.name, sha256: sha, xxh3: xxh3, bytes: size,
                                            rows: rows, paramsHash: shardParamsHash)
                }
                return (commit, { unlink(tmp) })
            }
            var count = 0
            var bytes = 0
            do {
                while position < entries.count {
                    if position >= batchEnd {
                        // The batch's rows, read again by id: the plan holds only ids.
                        batchEnd = min(entries.count, position + batchSize)
                        let batch = entries[position ..< batchEnd]
                        tokens = try fetchTokens(batch.map(\.tokenizedID))
                        items = try planItems(batch, plan: plan)
                        if options.includeImageBytes {
                            try imageCache.load(batch.compactMap { items[$0.tokenizedID]?.image }, workspace: catalog.workspace)
                        }
                    }
                    let item = items[entries[position].tokenizedID]!
                    guard let token = tokens[item.tokenizedID] else {
                        throw VLMError(.conflict, file: catalog.workspace.catalogPath, record: item.key,
                                       "tokenized row \(item.tokenizedID) disappeared while sharding")
                    }
                    let sample = try prepare(item, token, params: plan.params, imageCache: &imageCache)
                    job.samples.append(sample)
                    count += 1
                    bytes += sample.tarBytes
                    position += 1
                    // Per sample handed to its shard's writer (a bounded stream), so one big shard still shows a
                    // moving bar; the summary line comes once every shard is committed.
                    progress.advance(by: 1)
                    if bytes >= options.targetBytes { break }
                    if let max = options.maxSamplesPerShard, count >= max { break }
                }
            } catch {
                job.samples.close(abandoned: true)
                throw error
            }
            job.samples.close()
            written += count
            shardNumber += 1
        }
        try writers.wait()
        progress.finish("\(written) samples in \(shardNumber - startShard) shards written")
        return (shardNumber - startShard, written)
    }

    /// Builds a sample's json and token arrays (checking the token blobs) and works out its size in the tar.
    func prepare(_ item: PlanItem, _ token: TokenRow, params: Params, imageCache: inout ImageBytesCache) throws -> PreparedSample {
        guard token.inputIDs.count % 4 == 0, token.labels.count == token.inputIDs.count else {
            throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "tokenized \(item.tokenizedID) (\(item.key))",
                           "input_ids is \(token.inputIDs.count) bytes and labels \(token.labels.count); expected equal multiples of 4")
        }
        let conversations = (try? JSONDecoder().decode([[String: String]].self, from: Data(token.conversations.utf8))) ?? []
        var image: (member: String, bytes: [UInt8])?
        if options.includeImageBytes, let ref = item.image {
            image = (Self.imageSuffix(ref), try imageCache.bytes(for: ref, workspace: catalog.workspace))
        }
        let meta = SampleMetadata(
            key: item.key, source: item.source, kind: item.kind, generator: item.generator,
            image: item.image?.key, imageID: item.image?.externalID, imageFile: item.image?.fileName,
            imageSHA256: item.image?.sha256,
            imageSize: item.image.flatMap { i in i.width.flatMap { w in i.height.map { [w, $0] } } },
            boxFrame: item.boxFrame?.rawValue, conversations: conversations, template: token.template,
            tokenizerSHA256: token.tokenizerSHA256, tokenizedConfig: params.tokenizedConfig, status: token.status,
            length: token.inputIDs.count / 4, tokens: token.tokens, supervised: token.supervised,
            imageTokens: item.pixels?.grid.imageTokens ?? token.imageTokens, pixelsConfig: item.pixels == nil ? nil : params.pixelsConfig,
            pixelsShape: item.pixels?.grid.shape,
            grid: item.pixels?.grid.grid,
            imageMember: image?.member, instructions: item.instructions)
        let header = Npy.header(dtype: .int32, shape: [token.inputIDs.count / 4])
        var sample = PreparedSample(item: item, token: token, json: meta.canonicalJSON, inputIDs: header + token.inputIDs,
                                    labels: header + token.labels, image: image, tarBytes: 0)
        sample.tarBytes = TarWriter.footprint(name: item.key + ".json", size: sample.json.count)
            + TarWriter.footprint(name: item.key + ".input_ids.npy", size: sample.inputIDs.count)
            + TarWriter.footprint(name: item.key + ".labels.npy", size: sample.labels.count)
            + (item.pixels.map { TarWriter.footprint(name: item.key + ".pixels.npy", size: $0.size) } ?? 0)
            + (image.map { TarWriter.footprint(name: item.key + "." + $0.member, size: $0.bytes.count) } ?? 0)
        return sample
    }

    /// Three 2 MiB write chunks (one huge page each) per shard writer: fresh memory is slow to fault in on a VM
    /// (32 MiB took 20-110 ms here), and `--jobs` writers each hold their own (`run` faults them in while planning).
    static let chunkSize = 2 << 20, chunks = 3

    /// Writes one shard to `tmp` (hashed as it is written, fsynced) and returns its index rows, sha256 (when
    /// asked for), XXH3-128 and size. On an error the temporary file is removed.
    static func write(_ job: ShardJob, to tmp: String, workspace: Workspace, sha256: Bool) throws
        -> (rows: [SampleIndexRow], sha256: String?, xxh3: String, bytes: Int) {
        let file = try ShardOutput(path: tmp, chunkSize: chunkSize, chunks: chunks, sha256: sha256)
        var pixelFiles = PixelFiles()
        defer { pixelFiles.closeAll() }
        do {
            let tar = TarWriter(output: file)
            var rows: [SampleIndexRow] = []
            while let samples = try job.samples.next() {
                for sample in samples {
                    let before = file.offset
                    rows.append(try writeSample(sample, tar: tar, output: file, index: rows.count, pixelFiles: &pixelFiles,
                                                workspace: workspace))
                    // Shards were closed by `tarBytes` (prepare); the members written must be the ones it counted.
                    assert(file.offset - before == sample.tarBytes, "\(sample.item.key): wrote \(file.offset - before) bytes, planned \(sample.tarBytes)")
                }
            }
            try tar.finish()
            let (sha, bytes) = try file.finish()
            return (rows, sha, file.xxh3_128 ?? "", bytes)
        } catch {
            file.abandon()
            unlink(tmp)
            throw error
        }
    }

    static func writeSample(_ sample: PreparedSample, tar: TarWriter, output: ShardOutput, index: Int, pixelFiles: inout PixelFiles,
                            workspace: Workspace) throws -> SampleIndexRow {
        let item = sample.item
        // Each member's XXH3 goes into the index with its offset: every later read is checked against it.
        var parts: [SampleIndexRow.Part] = []
        func add(_ suffix: String, _ bytes: UnsafeRawBufferPointer, check: (UInt64) throws -> Void = { _ in }) throws {
            let xxh3 = XXH3.hash64(bytes)
            try check(xxh3)
            let member = try tar.add(name: item.key + "." + suffix, bytes: bytes)
            parts.append(SampleIndexRow.Part(name: suffix, member: member, xxh3: xxh3))
        }
        func add(_ suffix: String, array bytes: [UInt8]) throws {
            try bytes.withUnsafeBytes { try add(suffix, $0) }
        }
        try add("json", array: sample.json)
        try add("input_ids.npy", array: sample.inputIDs)
        try add("labels.npy", array: sample.labels)
        if let pixels = item.pixels {
            let path = workspace.pixelShardsDirectory + "/" + pixels.shardName
            let file = try pixelFiles.mapping(for: path)
            // Check the npy header where the catalog points, then copy the record from the mapping into the shard.
            guard pixels.offset >= 0, pixels.size >= 0, pixels.offset + pixels.size <= file.count else {
                throw VLMError(.corrupt, file: path, record: "offset \(pixels.offset) (\(item.key))", "pixel shard ends before the indexed npy")
            }
            let record = UnsafeRawBufferPointer(rebasing: file[pixels.offset ..< pixels.offset + pixels.size])
            let expected = pixels.grid.shape
            // Usually the record starts with exactly the header numpy (and patchify) writes for that shape: one
            // comparison. Any other header is parsed, and must still say uint8 of that shape.
            if !pixelFiles.isStandardNpy(record, shape: expected) {
                let head = UnsafeRawBufferPointer(rebasing: record.prefix(512))
                let header: NpyHeader
                do { header = try Npy.parseHeader(head, name: "\(pixels.shardName)@\(pixels.offset)") } catch let error as VLMError {
                    throw VLMError(.corrupt, file: path, record: "offset \(pixels.offset) (\(item.key))",
                                   "no pixel npy where the catalog points: \(error.message)")
                }
                guard header.dtype == .uint8, header.shape == expected, header.fileByteCount == pixels.size else {
                    throw VLMError(.corrupt, file: path, record: "offset \(pixels.offset) (\(item.key))",
                                   "pixel npy is \(header.dtype) \(header.shape) in \(pixels.size) bytes; the catalog says uint8 \(expected)")
                }
            }
            // The pixel member must still be the bytes patchify wrote: the copy gets a fresh checksum, so a
            // change not caught here would be served as good.
            try add("pixels.npy", record) { xxh3 in
                guard let expected = pixels.xxh3, xxh3 != expected else { return }
                throw MemberChecksum.mismatch(actual: xxh3, expected: expected, shard: path, member: pixels.member,
                                              size: pixels.size, offset: pixels.offset, fix: MemberChecksum.pixelFix)
            }
        }
        if let image = sample.image {
            try add(image.member, array: image.bytes)
        }
        let start = parts[0].member.headerOffset
        let token = sample.token
        return SampleIndexRow(item: item, index: index, offset: start, size: parts.last!.member.contentEnd - start,
                              tokens: token.tokens, supervised: token.supervised,
                              imageTokens: item.pixels?.grid.imageTokens ?? token.imageTokens, parts: parts)
    }

    static func imageSuffix(_ image: ImageRef) -> String {
        switch image.format?.lowercased() {
        case "jpeg", "jpg": return "jpg"
        case "png": return "png"
        case let other?: return SampleKey.sanitize(other)
        case nil:
            let ext = URL(fileURLWithPath: image.fileName).pathExtension.lowercased()
            return ext.isEmpty ? "img" : SampleKey.sanitize(ext == "jpeg" ? "jpg" : ext)
        }
    }

    static func commit(catalog: Catalog, part: PartSpec?, shardName: String, sha256: String?, xxh3: String, bytes: Int,
                       rows: [SampleIndexRow], paramsHash: String) throws {
        try catalog.insertShard(NewShard(
            name: shardName, path: "shards/" + shardName, sha256: sha256, xxh3_128: xxh3, bytes: bytes,
            paramsHash: paramsHash, part: part?.description,
            samples: rows.map { row in
                NewShard.Sample(key: row.item.key, indexInShard: row.index, offset: row.offset, size: row.size,
                                tokens: row.tokens, supervised: row.supervised, imageTokens: row.imageTokens,
                                hasImage: row.item.pixels != nil, source: row.item.source,
                                instructionID: row.item.instructionID,
                                parts: row.parts.map { part in
                                    NewShard.Part(name: part.name, offset: part.member.contentOffset,
                                                  size: part.member.size, xxh3: part.xxh3)
                                })
            }))
    }
}

/// Original image bytes for `--include-jpeg`: plain files are read directly; archive members are read in one
/// pass over the archive per batch of samples.
struct ImageBytesCache {
    private var archived: [String: [UInt8]] = [:]

    private static func archiveKey(_ location: String, _ member: String) -> String { location + "\u{0}" + member }

    /// Reads, in one pass per archive, the members this batch needs.
    mutating func load(_ images: [ShardBuilder.ImageRef], workspace: Workspace) throws {
        archived.removeAll(keepingCapacity: true)
        var wanted: [String: Set<String>] = [:]
        for image in images {
            if let location = image.location, let member = image.member { wanted[location, default: []].insert(member) }
        }
        for (location, members) in wanted.sorted(by: { $0.key < $1.key }) {
            var missing = members
            let archive = try ArchiveReader(path: workspace.resolve(location))
            try archive.forEachEntry { entry in
                guard missing.contains(entry.name) else { return .skip }
                archived[Self.archiveKey(location, entry.name)] = try entry.readAll()
                missing.remove(entry.name)
                return missing.isEmpty ? .stop : .continue
            }
        }
    }

    func bytes(for image: ShardBuilder.ImageRef, workspace: Workspace) throws -> [UInt8] {
        guard let location = image.location else {
            throw VLMError(.notFound, record: image.key, "the catalog has no location for this image")
        }
        if let member = image.member {
            guard let bytes = archived[Self.archiveKey(location, member)] else {
                throw VLMError(.notFound, file: location, record: member, "image member not found in the archive")
            }
            return bytes
        }
        let path = workspace.resolve(location)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, record: image.key, "cannot read the original image")
        }
        return Array(data)
    }
}

/// Samples handed from the thread that prepares them to the thread writing their shard, in order.
final class SampleStream: @unchecked Sendable {
    private let condition = NSCondition()
    private var pending: [ShardBuilder.PreparedSample] = []
    private var closed = false
    private var abandoned = false

    func append(_ sample: ShardBuilder.PreparedSample) {
        condition.withLock {
            pending.append(sample)
            condition.signal()
        }
    }

    /// No more samples; `abandoned` makes the writer stop with an error instead of finishing the shard.
    func close(abandoned: Bool = false) {
        condition.withLock {
            closed = true
            self.abandoned = abandoned
            condition.signal()
        }
    }

    /// The samples appended since the last call (waiting for at least one), or nil once the stream is closed.
    func next() throws -> [ShardBuilder.PreparedSample]? {
        condition.lock()
        defer { condition.unlock() }
        while pending.isEmpty && !closed { condition.wait() }
        if abandoned { throw VLMError(.io, "shard abandoned: preparing its samples failed") }
        if pending.isEmpty { return nil }
        defer { pending.removeAll(keepingCapacity: true) }
        return pending
    }
}

/// Writes up to `jobs` shards at once, each on its own serial queue (so a shard's hashing and I/O queues never wait
/// for a free pool thread), and runs their commits strictly in shard order: a shard whose predecessor has not
/// committed waits for it. A shard gives its writing slot back once its file is written and fsynced, so the next
/// shard is written while this one waits for its turn, renames and commits (there are twice as many queues as
/// slots for that). When a shard fails, the shards after it are cancelled (their temporary files removed), the
/// ones before it still commit, and `check()`/`wait()` throw the first error.
final class OrderedShardWriters: @unchecked Sendable {
    private let queues: [DispatchQueue]
    private let group = DispatchGroup()
    private let slots: DispatchSemaphore
    private let turn = NSCondition()
    private var nextToCommit: Int
    private var failure: (any Error)?
    private var firstFailedShard = Int.max

    init(jobs: Int, firstShard: Int) {
        queues = (0 ..< 2 * jobs).map { DispatchQueue(label: "vlmdata.shard.write-\($0)") }
        slots = DispatchSemaphore(value: jobs)
        nextToCommit = firstShard
    }

    /// Runs `write` for shard `number` (submit in increasing order); when it returns, waits for shard `number`'s
    /// turn and runs the `commit` it returned, or its `cancel` if an earlier shard failed.
    func submit(number: Int, _ write: @escaping @Sendable () throws -> (commit: @Sendable () throws -> Void, cancel: @Sendable () -> Void)) {
        slots.wait()
        queues[number % queues.count].async(group: group) { [self] in
            var writing = true
            func written() {
                if writing { slots.signal() }
                writing = false
            }
            defer { written() }
            var finish: (commit: @Sendable () throws -> Void, cancel: @Sendable () -> Void)?
            do {
                guard !turn.withLock({ firstFailedShard < number }) else { return }
                finish = try write()
                written()
                turn.lock()
                while nextToCommit != number && firstFailedShard > number { turn.wait() }
                let cancelled = firstFailedShard < number
                turn.unlock()
                if cancelled {
                    finish?.cancel()
                    return
                }
                try finish?.commit()
                turn.withLock {
                    nextToCommit += 1
                    turn.broadcast()
                }
            } catch {
                finish?.cancel()
                turn.withLock {
                    if number < firstFailedShard {
                        firstFailedShard = number
                        failure = error
                    }
                    turn.broadcast()
                }
            }
        }
    }

    func check() throws {
        if let failure = turn.withLock({ failure }) { throw failure }
    }

    func wait() throws {
        group.wait()
        try check()
    }
}

/// The pixel shards a shard job reads, each mapped read-only once. Copying records out of a mapping costs a third
/// of what `pread` did per record (the page-cache lookups per 4 KiB were most of it).
struct PixelFiles {
    private var mapped: [String: UnsafeRawBufferPointer] = [:]
    /// `Npy.header(dtype: .uint8, shape:)` of the last shape asked for (a shard's pixels mostly share one).
    private var standardHeader: (shape: [Int], bytes: [UInt8]) = ([], [])

    /// Whether `record` is exactly a uint8 npy of `shape` with numpy's own header: the header bytes `Npy.header`
    /// writes, followed by the data and nothing else. False means "parse it", not "bad".
    mutating func isStandardNpy(_ record: UnsafeRawBufferPointer, shape: [Int]) -> Bool {
        if standardHeader.shape != shape { standardHeader = (shape, Npy.header(dtype: .uint8, shape: shape)) }
        let header = standardHeader.bytes
        let (data, overflow) = shape.reduce((1, false)) { acc, n in
            let (p, o) = acc.0.multipliedReportingOverflow(by: max(n, 0))
            return (p, acc.1 || o)
        }
        guard !overflow, record.count == header.count + data else { return false }
        return header.withUnsafeBytes { memcmp($0.baseAddress!, record.baseAddress!, header.count) == 0 }
    }

    mutating func mapping(for path: String) throws -> UnsafeRawBufferPointer {
        if let file = mapped[path] { return file }
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw VLMError(errno == ENOENT ? .notFound : .io, file: path, "cannot open pixel shard: \(String(cString: strerror(errno)))")
        }
        defer { Foundation.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw VLMError.io(file: path, "cannot stat pixel shard: \(String(cString: strerror(errno)))") }
        var file = UnsafeRawBufferPointer(start: nil, count: 0)
        if info.st_size > 0 {
            guard let base = mmap(nil, Int(info.st_size), PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else {
                throw VLMError.io(file: path, "cannot map pixel shard: \(String(cString: strerror(errno)))")
            }
            file = UnsafeRawBufferPointer(start: base, count: Int(info.st_size))
        }
        mapped[path] = file
        return file
    }

    mutating func closeAll() {
        for file in mapped.values where file.baseAddress != nil { munmap(UnsafeMutableRawPointer(mutating: file.baseAddress!), file.count) }
        mapped.removeAll()
    }
}
