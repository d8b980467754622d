import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline
import VLMText

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenize the catalog's instructions with a tokenizer.json and a LLaVA chat template (input_ids + labels).",
        discussion: """
        Labels follow LLaVA's preprocess_v1 / preprocess_llama_2 / preprocess_mpt / preprocess_plain: -100 on the \
        system prompt and every human turn, the answers and their end-of-turn separator supervised; <image> becomes \
        -200. A sample longer than --max-length (the image counting --image-tokens positions) is truncated or dropped \
        as --overflow says, and counted. Rerunning with the same tokenizer, template and limits does nothing.
        """
    )

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: ArgumentHelp("Path to tokenizer.json.", valueName: "path"))
    var tokenizer: String

    @Option(help: ArgumentHelp("Chat template: \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "name"))
    var template: String

    @Option(help: "Maximum positions per sample, the image counting --image-tokens.")
    var maxLength = 2048

    @Option(help: "Positions the image takes in the model (576 for CLIP ViT-L/14-336).")
    var imageTokens = 576

    @Option(help: "What to do with longer samples: truncate or drop.")
    var overflow = "truncate"

    @Flag(help: "The tokenizer is non-legacy (LLaVA's `tokenizer.legacy == False` length adjustment).")
    var nonLegacy = false

    @Option(help: "Worker threads.")
    var jobs = 1

    @Flag(help: "Print the report as JSON.")
    var json = false

    var config: TokenizeStep.Config {
        var c = TokenizeStep.Config(tokenizer: tokenizer, template: template)
        c.maxLength = maxLength
        c.imageTokens = imageTokens
        c.overflow = overflow
        c.nonLegacy = nonLegacy
        c.jobs = jobs
        return c
    }

    func validate() throws {
        _ = try makeStage(TokenizeStep.self, config)
        guard FileManager.default.fileExists(atPath: tokenizer) else {
            throw ValidationError("--tokenizer '\(tokenizer)' does not exist")
        }
    }

    func run() throws {
        try runStage(try makeStage(TokenizeStep.self, config), workspace.context(), json: json)
    }
}
