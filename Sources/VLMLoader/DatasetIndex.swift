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
    /// Index of this shard's first sample in `DatasetIndex.samples`.
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

/// The training-shard index of a workspace: shards in name order, samples in shard order.
///
/// ```swift
/// let index = try DatasetIndex.load(catalog: Catalog(workspace: Workspace(root: "./vlmdata-work")))
/// print(index.samples.count, index.fingerprint)
/// ```
public struct DatasetIndex: Sendable {
    public var shards: [ShardInfo]
    public var samples: [SampleInfo]
    /// SHA-256 over `name\tchecksum\tsamples\n` of every shard, in order (the checksum is the XXH3-128 recorded at
    /// write time, or the sha256 in indexes without one): changes when any shard's bytes change.
    public let fingerprint: String

    public init(shards: [ShardInfo], samples: [SampleInfo]) {
        self.shards = shards
        self.samples = samples
        var text = ""
        for shard in shards { text += "\(shard.name)\t\(shard.checksum)\t\(shard.sampleCount)\n" }
        fingerprint = Hashing.sha256(text)
    }

    /// Sample counts per shard, in shard order (what `SampleOrder` needs).
    public var shardSizes: [Int] { shards.map(\.sampleCount) }

    /// Reads the `shards`, `samples` and `sample_parts` tables.
    public static func load(catalog: Catalog) throws -> DatasetIndex {
        var shards: [ShardInfo] = []
        var shardIndex: [Int64: Int] = [:]
        var bucket: [[SampleInfo]] = []
        let samples = try catalog.readTrainingIndex(shards: { records in
            for record in records {
                shardIndex[record.id] = shards.count
                shards.append(ShardInfo(name: record.name, path: record.path, sha256: record.sha256, bytes: record.bytes,
                                        sampleCount: record.samples, firstSample: 0, xxh3_128: record.xxh3_128))
            }
            bucket = [[SampleInfo]](repeating: [], count: shards.count)
        }, sample: { row, parts in
            guard let s = shardIndex[row.shardID] else { return }
            bucket[s].append(SampleInfo(key: row.key, shard: s, offset: row.offset, size: row.size, tokens: row.tokens,
                                        imageTokens: row.imageTokens, hasImage: row.hasImage,
                                        parts: parts.map { SamplePart(name: $0.name, offset: $0.offset, size: $0.size,
                                                                      xxh3: $0.xxh3) }))
        }, finish: { () -> [SampleInfo] in
            // Each shard's samples move into one array as it is emptied: the index is never held twice.
            var samples: [SampleInfo] = []
            samples.reserveCapacity(bucket.reduce(0) { $0 + $1.count })
            for s in shards.indices {
                shards[s].firstSample = samples.count
                if bucket[s].count != shards[s].sampleCount {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "shards.\(shards[s].name)",
                                   "the shard row says \(shards[s].sampleCount) samples but the index holds \(bucket[s].count)")
                }
                samples += bucket[s]
                bucket[s] = []
            }
            return samples
        })
        if samples.isEmpty {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, "no training shards in the catalog; run `vlmdata shard` first")
        }
        return DatasetIndex(shards: shards, samples: samples)
    }
}
