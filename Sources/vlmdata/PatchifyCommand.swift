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

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if shardMib < 1 { throw ValidationError("--shard-mib must be at least 1") }
        _ = try imageOptions.config()
    }

    func run() throws {
        let config = try imageOptions.config()
        let workspace = Workspace(root: common.path)
        guard FileManager.default.fileExists(atPath: workspace.catalogPath) else {
            FileHandle.standardError.write(Data("error: no catalog at \(workspace.catalogPath) (run an ingest first)\n".utf8))
            throw ExitCode(1)
        }
        let report = try runOrExit {
            let catalog = try Catalog(workspace: workspace)
            let options = PatchifyStage.Options(config: config, jobs: jobs ?? ImageWorkers.defaultJobs, shardBytes: shardMib << 20,
                                                 part: part)
            return try PatchifyStage.run(catalog: catalog, options: options, progress: common.progress())
        }
        printReport(report, json: json)
    }
}
