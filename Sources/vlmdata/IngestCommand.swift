import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Import annotations and images into the catalog.",
        subcommands: [COCO.self, LLaVA.self, URLs.self]
    )

    struct COCO: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "coco",
            abstract: "Import COCO captions/instances JSON and their images (folder, zip or tar).",
            discussion: """
            The JSON is streamed (bounded memory). Each image's header is checked against the annotation and its bytes \
            hashed; its status is ok, missing, corrupt, size_mismatch or too_large. Boxes are clipped to their image, or \
            rejected when they lie outside it, are not finite or have zero area. Running again adds nothing; a run \
            killed midway and run again ends with the rows of a clean run. Per-record and per-image problems are listed \
            on stderr (the first 50, then a count) and in --json; the good records are kept; --strict makes problems \
            fail the command. Limits are in docs/ingest.md.
            """
        )
        @OptionGroup var common: WorkspaceOptions
        @Option(help: "COCO captions file (captions_*.json).") var captions: String?
        @Option(help: "COCO instances file (instances_*.json): categories and boxes.") var instances: String?
        @Option(help: "Image folder, .zip or .tar(.gz). Without it every image is recorded as missing.") var images: String?
        @Option(help: "Split name; prefixes image keys (letters, digits, _ and -).") var split = "train"
        @Option(help: PartHelp.text) var part: PartSpec?
        @Flag(help: "Exit non-zero when any record had a problem.") var strict = false
        @Flag(help: "Print the report as JSON.") var json = false

        var config: IngestCOCOStep.Config {
            IngestCOCOStep.Config(captions: captions, instances: instances, images: images, split: split, part: part?.description)
        }

        func validate() throws { _ = try makeStage(IngestCOCOStep.self, config) }

        func run() throws {
            try runStage(try makeStage(IngestCOCOStep.self, config), common.context(), json: json, strict: strict,
                         problemsOnStderr: true, failureHint: ingestFailureHint)
        }
    }

    struct LLaVA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "llava",
            abstract: "Import an existing LLaVA-format JSON or JSONL file (id, image, conversations) as images and instructions.",
            discussion: """
            The file is a JSON array or JSON Lines. Records carry conversations, or (GPT-4 QA files) instruction, output \
            and type: these become a human turn "<image>\\n" + instruction and a gpt turn output, of kind conversation, \
            detail or complex. A bad record or line is reported and skipped; the others are kept. Limits are in \
            docs/ingest.md.
            """
        )
        @OptionGroup var common: WorkspaceOptions
        @Option(help: "LLaVA file: a JSON array of records, or JSON Lines.") var json: String
        @Option(help: "Folder (or zip/tar) the records' image paths are relative to.") var images: String?
        @Option(help: "Split name; prefixes keys.") var split = "llava"
        @Option(help: PartHelp.text) var part: PartSpec?
        @Flag(help: "Exit non-zero when any record had a problem.") var strict = false
        @Flag(name: .customLong("json-report"), help: "Print the report as JSON.") var jsonReport = false

        @Option(help: ArgumentHelp("The frame of the boxes the records state: original (the whole image; the default), pad (LLaVA-1.5's padded square, as its grounding data), crop. Records that state a box record it, and shard checks it against patchify --mode.", valueName: "frame"))
        var boxFrame: BoxFrame = .original

        var config: IngestLLaVAStep.Config {
            IngestLLaVAStep.Config(json: json, images: images, split: split, part: part?.description, boxFrame: boxFrame.rawValue)
        }

        func validate() throws { _ = try makeStage(IngestLLaVAStep.self, config) }

        func run() throws {
            try runStage(try makeStage(IngestLLaVAStep.self, config), common.context(), json: jsonReport, strict: strict,
                         problemsOnStderr: true, failureHint: ingestFailureHint)
        }
    }
}

let ingestFailureHint = "the records before it were kept; fix the file and run again"
