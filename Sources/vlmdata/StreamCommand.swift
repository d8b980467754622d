import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMLoader

/// The loader flags of `stream`.
struct LoaderFlags: ParsableArguments {
    @Option(help: ArgumentHelp("This process's rank (default: $RANK, $SLURM_PROCID, or 0).", valueName: "r"))
    var rank: Int?

    @Option(help: ArgumentHelp("Ranks in the job (default: $WORLD_SIZE, $SLURM_NTASKS, or 1).", valueName: "w"))
    var worldSize: Int?

    @Option(help: ArgumentHelp("Background decode threads (0: decode on the main thread). The order never depends on it.", valueName: "k"))
    var workers = 2

    @Option(help: ArgumentHelp("Samples each worker decodes ahead (bounds memory).", valueName: "n"))
    var prefetch = 32

    @Option(help: ArgumentHelp("Shuffle seed (default 0, or the resumed state's).", valueName: "s"))
    var seed: UInt64?

    @Option(help: ArgumentHelp("none (source order), shard (shard order only) or block (shards, then samples within blocks; the default).", valueName: "mode"))
    var shuffle: String?

    @Option(help: ArgumentHelp("Samples per shuffle block (default 1024).", valueName: "n"))
    var blockSize: Int?

    @Option(help: ArgumentHelp("Canonical partitions of the order, fixed for a run (default 8; a rank reads fewer shards at once when it divides this).", valueName: "p"))
    var partitions: Int?

    @Flag(help: "Drop the epoch's last samples that do not fill a batch on every rank (default: pad by repeating samples).")
    var dropLast = false

    @Option(help: ArgumentHelp("Brace pattern of shard URLs, e.g. https://host/train-{000000..000123}.tar (repeatable). The workspace catalog supplies the index and checksums.", valueName: "pattern"))
    var url: [String] = []

    @Option(help: ArgumentHelp("A file of shard URLs or patterns, one per line.", valueName: "file"))
    var shardList: String?

    @Option(help: ArgumentHelp("Read a published index instead of a workspace: https://…/index.sqlite or s3://bucket/prefix/index.sqlite (see docs/s3.md). A --workspace that is such a URL means the same.", valueName: "url"))
    var index: String?

    @Option(help: ArgumentHelp("Folder for downloaded shards (one per process). Default: WORKSPACE/cache/rank-R.", valueName: "dir"))
    var cacheDir: String?

    @Option(help: ArgumentHelp("Hard cap of the cache folder, e.g. 20GB.", valueName: "size"))
    var cacheSize = "10GB"

    @Option(help: ArgumentHelp("When a shard is missing, truncated or empty: error (stop) or skip (skip the samples it lacks, reported).", valueName: "policy"))
    var onMissing = "error"

    @Option(help: ArgumentHelp("When a sample's bytes differ from the checksum recorded at write time (or do not decode): error (stop, naming shard, member and offset) or skip (skip it, reported).", valueName: "policy"))
    var onCorrupt = "error"

    @Flag(help: "Do not check each member read against the XXH3 checksum recorded when its shard was written.")
    var noVerifyReads = false

    @Option(help: ArgumentHelp("Mix local workspaces instead of --workspace: DIR=weight:W, DIR=repeat:R or DIR=choose:N (repeatable).", valueName: "spec"))
    var mix: [String] = []

    @Option(help: ArgumentHelp("A mixture's epoch size for its weighted datasets (default: their total).", valueName: "n"))
    var epochSize: Int?

    func validate() throws {
        if let worldSize, worldSize < 1 { throw ValidationError("--world-size must be at least 1.") }
        if let rank, rank < 0 { throw ValidationError("--rank must not be negative.") }
        if let rank, let worldSize, rank >= worldSize { throw ValidationError("--rank \(rank) must be below --world-size \(worldSize).") }
        if workers < 0 { throw ValidationError("--workers must not be negative.") }
        if prefetch < 1 { throw ValidationError("--prefetch must be at least 1.") }
        if let shuffle, ShuffleMode(rawValue: shuffle) == nil { throw ValidationError("--shuffle must be none, shard or block, not '\(shuffle)'.") }
        if let blockSize, blockSize < 1 { throw ValidationError("--block-size must be at least 1.") }
        if let partitions, partitions < 1 { throw ValidationError("--partitions must be at least 1.") }
        if MissingPolicy(rawValue: onMissing) == nil { throw ValidationError("--on-missing must be error or skip, not '\(onMissing)'.") }
        if CorruptPolicy(rawValue: onCorrupt) == nil { throw ValidationError("--on-corrupt must be error or skip, not '\(onCorrupt)'.") }
        if (try? parseByteSize(cacheSize)) == nil { throw ValidationError("--cache-size '\(cacheSize)' is not a size; write e.g. 20GB.") }
        if !url.isEmpty && shardList != nil { throw ValidationError("give --url or --shard-list, not both.") }
        if index != nil && (!url.isEmpty || shardList != nil || !mix.isEmpty) {
            throw ValidationError("--index names the shards itself; it cannot be combined with --url, --shard-list or --mix.")
        }
        if !mix.isEmpty && (!url.isEmpty || shardList != nil) { throw ValidationError("--mix reads local workspaces; it cannot be combined with --url or --shard-list.") }
        for spec in mix where (try? Self.parseMix(spec)) == nil {
            throw ValidationError("--mix '\(spec)' must be DIR=weight:W, DIR=repeat:R or DIR=choose:N.")
        }
    }

    static func parseMix(_ spec: String) throws -> (String, MixPolicy) {
        guard let eq = spec.lastIndex(of: "=") else { throw ValidationError("no '='") }
        let dir = String(spec[..<eq])
        let policy = spec[spec.index(after: eq)...].split(separator: ":", maxSplits: 1)
        guard policy.count == 2, !dir.isEmpty else { throw ValidationError("bad policy") }
        switch policy[0] {
        case "weight": if let w = Double(policy[1]), w > 0 { return (dir, .weight(w)) }
        case "repeat": if let r = Double(policy[1]), r > 0 { return (dir, .repeat(r)) }
        case "choose": if let n = Int(policy[1]), n >= 0 { return (dir, .choose(n)) }
        default: break
        }
        throw ValidationError("bad policy")
    }

    func topology() throws -> Topology {
        try Topology.resolve(rank: rank, worldSize: worldSize, environment: ProcessInfo.processInfo.environment)
    }

    /// The loader these flags describe, over `workspace`'s index (local shards, URLs, or a mixture).
    /// Flags given win; the rest of the order comes from `resuming` (so `--resume` alone continues exactly), else
    /// the defaults. A flag that contradicts the state is refused when the stream starts.
    func makeLoader(workspace: String, unit: Int, groupMegabatch: Int = 0, resuming: LoaderState? = nil) throws -> Loader {
        let topology = try topology()
        let base = resuming?.spec ?? OrderSpec()
        let order = OrderSpec(seed: seed ?? base.seed, shuffle: shuffle.flatMap(ShuffleMode.init(rawValue:)) ?? base.shuffle,
                              blockSize: blockSize ?? base.blockSize, partitions: partitions ?? base.partitions,
                              groupMegabatch: resuming != nil && groupMegabatch == 0 ? base.groupMegabatch : groupMegabatch)
        let options = LoaderOptions(
            order: order,
            topology: topology, workers: workers, prefetch: prefetch, unit: unit,
            remainder: dropLast ? .dropLast : .pad, onMissing: MissingPolicy(rawValue: onMissing)!, epochSize: epochSize,
            onCorrupt: CorruptPolicy(rawValue: onCorrupt)!, verifyReads: !noVerifyReads)
        if !mix.isEmpty {
            var datasets: [LoaderDataset] = []
            for spec in mix {
                let (dir, policy) = try Self.parseMix(spec)
                let catalog = try openCatalog(dir)
                datasets.append(LoaderDataset(index: try DatasetIndex.load(catalog: catalog),
                                              source: LocalShardSource(root: catalog.workspace.root), policy: policy))
            }
            return try Loader(datasets: datasets, options: options)
        }
        if let indexURL = self.index ?? (RemoteIndex.isURL(workspace) ? workspace : nil) {
            let dir = cacheDir ?? RemoteIndex.defaultCacheDirectory(for: indexURL, rank: topology.rank)
            let remote = try RemoteIndex.open(indexURL, cacheDirectory: dir)
            let source = try remote.source(cacheDirectory: dir, cacheCapacity: try parseByteSize(cacheSize))
            return try Loader(datasets: [LoaderDataset(index: remote.index, source: source)], options: options)
        }
        let catalog = try openCatalog(workspace)
        var index = try DatasetIndex.load(catalog: catalog)
        var urls = try url.flatMap { try ShardURLs.expand($0) }
        if let shardList { urls = try ShardURLs.read(listFile: shardList) }
        guard !urls.isEmpty else {
            return try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: catalog.workspace.root))],
                              options: options)
        }
        var byName: [String: String] = [:]
        for u in urls { byName[ShardURLs.fileName(u)] = u }
        index = try index.restricted(to: Array(byName.keys))
        let dir = cacheDir ?? catalog.workspace.root + "/cache/rank-\(topology.rank)"
        let source = try HTTPShardSource(urls: byName, cacheDirectory: dir, cacheCapacity: try parseByteSize(cacheSize))
        return try Loader(datasets: [LoaderDataset(index: index, source: source)], options: options)
    }

    /// A warning when the cache cannot hold what the readers pin at once (one shard per decode thread, and at
    /// least two so the next shard can arrive while one is read): shards are then fetched more than once.
    func cacheWarning(_ loader: Loader) -> String? {
        for dataset in loader.datasets {
            guard let source = dataset.source as? HTTPShardSource else { continue }
            let largest = dataset.index.shards.map(\.bytes).max() ?? 0
            let window = max(2, workers) * largest
            if source.cache.capacity < window {
                return "warning: the cache (\(source.cache.capacity) bytes) is smaller than the prefetch window "
                    + "(\(max(2, workers)) shards of up to \(largest) bytes = \(window) bytes); shards will be fetched "
                    + "more than once per epoch. Raise --cache-size."
            }
        }
        return nil
    }

    /// GETs, bytes fetched and cache hits of the loader's remote sources (nil when it reads local files).
    static func cacheCounts(_ loader: Loader) -> [(String, String)]? {
        let caches = loader.datasets.compactMap { ($0.source as? HTTPShardSource)?.cache.statistics }
        guard !caches.isEmpty else { return nil }
        return [
            ("http_gets", "\(caches.map(\.requests).reduce(0, +))"),
            ("bytes_fetched", "\(caches.map(\.bytesDownloaded).reduce(0, +))"),
            ("cache_hits", "\(caches.map(\.hits).reduce(0, +))"),
            ("shard_fetches", "\(caches.map(\.downloads).reduce(0, +))"),
            ("cache_evictions", "\(caches.map(\.evictions).reduce(0, +))"),
        ]
    }

    func openCatalog(_ path: String) throws -> Catalog {
        guard FileManager.default.fileExists(atPath: path + "/catalog.sqlite") else {
            throw VLMError(.notFound, file: path + "/catalog.sqlite", "no catalog here; run the pipeline up to `vlmdata shard` first")
        }
        return try Catalog(workspace: Workspace(root: path))
    }
}

struct StreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Stream this rank's samples of an epoch: one key per line, or a summary per batch.",
        discussion: """
        The order is a pure function of (seed, epoch, the shards' fingerprint, shuffle settings): shard order \
        shuffled, then samples within blocks; each rank takes every WORLD-th position of it. Ranks are taken to \
        advance in lockstep, so --save-state writes (epoch, samples consumed by all ranks) and --resume continues \
        exactly, with any world size or worker count. Shards come from the workspace, or over HTTP(S) with --url / \
        --shard-list through a capped cache (the workspace catalog supplies the index and checksums). \
        Every member read is checked against the XXH3 checksum recorded when its shard was written \
        (--no-verify-reads turns it off): a damaged sample stops the stream with an error naming shard, member and \
        offset, or is skipped and counted with --on-corrupt skip; a truncated or empty shard is skipped with either \
        policy. Counts (padded, dropped, skipped, corrupt) go to stderr; stdout holds only keys or batch lines, and \
        the keys delivered before an error are printed.
        """)

    @OptionGroup var workspace: WorkspaceOptions
    @OptionGroup var loader: LoaderFlags

    @Option(help: ArgumentHelp("The epoch to stream (ignored with --resume).", valueName: "e"))
    var epoch = 0

    @Option(help: ArgumentHelp("Print one summary line per batch of this many rows.", valueName: "b"))
    var batchSize: Int?

    @Option(help: ArgumentHelp("Pack whole samples into rows of N model positions (image tokens counted).", valueName: "n"))
    var pack: Int?

    @Option(help: ArgumentHelp("Rows the packer keeps open.", valueName: "n"))
    var packRows = 8

    @Flag(help: "Group by modality and length as LLaVA's group_by_modality_length (mega-batches of batch × world).")
    var groupByLength = false

    @Option(help: ArgumentHelp("Stop after this many samples of this rank.", valueName: "m"))
    var maxSamples: Int?

    @Option(help: ArgumentHelp("Write the resume state here when done.", valueName: "file"))
    var saveState: String?

    @Option(help: ArgumentHelp("Continue from a saved state.", valueName: "file"))
    var resume: String?

    @Flag(help: "Print the final counts as one JSON object on stderr.")
    var json = false

    func validate() throws {
        if epoch < 0 { throw ValidationError("--epoch must not be negative.") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1.") }
        if let pack, pack < 1 { throw ValidationError("--pack must be at least 1 token.") }
        if pack != nil && batchSize == nil { throw ValidationError("--pack needs --batch-size (packed rows per batch).") }
        if groupByLength && batchSize == nil { throw ValidationError("--group-by-length needs --batch-size.") }
        if let maxSamples, maxSamples < 0 { throw ValidationError("--max-samples must not be negative.") }
        if packRows < 1 { throw ValidationError("--pack-rows must be at least 1.") }
    }

    func run() throws {
        let topology = try loader.topology()
        let unit = pack == nil ? (batchSize ?? 1) : 1
        let group = groupByLength ? (batchSize ?? 1) * topology.worldSize : 0
        let out = FileHandle.standardOutput
        var buffer = ""
        func emit(_ line: String) {
            buffer += line
            buffer += "\n"
            if buffer.utf8.count > 1 << 16 { out.write(Data(buffer.utf8)); buffer = "" }
        }
        // Keys already delivered reach stdout even when a later read fails.
        defer { out.write(Data(buffer.utf8)); buffer = "" }
        var cacheCounts: [(String, String)]?
        let result: (StreamReport, LoaderState, [String: String]) = try runOrExit {
            let state = try resume.map { try LoaderState.load(from: $0) }
            let loader = try self.loader.makeLoader(workspace: workspace.path, unit: unit, groupMegabatch: group,
                                                    resuming: state)
            if let warning = self.loader.cacheWarning(loader) { FileHandle.standardError.write(Data((warning + "\n").utf8)) }
            defer { cacheCounts = LoaderFlags.cacheCounts(loader) }
            var extra: [String: String] = [:]
            if let batchSize {
                let batches = try loader.batches(epoch: epoch, resuming: state, options: BatchOptions(
                    batchSize: batchSize, packContext: pack, packOpenRows: packRows, maxSamples: maxSamples))
                var n = 0
                while let batch = try batches.next() {
                    emit("batch=\(n) rows=\(batch.rows) samples=\(batch.keys.count) length=\(batch.length) "
                        + "model_tokens=\(batch.modelTokens) images=\(batch.imageTiles.count) "
                        + "pad_frac=\(String(format: "%.4f", batch.paddingFraction)) keys=\(batch.keys.joined(separator: ","))")
                    n += 1
                }
                if let fraction = batches.packingPaddingFraction { extra["packing_pad_frac"] = String(format: "%.4f", fraction) }
                if !batches.overlong.isEmpty { extra["overlong_dropped"] = String(batches.overlong.count) }
                extra["batches"] = String(n)
                batches.close()
                return (batches.samples.report, batches.state(), extra)
            }
            let stream = try loader.samples(epoch: epoch, resuming: state)
            var n = 0
            while maxSamples.map({ n < $0 }) ?? true, let sample = try stream.next() {
                emit(sample.key)
                n += 1
            }
            stream.close()
            return (stream.report, stream.state(), extra)
        }
        out.write(Data(buffer.utf8))
        buffer = ""
        let (report, state, extra) = result
        if let saveState { try runOrExit { try state.save(to: saveState) } }
        var fields: [(String, String)] = [
            ("rank", "\(topology.rank)"), ("world_size", "\(topology.worldSize)"),
            ("delivered", "\(report.delivered)"), ("padded", "\(report.padded)"),
            ("dropped_global", "\(report.droppedGlobal)"), ("skipped", "\(report.skipped)"),
            ("next_epoch", "\(state.epoch)"), ("next_consumed", "\(state.consumed)"),
        ]
        fields += extra.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        fields += cacheCounts ?? []
        if !report.missingShards.isEmpty { fields.append(("missing_shards", report.missingShards.joined(separator: ","))) }
        if report.corrupt > 0 { fields.append(("corrupt", "\(report.corrupt)")) }
        for error in report.corruptErrors { FileHandle.standardError.write(Data("skipped: \(error)\n".utf8)) }
        let line: String
        if json {
            let object = Dictionary(uniqueKeysWithValues: fields.map { ($0.0, Int($0.1).map { $0 as Any } ?? Double($0.1).map { $0 as Any } ?? $0.1 as Any) })
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            line = String(decoding: data, as: UTF8.self)
        } else {
            line = "stream: " + fields.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
        }
        if !workspace.quiet || json { FileHandle.standardError.write(Data((line + "\n").utf8)) }
    }
}
