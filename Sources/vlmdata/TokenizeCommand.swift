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

    @Option(help: "Positions the image takes in the model (576 for CLIP ViT-L/14-336).")
    var imageTokens = 576

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
        guard imageTokens > 0 else { throw ValidationError("--image-tokens must be positive") }
        guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        guard FileManager.default.fileExists(atPath: tokenizer) else {
            throw ValidationError("--tokenizer '\(tokenizer)' does not exist")
        }
        if nonLegacy, legacy == true { throw ValidationError("--non-legacy contradicts --legacy true") }
    }

    func run() throws {
        let stage = TokenizeStage(options: .init(
            tokenizer: tokenizer, template: ChatTemplate(rawValue: template)!, maxLength: maxLength,
            imageTokens: imageTokens, overflow: TokenizeStage.Overflow(rawValue: overflow)!,
            legacy: nonLegacy ? false : legacy, allowUnsupervised: allowUnsupervised, jobs: jobs))
        let (report, configHash) = try runOrExit {
            let catalog = try Catalog(workspace: Workspace(root: workspace.path))
            let configHash = try stage.configHash()
            return (try stage.run(catalog: catalog, progress: workspace.progress(json: json)), configHash)
        }
        if json {
            // The stage report with the configuration's name and hash added.
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var object = (try? JSONSerialization.jsonObject(with: encoder.encode(report))) as? [String: Any] ?? [:]
            object["name"] = stage.readableName
            object["config_hash"] = configHash
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("tokenize \(stage.readableName) config \(configHash)")
            printReport(report, json: false)
        }
    }
}
