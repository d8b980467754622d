import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline

struct IngestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest",
        abstract: "Import annotations and images into the catalog.",
        subcommands: [COCO.self, LLaVA.self]
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
        @Option(help: ArgumentHelp("Handle part I of N (0-based), by a stable hash of the image key.", valueName: "I/N")) var part: String?
        @Flag(help: "Exit non-zero when any record had a problem.") var strict = false
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            if captions == nil && instances == nil { throw ValidationError("Give --captions and/or --instances.") }
            if let part, PartSpec(parsing: part) == nil { throw ValidationError("--part must look like 0/4 (index/count, index < count).") }
        }

        func run() throws {
            let options = IngestCOCO.Options(captions: captions, instances: instances, images: images, split: split,
                                             part: part.flatMap(PartSpec.init(parsing:)))
            try runIngest(json: json, strict: strict) {
                let catalog = try Catalog(workspace: Workspace(root: common.path))
                return try IngestCOCO(options: options).run(catalog: catalog, progress: common.progress())
            }
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
        @Flag(help: "Exit non-zero when any record had a problem.") var strict = false
        @Flag(name: .customLong("json-report"), help: "Print the report as JSON.") var jsonReport = false

        func run() throws {
            let options = IngestLLaVA.Options(json: json, images: images, split: split)
            try runIngest(json: jsonReport, strict: strict) {
                let catalog = try Catalog(workspace: Workspace(root: common.path))
                return try IngestLLaVA(options: options).run(catalog: catalog, progress: common.progress())
            }
        }
    }
}

/// Prints problems on stderr, the report on stdout, and maps failures to exit codes.
func runIngest(json: Bool, strict: Bool, _ body: () throws -> StageReport) throws {
    let report: StageReport
    do {
        report = try body()
    } catch let failure as IngestFailure {
        printProblems(failure.report.problems)
        var shown = failure.report
        shown.problems = json ? Array(shown.problems.prefix(1000)) : []
        printReport(shown, json: json)
        FileHandle.standardError.write(Data("error: \(failure.error)\n(the records before it were kept; fix the file and run again)\n".utf8))
        throw ExitCode(1)
    } catch let error as VLMError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
    printProblems(report.problems)
    var shown = report
    // The JSON report lists problems too (the first 1000; counts.problems has them all); text shows them once.
    shown.problems = json ? Array(report.problems.prefix(1000)) : []
    printReport(shown, json: json)
    if strict && !report.problems.isEmpty { throw ExitCode(1) }
}

func printProblems(_ problems: [String]) {
    for problem in problems.prefix(50) { FileHandle.standardError.write(Data("problem: \(problem)\n".utf8)) }
    if problems.count > 50 { FileHandle.standardError.write(Data("... and \(problems.count - 50) more problems\n".utf8)) }
}
