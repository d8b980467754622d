import GRDB
import VLMIO

/// The training index as the loader reads it: shards, then every sample's members, then every sample, all in one
/// read transaction, streamed so a large index is never held twice.
extension Catalog {
    /// Every sample's members, offsets relative to the sample, in sample order.
    package static let indexPartsSQL = """
        SELECT p.sample_id, p.name, p.offset - s.offset AS rel, p.size, p.xxh3
        FROM sample_parts p JOIN samples s ON s.id = p.sample_id ORDER BY p.sample_id, p.offset
        """

    /// Every sample, in shard order (read through the samples (shard_id, index_in_shard) key, no sort).
    package static let indexSamplesSQL = """
        SELECT id, key, shard_id, offset, size, tokens, image_tokens, has_image
        FROM samples ORDER BY shard_id, index_in_shard
        """

    /// Hands over the shards (name order), each sample's members (offset relative to the sample, `sampleID` set),
    /// and each sample (shard order; `supervised` and `indexInShard` are not read and are 0), in one read.
    public func readTrainingIndex<T>(shards: ([ShardRecord]) throws -> Void, part: (SamplePartRecord) throws -> Void,
                                     sample: (IndexedSampleRecord) throws -> Void, finish: () throws -> T) throws -> T {
        try read { db in
            try shards(Row.fetchAll(db, sql: "SELECT id, name, path, sha256, xxh3_128, bytes, samples FROM shards ORDER BY name").map {
                ShardRecord(id: $0["id"], name: $0["name"], path: $0["path"], sha256: $0["sha256"], xxh3_128: $0["xxh3_128"],
                            bytes: $0["bytes"], samples: $0["samples"], paramsHash: "")
            })
            let partRows = try Row.fetchCursor(db, sql: Self.indexPartsSQL)
            while let row = try partRows.next() {
                try part(SamplePartRecord(sampleID: row[0], name: row[1], offset: row[2], size: row[3],
                                          xxh3: (row[4] as Int64?).map(XXH3.loaded)))
            }
            let sampleRows = try Row.fetchCursor(db, sql: Self.indexSamplesSQL)
            while let row = try sampleRows.next() {
                try sample(IndexedSampleRecord(id: row["id"], key: row["key"], shardID: row["shard_id"], indexInShard: 0,
                                               offset: row["offset"], size: row["size"], tokens: row["tokens"],
                                               supervised: 0, imageTokens: row["image_tokens"],
                                               hasImage: (row["has_image"] as Int) != 0))
            }
            return try finish()
        }
    }
}
