import ArgumentParser
import Foundation
import VLMCore
import VLMCatalog
import VLMIO
import VLMPipeline
import VLMText

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Encode and decode with a HF tokenizer.json or a SentencePiece tokenizer.model, or train a byte-level BPE tokenizer.",
        discussion: """
        --tokenizer takes a tokenizer.json (HF tokenizers), a tokenizer.model (transformers' slow LlamaTokenizer over \
        sentencepiece, with the legacy mode, BOS/EOS and added tokens of a tokenizer_config.json beside it; --legacy \
        overrides), or a folder holding one (tokenizer.model first, as LLaVA loads the slow tokenizer).
        """,
        subcommands: [Encode.self, Decode.self, Mask.self, Train.self]
    )

    /// Reads input records: one per line (LF; a final newline ends the last record), from a file or stdin.
    static func readRecords(_ path: String?) throws -> [[UInt8]] {
        let data: Data
        if let path {
            guard let d = FileManager.default.contents(atPath: path) else {
                throw ValidationError("cannot read --lines file '\(path)'")
            }
            data = d
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        var records = Array(data).split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        if records.last?.isEmpty == true { records.removeLast() }
        return records
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the ids of each input line as a JSON array (one per line), as HF tokenizers' encode().ids.",
            discussion: "With --json-lines each line is a JSON string (so texts may hold newlines) or an object with a \"text\" field."
        )

        @Option(help: ArgumentHelp("tokenizer.json, tokenizer.model, or a folder holding one.", valueName: "path"))
        var tokenizer: String

        @Option(help: ArgumentHelp("A tokenizer.model's legacy mode (default: its tokenizer_config.json, else true).", valueName: "true|false"))
        var legacy: Bool?

        @Option(help: ArgumentHelp("Input file (default: stdin), one text per line.", valueName: "file"))
        var lines: String?

        @Flag(help: "Each input line is a JSON string or {\"text\": ...}.")
        var jsonLines = false

        @Flag(help: "Do not add the post-processor's special tokens (add_special_tokens=False).")
        var noSpecial = false

        @Option(help: "Worker threads (records are split between them; output order is kept).")
        var jobs = 1

        func validate() throws {
            guard jobs > 0 else { throw ValidationError("--jobs must be positive") }
        }

        func run() throws {
            let tok = try runOrExit { try loadTokenizer(tokenizer, legacy: legacy) }
            let records = try TokenizerCommand.readRecords(lines)
            let texts = try records.enumerated().map { try TokenizerCommand.text($0.element, json: jsonLines, line: $0.offset + 1) }
            let workers = min(jobs, max(1, texts.count))
            let chunk = (texts.count + workers - 1) / max(workers, 1)
            var outputs = [[UInt8]](repeating: [], count: workers)
            let special = !noSpecial
            outputs.withUnsafeMutableBufferPointer { buffer in
                nonisolated(unsafe) let buffer = buffer
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    let session = tok.makeEncoder()
                    var out: [UInt8] = []
                    let lo = w * chunk, hi = min(texts.count, lo + chunk)
                    if lo < hi {
                        for i in lo..<hi {
                            let ids = session.encode(texts[i], addSpecialTokens: special)
                            out.append(UInt8(ascii: "["))
                            for (k, id) in ids.enumerated() {
                                if k > 0 { out.append(UInt8(ascii: ",")) }
                                out.append(contentsOf: String(id).utf8)
                            }
                            out.append(contentsOf: "]\n".utf8)
                        }
                    }
                    buffer[w] = out
                }
            }
            for out in outputs { FileHandle.standardOutput.write(Data(out)) }
        }
    }

    static func text(_ record: [UInt8], json: Bool, line: Int) throws -> String {
        if json {
            guard let value = try? JSONSerialization.jsonObject(with: Data(record), options: [.fragmentsAllowed]) else {
                throw ValidationError("line \(line) is not valid JSON")
            }
            if let s = value as? String { return s }
            if let d = value as? [String: Any], let s = d["text"] as? String { return s }
            throw ValidationError("line \(line) is neither a JSON string nor an object with a \"text\" string")
        }
        guard let s = String(validating: record, as: UTF8.self) else {
            throw ValidationError("line \(line) is not valid UTF-8")
        }
        return s
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode each input line (a JSON array of ids) and print the text as a JSON string, as HF tokenizers' decode().",
            discussion: """
            Special tokens are skipped by default, as tokenizers' Tokenizer.decode(skip_special_tokens=True); \
            --no-skip-special-tokens keeps them, as transformers' tokenizer.decode() does by default \
            (LLaMA-2: "<s> hello world"). A tokenizer.model decodes as transformers' slow LlamaTokenizer.
            """
        )

        @Option(help: ArgumentHelp("tokenizer.json, tokenizer.model, or a folder holding one.", valueName: "path"))
        var tokenizer: String

        @Option(help: ArgumentHelp("A tokenizer.model's legacy mode (default: its tokenizer_config.json, else true).", valueName: "true|false"))
        var legacy: Bool?

        @Option(help: ArgumentHelp("Input file (default: stdin), one JSON array of ids per line.", valueName: "file"))
        var lines: String?

        @Flag(inversion: .prefixedNo, help: "Leave special tokens out of the text (tokenizers' skip_special_tokens).")
        var skipSpecialTokens = true

        @Flag(help: ArgumentHelp("Same as --no-skip-special-tokens.", visibility: .hidden))
        var keepSpecial = false

        func run() throws {
            let tok = try runOrExit { try loadTokenizer(tokenizer, legacy: legacy) }
            var out: [UInt8] = []
            for (index, record) in try TokenizerCommand.readRecords(lines).enumerated() {
                guard let array = try? JSONSerialization.jsonObject(with: Data(record)) as? [Any] else {
                    throw ValidationError("line \(index + 1) is not a JSON array of ids")
                }
                let ids = try array.map { value -> Int32 in
                    guard let n = (value as? NSNumber)?.int64Value, n >= Int64(Int32.min), n <= Int64(Int32.max) else {
                        throw ValidationError("line \(index + 1) holds a value that is not an integer id")
                    }
                    return Int32(n)
                }
                appendJSONString(tok.decode(ids, skipSpecialTokens: skipSpecialTokens && !keepSpecial), to: &out)
                out.append(0x0A)
            }
            FileHandle.standardOutput.write(Data(out))
        }
    }

    struct Mask: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print LLaVA's input_ids and labels for each conversation (one JSON record per input line).",
            discussion: """
            Input lines are LLaVA records {"id", "image"?, "conversations": [...]}; output lines are {"id", "input_ids", \
            "labels", "mismatch", "llava_differs"}. The labels are the tokenize stage's: LLaVA's where its arithmetic \
            finds the assistant turns, else from the turn boundaries; --llava-arithmetic prints LLaVA's own (a \
            mismatch masks the whole sample).
            """
        )

        @Option(help: ArgumentHelp("tokenizer.json, tokenizer.model, or a folder holding one.", valueName: "path"))
        var tokenizer: String

        @Option(help: ArgumentHelp("A tokenizer.model's legacy mode (default: its tokenizer_config.json, else true).", valueName: "true|false"))
        var legacy: Bool?

        @Option(help: ArgumentHelp("Chat template: \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "name"))
        var template: String

        @Option(help: ArgumentHelp("Input file (default: stdin), one LLaVA record per line.", valueName: "file"))
        var lines: String?

        @Flag(help: "Same as --legacy false (LLaVA's `tokenizer.legacy == False` length adjustment).")
        var nonLegacy = false

        @Flag(help: "Print LLaVA's own labels (its length arithmetic; a mismatch masks everything).")
        var llavaArithmetic = false

        @Option(help: "LLaVA's model_max_length (the mismatch check runs below it).")
        var modelMaxLength = 2048

        func validate() throws {
            guard ChatTemplate(rawValue: template) != nil else {
                throw ValidationError("--template must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")), not '\(template)'")
            }
        }

        func run() throws {
            let tok = try runOrExit { try loadTokenizer(tokenizer, legacy: nonLegacy ? false : legacy) }
            let masker = LLaVAMasker(tokenizer: tok, template: ChatTemplate(rawValue: template)!, legacy: nonLegacy ? false : legacy, modelMaxLength: modelMaxLength)
            var out: [UInt8] = []
            for (index, record) in try TokenizerCommand.readRecords(lines).enumerated() {
                let conversation: Conversation
                do { conversation = try JSONDecoder().decode(Conversation.self, from: Data(record)) } catch {
                    throw ValidationError("line \(index + 1) is not a LLaVA record: \(error)")
                }
                let sample = try runOrExit { try llavaArithmetic ? masker.llava(conversation) : masker.tokenize(conversation) }
                out.append(contentsOf: "{\"id\":".utf8)
                appendJSONString(conversation.id, to: &out)
                out.append(contentsOf: ",\"input_ids\":[\(sample.inputIDs.map(String.init).joined(separator: ","))]".utf8)
                out.append(contentsOf: ",\"labels\":[\(sample.labels.map(String.init).joined(separator: ","))]".utf8)
                out.append(contentsOf: ",\"mismatch\":\(sample.mismatch),\"llava_differs\":\(sample.llavaDiffers)}\n".utf8)
            }
            FileHandle.standardOutput.write(Data(out))
        }
    }

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a byte-level BPE tokenizer (GPT-2 style) and write a tokenizer.json HF tokenizers loads.",
            discussion: """
            Text comes from the workspace catalog (--from-catalog: captions and instruction turns) or from files \
            (one text per line). Special tokens for the chat templates and <image> come first (ids 0...), then the \
            256 byte characters, then the merges; <s> is added as BOS. Same input, same output.
            """
        )

        @OptionGroup var workspace: WorkspaceOptions

        @Option(help: "Vocabulary size, special tokens and the 256 bytes included.")
        var vocabSize: Int

        @Option(help: ArgumentHelp("Where to write tokenizer.json.", valueName: "path"))
        var out: String

        @Flag(help: "Train on the catalog's captions and instruction turns.")
        var fromCatalog = false

        @Option(help: "Pairs seen fewer times are not merged.")
        var minFrequency = 2

        @Option(parsing: .upToNextOption, help: "Special tokens (default: <s> </s> <unk> <pad> <image> <|im_start|> <|im_end|> <|endoftext|>).")
        var specialTokens: [String] = []

        @Argument(help: "Text files, one text per line.")
        var files: [String] = []

        @Flag(help: "Print the result as JSON.")
        var json = false

        func validate() throws {
            _ = try makeStage(TokenizerTrainStep.self, trainConfig)
        }

        var trainConfig: TokenizerTrainStep.Config {
            var config = TokenizerTrainStep.Config(vocabSize: vocabSize, out: out)
            config.fromCatalog = fromCatalog
            config.minFrequency = minFrequency
            config.specialTokens = specialTokens
            config.files = files
            return config
        }

        func run() throws {
            let stage = try makeStage(TokenizerTrainStep.self, trainConfig)
            let report: StageReport
            do { report = try stage.run(workspace.context()) } catch let failure as StageFailure {
                FileHandle.standardError.write(Data("error: \(failure.error)\n".utf8))
                throw ExitCode(1)
            }
            let c = report.counts
            if json {
                print("{\"texts\": \(c["texts"] ?? 0), \"vocab_size\": \(c["vocab_size"] ?? 0), \"merges\": \(c["merges"] ?? 0), \"out\": \"\(out)\"}")
            } else {
                print("tokenizer train: texts=\(c["texts"] ?? 0) vocab_size=\(c["vocab_size"] ?? 0) merges=\(c["merges"] ?? 0) -> \(out)")
            }
        }
    }
}

/// Appends `s` as a JSON string literal (UTF-8 kept as is; quotes, backslashes and control characters escaped).
func appendJSONString(_ s: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
        switch b {
        case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
        case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
        case 0x0A: out.append(contentsOf: "\\n".utf8)
        case 0x0D: out.append(contentsOf: "\\r".utf8)
        case 0x09: out.append(contentsOf: "\\t".utf8)
        case 0..<0x20:
            out.append(contentsOf: "\\u00".utf8)
            out.append(contentsOf: String(format: "%02x", b).utf8)
        default: out.append(b)
        }
    }
    out.append(UInt8(ascii: "\""))
}
