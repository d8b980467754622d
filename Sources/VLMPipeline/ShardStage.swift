import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMShard

/// The `shard`, `show` and `verify` stages: catalog in, training shards (and their index) out.
///
/// ```swift
/// var options = ShardOptions()
/// options.targetBytes = 256_000_000
/// let report = try ShardStage.run(workspace: Workspace(root: "./vlmdata-work"), options: options)
/// ```
public enum ShardStage {
    /// Writes the training shards (resuming after a crash, doing nothing when they are complete).
    public static func run(workspace: Workspace, options: ShardOptions,
                           progress: any ProgressSink = SilentProgress()) throws -> StageReport {
        let catalog = try Catalog(workspace: workspace)
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "shard")   // one writer per stage per workspace
        defer { lock.release() }
        return try ShardBuilder(catalog: catalog, options: options, progress: progress).run()
    }

    /// Fills an empty workspace with generated shard inputs (for benchmarks and tests); a no-op when they exist.
    public static func fillSynthetic(workspace: Workspace, inputs: SyntheticShardInputs) throws -> Bool {
        let catalog = try Catalog(workspace: workspace)
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "ingest")   // it writes what ingest would
        defer { lock.release() }
        let existing = try catalog.sourceCount(kind: "synth", name: inputs.sourceName)
        guard existing == 0 else { return false }
        try inputs.fill(catalog)
        return true
    }

    /// Checks every shard against the index (`deep`: also every npy and json).
    public static func verify(workspace: Workspace, deep: Bool,
                              progress: any ProgressSink = SilentProgress()) throws -> ShardVerifier.Summary {
        try ShardVerifier(catalog: Catalog(workspace: workspace)).verify(deep: deep, progress: progress)
    }

    /// One sample as `vlmdata show --json` prints it.
    public struct SampleView: Codable, Sendable {
        public var key: String
        public var shard: String
        public var indexInShard: Int
        public var metadata: SampleMetadata
        public var inputIDs: [Int32]
        public var labels: [Int32]
        /// `[tiles, patches, patch_dim]` and the sha256 of the raw uint8 data; nil when text-only.
        public var pixelsShape: [Int]?
        public var pixelsSHA256: String?
        /// Member suffix → byte size.
        public var members: [String: Int]

        enum CodingKeys: String, CodingKey {
            case key, shard, metadata, labels, members
            case indexInShard = "index_in_shard", inputIDs = "input_ids", pixelsShape = "pixels_shape"
            case pixelsSHA256 = "pixels_sha256"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(key, forKey: .key)
            try c.encode(shard, forKey: .shard)
            try c.encode(indexInShard, forKey: .indexInShard)
            try c.encode(metadata, forKey: .metadata)
            try c.encode(inputIDs, forKey: .inputIDs)
            try c.encode(labels, forKey: .labels)
            try c.encode(pixelsShape, forKey: .pixelsShape)
            try c.encode(pixelsSHA256, forKey: .pixelsSHA256)
            try c.encode(members, forKey: .members)
        }
    }

    /// Reads one sample by key through the index, each member checked against its recorded XXH3 unless
    /// `verifyReads` is false; with `pngPath`, writes its pixels (unpatchified) as a PNG.
    public static func show(workspace: Workspace, key: String, pngPath: String? = nil, verifyReads: Bool = true) throws -> SampleView {
        let catalog = try Catalog(workspace: workspace)
        let sample = try ShardIndex(catalog: catalog).sample(key: key, verify: verifyReads)
        let pixels = try sample.pixels()
        if let pngPath {
            guard let pixels else { throw VLMError(.notFound, record: key, "this sample is text-only; it has no pixels") }
            let image = try Unpatchify.strip(pixels.values, shape: pixels.shape)
            try AtomicFile.write(ImageEncode.png(rgb: image.rgb, width: image.width, height: image.height), to: pngPath)
        }
        return SampleView(key: key, shard: sample.shard, indexInShard: sample.indexInShard, metadata: try sample.metadata(),
                          inputIDs: try sample.inputIDs(), labels: try sample.labels(), pixelsShape: pixels?.shape,
                          pixelsSHA256: pixels.map { Hashing.sha256($0.values) },
                          members: sample.members.mapValues(\.count))
    }

    /// The human-readable form of `show`: conversation, tokens (masked ones in brackets), lengths.
    public static func render(_ view: SampleView) -> String {
        let m = view.metadata
        var lines: [String] = []
        lines.append("key:          \(view.key)")
        lines.append("shard:        \(view.shard) (sample #\(view.indexInShard))")
        lines.append("source:       \(m.source ?? "-")  kind: \(m.kind)  generator: \(m.generator)")
        if let image = m.image {
            let size = m.imageSize.map { " \($0[0])x\($0[1])" } ?? ""
            lines.append("image:        \(image) (\(m.imageFile ?? "-")\(size), sha256 \(m.imageSHA256?.prefix(16) ?? "-")...)")
        } else {
            lines.append("image:        none (text-only)")
        }
        lines.append("template:     \(m.template)  tokenizer: \(m.tokenizerSHA256.prefix(16))  status: \(m.status)")
        // The image-token count is the stored pixels' (PatchGrid), whatever an older json says.
        let grid = view.pixelsShape.flatMap { try? PatchGrid(shape: $0, grid: m.grid) }
        let imageTokens = grid?.imageTokens ?? m.imageTokens
        lines.append("lengths:      \(m.length) ids, \(m.tokens) text tokens, \(m.supervised) supervised, \(imageTokens) image tokens"
                     + (imageTokens != m.imageTokens ? " (the sample json says \(m.imageTokens))" : ""))
        if let shape = view.pixelsShape {
            lines.append("pixels:       uint8 \(shape)\(m.grid.map { "  grid \($0[0])x\($0[1])" } ?? "")  sha256 \(view.pixelsSHA256?.prefix(16) ?? "")...")
        }
        if let grid { lines.append("geometry:     \(grid)") }
        if let frame = m.boxFrame { lines.append("boxes:        in the \(frame) frame") }
        lines.append("members:      " + view.members.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) B" }.joined(separator: ", "))
        lines.append("conversation:")
        for turn in m.conversations {
            let text = (turn["value"] ?? "").replacingOccurrences(of: "\n", with: "\n" + String(repeating: " ", count: 10))
            lines.append("  \((turn["from"] ?? "?").padding(toLength: 6, withPad: " ", startingAt: 0)): \(text)")
        }
        lines.append("tokens:       (ids; [id] = masked, label -100; <image> = -200)")
        var row = "  "
        for (id, label) in zip(view.inputIDs, view.labels) {
            let item = id == -200 ? "<image>" : label == -100 ? "[\(id)]" : "\(id)"
            if row.count + item.count > 100 { lines.append(row); row = "  " }
            row += item + " "
        }
        if row.count > 2 { lines.append(row) }
        return lines.joined(separator: "\n")
    }
}
