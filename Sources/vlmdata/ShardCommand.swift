import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMPipeline
import VLMShard

struct ShardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shard",
        abstract: "Write WebDataset training shards (tar) and index every sample in the catalog.",
        discussion: """
        Joins each tokenized instruction (status ok or truncated) with its image's pixel record and writes, in key
        order, KEY.json, KEY.input_ids.npy (int32), KEY.labels.npy (int32) and KEY.pixels.npy (uint8
        [tiles, patches, P*P*3], copied from the pixel shard) into shards/NAME-000000.tar, ... Text-only
        instructions have no pixels member. Each shard is written under a temporary name, fsynced, renamed and
        only then indexed (tables shards, samples, sample_parts), so a killed run continues where it stopped and
        ends with the same bytes as a clean run. See docs/shards.md.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: ArgumentHelp("Close a shard once it holds this much (e.g. 256MB, 1GiB, 500000).", valueName: "size"))
    var targetSize = "256MB"

    @Option(help: ArgumentHelp("Close a shard once it holds this many samples.", valueName: "n"))
    var maxSamples: Int?

    @Option(help: ArgumentHelp("Write only the first N samples (in key order).", valueName: "n"))
    var limit: Int?

    @Option(help: ArgumentHelp("Shard file prefix: NAME-000000.tar.", valueName: "name"))
    var name = "train"

    @Flag(help: "Also store each sample's original image file (KEY.jpg / KEY.png).")
    var includeJpeg = false

    @Option(help: ArgumentHelp("Tokenize run to read, by readable name (e.g. vicuna_v1@mistral-v1) or config hash prefix (default: the latest run).", valueName: "name"))
    var tokenized: String?

    @Option(help: ArgumentHelp("Patchify run to read, by readable name (e.g. pad-336/14) or config hash prefix (default: the latest run).", valueName: "name"))
    var pixels: String?

    @Option(help: PartHelp.text)
    var part: PartSpec?

    @Option(help: ArgumentHelp("Shards written at once, each hashed on its own thread (default: all cores); the output is the same.", valueName: "n"))
    var jobs: Int?

    @Flag(help: "Keep images that an evaluation set holds (by default `eval build`'s images are left out; see docs/eval.md).")
    var allowEvalImages = false

    @Flag(help: "Also compute and record each shard's sha256 (the integrity hash is always the XXH3-128 recorded at write time; see docs/integrity.md). Shards already written get theirs recorded.")
    var sha256 = false

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("After writing, upload every shard not already there to s3://bucket/prefix/shards/NAME.tar and record its URL in the index (a rerun uploads only what is missing; see docs/s3.md).", valueName: "s3-url"))
    var upload: String?

    @Option(help: ArgumentHelp("Upload shards larger than this in parts of this size (multipart; at least 5MiB).", valueName: "size"))
    var partSize = "64MiB"

    var config: ShardStep.Config {
        var c = ShardStep.Config()
        c.targetSize = targetSize
        c.maxSamples = maxSamples
        c.limit = limit
        c.name = name
        c.includeJpeg = includeJpeg
        c.tokenized = tokenized
        c.pixels = pixels
        c.part = part?.description
        c.jobs = jobs
        c.allowEvalImages = allowEvalImages
        c.upload = upload
        c.partSize = partSize
        c.sha256 = sha256 ? true : nil
        return c
    }

    func validate() throws {
        _ = try makeStage(ShardStep.self, config)
    }

    func run() throws {
        try runStage(try makeStage(ShardStep.self, config), workspace.context(), json: json)
    }
}

/// `256MB` → 256,000,000; `1GiB` → 2^30; a plain number is bytes.
func parseByteSize(_ text: String) throws -> Int {
    guard let value = ByteSize.parse(text) else { throw ValidationError("not a size: \(text)") }
    return value
}
