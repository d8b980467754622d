import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
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

    @Option(help: ArgumentHelp("Tokenization config hash (required when the catalog holds several).", valueName: "hash"))
    var tokenized: String?

    @Option(help: ArgumentHelp("Pixel config hash (required when the catalog holds several).", valueName: "hash"))
    var pixels: String?

    @Option(help: ArgumentHelp("Write only part I of N (0-based, 0 <= I < N; keys split by hash), for one task of a job array.", valueName: "I/N"))
    var part: String?

    @Option(help: ArgumentHelp("Shards written at once, each hashed on its own thread (default: all cores); the output is the same.", valueName: "n"))
    var jobs: Int?

    @Flag(help: "Keep images that an evaluation set holds (by default `eval build`'s images are left out; see docs/eval.md).")
    var allowEvalImages = false

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Option(help: .hidden)
    var synthetic: Int?

    @Flag(help: .hidden)
    var syntheticOnly = false

    @Option(help: .hidden)
    var syntheticTokens = 600

    @Option(help: .hidden)
    var syntheticPatches = 576

    @Option(help: .hidden)
    var syntheticPatchDim = 588

    func validate() throws {
        guard (try? parseByteSize(targetSize)) != nil else {
            throw ValidationError("--target-size '\(targetSize)' is not a size; write e.g. 256MB, 1GiB or 500000.")
        }
        if let maxSamples, maxSamples < 1 { throw ValidationError("--max-samples must be at least 1.") }
        if let limit, limit < 0 { throw ValidationError("--limit must not be negative.") }
        if let part, PartSpec(parsing: part) == nil {
            throw ValidationError("--part must look like 0/4 (index/count, index < count).")
        }
        if let synthetic, synthetic < 1 { throw ValidationError("--synthetic must be at least 1.") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1.") }
    }

    func run() throws {
        let ws = Workspace(root: workspace.path)
        guard synthetic != nil || FileManager.default.fileExists(atPath: ws.catalogPath) else {
            throw ValidationError("no catalog at \(ws.catalogPath); give --workspace, or run ingest, tokenize and patchify first.")
        }
        var options = ShardOptions()
        options.name = name
        options.targetBytes = try parseByteSize(targetSize)
        options.maxSamplesPerShard = maxSamples
        options.limit = limit
        options.includeImageBytes = includeJpeg
        options.tokenizedConfig = tokenized
        options.pixelsConfig = pixels
        options.part = part.flatMap { PartSpec(parsing: $0) }
        options.jobs = jobs
        options.allowEvalImages = allowEvalImages
        let report = try runOrExit {
            if let synthetic {
                var inputs = SyntheticShardInputs(count: synthetic, seed: 1)
                inputs.tokens = syntheticTokens
                inputs.patches = syntheticPatches
                inputs.patchDim = syntheticPatchDim
                _ = try ShardStage.fillSynthetic(workspace: ws, inputs: inputs)
                if syntheticOnly { return StageReport(stage: "synthetic shard inputs", counts: ["instructions": synthetic]) }
            }
            return try ShardStage.run(workspace: ws, options: options, progress: workspace.progress())
        }
        printReport(report, json: json)
    }
}

/// `256MB` → 256,000,000; `1GiB` → 2^30; a plain number is bytes.
func parseByteSize(_ text: String) throws -> Int {
    let units: [(String, Double)] = [
        ("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TIB", 1_099_511_627_776),
        ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("B", 1),
    ]
    let upper = text.trimmingCharacters(in: .whitespaces).uppercased()
    for (suffix, factor) in units where upper.hasSuffix(suffix) {
        guard let value = Double(upper.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), value > 0 else { break }
        return Int(value * factor)
    }
    guard let value = Int(upper), value > 0 else { throw ValidationError("not a size: \(text)") }
    return value
}
