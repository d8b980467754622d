import Foundation
import VLMCatalog
import VLMCore
import VLMImage
import VLMIO
import VLMShard

/// `vlmdata patchify`: every `ok` image in the catalog, once per (sha256, preprocessing config), decoded and
/// preprocessed into ViT patches, written to pixel shards under `shards/pixels/` with a `pixels` row each.
///
/// ```swift
/// let report = try PatchifyStage.run(catalog: catalog, options: .init(config: PreprocessConfig(mode: .pad)))
/// ```
///
/// - Pixel shards are tar files of `SHA256.npy` members (uint8 `[tiles, patches, P·P·3]`), written to a
///   temporary name and renamed when closed; the shard's rows (one `pixel_shards`, one `pixels` per member)
///   are committed in one transaction after the rename. A kill loses at most the open shard; a rerun skips
///   every image that has a row and writes the rest.
/// - A bad image becomes a `pixels` row with status `error` and the reason; the run goes on.
/// - Equal bytes (sha256) are processed once (once per part with `--part`), whatever the number of catalog images
///   holding them. Each record's npy shape is its `PatchGrid`'s (`PreprocessConfig.patchGrid` with the tiles made).
public enum PatchifyStage {
    public static let stageName = "patchify"

    public struct Options: Sendable {
        public var config: PreprocessConfig
        /// Worker threads; all cores by default.
        public var jobs: Int
        /// A pixel shard is closed once it holds at least this many bytes.
        public var shardBytes: Int
        /// Images decoded and preprocessed in parallel before their results are written, in order.
        public var batchSize: Int
        /// Only the images whose key falls in part I of N (`PartSpec.owns`, the partition every stage uses; for a
        /// job array, `vlmdata catalog merge` joins the parts).
        public var part: PartSpec?
        /// Pending images read from the catalog at a time (a page's batches are written before the next is read).
        var pageSize = 1024

        public init(config: PreprocessConfig, jobs: Int = ImageWorkers.defaultJobs, shardBytes: Int = 256 << 20, batchSize: Int = 256,
                    part: PartSpec? = nil) {
            self.part = part
            self.config = config
            self.jobs = jobs
            self.shardBytes = shardBytes
            self.batchSize = batchSize
        }
    }

    /// What the run row records as its parameters.
    struct Params: Encodable {
        var config: PreprocessConfig
        var configHash: String
        var part: String?
    }

    /// One image to do: its bytes' hash and where to read them.
    struct Item: Sendable {
        var sha256: String
        var location: String
        var member: String?
        var key: String
        var name: String { member.map { "\(location): \($0)" } ?? location }
    }

    enum Outcome: Sendable {
        case ok(npy: [UInt8], grid: PatchGrid)
        case error(String)
    }

    public static func run(catalog: Catalog, options: Options, progress: any ProgressSink = SilentProgress()) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "patchify")   // one writer per stage per workspace
        defer { lock.release() }
        let config = options.config
        try config.validate()
        let configHash = config.hash
        let configJSON = config.canonicalJSON
        let workspace = catalog.workspace
        try workspace.create()

        // Input fingerprint: the set of ok image hashes (of this part's image keys). Same images + same config =
        // nothing to do. One pass in hash order (equal hashes adjacent), so nothing per image is held; it also
        // counts the hashes still to do (an owned image with a location, no pixels row yet).
        let owns = { (key: String) in options.part?.owns(imageKey: key, sampleKey: key) ?? true }
        var hasher = StreamingSHA256()
        var okHashCount = 0, pendingCount = 0
        var last = "", lastPending = ""
        try catalog.forEachOkImageByHash(pixelsConfig: configHash) { key, sha256, located, done in
            guard owns(key) else { return }
            if sha256 != last {
                hasher.update(Array(((okHashCount == 0 ? "" : "\n") + sha256).utf8))
                okHashCount += 1
                last = sha256
            }
            if located, !done, sha256 != lastPending {
                pendingCount += 1
                lastPending = sha256
            }
        }
        let fingerprint = okHashCount == 0 ? Hashing.sha256("") : hasher.finalize()
        let params = Params(config: config, configHash: configHash, part: options.part?.description)
        if let done = try catalog.completedRun(stage: stageName, paramsHash: Catalog.paramsHash(params), inputFingerprint: fingerprint) {
            return StageReport(stage: stageName, counts: done.counts, skipped: true)
        }
        let already = okHashCount - pendingCount
        let runID = try catalog.beginRun(stage: stageName, params: params, inputFingerprint: fingerprint)
        removeStaleTemporaries(in: workspace.pixelShardsDirectory)

        progress.start("patchify", total: pendingCount)
        let writer = try PixelShardWriter(catalog: catalog, config: config, configHash: configHash, configJSON: configJSON,
                                          targetBytes: options.shardBytes, part: options.part)
        var problems: [String] = []
        // Keep a batch's results under ~128 MiB (anyres images hold up to 1 + 9 tiles).
        let perImage = config.patchGrid.withTiles(config.maxTiles).pixelBytes
        let batchSize = max(options.jobs * 2, min(options.batchSize, (128 << 20) / max(perImage, 1)))
        do {
            let workers = (0..<max(1, options.jobs)).map { _ in Preprocessor(config: config) }
            let box = WorkerBox(workers)
            func process(_ batch: [Item], bytes: [[UInt8]?]) throws {
                let outcomes = OutcomeSlots(count: batch.count)
                ImageWorkers.run(count: batch.count, jobs: options.jobs) { i, worker in
                    outcomes.set(i, patchify(batch[i], preloaded: bytes[i], with: box.workers[worker]))
                    // Per image, not per batch: one batch can hold every image of a small set.
                    progress.advance(by: 1)
                }
                for (i, item) in batch.enumerated() {
                    let outcome = outcomes.values[i]!
                    if case .error(let message) = outcome { problems.append("\(item.name): \(message)") }
                    try writer.add(item, outcome)
                }
            }
            // The pending images page by page in id order: the first image (by id) of this part holding each hash;
            // equal bytes are patchified once per part. A hash committed by an earlier page is no longer pending in
            // the next page's query, so `seen` holds only the hashes not yet committed (the open shard's, the
            // current page's, and archive members waiting for their archive's pass).
            // Plain files: read by the workers themselves. Archive members: one sequential pass per archive.
            var archiveHashes = Set<String>()
            var byArchive: [String: [Item]] = [:]
            var after: Int64 = 0
            var batch: [Item] = []
            while true {
                let page = try catalog.pendingImages(after: after, pixelsConfig: configHash, limit: max(1, options.pageSize))
                guard let lastID = page.last?.id else { break }
                after = lastID
                var seen = writer.uncommittedHashes
                for (_, image) in page {
                    guard owns(image.key), !archiveHashes.contains(image.sha256), seen.insert(image.sha256).inserted else { continue }
                    let item = Item(sha256: image.sha256, location: workspace.resolve(image.location), member: image.member,
                                    key: image.key)
                    if item.member != nil {
                        archiveHashes.insert(item.sha256)
                        byArchive[item.location, default: []].append(item)
                        continue
                    }
                    batch.append(item)
                    if batch.count >= batchSize {
                        try process(batch, bytes: Array(repeating: nil, count: batch.count))
                        batch = []
                    }
                }
                // The page's last batch goes to the writer before the next page is read: its hashes are then either
                // committed or in the writer's open shard.
                if !batch.isEmpty {
                    try process(batch, bytes: Array(repeating: nil, count: batch.count))
                    batch = []
                }
            }
            for archive in byArchive.keys.sorted() {
                var wanted: [String: [Item]] = [:]
                for item in byArchive[archive]! { wanted[item.member!, default: []].append(item) }
                var batch: [Item] = [], bytes: [[UInt8]?] = []
                var fatal: (any Error)?
                do {
                    let reader = try ArchiveReader(path: archive)
                    try reader.forEachEntry { entry in
                        guard let items = wanted.removeValue(forKey: entry.name) else { return .skip }
                        do {
                            let data = try entry.readAll()
                            for item in items { batch.append(item); bytes.append(data) }
                        } catch {
                            let message = (error as? VLMError)?.message ?? "\(error)"
                            do {
                                for item in items { try writer.add(item, .error("cannot read the archive member: \(message)")) }
                            } catch { fatal = error; throw error }
                        }
                        if batch.count >= batchSize {
                            do { try process(batch, bytes: bytes) } catch { fatal = error; throw error }
                            batch = []; bytes = []
                        }
                        return wanted.isEmpty ? .stop : .continue
                    }
                } catch {
                    if let fatal { throw fatal }
                    // A damaged archive: the members not reached become per-image errors below.
                    problems.append("\(archive): \((error as? VLMError)?.message ?? "\(error)")")
                }
                if !batch.isEmpty { try process(batch, bytes: bytes) }
                let missing = wanted.values.flatMap { $0 }
                for item in missing { try writer.add(item, .error("member not found in \(archive)")) }
                if !missing.isEmpty { progress.advance(by: missing.count) }
            }
            try writer.close()
        } catch {
            try? writer.abandon()
            try? catalog.endRun(runID, counts: writer.counts, error: "\(error)")
            throw error
        }
        var counts = writer.counts
        counts["already_done"] = already
        try catalog.endRun(runID, counts: counts)
        progress.finish("\(counts["pixels", default: 0]) images patchified, \(counts["errors", default: 0]) errors, \(counts["shards", default: 0]) shards")
        return StageReport(stage: stageName, counts: counts, problems: problems)
    }

    /// Decode, preprocess and patchify one image; any failure becomes an error outcome naming the image.
    static func patchify(_ item: Item, preloaded: [UInt8]?, with pre: Preprocessor) -> Outcome {
        do {
            let bytes = try preloaded ?? ImageFileReader.read(item.location)
            let result = try pre.process(bytes, name: item.name)
            let grid = pre.config.patchGrid.withTiles(result.tiles.count, gridRows: result.gridRows, gridCols: result.gridCols)
            try grid.validate()
            let npy = Patchify.patchify(result.stacked, tiles: grid.tiles, size: grid.imageSize, patch: grid.patchSize,
                                        prefix: Npy.header(dtype: .uint8, shape: grid.shape))
            return .ok(npy: npy, grid: grid)
        } catch let error as VLMError {
            return .error(error.message)
        } catch {
            return .error("\(error)")
        }
    }

    /// Removes `.NAME.tmp-PID` files a killed run left behind.
    static func removeStaleTemporaries(in directory: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(".") && name.contains(".tar.tmp-") {
            unlink(directory + "/" + name)
        }
    }
}

/// Writes pixel shards one at a time and commits each shard's rows when it is closed. Error rows are committed
/// with the shard that is open when they occur (or at close), so a rerun never loses or repeats one.
final class PixelShardWriter {
    let catalog: Catalog
    let configHash: String
    let configJSON: String
    let config: PreprocessConfig
    let targetBytes: Int
    private var nextIndex: Int
    /// The shard being written; `output` computes its XXH3-128 as the bytes go out (the shard's integrity hash,
    /// recorded in `pixel_shards.xxh3_128`), so a closed shard is never read back to be hashed.
    private var open: (path: String, name: String, temp: String, output: XXH3TarOutput, tar: TarWriter)?
    /// The hashes written or failed since the last commit (not yet in the catalog).
    var uncommittedHashes: Set<String> { Set(rows.map(\.0.sha256)) }

    /// The rows to commit with the open shard: an ok image keeps only its member, grid and checksum, never its
    /// patches (those are in the tar already; holding them until the shard closed kept a whole shard in memory).
    private var rows: [(PatchifyStage.Item, Written)] = []

    enum Written {
        /// `xxh3`: XXH3-64 of the member's bytes (recorded in `pixels.xxh3`).
        case ok(member: TarMember, grid: PatchGrid, xxh3: UInt64)
        case error(String)
    }
    private(set) var counts: [String: Int] = ["pixels": 0, "errors": 0, "shards": 0]
    /// `pixels-CONFIG-` or, for a part, `pixels-CONFIG-partIofN-`: parts never produce the same shard name.
    let prefix: String

    init(catalog: Catalog, config: PreprocessConfig, configHash: String, configJSON: String, targetBytes: Int, part: PartSpec?) throws {
        self.catalog = catalog
        self.config = config
        self.configHash = configHash
        self.configJSON = configJSON
        self.targetBytes = targetBytes
        let prefix = "pixels-\(configHash.prefix(12))-" + (part.map { "part\($0.index)of\($0.count)-" } ?? "")
        self.prefix = prefix
        let names = try catalog.pixelShardNames(configHash: configHash)
        nextIndex = (names.filter { $0.hasPrefix(prefix) }.compactMap { Int($0.dropFirst(prefix.count).prefix(6)) }.max() ?? -1) + 1
    }

    func add(_ item: PatchifyStage.Item, _ outcome: PatchifyStage.Outcome) throws {
        switch outcome {
        case .error(let message):
            rows.append((item, .error(message)))
            if open == nil, rows.count >= 1000 { try commit(shard: nil) }
        case .ok(let npy, let grid):
            if open == nil { try openShard() }
            let member = try open!.tar.add(name: "\(item.sha256).npy", bytes: npy)
            rows.append((item, .ok(member: member, grid: grid, xxh3: XXH3.hash64(npy))))
            if open!.output.offset >= targetBytes { try closeShard() }
        }
    }

    func close() throws {
        if open != nil { try closeShard() }
        if !rows.isEmpty { try commit(shard: nil) }
    }

    /// Drops the open shard's temporary file (its rows were never committed).
    func abandon() throws {
        if let open {
            try? open.output.file.close()
            unlink(open.temp)
        }
        open = nil
    }

    private func openShard() throws {
        let name = prefix + String(format: "%06d.tar", nextIndex)
        nextIndex += 1
        let path = catalog.workspace.pixelShardsDirectory + "/" + name
        let temp = AtomicFile.temporaryPath(for: path)
        let output = XXH3TarOutput(try FileWriter(path: temp))
        open = (path, name, temp, output, TarWriter(output: output))
    }

    private func closeShard() throws {
        guard let shard = open else { return }
        try shard.tar.finish()
        try shard.output.file.sync()
        let bytes = shard.output.offset
        try shard.output.file.close()
        let xxh3 = shard.output.xxh3_128
        guard rename(shard.temp, shard.path) == 0 else {
            throw VLMError.io(file: shard.path, "rename from \(shard.temp) failed: \(String(cString: strerror(errno)))")
        }
        AtomicFile.syncDirectory(of: shard.path)
        open = nil
        try commit(shard: (shard.name, xxh3, bytes))
    }

    private func commit(shard: (name: String, xxh3: String, bytes: Int)?) throws {
        let pending = rows
        let members = pending.filter { if case .ok = $0.1 { true } else { false } }.count
        let records: [PixelsRecord] = pending.map { item, written in
            switch written {
            case .ok(let member, let grid, let xxh3):
                return .ok(sha256: item.sha256, offset: member.contentOffset, size: member.size, tiles: grid.tiles,
                           patchesPerTile: grid.patchesPerTile, patchDim: grid.patchDim, gridRows: grid.gridRows,
                           gridCols: grid.gridCols, xxh3: xxh3)
            case .error(let message):
                return .error(sha256: item.sha256, message: "\(item.name): \(message)")
            }
        }
        try catalog.insertPixels(records, configHash: configHash, configJSON: configJSON,
                                 shard: shard.map { ($0.name, $0.xxh3, $0.bytes, members) })
        rows.removeAll()
        counts["pixels", default: 0] += members
        counts["errors", default: 0] += pending.count - members
        if shard != nil { counts["shards", default: 0] += 1 }
    }
}

/// Per-worker preprocessors handed to worker threads; worker k only ever touches element k.
struct WorkerBox: @unchecked Sendable {
    let workers: [Preprocessor]
    init(_ workers: [Preprocessor]) { self.workers = workers }
}

/// One result slot per batch item, filled from worker threads.
final class OutcomeSlots: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [PatchifyStage.Outcome?]
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ value: PatchifyStage.Outcome) { lock.withLock { values[i] = value } }
}
