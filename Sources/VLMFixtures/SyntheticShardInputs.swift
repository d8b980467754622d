import Foundation
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
        var images: [(sha: String, member: TarMember, xxh3: UInt64)] = []
        try AtomicFile.withWriter(to: pixelShardPath) { file in
            let tar = TarWriter(file)
            for image in 0 ..< imageCount {
                let bytes = Self.noise(count: imageFileBytes, seed: seed &+ UInt64(image) &* 7919)
                try Data(bytes).write(to: URL(fileURLWithPath: imageDir + "/img_\(image).jpg"))
                let sha = Hashing.sha256(bytes)
                let pixels = Self.noise(count: tiles * patches * patchDim, seed: seed ^ UInt64(image + 1) &* 104_729)
                let npy = Npy.header(dtype: .uint8, shape: [tiles, patches, patchDim]) + pixels
                images.append((sha, try tar.add(name: sha + ".npy", bytes: npy), XXH3.hash64(npy)))
            }
            try tar.finish()
        }
        let shardXXH3 = try XXH3.hash128(file: pixelShardPath)
        let shardBytes = (try FileManager.default.attributesOfItem(atPath: pixelShardPath)[.size] as? NSNumber)?.intValue ?? 0
        var samples: [SyntheticInputRows.Sample] = []
        for i in 0 ..< count {
            let textOnly = textOnlyEvery > 0 && i % textOnlyEvery == textOnlyEvery - 1
            let question = textOnly ? "What is \(i) plus one?" : "<image>\nWhat is in picture \(i / 2)?"
            let conversation = [["from": "human", "value": question], ["from": "gpt", "value": "Answer \(i)."]]
            let length = tokens + (i % 7)
            var ids = [Int32](repeating: 0, count: length)
            var labels = [Int32](repeating: -100, count: length)
            for t in 0 ..< length { ids[t] = Int32(1 + (i * 31 + t * 17) % 31_999) }
            if !textOnly { ids[5] = -200 }
            for t in (length / 2) ..< length { labels[t] = ids[t] }
            samples.append(SyntheticInputRows.Sample(
                key: Self.key(i, source: sourceName), image: textOnly ? nil : i / 2,
                conversations: String(decoding: Hashing.canonicalJSON(conversation), as: UTF8.self),
                status: i % 13 == 12 ? "truncated" : "ok", inputIDs: ids.withUnsafeBytes { Data($0) },
                labels: labels.withUnsafeBytes { Data($0) }, tokens: length, imageTokens: textOnly ? 0 : tiles * patches,
                supervised: length - length / 2))
        }
        try catalog.insertSyntheticInputs(SyntheticInputRows(
            sourceName: sourceName, imagesRoot: imageDir, fingerprint: "seed-\(seed)", pixelsConfig: pixelsConfig,
            pixelShardName: pixelShardName, pixelShardXXH3: shardXXH3, pixelShardBytes: shardBytes, tiles: tiles,
            patches: patches, patchDim: patchDim, tokenizedConfig: tokenizedConfig,
            images: images.enumerated().map { i, image in
                SyntheticInputRows.Image(key: "\(sourceName)_img_\(i)", externalID: i, fileName: "img_\(i).jpg",
                                         location: imageDir + "/img_\(i).jpg", sha256: image.sha,
                                         byteSize: imageFileBytes, offset: image.member.contentOffset,
                                         size: image.member.size, xxh3: image.xxh3)
            },
            samples: samples))
    }
}
