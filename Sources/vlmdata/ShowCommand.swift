import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
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

    func run() throws {
        let ws = Workspace(root: workspace.path)
        guard FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace.")
        }
        let view = try runOrExit { try ShardStage.show(workspace: ws, key: key, pngPath: pixelsPng, verifyReads: !noVerifyReads) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(view), as: UTF8.self))
        } else {
            print(ShardStage.render(view))
            if let pixelsPng { print("pixels written to \(pixelsPng)") }
        }
    }
}
