import Foundation
import GRDB
import VLMCatalog
import VLMCore
import VLMIO
import VLMShard

/// Fills a catalog with generated shard inputs (images, instructions, tokenized rows, a pixel shard and its
/// pixel rows) the way the earlier stages would, for tests and for `vlmdata-bench synthetic N` benchmarks.
///
/// Two instructions share each image (as LLaVA data does), every `textOnlyEvery`-th instruction has no image,
/// and the pixels are deterministic noise, so the same arguments always give the same catalog content.
///
/// ```swift
/// try SyntheticShardInputs(count: 100, seed: 1).fill(catalog)
/// ```
public struct SyntheticShardInputs: Sendable {
    public var count: Int
    public var seed: UInt64
    public var tokens = 600
    public var tiles = 1
    public var patches = PatchGrid.clipViTL14at336.patchesPerTile
    public var patchDim = PatchGrid.clipViTL14at336.patchDim
    public var textOnlyEvery = 10
    /// Bytes of the fake original image file written per image (for `--include-jpeg`).
    public var imageFileBytes = 2_000
    public var tokenizedConfig = "tok-synthetic"
    public var pixelsConfig = "pix-synthetic"
    public var sourceName = "synthetic"

    public init(count: Int, seed: UInt64 = 1) {
        self.count = count
        self.seed = seed
    }

    public static func key(_ i: Int, source: String = "synthetic") -> String {
        let digits = String(i)
        return "\(source)_\(String(repeating: "0", count: max(0, 7 - digits.count)) + digits)_conv"
    }

    /// Deterministic noise: the same (seed, index) gives the same bytes.
    static func noise(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var i = 0
            while i < count {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                var v = state
                for _ in 0 ..< 8 where i < count {
                    buffer[i] = UInt8(truncatingIfNeeded: v)
                    v >>= 8
                    i += 1
                }
            }
            initialized = count
        }
    }

    public func fill(_ catalog: Catalog) throws {
        let ws = catalog.workspace
        let imageDir = ws.root + "/synthetic-images"
        try FileManager.default.createDirectory(atPath: imageDir, withIntermediateDirectories: true)
        let imageCount = (count + 1) / 2
        // Pixel shard: one npy member per distinct image.
        let pixelShardName = "\(sourceName)-\(pixelsConfig)-000000.tar"
        let pixelShardPath = ws.pixelShardsDirectory + "/" + pixelShardName
        var images: [(sha: String, member: TarMember)] = []
        try AtomicFile.withWriter(to: pixelShardPath) { file in
            let tar = TarWriter(file)
            for image in 0 ..< imageCount {
                let bytes = Self.noise(count: imageFileBytes, seed: seed &+ UInt64(image) &* 7919)
                try Data(bytes).write(to: URL(fileURLWithPath: imageDir + "/img_\(image).jpg"))
                let sha = Hashing.sha256(bytes)
                let pixels = Self.noise(count: tiles * patches * patchDim, seed: seed ^ UInt64(image + 1) &* 104_729)
                let npy = Npy.header(dtype: .uint8, shape: [tiles, patches, patchDim]) + pixels
                images.append((sha, try tar.add(name: sha + ".npy", bytes: npy)))
            }
            try tar.finish()
        }
        let shardSHA = try Hashing.sha256(file: pixelShardPath)
        let shardBytes = (try FileManager.default.attributesOfItem(atPath: pixelShardPath)[.size] as? NSNumber)?.intValue ?? 0
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO sources (kind, name, uri, images_root, fingerprint, created_at) VALUES ('synth', ?, 'synthetic', ?, ?, ?)
                """, arguments: [sourceName, imageDir, "seed-\(seed)", Catalog.now()])
            let sourceID = db.lastInsertedRowID
            try db.execute(sql: "INSERT INTO pixel_shards (config_hash, name, sha256, bytes, records) VALUES (?, ?, ?, ?, ?)",
                           arguments: [pixelsConfig, pixelShardName, shardSHA, shardBytes, imageCount])
            let pixelShardID = db.lastInsertedRowID
            var imageIDs: [Int64] = []
            for (i, image) in images.enumerated() {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, location, sha256, byte_size, width, height, format, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 336, 336, 'jpeg', 'ok')
                    """, arguments: [sourceID, "\(sourceName)_img_\(i)", i, "img_\(i).jpg", imageDir + "/img_\(i).jpg",
                                     image.sha, imageFileBytes])
                imageIDs.append(db.lastInsertedRowID)
                try db.execute(sql: """
                    INSERT INTO pixels (sha256, config_hash, config, status, pixel_shard_id, offset, size, tiles, patches,
                                        patch_dim, grid_rows, grid_cols) VALUES (?, ?, '{}', 'ok', ?, ?, ?, ?, ?, ?, 1, 1)
                    """, arguments: [image.sha, pixelsConfig, pixelShardID, image.member.contentOffset, image.member.size,
                                     tiles, patches, patchDim])
            }
            let insertTokens = try db.makeStatement(sql: """
                INSERT INTO tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, input_ids, labels,
                                       n_tokens, n_image_tokens, n_supervised) VALUES (?, ?, 'synthetic-tokenizer', 'vicuna_v1', ?, ?, ?, ?, ?, ?)
                """)
            for i in 0 ..< count {
                let textOnly = textOnlyEvery > 0 && i % textOnlyEvery == textOnlyEvery - 1
                let imageID: Int64? = textOnly ? nil : imageIDs[i / 2]
                let question = textOnly ? "What is \(i) plus one?" : "<image>\nWhat is in picture \(i / 2)?"
                let conversation = [["from": "human", "value": question], ["from": "gpt", "value": "Answer \(i)."]]
                try db.execute(sql: """
                    INSERT INTO instructions (key, image_id, source_id, generator, kind, conversations, created_at)
                    VALUES (?, ?, ?, 'templates', 'conversation', ?, ?)
                    """, arguments: [Self.key(i, source: sourceName), imageID, sourceID,
                                     String(decoding: Hashing.canonicalJSON(conversation), as: UTF8.self), "2026-01-01T00:00:00Z"])
                let instructionID = db.lastInsertedRowID
                let length = tokens + (i % 7)
                var ids = [Int32](repeating: 0, count: length)
                var labels = [Int32](repeating: -100, count: length)
                for t in 0 ..< length { ids[t] = Int32(1 + (i * 31 + t * 17) % 31_999) }
                if !textOnly { ids[5] = -200 }
                for t in (length / 2) ..< length { labels[t] = ids[t] }
                let supervised = length - length / 2
                try insertTokens.execute(arguments: [
                    instructionID, tokenizedConfig, i % 13 == 12 ? "truncated" : "ok",
                    ids.withUnsafeBytes { Data($0) }, labels.withUnsafeBytes { Data($0) },
                    length, textOnly ? 0 : tiles * patches, supervised,
                ])
            }
        }
    }
}
