import GRDB
import VLMIO

/// The training index as the loader reads it: the shards once (`shardRecords`), then each shard's samples with their members
/// when the loader opens that shard (so no process holds every sample's members at once).
extension Catalog {
    /// One shard's samples in their order in the shard (the samples (shard_id, index_in_shard) key: a range of
    /// it, no sort of the table), each followed by its members (one key lookup on sample_parts per sample),
    /// offsets relative to the sample. Its cost is that of the shard's rows, whatever the size of the table.
    package static let shardSamplesWithPartsSQL = """
        SELECT s.id, s.key, s.offset, s.size, s.tokens, s.image_tokens, s.has_image,
               p.name, p.offset - s.offset AS rel, p.size AS part_size, p.xxh3
        FROM samples s LEFT JOIN sample_parts p ON p.sample_id = s.id
        WHERE s.shard_id = ?
        ORDER BY s.index_in_shard, p.offset
        """

    /// Reads the shard named `name` as the catalog has it now (nil when it has no such shard), then hands over each
    /// of its samples in shard order (`supervised` and `indexInShard` are not read and are 0) with its members
    /// (offset order, offsets relative to the sample), in one read transaction.
    public func readShardIndex(name: String, sample: (IndexedSampleRecord, [SamplePartRecord]) throws -> Void) throws -> ShardRecord? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT id, name, path, sha256, xxh3_128, bytes, samples FROM shards WHERE name = ?",
                                             arguments: [name]) else { return nil }
            let shard = ShardRecord(id: row["id"], name: row["name"], path: row["path"], sha256: row["sha256"],
                                    xxh3_128: row["xxh3_128"], bytes: row["bytes"], samples: row["samples"], paramsHash: "")
            var current: IndexedSampleRecord?
            var parts: [SamplePartRecord] = []
            let rows = try Row.fetchCursor(db, sql: Self.shardSamplesWithPartsSQL, arguments: [shard.id])
            while let row = try rows.next() {
                let id: Int64 = row[0]
                if let open = current, open.id != id {
                    try sample(open, parts)
                    current = nil
                    parts.removeAll(keepingCapacity: true)
                }
                if current == nil {
                    current = IndexedSampleRecord(id: id, key: row[1], shardID: shard.id, indexInShard: 0, offset: row[2],
                                                  size: row[3], tokens: row[4], supervised: 0, imageTokens: row[5],
                                                  hasImage: (row[6] as Int) != 0)
                }
                if let name: String = row[7] {
                    parts.append(SamplePartRecord(sampleID: id, name: name, offset: row[8], size: row[9],
                                                  xxh3: (row[10] as Int64?).map(XXH3.loaded)))
                }
            }
            if let open = current { try sample(open, parts) }
            return shard
        }
    }
}
