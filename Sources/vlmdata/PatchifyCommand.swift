import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMImage
import VLMPipeline

struct PatchifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patchify",
        abstract: "Preprocess every ok catalog image into ViT patches in pixel shards (once per image bytes and config).",
        discussion: """
        Each distinct image (by sha256) is decoded, preprocessed (--mode) and cut into P x P patches, stored as uint8 [tiles, (S/P)^2, P*P*3] in shards/pixels/pixels-CONFIG-NNNNNN.tar with a `pixels` catalog row (offset and size of the .npy member). Pixels match PIL + HF CLIPImageProcessor exactly (not with --fast-decode). Bad images get a row with status 'error' and the reason; the run goes on. Running again with the same config does nothing; after a kill it continues where the last closed shard ended. 
        """
    )

    @OptionGroup var common: WorkspaceOptions
    @OptionGroup var imageOptions: ImageOptions

    @Option(name: .long, help: "Worker threads (default: all cores).")
    var jobs: Int?

    @Option(name: .long, help: "Close a pixel shard once it holds this many MiB.")
    var shardMib = 256

    @Option(name: .long, help: PartHelp.text)
    var part: PartSpec?

    @Flag(name: .long, help: "Print the report as one JSON object.")
    var json = false

    var config: PatchifyStep.Config {
        var c = PatchifyStep.Config()
        c.imageSize = imageOptions.imageSize
        c.patchSize = imageOptions.patchSize
        c.mode = imageOptions.mode.rawValue
        c.resample = imageOptions.resample.rawValue
        c.passOrder = imageOptions.passOrder.rawValue
        c.fastDecode = imageOptions.fastDecode
        c.exifTranspose = imageOptions.exifTranspose
        c.gridPinpoints = imageOptions.gridPinpoints
        c.jobs = jobs
        c.shardMib = shardMib
        c.part = part?.description
        return c
    }

    func validate() throws {
        do { _ = try makeStage(PatchifyStep.self, config) } catch let error as VLMError { throw ValidationError(error.message) }
    }

    func run() throws {
        try runStage(try makeStage(PatchifyStep.self, config), common.context(), json: json)
    }
}
