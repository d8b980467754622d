import GRDB
import VLMIO

/// The training index as the loader reads it: shards, then every sample with its members, in one read
/// transaction, streamed row by row so the index is built once and never held twice.
extension Catalog {
    /// Every sample in shard order (the samples (shard_id, index_in_shard) key, no sort), each followed by its
    /// members (one key lookup on sample_parts per sample), offsets relative to the sample.
    package static let indexSamplesWithPartsSQL = """
        SELECT s.id, s.key, s.shard_id, s.offset, s.size, s.tokens, s.image_tokens, s.has_image,
               p.name, p.offset - s.offset AS rel, p.size AS part_size, p.xxh3
        FROM samples s LEFT JOIN sample_parts p ON p.sample_id = s.id
        ORDER BY s.shard_id, s.index_in_shard, p.offset
        """

    /// Hands over the shards (name order), then each sample (shard order; `supervised` and `indexInShard` are not
    /// read and are 0) with its members (offset order, offsets relative to the sample), in one read.
    public func readTrainingIndex<T>(shards: ([ShardRecord]) throws -> Void,
                                     sample: (IndexedSampleRecord, [SamplePartRecord]) throws -> Void,
                                     finish: () throws -> T) throws -> T {
        try read { db in
            try shards(Row.fetchAll(db, sql: "SELECT id, name, path, sha256, xxh3_128, bytes, samples FROM shards ORDER BY name").map {
                ShardRecord(id: $0["id"], name: $0["name"], path: $0["path"], sha256: $0["sha256"], xxh3_128: $0["xxh3_128"],
                            bytes: $0["bytes"], samples: $0["samples"], paramsHash: "")
            })
            var current: IndexedSampleRecord?
            var parts: [SamplePartRecord] = []
            let rows = try Row.fetchCursor(db, sql: Self.indexSamplesWithPartsSQL)
            while let row = try rows.next() {
                let id: Int64 = row[0]
                if let open = current, open.id != id {
                    try sample(open, parts)
                    current = nil
                    parts.removeAll(keepingCapacity: true)
                }
                if current == nil {
                    current = IndexedSampleRecord(id: id, key: row[1], shardID: row[2], indexInShard: 0, offset: row[3],
                                                  size: row[4], tokens: row[5], supervised: 0, imageTokens: row[6],
                                                  hasImage: (row[7] as Int) != 0)
                }
                if let name: String = row[8] {
                    parts.append(SamplePartRecord(sampleID: id, name: name, offset: row[9], size: row[10],
                                                  xxh3: (row[11] as Int64?).map(XXH3.loaded)))
                }
            }
            if let open = current { try sample(open, parts) }
            return try finish()
        }
    }
}
