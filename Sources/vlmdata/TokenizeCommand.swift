import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline
import VLMText

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Tokenize the catalog's instructions with a tokenizer and a LLaVA chat template (input_ids + labels).",
        discussion: """
        Labels follow LLaVA's preprocess_v1 / preprocess_llama_2 / preprocess_mpt / preprocess_plain: -100 on the \
        system prompt and every human turn, the answers and their end-of-turn separator supervised; <image> becomes \
        -200. Where LLaVA's length arithmetic does not find the assistant turns (chatml, GPT-2-style tokenizers, \
        LLaVA's "tokenization mismatch"), the labels come from the turn boundaries instead (counted as llava_differs). \
        A sample with no supervised token is an error row, counted as unsupervised, unless --allow-unsupervised; a \
        run in which no sample is supervised fails. A sample longer than --max-length (the image counting \
        --image-tokens positions) is truncated or dropped as --overflow says, and counted. Rerunning with the same \
        tokenizer, template and limits does nothing. The report names the configuration (template@tokenizer) and \
        its hash.

        By default an image's instructions become one sample: one multi-turn conversation in catalog order,         <image> only in the first human turn (as LLaVA's 665K mix is built), each answer supervised as LLaVA masks         that conversation. Where it does not fit --max-length it is split into several samples, each starting with         the image. The shards then hold one copy of an image's pixels (an epoch sees each image once, with all its         turns). --sample-per-instruction keeps one sample per instruction (name template@tokenizer/per-instruction).         The plain template has one turn per sample and is never grouped.

        --tokenizer takes a HF tokenizer.json, a SentencePiece tokenizer.model (encoded as transformers' slow \
        LlamaTokenizer, which LLaVA uses, with the legacy mode and special tokens of a tokenizer_config.json \
        beside it), or a folder holding one (tokenizer.model first).
        """
    )

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: ArgumentHelp("tokenizer.json, tokenizer.model, or a folder holding one.", valueName: "path"))
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

    @Option(help: ArgumentHelp("LLaVA's tokenizer.legacy, and a tokenizer.model's mode (default: its tokenizer_config.json, else true).", valueName: "true|false"))
    var legacy: Bool?

    @Flag(help: "Same as --legacy false.")
    var nonLegacy = false

    @Flag(help: "Keep samples that have no supervised token (default: they are error rows, counted as unsupervised).")
    var allowUnsupervised = false

    @Option(help: "Worker threads.")
    var jobs = 1

    @Flag(help: "One sample per instruction, each with its own copy of the image (default: one multi-turn sample per image).")
    var samplePerInstruction = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    var config: TokenizeStep.Config {
        var c = TokenizeStep.Config(tokenizer: tokenizer, template: template)
        c.maxLength = maxLength
        switch imageTokens {
        case .count(let n): c.imageTokens = n
        case .pixels: c.imageTokensFromPixels = true
        }
        c.pixels = pixels
        c.part = part?.description
        c.overflow = overflow
        c.nonLegacy = nonLegacy
        c.legacy = legacy
        c.allowUnsupervised = allowUnsupervised
        c.jobs = jobs
        c.samplePerInstruction = samplePerInstruction
        return c
    }

    func validate() throws {
        if pixels != nil, imageTokens != .pixels { throw ValidationError("--pixels is only used with --image-tokens pixels") }
        _ = try makeStage(TokenizeStep.self, config)
        guard FileManager.default.fileExists(atPath: tokenizer) else {
            throw ValidationError("--tokenizer '\(tokenizer)' does not exist")
        }
        if nonLegacy, legacy == true { throw ValidationError("--non-legacy contradicts --legacy true") }
    }

    func run() throws {
        try runStage(try makeStage(TokenizeStep.self, config), workspace.context(), json: json)
    }
}
