import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMLoader
import VLMShard

/// A fresh temporary folder, removed by the caller with `cleanup`.
func temporaryFolder(_ name: String) -> String {
    let path = NSTemporaryDirectory() + "vlmloader-\(name)-\(UUID().uuidString.prefix(8))"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// What a generated sample holds, to check bytes after reading.
struct MadeSample {
    var key: String
    var inputIds: [Int32]
    var labels: [Int32]
    var pixels: [UInt8]
    var imageTokens: Int
}

/// Writes `shards` training shards of `perShard` samples each (the last one `lastShard` when given) with
/// VLMShard's writer into a new workspace, and indexes them through `Catalog.write`. Every third sample is
/// text-only; lengths vary with the key.
@discardableResult
func makeWorkspace(_ root: String, shards: Int, perShard: Int, lastShard: Int? = nil, prefix: String = "s",
                   patches: Int = 4, patchDim: Int = 12) throws -> (Catalog, [MadeSample]) {
    let workspace = Workspace(root: root)
    try workspace.create()
    let catalog = try Catalog(workspace: workspace)
    var made: [MadeSample] = []
    var counter = 0
    for s in 0..<shards {
        let count = (s == shards - 1 ? lastShard : nil) ?? perShard
        let name = String(format: "train-%06d.tar", s)
        let path = "shards/" + name
        var rows: [(MadeSample, offset: Int, size: Int, parts: [(String, Int, Int)])] = []
        try AtomicFile.withWriter(to: workspace.resolve(path)) { file in
            let tar = TarWriter(file)
            for i in 0..<count {
                counter += 1
                let key = "\(prefix)\(s)_\(String(format: "%04d", i))"
                let hasImage = counter % 3 != 0
                let textLength = 5 + (counter * 7) % 23
                var ids = (0..<textLength).map { Int32(1000 + (counter * 31 + $0 * 17) % 500) }
                if hasImage { ids[1] = imageTokenId }
                let labels = ids.enumerated().map { $0.offset < textLength / 2 ? ignoreIndex : $0.element == imageTokenId ? ignoreIndex : $0.element }
                let pixels: [UInt8] = hasImage ? (0..<(patches * patchDim)).map { UInt8(($0 * 13 + counter) % 256) } : []
                let sample = MadeSample(key: key, inputIds: ids, labels: labels, pixels: pixels, imageTokens: hasImage ? patches : 0)
                let meta = Array("{\"key\":\"\(key)\"}".utf8)
                var parts: [(String, TarMember)] = []
                parts.append(("json", try tar.add(name: key + ".json", bytes: meta)))
                parts.append(("input_ids.npy", try tar.add(name: key + ".input_ids.npy", bytes: Npy.encode(ids, shape: [ids.count]))))
                parts.append(("labels.npy", try tar.add(name: key + ".labels.npy", bytes: Npy.encode(labels, shape: [labels.count]))))
                if hasImage {
                    parts.append(("pixels.npy", try tar.add(name: key + ".pixels.npy", bytes: Npy.encode(pixels, shape: [1, patches, patchDim]))))
                }
                let start = parts[0].1.headerOffset
                let end = parts.last!.1.contentEnd
                rows.append((sample, start, end - start, parts.map { ($0.0, $0.1.contentOffset, $0.1.size) }))
                made.append(sample)
            }
            try tar.finish()
        }
        let sha = try Hashing.sha256(file: workspace.resolve(path))
        let bytes = try FileManager.default.attributesOfItem(atPath: workspace.resolve(path))[.size] as! Int
        try catalog.write { db in
            try db.execute(sql: "INSERT INTO shards (name, path, sha256, bytes, samples, params_hash) VALUES (?, ?, ?, ?, ?, 'test')",
                           arguments: [name, path, sha, bytes, count])
            let shardId = db.lastInsertedRowID
            for (i, row) in rows.enumerated() {
                try db.execute(sql: """
                    INSERT INTO samples (key, shard_id, index_in_shard, offset, size, tokens, supervised, image_tokens, has_image)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [row.0.key, shardId, i, row.offset, row.size, row.0.inputIds.count,
                                     row.0.labels.filter { $0 != ignoreIndex }.count, row.0.imageTokens, row.0.pixels.isEmpty ? 0 : 1])
                let sampleId = db.lastInsertedRowID
                for part in row.parts {
                    try db.execute(sql: "INSERT INTO sample_parts (sample_id, name, offset, size) VALUES (?, ?, ?, ?)",
                                   arguments: [sampleId, part.0, part.1, part.2])
                }
            }
        }
    }
    return (catalog, made)
}

/// Keys of every sample a (rank, world) stream delivers.
func keys(_ stream: SampleStream, limit: Int? = nil) throws -> [String] {
    var out: [String] = []
    while limit.map({ out.count < $0 }) ?? true, let sample = try stream.next() { out.append(sample.key) }
    return out
}

/// The package root, from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
