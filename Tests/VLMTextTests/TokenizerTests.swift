import Foundation
import Testing
@testable import VLMText
import VLMCore

/// `<package root>/../shared/data`, found from this file's path.
let sharedData: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.deletingLastPathComponent().appendingPathComponent("shared/data").path
}()

func loadShared(_ name: String) throws -> Tokenizer {
    try Tokenizer(contentsOf: "\(sharedData)/tokenizers/\(name)/tokenizer.json")
}

@Suite struct TokenizerTests {
    @Test func gpt2GoldenVector() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(sharedData)/tokenizers/gpt2/gpt2_encoded_tokens.json"))
        let golden = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let text = golden["text"] as! String
        let expected = (golden["token_ids"] as! [Any]).map { Int32(($0 as! NSNumber).intValue) }
        let tokenizer = try loadShared("gpt2")
        let ids = tokenizer.makeSession().encode(text)
        #expect(ids == expected)
        #expect(tokenizer.decode(ids) == (golden["decoded_text"] as? String ?? text))
    }

    @Test(arguments: [
        ("Hello world", [15496, 995] as [Int32]),
        ("  leading", [220, 3756] as [Int32]),
        ("It's", [1026, 338] as [Int32]),
        ("<|endoftext|>x", [50256, 87] as [Int32]),
        ("", [] as [Int32]),
    ])
    func gpt2Vectors(text: String, expected: [Int32]) throws {
        #expect(try loadShared("gpt2").makeSession().encode(text) == expected)
    }

    @Test func mistralAddsBOSAndFallsBackToBytes() throws {
        let tokenizer = try loadShared("mistral-v1")
        let session = tokenizer.makeSession()
        let ids = session.encode("Hello")
        #expect(ids.first == 1)
        #expect(session.encode("Hello", addSpecialTokens: false) == Array(ids.dropFirst()))
        // An emoji absent from the vocabulary becomes its UTF-8 bytes as <0xHH> tokens and decodes back.
        let emoji = session.encode("🦜", addSpecialTokens: false)
        #expect(emoji.allSatisfy { tokenizer.token($0)?.hasPrefix("<0x") == true || tokenizer.token($0) == "▁" })
        #expect(tokenizer.decode(session.encode("a 🦜 b")) == " a 🦜 b" || tokenizer.decode(session.encode("a 🦜 b")) == "a 🦜 b")
    }

    @Test func canonicallyEquivalentTokensStayApart() throws {
        // "é" (U+00E9) and "e" + U+0301 are equal as Swift Strings but distinct tokens for HF.
        let json = #"{"model": {"type": "BPE", "vocab": {"\u00e9": 0, "e\u0301": 1, "e": 2, "\u0301": 3}, "merges": ["e \u0301"]}}"#
        let tokenizer = try Tokenizer(data: Data(json.utf8))
        let session = tokenizer.makeSession()
        #expect(session.encode("\u{E9}") == [0])
        #expect(session.encode("e\u{301}") == [1])
        #expect(tokenizer.token(1).map { Array($0.unicodeScalars) } == ["e", "\u{301}"])
    }

    @Test func unsupportedComponentNamesItself() throws {
        let json = #"{"model": {"type": "WordPiece", "vocab": {}}}"#
        #expect {
            try Tokenizer(data: Data(json.utf8))
        } throws: { error in
            "\(error)".contains("WordPiece")
        }
        let pre = #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "UnicodeScripts"}}"#
        #expect {
            try Tokenizer(data: Data(pre.utf8))
        } throws: { error in
            "\(error)".contains("UnicodeScripts")
        }
    }

    @Test func gpt2ScannerSplitsLikeTheRegex() throws {
        func pieces(_ s: String) -> [String] {
            let bytes = Array(s.utf8)
            return try! TextRegex(TextRegex.gpt2Pattern).matches(bytes).map { String(decoding: bytes[$0], as: UTF8.self) }
        }
        #expect(pieces("Hello  world's 123!!") == ["Hello", " ", " world", "'s", " 123", "!!"])
        #expect(pieces("a\n\nb") == ["a", "\n", "\n", "b"])
        #expect(pieces("end   ") == ["end", "   "])
    }

    @Test func llama3ScannerSplitsLikeTheRegex() throws {
        func pieces(_ s: String) -> [String] {
            let bytes = Array(s.utf8)
            return try! TextRegex(TextRegex.llama3Pattern).matches(bytes).map { String(decoding: bytes[$0], as: UTF8.self) }
        }
        #expect(pieces("I'M 12345 (ok)\n\n  x") == ["I", "'M", " ", "123", "45", " (", "ok", ")\n\n", " ", " x"])
    }
}

@Suite struct TrainerTests {
    static let texts = [
        "A red circle is left of a blue square.", "A blue square is above a green triangle.",
        "Two red circles and one green square.", "The triangle is small and the circle is large.",
    ]

    @Test func smallVocabularyIsDeterministicAndLoads() throws {
        let a = try BPETrainer(vocabSize: 300).train(texts: Self.texts)
        let b = try BPETrainer(vocabSize: 300).train(texts: Self.texts.reversed())
        #expect(a.json == b.json)
        #expect(a.vocabSize <= 300)
        let tokenizer = try Tokenizer(data: a.json)
        let session = tokenizer.makeSession()
        for text in Self.texts + ["unseen words ✓ 中文"] {
            let ids = session.encode(text)
            #expect(ids.first == 0) // <s>
            #expect(tokenizer.decode(ids) == text)
        }
        #expect(session.encode("<image>", addSpecialTokens: false) == [4])
    }

    @Test func vocabularyTooSmallIsAnError() {
        #expect(throws: VLMError.self) { try BPETrainer(vocabSize: 100).train(texts: Self.texts) }
    }
}

@Suite struct MaskingTests {
    @Test func vicunaMasksEverythingButAnswers() throws {
        let tokenizer = try loadShared("mistral-v1")
        let masker = LLaVAMasker(tokenizer: tokenizer, template: .vicunaV1)
        let conversation = Conversation(id: "x", image: "a.jpg", conversations: [
            Turn(from: .human, value: "What is this?\n<image>"), Turn(from: .gpt, value: "A cat."),
            Turn(from: .human, value: "Color?"), Turn(from: .gpt, value: "Black."),
        ])
        let sample = try masker.tokenize(conversation)
        #expect(!sample.mismatch)
        #expect(sample.inputIDs.first == 1)
        #expect(sample.inputIDs.filter { $0 == -200 }.count == 1)
        let supervised = zip(sample.inputIDs, sample.labels).filter { $0.1 != -100 }.map(\.0)
        // The answers and their "</s>" (id 2) are supervised, nothing else.
        #expect(tokenizer.decode(supervised, skipSpecialTokens: false).contains("A cat.</s>"))
        #expect(supervised.filter { $0 == 2 }.count == 2)
        #expect(!tokenizer.decode(supervised).contains("USER"))
    }

    @Test func plainMasksTheImageOnly() throws {
        let masker = LLaVAMasker(tokenizer: try loadShared("mistral-v1"), template: .plain)
        let sample = try masker.tokenize(Conversation(id: "p", image: "a.jpg", conversations: [
            Turn(from: .human, value: "<image>\nDescribe."), Turn(from: .gpt, value: "A dog."),
        ]))
        #expect(Array(sample.inputIDs.prefix(2)) == [1, -200])
        #expect(Array(sample.labels.prefix(2)) == [-100, -100])
        #expect(sample.labels.dropFirst(2).allSatisfy { $0 != -100 })
    }

    @Test func llama2PromptStripsLeadingBOSCharacters() {
        let prompt = ChatTemplate.llama2.prompt([Turn(from: .human, value: "Hi"), Turn(from: .gpt, value: "Hello")])
        #expect(prompt.hasPrefix("[INST] <<SYS>>\n"))
        #expect(prompt.hasSuffix("Hi [/INST] Hello </s>"))
    }
}
