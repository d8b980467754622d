import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// One training shard as the index knows it.
public struct ShardInfo: Sendable, Hashable, Codable {
    /// File name, e.g. `train-000000.tar`; also how an HTTP source finds the shard's URL.
    public var name: String
    /// Path relative to the workspace (or absolute).
    public var path: String
    /// Recorded only when the shard was written with `shard --sha256` (and by indexes from before v13).
    public var sha256: String?
    public var bytes: Int
    public var sampleCount: Int
    /// The number of this shard's first sample in the index (samples are numbered in shard order).
    public var firstSample: Int
    /// XXH3-128 of the file, recorded at write time (nil only in indexes from before v8).
    public var xxh3_128: String?

    public init(name: String, path: String, sha256: String?, bytes: Int, sampleCount: Int, firstSample: Int,
                xxh3_128: String? = nil) {
        self.name = name
        self.path = path
        self.sha256 = sha256
        self.bytes = bytes
        self.sampleCount = sampleCount
        self.firstSample = firstSample
        self.xxh3_128 = xxh3_128
    }

    /// The file's recorded checksum: its XXH3-128, else (older indexes) its sha256.
    public var checksum: String { xxh3_128 ?? sha256 ?? "" }

    /// Whether the file at `path` has the recorded checksum (XXH3-128, else sha256). Its size is not checked here.
    public func fileMatches(_ path: String) throws -> (matches: Bool, actual: String) {
        let actual = xxh3_128 != nil ? try XXH3.hash128(file: path) : try Hashing.sha256(file: path)
        return (actual == checksum, actual)
    }

    /// The name of the checksum `checksum` holds, for messages.
    public var checksumKind: String { xxh3_128 != nil ? "xxh3-128" : "sha256" }
}

/// Where one member of a sample sits, relative to the sample's first byte.
public struct SamplePart: Sendable, Hashable, Codable {
    /// Member suffix: `json`, `input_ids.npy`, `labels.npy`, `pixels.npy`, ...
    public var name: String
    public var offset: Int
    public var size: Int
    /// XXH3_64bits of the member's bytes, recorded when the shard was written (nil in older indexes): every read
    /// is checked against it.
    public var xxh3: UInt64?

    public init(name: String, offset: Int, size: Int, xxh3: UInt64? = nil) {
        self.name = name
        self.offset = offset
        self.size = size
        self.xxh3 = xxh3
    }
}

/// One sample of the index: where its bytes are (one `pread` reads them all) and its lengths.
public struct SampleInfo: Sendable, Hashable, Codable {
    public var key: String
    public var shard: Int
    /// Byte offset of the sample's first tar header in its shard, and its size up to the end of its last member.
    public var offset: Int
    public var size: Int
    /// Text tokens (the image placeholder counts as one).
    public var tokens: Int
    public var imageTokens: Int
    public var hasImage: Bool
    public var parts: [SamplePart]

    public init(key: String, shard: Int, offset: Int, size: Int, tokens: Int, imageTokens: Int, hasImage: Bool,
                parts: [SamplePart]) {
        self.key = key
        self.shard = shard
        self.offset = offset
        self.size = size
        self.tokens = tokens
        self.imageTokens = imageTokens
        self.hasImage = hasImage
        self.parts = parts
    }

    /// Positions the sample takes in the model: text tokens with the placeholder replaced by the image tokens.
    public var modelLength: Int { hasImage ? tokens - 1 + imageTokens : tokens }
}

/// The training-shard index of a workspace: shards in name order, samples numbered in shard order.
///
/// Only the shards are held (name, checksum, sample count, where their samples' numbers start). A shard's
/// samples (`SampleInfo`: key, offsets, lengths, each member's offset, size and checksum; about 375 bytes a sample)
/// are read from the catalog by `samples(ofShard:)` when a stream opens that shard, and dropped when the stream is
/// done with it (`ShardTables`), so the memory a loader needs does not grow with the dataset. The catalog stays
/// open for those reads; a shard rewritten or removed after `load` is an error naming it when it is next opened.
///
/// ```swift
/// let index = try DatasetIndex.load(catalog: Catalog(workspace: Workspace(root: "./vlmdata-work")))
/// print(index.count, index.fingerprint)
/// let first = try index.samples(ofShard: 0)
/// ```
public struct DatasetIndex: Sendable {
    /// Shards in name order. A path may be changed (shards moved); names, checksums and counts identify them.
    public var shards: [ShardInfo]
    /// Samples in all shards.
    public let count: Int
    /// SHA-256 over `name\tchecksum\tsamples\n` of every shard, in order (the checksum is the XXH3-128 recorded at
    /// write time, or the sha256 in indexes without one): changes when any shard's bytes change.
    public let fingerprint: String
    /// Reads shard `shards[s]`'s samples (with `SampleInfo.shard` = s), checked against the shard as loaded.
    let reader: @Sendable (ShardInfo, Int) throws -> [SampleInfo]

    /// An index of `shards` (their `firstSample` is set here) whose samples `reader` reads, one shard at a time.
    init(shards: [ShardInfo], reader: @escaping @Sendable (ShardInfo, Int) throws -> [SampleInfo]) {
        var text = ""
        var numbered = shards
        var first = 0
        for s in numbered.indices {
            numbered[s].firstSample = first
            first += numbered[s].sampleCount
            text += "\(shards[s].name)\t\(shards[s].checksum)\t\(shards[s].sampleCount)\n"
        }
        self.shards = numbered
        count = first
        fingerprint = Hashing.sha256(text)
        self.reader = reader
    }

    /// Sample counts per shard, in shard order (what `SampleOrder` needs).
    public var shardSizes: [Int] { shards.map(\.sampleCount) }

    /// The shard holding sample `n` (0 ..< count).
    public func shard(ofSample n: Int) -> Int {
        var lo = 0, hi = shards.count - 1
        while lo < hi {  // the last shard starting at or before n: never an empty one, whose successor starts there too
            let mid = (lo + hi + 1) / 2
            if shards[mid].firstSample <= n { lo = mid } else { hi = mid - 1 }
        }
        return lo
    }

    /// The samples of shard `s`, in shard order, read from the catalog now. Throws `.notFound` when the catalog no
    /// longer has the shard, `.conflict` when it was rewritten since `load`, `.corrupt` when its row and its
    /// samples disagree.
    public func samples(ofShard s: Int) throws -> [SampleInfo] {
        try reader(shards[s], s)
    }

    /// Every sample in index order, reading one shard's samples at a time (none kept).
    public func forEachSample(_ body: (SampleInfo) throws -> Void) throws {
        for s in shards.indices { for sample in try samples(ofShard: s) { try body(sample) } }
    }

    /// Signed model lengths in index order (positive with an image, negative text-only, never 0): what length
    /// grouping sorts by. Reads every shard once.
    public func signedLengths() throws -> [Int] {
        var lengths: [Int] = []
        lengths.reserveCapacity(count)
        try forEachSample { lengths.append($0.hasImage ? max(1, $0.modelLength) : -max(1, $0.modelLength)) }
        return lengths
    }

    /// The longest sample in model positions (0 for an empty index). Reads every shard once.
    public func longestModelLength() throws -> Int {
        var longest = 0
        try forEachSample { longest = max(longest, $0.modelLength) }
        return longest
    }

    /// Reads the `shards` table; each shard's samples (`samples`, `sample_parts`) are read when asked for.
    public static func load(catalog: Catalog) throws -> DatasetIndex {
        let shards = try catalog.shardRecords().map {
            ShardInfo(name: $0.name, path: $0.path, sha256: $0.sha256, bytes: $0.bytes, sampleCount: $0.samples,
                      firstSample: 0, xxh3_128: $0.xxh3_128)
        }
        if shards.allSatisfy({ $0.sampleCount == 0 }) {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, "no training shards in the catalog; run `vlmdata shard` first")
        }
        let file = catalog.workspace.catalogPath
        return DatasetIndex(shards: shards) { shard, s in
            var samples: [SampleInfo] = []
            samples.reserveCapacity(shard.sampleCount)
            let now = try catalog.readShardIndex(name: shard.name) { row, parts in
                samples.append(SampleInfo(key: row.key, shard: s, offset: row.offset, size: row.size, tokens: row.tokens,
                                          imageTokens: row.imageTokens, hasImage: row.hasImage,
                                          parts: parts.map { SamplePart(name: $0.name, offset: $0.offset, size: $0.size, xxh3: $0.xxh3) }))
            }
            guard let now else {
                throw VLMError(.notFound, file: file, record: "shards.\(shard.name)",
                               "the shard left the catalog's index after the loader read it (a shard rerun?); open the loader again")
            }
            let checksum = now.xxh3_128 ?? now.sha256 ?? ""
            guard checksum == shard.checksum, now.samples == shard.sampleCount else {
                throw VLMError(.conflict, file: file, record: "shards.\(shard.name)",
                               "the shard was rewritten after the loader read the index (\(shard.sampleCount) samples, "
                               + "\(shard.checksumKind) \(shard.checksum.prefix(16))… then; \(now.samples) samples, "
                               + "\(checksum.prefix(16))… now); open the loader again")
            }
            guard samples.count == shard.sampleCount else {
                throw VLMError(.corrupt, file: file, record: "shards.\(shard.name)",
                               "the shard row says \(shard.sampleCount) samples but the index holds \(samples.count)")
            }
            return samples
        }
    }
}
