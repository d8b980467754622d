import Foundation
import GRDB
import VLMCatalog
import VLMCore
import VLMIO

/// One training shard as the index knows it.
public struct ShardInfo: Sendable, Hashable, Codable {
    /// File name, e.g. `train-000000.tar`; also how an HTTP source finds the shard's URL.
    public var name: String
    /// Path relative to the workspace (or absolute).
    public var path: String
    public var sha256: String
    public var bytes: Int
    public var sampleCount: Int
    /// Index of this shard's first sample in `DatasetIndex.samples`.
    public var firstSample: Int

    public init(name: String, path: String, sha256: String, bytes: Int, sampleCount: Int, firstSample: Int) {
        self.name = name
        self.path = path
        self.sha256 = sha256
        self.bytes = bytes
        self.sampleCount = sampleCount
        self.firstSample = firstSample
    }
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
    /// SHA-256 over `name\tsha256\tsamples\n` of every shard, in order: changes when any shard's bytes change.
    public let fingerprint: String

    public init(shards: [ShardInfo], samples: [SampleInfo]) {
        self.shards = shards
        self.samples = samples
        var text = ""
        for shard in shards { text += "\(shard.name)\t\(shard.sha256)\t\(shard.sampleCount)\n" }
        fingerprint = Hashing.sha256(text)
    }

    /// Sample counts per shard, in shard order (what `SampleOrder` needs).
    public var shardSizes: [Int] { shards.map(\.sampleCount) }

    /// Every sample's members, offsets relative to the sample, in sample order.
    package static let partsSQL = """
        SELECT p.sample_id, p.name, p.offset - s.offset AS rel, p.size, p.xxh3
        FROM sample_parts p JOIN samples s ON s.id = p.sample_id ORDER BY p.sample_id, p.offset
        """

    /// Every sample, in shard order (read through the samples (shard_id, index_in_shard) key, no sort).
    package static let samplesSQL = """
        SELECT id, key, shard_id, offset, size, tokens, image_tokens, has_image
        FROM samples ORDER BY shard_id, index_in_shard
        """

    /// Reads the `shards`, `samples` and `sample_parts` tables.
    public static func load(catalog: Catalog) throws -> DatasetIndex {
        let (shards, samples) = try catalog.read { db -> ([ShardInfo], [SampleInfo]) in
            var shards: [ShardInfo] = []
            var shardIndex: [Int64: Int] = [:]
            let shardRows = try Row.fetchAll(db, sql: "SELECT id, name, path, sha256, bytes, samples FROM shards ORDER BY name")
            for row in shardRows {
                shardIndex[row["id"]] = shards.count
                shards.append(ShardInfo(name: row["name"], path: row["path"], sha256: row["sha256"], bytes: row["bytes"],
                                        sampleCount: row["samples"], firstSample: 0))
            }
            var parts: [Int64: [SamplePart]] = [:]
            let partRows = try Row.fetchCursor(db, sql: Self.partsSQL)
            while let row = try partRows.next() {
                parts[row[0], default: []].append(SamplePart(name: row[1], offset: row[2], size: row[3],
                                                             xxh3: (row[4] as Int64?).map(XXH3.loaded)))
            }
            var bucket = [[SampleInfo]](repeating: [], count: shards.count)
            let sampleRows = try Row.fetchCursor(db, sql: Self.samplesSQL)
            while let row = try sampleRows.next() {
                let id: Int64 = row["id"]
                guard let s = shardIndex[row["shard_id"]] else { continue }
                bucket[s].append(SampleInfo(key: row["key"], shard: s, offset: row["offset"], size: row["size"],
                                            tokens: row["tokens"], imageTokens: row["image_tokens"],
                                            hasImage: (row["has_image"] as Int) != 0, parts: parts[id] ?? []))
            }
            var samples: [SampleInfo] = []
            for s in shards.indices {
                shards[s].firstSample = samples.count
                if bucket[s].count != shards[s].sampleCount {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "shards.\(shards[s].name)",
                                   "the shard row says \(shards[s].sampleCount) samples but the index holds \(bucket[s].count)")
                }
                samples += bucket[s]
            }
            return (shards, samples)
        }
        if samples.isEmpty {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, "no training shards in the catalog; run `vlmdata shard` first")
        }
        return DatasetIndex(shards: shards, samples: samples)
    }
}
