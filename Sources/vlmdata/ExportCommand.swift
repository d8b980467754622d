import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export catalog data in other tools' formats.",
        subcommands: [LLaVA.self]
    )

    struct LLaVA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "llava",
            abstract: "Write instructions as a LLaVA JSON file: [{\"id\", \"image\", \"conversations\"}, ...].",
            discussion: """
            Records are in key order and valid against Schemas/instruction.schema.json; `vlmdata ingest llava` reads \
            the file back. With --image-root, image paths are relative to that folder (images inside an archive are \
            given by their member name); without it, the annotation's file name is written.
            """)

        @OptionGroup var workspace: WorkspaceOptions
        @Option(help: "Output JSON file (written atomically).") var out: String
        @Option(help: ArgumentHelp("Only these kinds (comma-separated, e.g. caption,conversation).", valueName: "list")) var kinds: String?
        @Option(help: ArgumentHelp("Only these generators (comma-separated: templates, llm, import).", valueName: "list")) var generators: String?
        @Option(help: ArgumentHelp("Folder the image paths are written relative to.", valueName: "dir")) var imageRoot: String?
        @Flag(help: "Print the report as JSON.") var json = false

        var config: ExportLLaVAStep.Config {
            ExportLLaVAStep.Config(out: out, kinds: kinds, generators: generators, imageRoot: imageRoot)
        }

        func validate() throws { _ = try makeStage(ExportLLaVAStep.self, config) }

        func run() throws {
            try runStage(try makeStage(ExportLLaVAStep.self, config), workspace.context(), json: json)
        }
    }
}
