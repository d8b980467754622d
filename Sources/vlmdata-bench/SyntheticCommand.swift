import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMFixtures

struct SyntheticCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synthetic",
        abstract: "Fill a workspace with generated shard inputs (images, instructions, tokenized rows, pixels), ready for `vlmdata shard`.",
        discussion: """
        Two instructions share each image, every 10th has none, token ids and pixels are seeded noise: the same \
        arguments always give the same catalog. Nothing is written when the workspace already holds them. The \
        defaults are LLaVA-1.5's sizes (600 tokens, 576 patches of 588 values).
        """)

    @Option(help: ArgumentHelp("Workspace folder to fill.", valueName: "dir"))
    var workspace = "./vlmdata-work"

    @Option(help: ArgumentHelp("Instructions to make.", valueName: "n"))
    var count: Int

    @Option(help: ArgumentHelp("Tokens per sample.", valueName: "n"))
    var tokens = 600

    @Option(help: ArgumentHelp("Patches per image.", valueName: "n"))
    var patches = PatchGrid.clipViTL14at336.patchesPerTile

    @Option(help: ArgumentHelp("Values per patch.", valueName: "n"))
    var patchDim = PatchGrid.clipViTL14at336.patchDim

    @Option(help: ArgumentHelp("Seed of the generated ids and pixels.", valueName: "s"))
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if count < 1 { throw ValidationError("--count must be at least 1.") }
        if tokens < 2 { throw ValidationError("--tokens must be at least 2.") }
        if patches < 1 || patchDim < 1 { throw ValidationError("--patches and --patch-dim must be at least 1.") }
    }

    func run() throws {
        var inputs = SyntheticShardInputs(count: count, seed: seed)
        inputs.tokens = tokens
        inputs.patches = patches
        inputs.patchDim = patchDim
        let written = try runOrExit { try inputs.fill(workspace: Workspace(root: workspace)) }
        if json {
            print(#"{"instructions":\#(count),"written":\#(written)}"#)
        } else {
            print("synthetic shard inputs: instructions=\(count)" + (written ? "" : " (already there, nothing written)"))
        }
    }
}
