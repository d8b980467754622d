import Foundation
import GRDB

/// Generated shard inputs (see VLMShard's `SyntheticShardInputs`): the rows the earlier stages would write.
public struct SyntheticInputRows: Sendable {
    public struct Image: Sendable {
        public var key: String
        public var externalID: Int
        public var fileName: String
        public var location: String
        public var sha256: String
        public var byteSize: Int
        /// The npy member in the pixel shard.
        public var offset: Int
        public var size: Int
        /// XXH3-64 of the npy member (`pixels.xxh3`).
        public var xxh3: UInt64

        public init(key: String, externalID: Int, fileName: String, location: String, sha256: String, byteSize: Int,
                    offset: Int, size: Int, xxh3: UInt64) {
            self.key = key
            self.externalID = externalID
            self.fileName = fileName
            self.location = location
            self.sha256 = sha256
            self.byteSize = byteSize
            self.offset = offset
            self.size = size
            self.xxh3 = xxh3
        }
    }

    public struct Sample: Sendable {
        public var key: String
        /// Index into `images`; nil for a text-only sample.
        public var image: Int?
        public var conversations: String
        public var status: String
        public var inputIDs: Data
        public var labels: Data
        public var tokens: Int
        public var imageTokens: Int
        public var supervised: Int

        public init(key: String, image: Int?, conversations: String, status: String, inputIDs: Data, labels: Data,
                    tokens: Int, imageTokens: Int, supervised: Int) {
            self.key = key
            self.image = image
            self.conversations = conversations
            self.status = status
            self.inputIDs = inputIDs
            self.labels = labels
            self.tokens = tokens
            self.imageTokens = imageTokens
            self.supervised = supervised
        }
    }

    public var sourceName: String
    public var imagesRoot: String
    public var fingerprint: String
    public var pixelsConfig: String
    public var pixelShardName: String
    /// XXH3-128 of the pixel shard file (as `patchify` records it).
    public var pixelShardXXH3: String
    public var pixelShardBytes: Int
    public var tiles: Int
    public var patches: Int
    public var patchDim: Int
    public var tokenizedConfig: String
    public var images: [Image]
    public var samples: [Sample]

    public init(sourceName: String, imagesRoot: String, fingerprint: String, pixelsConfig: String,
                pixelShardName: String, pixelShardXXH3: String, pixelShardBytes: Int, tiles: Int, patches: Int,
                patchDim: Int, tokenizedConfig: String, images: [Image], samples: [Sample]) {
        self.sourceName = sourceName
        self.imagesRoot = imagesRoot
        self.fingerprint = fingerprint
        self.pixelsConfig = pixelsConfig
        self.pixelShardName = pixelShardName
        self.pixelShardXXH3 = pixelShardXXH3
        self.pixelShardBytes = pixelShardBytes
        self.tiles = tiles
        self.patches = patches
        self.patchDim = patchDim
        self.tokenizedConfig = tokenizedConfig
        self.images = images
        self.samples = samples
    }
}

extension Catalog {
    /// Writes generated inputs in one transaction: a `synth` source, its images, a pixel shard with one pixel row
    /// per image, and per sample an instruction and its tokenized row.
    public func insertSyntheticInputs(_ inputs: SyntheticInputRows) throws {
        try write { db in
            try db.execute(sql: """
                INSERT INTO sources (kind, name, uri, images_root, fingerprint, created_at) VALUES ('synth', ?, 'synthetic', ?, ?, ?)
                """, arguments: [inputs.sourceName, inputs.imagesRoot, inputs.fingerprint, Catalog.now()])
            let sourceID = db.lastInsertedRowID
            try db.execute(sql: "INSERT INTO pixel_shards (config_hash, name, xxh3_128, bytes, records) VALUES (?, ?, ?, ?, ?)",
                           arguments: [inputs.pixelsConfig, inputs.pixelShardName, inputs.pixelShardXXH3,
                                       inputs.pixelShardBytes, inputs.images.count])
            let pixelShardID = db.lastInsertedRowID
            var imageIDs: [Int64] = []
            for image in inputs.images {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, location, sha256, byte_size, width, height, format, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 336, 336, 'jpeg', 'ok')
                    """, arguments: [sourceID, image.key, image.externalID, image.fileName, image.location, image.sha256,
                                     image.byteSize])
                imageIDs.append(db.lastInsertedRowID)
                try db.execute(sql: """
                    INSERT INTO pixels (sha256, config_hash, config, status, pixel_shard_id, offset, size, tiles, patches,
                                        patch_dim, grid_rows, grid_cols, xxh3) VALUES (?, ?, '{}', 'ok', ?, ?, ?, ?, ?, ?, 1, 1, ?)
                    """, arguments: [image.sha256, inputs.pixelsConfig, pixelShardID, image.offset, image.size,
                                     inputs.tiles, inputs.patches, inputs.patchDim, Int64(bitPattern: image.xxh3)])
            }
            let insertTokens = try db.makeStatement(sql: """
                INSERT INTO tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, input_ids, labels,
                                       n_tokens, n_image_tokens, n_supervised) VALUES (?, ?, 'synthetic-tokenizer', 'vicuna_v1', ?, ?, ?, ?, ?, ?)
                """)
            for sample in inputs.samples {
                try db.execute(sql: """
                    INSERT INTO instructions (key, image_id, source_id, generator, kind, conversations, created_at)
                    VALUES (?, ?, ?, 'templates', 'conversation', ?, ?)
                    """, arguments: [sample.key, sample.image.map { imageIDs[$0] }, sourceID, sample.conversations,
                                     "2026-01-01T00:00:00Z"])
                let instructionID = db.lastInsertedRowID
                try insertTokens.execute(arguments: [
                    instructionID, inputs.tokenizedConfig, sample.status, sample.inputIDs, sample.labels,
                    sample.tokens, sample.imageTokens, sample.supervised,
                ])
            }
        }
    }
}
