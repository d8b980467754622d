import Foundation
import VLMCatalog
import VLMCore
import VLMLoader

/// The loader a C caller asks for, as one JSON object (`vlmdata_loader_open`). Every field but `workspace` (or
/// `mix`) is optional; the defaults are `vlmdata stream`'s. See include/vlmdata.h for the field list.
struct LoaderConfig: Decodable {
    struct MixEntry: Decodable {
        var workspace: String
        /// weight, repeat or choose
        var policy: String
        var value: Double
    }

    var workspace: String?
    /// A published index URL (`https://…/index.sqlite`, `s3://…/index.sqlite`); a `workspace` that is such a URL
    /// means the same.
    var index: String?
    var mix: [MixEntry]?
    var urls: [String]?
    var shardList: String?
    var cacheDir: String?
    var cacheBytes: Int?
    var seed: UInt64?
    var shuffle: String?
    var blockSize: Int?
    var partitions: Int?
    var groupMegabatch: Int?
    var rank: Int?
    var worldSize: Int?
    var batchSize: Int?
    var dropLast: Bool?
    var onMissing: String?
    var epochSize: Int?
    /// Resume: the order comes from the state when the fields above do not name it (as `vlmdata stream --resume`).
    var resume: LoaderState?

    enum CodingKeys: String, CodingKey {
        case workspace, index, mix, urls, seed, shuffle, partitions, rank, resume
        case shardList = "shard_list", cacheDir = "cache_dir", cacheBytes = "cache_bytes", blockSize = "block_size"
        case groupMegabatch = "group_megabatch", worldSize = "world_size", batchSize = "batch_size", dropLast = "drop_last"
        case onMissing = "on_missing", epochSize = "epoch_size"
    }

    static func parse(_ json: String) throws -> LoaderConfig {
        do {
            return try JSONDecoder().decode(LoaderConfig.self, from: Data(json.utf8))
        } catch let error as DecodingError {
            throw VLMError(.invalidArgument, record: "loader config", "not a valid loader configuration: \(Self.describe(error))")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String { keys.map(\.stringValue).joined(separator: ".") }
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c): return "field '\(path(c.codingPath))': \(c.debugDescription)"
        case .keyNotFound(let key, _): return "missing field '\(key.stringValue)'"
        case .dataCorrupted(let c): return c.codingPath.isEmpty ? "bad JSON: \(c.debugDescription)" : "field '\(path(c.codingPath))': \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    func loader() throws -> Loader {
        let env = ProcessInfo.processInfo.environment
        let topology = try Topology.resolve(rank: rank, worldSize: worldSize, environment: env)
        let base = resume?.spec ?? OrderSpec()
        var shuffleMode = base.shuffle
        if let shuffle {
            guard let mode = ShuffleMode(rawValue: shuffle) else {
                throw VLMError(.invalidArgument, record: "shuffle", "must be none, shard or block, not '\(shuffle)'")
            }
            shuffleMode = mode
        }
        let order = OrderSpec(seed: seed ?? base.seed, shuffle: shuffleMode, blockSize: blockSize ?? base.blockSize,
                              partitions: partitions ?? base.partitions, groupMegabatch: groupMegabatch ?? base.groupMegabatch)
        var missing = MissingPolicy.error
        if let onMissing {
            guard let policy = MissingPolicy(rawValue: onMissing) else {
                throw VLMError(.invalidArgument, record: "on_missing", "must be error or skip, not '\(onMissing)'")
            }
            missing = policy
        }
        // the decoding threads belong to each stream (WorkerStream), not to the loader
        let options = LoaderOptions(order: order, topology: topology, workers: 0, prefetch: 1, unit: batchSize ?? 1,
                                    remainder: dropLast == true ? .dropLast : .pad, onMissing: missing, epochSize: epochSize)
        if let mix, !mix.isEmpty {
            guard workspace == nil, urls == nil, shardList == nil else {
                throw VLMError(.invalidArgument, record: "mix", "a mixture reads local workspaces; give mix alone, without workspace, urls or shard_list")
            }
            var datasets: [LoaderDataset] = []
            for (i, entry) in mix.enumerated() {
                let policy: MixPolicy
                switch entry.policy {
                case "weight" where entry.value > 0: policy = .weight(entry.value)
                case "repeat" where entry.value > 0: policy = .repeat(entry.value)
                case "choose" where entry.value >= 0 && entry.value == entry.value.rounded(): policy = .choose(Int(entry.value))
                default:
                    throw VLMError(.invalidArgument, record: "mix[\(i)]",
                                   "policy must be weight (> 0), repeat (> 0) or choose (a count), not \(entry.policy)=\(entry.value)")
                }
                let catalog = try Self.openCatalog(entry.workspace)
                datasets.append(LoaderDataset(index: try DatasetIndex.load(catalog: catalog),
                                              source: LocalShardSource(root: catalog.workspace.root), policy: policy))
            }
            return try Loader(datasets: datasets, options: options)
        }
        if let indexURL = index ?? workspace.flatMap({ RemoteIndex.isURL($0) ? $0 : nil }) {
            guard urls == nil, shardList == nil else {
                throw VLMError(.invalidArgument, record: "index", "an index URL names its shards itself; give it without urls or shard_list")
            }
            let dir = cacheDir ?? RemoteIndex.defaultCacheDirectory(for: indexURL, rank: topology.rank)
            let remote = try RemoteIndex.open(indexURL, cacheDirectory: dir)
            let source = try remote.source(cacheDirectory: dir, cacheCapacity: cacheBytes ?? 10_000_000_000)
            return try Loader(datasets: [LoaderDataset(index: remote.index, source: source)], options: options)
        }
        guard let workspace else {
            throw VLMError(.invalidArgument, record: "loader config", "give workspace (a folder with catalog.sqlite) or mix")
        }
        let catalog = try Self.openCatalog(workspace)
        var index = try DatasetIndex.load(catalog: catalog)
        guard urls != nil || shardList != nil else {
            return try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: catalog.workspace.root))],
                              options: options)
        }
        if urls != nil && shardList != nil {
            throw VLMError(.invalidArgument, record: "loader config", "give urls or shard_list, not both")
        }
        var list = try (urls ?? []).flatMap { try ShardURLs.expand($0) }
        if let shardList { list = try ShardURLs.read(listFile: shardList) }
        var byName: [String: String] = [:]
        for u in list { byName[ShardURLs.fileName(u)] = u }
        index = try index.restricted(to: Array(byName.keys))
        let dir = cacheDir ?? catalog.workspace.root + "/cache/rank-\(topology.rank)"
        let source = try HTTPShardSource(urls: byName, cacheDirectory: dir, cacheCapacity: cacheBytes ?? 10_000_000_000)
        return try Loader(datasets: [LoaderDataset(index: index, source: source)], options: options)
    }

    static func openCatalog(_ path: String) throws -> Catalog {
        guard FileManager.default.fileExists(atPath: path + "/catalog.sqlite") else {
            throw VLMError(.notFound, file: path + "/catalog.sqlite", "no catalog here; run the pipeline up to `vlmdata shard` first")
        }
        return try Catalog(workspace: Workspace(root: path))
    }
}
