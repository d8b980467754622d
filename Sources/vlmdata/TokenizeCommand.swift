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

    /// A fixed count, or `pixels`: each image's count from its stored pixels.
    enum ImageTokens: ExpressibleByArgument, Equatable {
        case count(Int)
        case pixels
        init?(argument: String) {
            if argument == "pixels" { self = .pixels } else if let n = Int(argument) { self = .count(n) } else { return nil }
        }
        var defaultValueDescription: String { if case .count(let n) = self { "\(n)" } else { "pixels" } }
    }

    @Option(help: ArgumentHelp("Positions the image takes in the model: a number (576 for CLIP ViT-L/14-336: (336/14)^2), or `pixels` to take each image's count from its stored pixels (run patchify first; anyres images differ). shard refuses samples whose count is not their pixels'.", valueName: "n|pixels"))
    var imageTokens: ImageTokens = .count(PatchGrid.clipViTL14at336.imageTokens)

    @Option(help: ArgumentHelp("With --image-tokens pixels: the pixel config to count from (when the catalog holds several).", valueName: "hash"))
    var pixels: String?

    @Option(help: PartHelp.text)
    var part: PartSpec?

    @Option(help: "What to do with longer samples: truncate or drop.")
    var overflow = "truncate"

    @Flag(help: "The tokenizer is non-legacy (LLaVA's `tokenizer.legacy == False` length adjustment).")
    var nonLegacy = false

    @Option(help: "Worker threads.")
    var jobs = 1

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard ChatTemplate(rawValue: template) != nil else {
            throw ValidationError("--template must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")), not '\(template)'")
        }
        guard TokenizeStage.Overflow(rawValue: overflow) != nil else {
            throw ValidationError("--overflow must be 'truncate' or 'drop', not '\(overflow)'")
        }
        guard maxLength > 0 else { throw ValidationError("--max-length must be positive") }
        if case .count(let n) = imageTokens, n <= 0 { throw ValidationError("--image-tokens must be positive or 'pixels'") }
        if pixels != nil, imageTokens != .pixels { throw ValidationError("--pixels is only used with --image-tokens pixels") }
        guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        guard FileManager.default.fileExists(atPath: tokenizer) else {
            throw ValidationError("--tokenizer '\(tokenizer)' does not exist")
        }
    }

    func run() throws {
        let report = try runOrExit {
            let catalog = try Catalog(workspace: Workspace(root: workspace.path))
            var options = TokenizeStage.Options(
                tokenizer: tokenizer, template: ChatTemplate(rawValue: template)!, maxLength: maxLength,
                imageTokens: { if case .count(let n) = imageTokens { n } else { 0 } }(),
                overflow: TokenizeStage.Overflow(rawValue: overflow)!, legacy: !nonLegacy, jobs: jobs)
            options.imageTokensFromPixels = imageTokens == .pixels
            options.pixelsConfig = pixels
            options.part = part
            let stage = TokenizeStage(options: options)
            return try stage.run(catalog: catalog, progress: workspace.progress(json: json))
        }
        printReport(report, json: json)
    }
}
