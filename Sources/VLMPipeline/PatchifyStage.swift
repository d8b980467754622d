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
        // nothing to do.
        let okHashes = try catalog.okImageHashes()
            .filter { options.part?.owns(imageKey: $0.key, sampleKey: $0.key) ?? true }
            .map(\.sha256).uniqued().sorted()
        let fingerprint = Hashing.sha256(okHashes.joined(separator: "\n"))
        let params = Params(config: config, configHash: configHash, part: options.part?.description)
        if let done = try catalog.completedRun(stage: stageName, paramsHash: Catalog.paramsHash(params), inputFingerprint: fingerprint) {
            return StageReport(stage: stageName, counts: done.counts, skipped: true)
        }

        // The first image (by id) of this part holding each hash: equal bytes are patchified once per part.
        var seen = Set<String>()
        let pending = try catalog.pendingImages(pixelsConfig: configHash)
            .map { Item(sha256: $0.sha256, location: workspace.resolve($0.location), member: $0.member, key: $0.key) }
            .filter { (options.part?.owns(imageKey: $0.key, sampleKey: $0.key) ?? true) && seen.insert($0.sha256).inserted }
        let already = okHashes.count - pending.count
        let runID = try catalog.beginRun(stage: stageName, params: params, inputFingerprint: fingerprint)
        removeStaleTemporaries(in: workspace.pixelShardsDirectory)

        progress.start("patchify", total: pending.count)
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
            // Plain files: read by the workers themselves. Archive members: one sequential pass per archive.
            let files = pending.filter { $0.member == nil }
            for start in stride(from: 0, to: files.count, by: batchSize) {
                let batch = Array(files[start..<min(start + batchSize, files.count)])
                try process(batch, bytes: Array(repeating: nil, count: batch.count))
            }
            let byArchive = Dictionary(grouping: pending.filter { $0.member != nil }, by: \.location)
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
    private var open: (path: String, name: String, temp: String, file: FileWriter, tar: TarWriter)?
    private var rows: [(PatchifyStage.Item, TarMember?, PatchifyStage.Outcome)] = []
    /// XXH3-64 of each pending member's bytes, by image sha256 (recorded in `pixels.xxh3`).
    private var checksums: [String: UInt64] = [:]
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
        case .error:
            rows.append((item, nil, outcome))
            if open == nil, rows.count >= 1000 { try commit(shard: nil) }
        case .ok(let npy, _):
            if open == nil { try openShard() }
            let member = try open!.tar.add(name: "\(item.sha256).npy", bytes: npy)
            rows.append((item, member, outcome))
            checksums[item.sha256] = XXH3.hash64(npy)
            if open!.file.offset >= targetBytes { try closeShard() }
        }
    }

    func close() throws {
        if open != nil { try closeShard() }
        if !rows.isEmpty { try commit(shard: nil) }
    }

    /// Drops the open shard's temporary file (its rows were never committed).
    func abandon() throws {
        if let open {
            try? open.file.close()
            unlink(open.temp)
        }
        open = nil
    }

    private func openShard() throws {
        let name = prefix + String(format: "%06d.tar", nextIndex)
        nextIndex += 1
        let path = catalog.workspace.pixelShardsDirectory + "/" + name
        let temp = AtomicFile.temporaryPath(for: path)
        let file = try FileWriter(path: temp)
        open = (path, name, temp, file, TarWriter(file))
    }

    private func closeShard() throws {
        guard let shard = open else { return }
        try shard.tar.finish()
        try shard.file.sync()
        let bytes = shard.file.offset
        try shard.file.close()
        let sha = try Hashing.sha256(file: shard.temp)
        guard rename(shard.temp, shard.path) == 0 else {
            throw VLMError.io(file: shard.path, "rename from \(shard.temp) failed: \(String(cString: strerror(errno)))")
        }
        AtomicFile.syncDirectory(of: shard.path)
        open = nil
        try commit(shard: (shard.name, sha, bytes))
    }

    private func commit(shard: (name: String, sha256: String, bytes: Int)?) throws {
        let pending = rows
        let members = pending.filter { $0.1 != nil }.count
        let records: [PixelsRecord] = pending.map { item, member, outcome in
            switch outcome {
            case .ok(_, let grid):
                return .ok(sha256: item.sha256, offset: member!.contentOffset, size: member!.size, tiles: grid.tiles,
                           patchesPerTile: grid.patchesPerTile, patchDim: grid.patchDim, gridRows: grid.gridRows,
                           gridCols: grid.gridCols, xxh3: checksums[item.sha256]!)
            case .error(let message):
                return .error(sha256: item.sha256, message: "\(item.name): \(message)")
            }
        }
        try catalog.insertPixels(records, configHash: configHash, configJSON: configJSON,
                                 shard: shard.map { ($0.name, $0.sha256, $0.bytes, members) })
        rows.removeAll()
        checksums.removeAll()
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

extension Array where Element: Hashable {
    /// The elements in order, each kept once.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
