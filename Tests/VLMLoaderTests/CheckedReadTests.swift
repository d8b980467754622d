import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMLoader

/// Records each member's XXH3 in a `makeWorkspace` index, as the shard writer does.
func recordChecksums(_ catalog: Catalog) throws {
    try catalog.write { db in
        let rows = try Row.fetchAll(db, sql: """
            SELECT p.rowid AS r, h.path, p.offset, p.size FROM sample_parts p
            JOIN samples s ON s.id = p.sample_id JOIN shards h ON h.id = s.shard_id
            """)
        for row in rows {
            let handle = try #require(FileHandle(forReadingAtPath: catalog.workspace.resolve(row["path"])))
            try handle.seek(toOffset: UInt64(row["offset"] as Int))
            let bytes = Array(try handle.read(upToCount: row["size"] as Int) ?? Data())
            try db.execute(sql: "UPDATE sample_parts SET xxh3 = ? WHERE rowid = ?",
                           arguments: [XXH3.stored(XXH3.hash64(bytes)), row["r"] as Int64])
        }
    }
}

/// The library loader checks every member against its recorded XXH3: a flipped byte is an error naming the shard,
/// the member and its offset (after the samples before it), a counted skip with `onCorrupt: .skip`, and served
/// as is only with `verifyReads: false`.
@Test func loaderChecksEveryMemberItServes() throws {
    let root = temporaryFolder("checked")
    let (catalog, _) = try makeWorkspace(root, shards: 3, perShard: 10)
    try recordChecksums(catalog)
    let index = try DatasetIndex.load(catalog: catalog)
    func keys(_ options: LoaderOptions) throws -> (keys: [String], report: StreamReport, error: (any Error)?) {
        let stream = try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))], options: options)
            .samples(epoch: 0)
        var keys: [String] = []
        do {
            while let sample = try stream.next() { keys.append(sample.key) }
        } catch { return (keys, stream.report, error) }
        return (keys, stream.report, nil)
    }
    let spec = OrderSpec(seed: 3, shuffle: ShuffleMode.none)
    let clean = try keys(LoaderOptions(order: spec, workers: 2))
    #expect(clean.error == nil && clean.keys.count == 30)

    let key = clean.keys[14]
    let (path, offset, size) = try catalog.read { db -> (String, Int, Int) in
        let row = try #require(try Row.fetchOne(db, sql: """
            SELECT h.path, p.offset, p.size FROM sample_parts p JOIN samples s ON s.id = p.sample_id
            JOIN shards h ON h.id = s.shard_id WHERE s.key = ? AND p.name = 'labels.npy'
            """, arguments: [key]))
        return (row["path"], row["offset"], row["size"])
    }
    let file = try #require(FileHandle(forUpdatingAtPath: catalog.workspace.resolve(path)))
    try file.seek(toOffset: UInt64(offset + size - 2))
    let byte = try #require(try file.read(upToCount: 1)).first!
    try file.seek(toOffset: UInt64(offset + size - 2))
    try file.write(contentsOf: Data([byte ^ 0x10]))
    try file.close()

    let failing = try keys(LoaderOptions(order: spec, workers: 2))
    let message = "\(try #require(failing.error))"
    #expect(message.contains("\(path): \(key).labels.npy (\(size) bytes at offset \(offset))"), "\(message)")
    #expect(message.contains("xxh3 is"))
    #expect(failing.keys == Array(clean.keys.prefix(14)))

    let skipping = try keys(LoaderOptions(order: spec, workers: 2, onCorrupt: .skip))
    #expect(skipping.error == nil)
    #expect(skipping.keys == clean.keys.filter { $0 != key })
    #expect(skipping.report.skipped == 1 && skipping.report.corrupt == 1)
    #expect(skipping.report.corruptErrors.count == 1 && skipping.report.corruptErrors[0].contains("\(key).labels.npy"))

    let unchecked = try keys(LoaderOptions(order: spec, workers: 0, verifyReads: false))
    #expect(unchecked.error == nil && unchecked.keys == clean.keys)
}
