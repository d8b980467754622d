import Foundation
import Testing
@testable import VLMText
import VLMCore

let mistralModel = "\(sharedData)/tokenizers/mistral-v1/tokenizer.model"

@Suite struct SentencePieceTests {
    /// Golden vectors from `sentencepiece.SentencePieceProcessor(model_file=...).encode(text)`.
    @Test(arguments: [
        ("Hello world", [22557, 1526] as [Int32]),
        ("A cat sits on a mat.", [330, 5255, 19050, 356, 264, 1610, 28723]),
        ("🦜 x", [28705, 243, 162, 169, 159, 1318]),
        ("  two", [259, 989]),
        ("\n", [28705, 13]),
        ("", []),
    ])
    func sentencepieceVectors(text: String, expected: [Int32]) throws {
        let model = try SentencePieceModel(contentsOf: mistralModel)
        #expect(model.encode(text) == expected)
        #expect(model.decode(expected) == text)
    }

    @Test func modelProtoFields() throws {
        let model = try SentencePieceModel(contentsOf: mistralModel)
        #expect(model.vocabSize == 32000)
        #expect(model.unkID == 0 && model.bosID == 1 && model.eosID == 2)
        #expect(model.byteFallback && model.addDummyPrefix && !model.removeExtraWhitespaces)
        #expect(model.pieces[300] == "om")
    }

    /// Issue 12 case 8: `</s>` in text is one token, and the mode decides what follows it. Vectors from
    /// transformers' `LlamaTokenizer(tokenizer.model, legacy=...)`.
    @Test func slowTokenizerModes() throws {
        let legacy = try LlamaTokenizer(contentsOf: mistralModel, legacy: true)
        let modern = try LlamaTokenizer(contentsOf: mistralModel, legacy: false)
        #expect(legacy.encode("A</s>USER: hi") == [1, 330, 2, 2223, 725, 28747, 12014])
        #expect(modern.encode("A</s>USER: hi") == [1, 330, 2, 11123, 28747, 12014])
        #expect(modern.encode(" x") == [1, 28705, 1318])
        #expect(modern.encode("x <s> y") == [1, 1318, 28705, 1, 337])
        #expect(legacy.encode("x <s> y") == [1, 1318, 28705, 1, 28705, 337])
        #expect(modern.encode("") == [1])
        #expect(modern.decode([1, 6312, 28709, 1526]) == "<s> hello world")
        #expect(legacy.decode([1, 6312, 28709, 1526]) == "<s>hello world")
        #expect(modern.decode([1, 6312, 28709, 1526], skipSpecialTokens: true) == "hello world")
    }

    @Test func loaderPicksTheFile() throws {
        #expect(try loadTokenizer("\(sharedData)/tokenizers/mistral-v1") is LlamaTokenizer)
        #expect(try loadTokenizer("\(sharedData)/tokenizers/gpt2") is Tokenizer)
        #expect(tokenizerDisplayName("\(sharedData)/tokenizers/mistral-v1/tokenizer.model") == "mistral-v1")
        #expect(tokenizerDisplayName("/x/my-tok.json") == "my-tok")
        #expect(throws: VLMError.self) { try SentencePieceModel(data: Data([0x0A, 0x05, 0x01])) }
    }
}

@Suite struct TurnBoundaryMaskingTests {
    func conversation() -> Conversation {
        Conversation(id: "c", image: "x.jpg", conversations: [
            Turn(from: .human, value: "<image>\nWhat is here?"), Turn(from: .gpt, value: "A cat on a mat."),
            Turn(from: .human, value: "What color?"), Turn(from: .gpt, value: "Orange."),
        ])
    }

    /// Issue 12 case 1: chatml and gpt2 left no supervised token (LLaVA's arithmetic). The labels are now the
    /// replies and their end-of-turn text.
    @Test(arguments: ["gpt2", "mistral-v1"], [ChatTemplate.chatml, .vicunaV1, .llama2])
    func everyTemplateSupervisesTheReplies(name: String, template: ChatTemplate) throws {
        let tokenizer = try loadShared(name)
        let masker = LLaVAMasker(tokenizer: tokenizer, template: template)
        let sample = try masker.tokenize(conversation())
        var runs: [[Int32]] = []
        var current: [Int32] = []
        for label in sample.labels + [LLaVAMasker.ignoreIndex] {
            if label != LLaVAMasker.ignoreIndex { current.append(label) } else if !current.isEmpty { runs.append(current); current = [] }
        }
        let texts = runs.map { tokenizer.decode($0, skipSpecialTokens: false).trimmingCharacters(in: .whitespaces) }
        let eot = template.endOfTurn.trimmingCharacters(in: .whitespaces)
        #expect(texts.count == 2)
        for (text, reply) in zip(texts, ["A cat on a mat.", "Orange."]) {
            #expect(text.hasPrefix(reply))
            #expect((reply + (template == .llama2 ? " " : "") + eot).hasPrefix(text))
        }
    }

    @Test func emptyAnswerIsCounted() throws {
        let masker = LLaVAMasker(tokenizer: try loadShared("mistral-v1"), template: .chatml)
        let sample = try masker.tokenize(Conversation(id: "e", image: nil, conversations: [
            Turn(from: .human, value: "hi"), Turn(from: .gpt, value: ""),
        ]))
        #expect(sample.supervisedCount == 0)
    }
}
