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
            By default one record per image, as LLaVA's llava_v1_5_mix665k.json is laid out and as `tokenize` groups \
            samples: the image's instructions in catalog order as one multi-turn conversation, "<image>" only in the \
            first human turn, the id its first instruction's key (instructions stating different box frames make one \
            record per frame, as tokenize groups them). No length limit is applied (that needs a tokenizer): \
            --tokenized NAME|HASH writes exactly the samples a tokenize run made, its --max-length splits included. \
            --per-instruction writes one record per instruction, as before grouping existed. Text-only instructions are \
            one record each.

            Records are in id order and valid against Schemas/instruction.schema.json; `vlmdata ingest llava` reads \
            the file back. With --image-root, image paths are relative to that folder (images inside an archive are \
            given by their member name); without it, the annotation's file name is written. An instruction whose \
            conversation is not LLaVA's shape is left out and named on stderr (and in --json); the others are written; \
            --strict makes that exit non-zero. --json counts records and instructions. See docs/export.md.
            """)

        @OptionGroup var workspace: WorkspaceOptions
        @Option(help: "Output JSON file (written atomically).") var out: String
        @Option(help: ArgumentHelp("Only these kinds (comma-separated, e.g. caption,conversation).", valueName: "list")) var kinds: String?
        @Option(help: ArgumentHelp("Only these generators (comma-separated: templates, llm, import).", valueName: "list")) var generators: String?
        @Option(help: ArgumentHelp("Folder the image paths are written relative to.", valueName: "dir")) var imageRoot: String?
        @Flag(help: "One record per instruction (the layout before grouping) instead of one per image.") var perInstruction = false
        @Option(help: ArgumentHelp("Write the samples of this tokenize config (readable name or hash prefix) as they are.",
                                   valueName: "name|hash")) var tokenized: String?
        @Flag(help: "Exit non-zero when an instruction was left out.") var strict = false
        @Flag(help: "Print the report as JSON.") var json = false

        var config: ExportLLaVAStep.Config {
            ExportLLaVAStep.Config(out: out, kinds: kinds, generators: generators, imageRoot: imageRoot,
                                   perInstruction: perInstruction, tokenized: tokenized)
        }

        func validate() throws { _ = try makeStage(ExportLLaVAStep.self, config) }

        func run() throws {
            try runStage(try makeStage(ExportLLaVAStep.self, config), workspace.context(), json: json, strict: strict,
                         problemsOnStderr: true)
        }
    }
}
