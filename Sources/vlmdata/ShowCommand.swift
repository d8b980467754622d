import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMLoader
import VLMPipeline

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print one training sample by key, read from its shard through the index.",
        discussion: """
        Shows the conversation, the token ids with masked ones (label -100) in brackets and the image position as
        <image>, and the lengths. --pixels-png writes the sample's pixels back as an image (tiles side by side).
        --json prints the metadata, input_ids, labels, pixel shape and the sha256 of the pixel bytes.
        Every member read is checked against the XXH3 checksum recorded when the shard was written; a mismatch or
        a truncated shard is an error naming the shard, member and offset (exit 1), never a wrong sample.
        --index URL (or a --workspace that is an https:// or s3:// index URL) reads a published index: the index
        and the sample's shard are fetched into the cache folder (see docs/s3.md).
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Argument(help: "Sample key (as in the shards and the samples table).")
    var key: String

    @Option(help: ArgumentHelp("Write the sample's pixels as a PNG to this file.", valueName: "file"))
    var pixelsPng: String?

    @Flag(help: "Print the sample as one JSON object.")
    var json = false

    @Flag(help: "Do not check the members read against their recorded checksums (to look at a damaged sample).")
    var noVerifyReads = false

    @Option(help: ArgumentHelp("Read a published index (https://…/index.sqlite or s3://bucket/prefix/index.sqlite) instead of a workspace.", valueName: "url"))
    var index: String?

    @Option(help: ArgumentHelp("Cache folder for a remote index and its shards (default: under the temporary folder).", valueName: "dir"))
    var cacheDir: String?

    @Option(help: ArgumentHelp("Hard cap of the cache folder, e.g. 20GB.", valueName: "size"))
    var cacheSize = "10GB"

    func run() throws {
        if let url = index ?? (RemoteIndex.isURL(workspace.path) ? workspace.path : nil) {
            let view = try runOrExit { try remoteView(url) }
            return try print(view)
        }
        let ws = Workspace(root: workspace.path)
        guard FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace.")
        }
        let view = try runOrExit { try ShardStage.show(workspace: ws, key: key, pngPath: pixelsPng, verifyReads: !noVerifyReads) }
        try print(view)
    }

    /// The sample read through a remote index: its shard is fetched into the cache (a later `show` of a sample in
    /// the same shard reads it from there) and linked where the downloaded index expects it while it is read.
    func remoteView(_ url: String) throws -> ShardStage.SampleView {
        let dir = cacheDir ?? RemoteIndex.defaultCacheDirectory(for: url, rank: 0)
        let remote = try RemoteIndex.open(url, cacheDirectory: dir)
        guard let sample = remote.index.samples.first(where: { $0.key == key }) else {
            throw VLMError(.notFound, file: HTTPClient.redacted(url), record: key, "no sample with this key in the index")
        }
        let shard = remote.index.shards[sample.shard]
        let source = try remote.source(cacheDirectory: dir, cacheCapacity: try parseByteSize(cacheSize))
        let root = remote.catalog.workspace
        return try source.cache.withShard(shard) { path in
            let linkPath = root.resolve(shard.path)
            try? FileManager.default.createDirectory(atPath: (linkPath as NSString).deletingLastPathComponent,
                                                     withIntermediateDirectories: true)
            unlink(linkPath)
            guard link(path, linkPath) == 0 || symlink(path, linkPath) == 0 else {
                throw VLMError.io(file: linkPath, "cannot link the cached shard: \(String(cString: strerror(errno)))")
            }
            defer { unlink(linkPath) }
            return try ShardStage.show(workspace: root, key: key, pngPath: pixelsPng, verifyReads: !noVerifyReads)
        }
    }

    func print(_ view: ShardStage.SampleView) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            Swift.print(String(decoding: try encoder.encode(view), as: UTF8.self))
        } else {
            Swift.print(ShardStage.render(view))
            if let pixelsPng { Swift.print("pixels written to \(pixelsPng)") }
        }
    }
}
