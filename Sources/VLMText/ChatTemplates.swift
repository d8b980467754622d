import Foundation
import VLMCore

/// LLaVA's conversation templates (llava/conversation.py) used for training prompts.
public enum ChatTemplate: String, CaseIterable, Sendable, Codable {
    /// `conv_vicuna_v1`: system + " USER: q ASSISTANT: a</s>USER: ..." (SeparatorStyle.TWO).
    case vicunaV1 = "vicuna_v1"
    /// `conv_llava_llama_2`: "[INST] <<SYS>>\nsys\n<</SYS>>\n\nq [/INST] a </s><s>[INST] ..." (LLAMA_2).
    case llama2 = "llama_2"
    /// `conv_chatml_direct`: "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\nq<|im_end|>..." (MPT).
    case chatml
    /// `conv_llava_plain`: "<image>" + answer + "\n" (pretraining).
    case plain

    public var system: String {
        switch self {
        case .vicunaV1:
            return "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions."
        case .llama2:
            return "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language."
        case .chatml:
            return "<|im_start|>system\nAnswer the questions."
        case .plain:
            return ""
        }
    }

    /// The prompt LLaVA's `Conversation.get_prompt()` builds from (role, message) turns.
    public func prompt(_ turns: [Turn]) -> String {
        switch self {
        case .vicunaV1:
            var ret = system + " "
            for (i, turn) in turns.enumerated() {
                let role = turn.from == .human ? "USER" : "ASSISTANT"
                if turn.value.isEmpty { ret += role + ":" } else { ret += role + ": " + turn.value + (i % 2 == 0 ? " " : "</s>") }
            }
            return ret
        case .llama2:
            var ret = ""
            for (i, turn) in turns.enumerated() where !turn.value.isEmpty {
                var message = turn.value
                if i == 0 { message = "<<SYS>>\n\(system)\n<</SYS>>\n\n" + message }
                if i % 2 == 0 { ret += "<s>" + "[INST] \(message) [/INST]" } else { ret += " " + message + " </s>" }
            }
            return pythonLStrip(ret, characters: "<s>")
        case .chatml:
            var ret = system + "<|im_end|>"
            for turn in turns {
                let role = turn.from == .human ? "<|im_start|>user\n" : "<|im_start|>assistant\n"
                if turn.value.isEmpty { ret += role } else { ret += role + turn.value + "<|im_end|>" }
            }
            return ret
        case .plain:
            return turns.map(\.value).joined() + "\n"
        }
    }
}

extension ChatTemplate {
    /// The end-of-turn text the template puts after each answer (supervised with it).
    public var endOfTurn: String {
        switch self {
        case .vicunaV1: return "</s>"
        case .llama2: return " </s>"
        case .chatml: return "<|im_end|>"
        case .plain: return "\n"
        }
    }

    /// The prompt of `prompt(_:)` cut into pieces, each marked supervised (an answer and its end-of-turn text)
    /// or not. Joined, the pieces are exactly `prompt(turns)` (the plain template's first turn is "<image>").
    public func segments(_ turns: [Turn]) -> [(text: String, supervised: Bool)] {
        var out: [(text: String, supervised: Bool)] = []
        switch self {
        case .vicunaV1:
            out.append((system + " ", false))
            for (i, turn) in turns.enumerated() {
                let role = turn.from == .human ? "USER" : "ASSISTANT"
                if turn.value.isEmpty {
                    out.append((role + ":", false))
                } else if i % 2 == 0 {
                    out.append((role + ": " + turn.value + " ", false))
                } else {
                    // The space after "ASSISTANT:" belongs to the answer, as in LLaVA's arithmetic (a "▁" that
                    // does not merge with the answer's first character is supervised).
                    out.append((role + ":", false))
                    out.append((" " + turn.value + "</s>", true))
                }
            }
        case .llama2:
            for (i, turn) in turns.enumerated() where !turn.value.isEmpty {
                var message = turn.value
                if i == 0 { message = "<<SYS>>\n\(system)\n<</SYS>>\n\n" + message }
                if i % 2 == 0 {
                    out.append(("<s>" + "[INST] \(message) [/INST]", false))
                } else {
                    out.append((" " + message + " </s>", true))
                }
            }
            if let first = out.first {
                out[0].text = pythonLStrip(first.text, characters: "<s>")
            }
        case .chatml:
            out.append((system + "<|im_end|>", false))
            for turn in turns {
                let role = turn.from == .human ? "<|im_start|>user\n" : "<|im_start|>assistant\n"
                if turn.value.isEmpty {
                    out.append((role, false))
                } else if turn.from == .human {
                    out.append((role + turn.value + "<|im_end|>", false))
                } else {
                    out.append((role, false))
                    out.append((turn.value + "<|im_end|>", true))
                }
            }
        case .plain:
            out.append((Conversation.imagePlaceholder, false))
            if turns.count > 1 { out.append((turns[1].value + "\n", true)) }
        }
        return out.filter { !$0.text.isEmpty }
    }
}

/// Python `str.lstrip(chars)`: removes any leading characters that are in the set.
func pythonLStrip(_ s: String, characters: String) -> String {
    let set = Set(characters.unicodeScalars)
    let scalars = s.unicodeScalars
    var index = scalars.startIndex
    while index < scalars.endIndex, set.contains(scalars[index]) { index = scalars.index(after: index) }
    return String(scalars[index...])
}

/// Python `str.strip()` (whitespace per `str.isspace`).
func pythonStrip(_ s: String) -> String {
    func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
    let scalars = Array(s.unicodeScalars)
    var start = 0
    var end = scalars.count
    while start < end, isSpace(scalars[start]) { start += 1 }
    while end > start, isSpace(scalars[end - 1]) { end -= 1 }
    var out = String.UnicodeScalarView()
    out.append(contentsOf: scalars[start..<end])
    return String(out)
}

/// Python `str.split(sep)` (non-overlapping, left to right, empty pieces kept).
func pythonSplit(_ s: String, _ separator: String) -> [String] {
    let bytes = Array(s.utf8)
    var out: [String] = []
    var prev = 0
    for r in literalMatches(bytes, Array(separator.utf8)) {
        out.append(String(decoding: bytes[prev..<r.lowerBound], as: UTF8.self))
        prev = r.upperBound
    }
    out.append(String(decoding: bytes[prev...], as: UTF8.self))
    return out
}

/// input_ids and labels of one conversation, as LLaVA's training dataset yields them.
public struct LabeledTokens: Sendable, Equatable {
    public var inputIDs: [Int32]
    public var labels: [Int32]
    /// LLaVA's "tokenization mismatch" case: its round lengths did not add up (LLaVA masks the whole sample;
    /// here the labels come from the turn boundaries instead).
    public var mismatch: Bool
    /// LLaVA's arithmetic gave a mask other than the assistant turns (a mismatch, or turns cut in the wrong
    /// place); `labels` are the ones found from the turn boundaries.
    public var llavaDiffers: Bool = false
    /// Assistant turns that kept no token of their own (e.g. an empty answer merged into the next token).
    public var unsupervisedTurns: Int = 0

    public var supervisedCount: Int { labels.reduce(0) { $0 + ($1 != LLaVAMasker.ignoreIndex ? 1 : 0) } }
}

/// LLaVA's `preprocess` (llava/train/train.py): template prompt, `tokenizer_image_token`, and the label mask of
/// `preprocess_v1` (vicuna_v1), `preprocess_llama_2`, `preprocess_mpt` (chatml) and `preprocess_plain`.
///
/// LLaVA finds the answers by counting the tokens of text pieces, which is right only for tokenizers that
/// behave like LLaMA's (and, for chatml, not even then). So every sample is also masked from the turn
/// boundaries: the tokens of the answer (and its end-of-turn text) are those between the longest common prefix
/// of the whole prompt's ids with the ids of the prompt cut where the answer starts, and where it ends. When
/// LLaVA's mask equals that one it is LLaVA's; otherwise the boundary mask is used and the sample is marked
/// (`mismatch` / `llavaDiffers`), so no sample is silently left without supervision.
///
/// ```swift
/// let masker = LLaVAMasker(tokenizer: tokenizer, template: .vicunaV1)
/// let sample = try masker.tokenize(conversation)   // -200 at <image>, -100 on system and human turns
/// ```
public final class LLaVAMasker {
    public static let imageTokenIndex: Int32 = -200
    public static let ignoreIndex: Int32 = -100

    public let tokenizer: any TextTokenizer
    public let template: ChatTemplate
    /// `tokenizer.legacy` in LLaVA's length adjustment (true: no adjustment in preprocess_v1; +1 in preprocess_mpt).
    public let legacy: Bool
    /// LLaVA's `model_max_length`: the mismatch check only runs when the counted length is below it.
    public let modelMaxLength: Int
    let encoder: any TokenEncoder
    /// The id the tokenizer puts first (LLaMA's BOS), if any.
    public let bosID: Int32?
    /// LLaVA sets pad = unk; ids equal to it are not counted in total_len.
    public let padID: Int32?

    /// `legacy` defaults to the tokenizer's own mode (a tokenizer.model), else true.
    public init(tokenizer: any TextTokenizer, template: ChatTemplate, legacy: Bool? = nil, modelMaxLength: Int = 2048) {
        self.tokenizer = tokenizer
        self.template = template
        self.legacy = legacy ?? tokenizer.legacyMode ?? true
        self.modelMaxLength = modelMaxLength
        encoder = tokenizer.makeEncoder()
        bosID = tokenizer.bosID
        padID = tokenizer.unkID
    }

    /// `tokenizer(text).input_ids`.
    public func encode(_ text: String) -> [Int32] {
        encoder.encode(text, addSpecialTokens: true)
    }

    /// LLaVA's `tokenizer_image_token`: chunks split on "<image>" encoded separately, joined by -200, BOS once.
    public func tokenizerImageToken(_ prompt: String) -> [Int32] {
        let chunks = pythonSplit(prompt, Conversation.imagePlaceholder).map(encode)
        var ids: [Int32] = []
        var offset = 0
        if let first = chunks.first, let head = first.first, head == bosID {
            offset = 1
            ids.append(head)
        }
        for (i, chunk) in chunks.enumerated() {
            if i > 0 { ids.append(contentsOf: [Int32](repeating: Self.imageTokenIndex, count: offset + 1).dropFirst(offset)) }
            ids.append(contentsOf: chunk.dropFirst(offset))
        }
        return ids
    }

    /// LLaVA's `preprocess_multimodal` for one record with an image: "<image>" moved to the front of its turn,
    /// followed by "\n".
    public static func preprocessMultimodal(_ turns: [Turn]) -> [Turn] {
        turns.map { turn in
            guard turn.value.occurrences(of: Conversation.imagePlaceholder) > 0 else { return turn }
            var t = turn
            let without = pythonStrip(pythonSplit(turn.value, Conversation.imagePlaceholder).joined())
            t.value = pythonStrip(Conversation.imagePlaceholder + "\n" + without)
            return t
        }
    }

    /// Tokenizes one conversation with labels. `hasImage` defaults to whether the record names an image.
    public func tokenize(_ conversation: Conversation, hasImage: Bool? = nil) throws -> LabeledTokens {
        let hasImage = hasImage ?? (conversation.image != nil)
        var turns = conversation.conversations
        if let first = turns.first, first.from != .human { turns.removeFirst() }
        if hasImage { turns = Self.preprocessMultimodal(turns) }
        var sample = try llava(turns, hasImage: hasImage, record: conversation.id)
        let (boundary, emptyTurns) = boundaryLabels(turns, hasImage: hasImage || template == .plain, inputIDs: sample.inputIDs)
        sample.unsupervisedTurns = emptyTurns
        if sample.mismatch || sample.labels != boundary {
            sample.labels = boundary
            sample.llavaDiffers = true
        }
        return sample
    }

    /// LLaVA's own mask (its arithmetic, a mismatch masking everything).
    public func llava(_ conversation: Conversation, hasImage: Bool? = nil) throws -> LabeledTokens {
        let hasImage = hasImage ?? (conversation.image != nil)
        var turns = conversation.conversations
        if let first = turns.first, first.from != .human { turns.removeFirst() }
        if hasImage { turns = Self.preprocessMultimodal(turns) }
        return try llava(turns, hasImage: hasImage, record: conversation.id)
    }

    private func llava(_ turns: [Turn], hasImage: Bool, record: String) throws -> LabeledTokens {
        switch template {
        case .plain: return try plain(turns, record: record)
        case .vicunaV1: return rounds(turns, hasImage: hasImage, roundSeparator: "</s>", answerSeparator: " ASSISTANT: ", startLength: 1, instructionOffset: 2, adjustment: legacy ? 0 : -1)
        case .llama2: return rounds(turns, hasImage: hasImage, roundSeparator: "</s>", answerSeparator: "[/INST] ", startLength: 1, instructionOffset: 2, adjustment: 0)
        case .chatml: return mpt(turns, hasImage: hasImage)
        }
    }

    /// Labels from the turn boundaries: for each supervised piece of the prompt, the tokens from the end of the
    /// longest common prefix of `inputIDs` with the ids of the prompt cut at the piece's start, to the end of
    /// the one with the prompt cut at its end (the whole rest at the prompt's end). A token that straddles the
    /// answer's start (LLaMA's "▁Hello" after "ASSISTANT:") belongs to the answer; one that straddles its end
    /// (BPE merging the end-of-turn text into the next turn) does not. Returns the labels and the number of
    /// answers that kept no token.
    func boundaryLabels(_ turns: [Turn], hasImage: Bool, inputIDs: [Int32]) -> ([Int32], Int) {
        let pieces = template.segments(turns)
        var labels = [Int32](repeating: Self.ignoreIndex, count: inputIDs.count)
        var prefix = ""
        var empty = 0
        func commonPrefix(_ text: String) -> Int {
            let ids = self.ids(text, hasImage: hasImage)
            var n = 0
            while n < ids.count, n < inputIDs.count, ids[n] == inputIDs[n] { n += 1 }
            return n
        }
        for (k, piece) in pieces.enumerated() {
            guard piece.supervised else {
                prefix += piece.text
                continue
            }
            let start = commonPrefix(prefix)
            prefix += piece.text
            let end = k == pieces.count - 1 ? inputIDs.count : commonPrefix(prefix)
            if end <= start {
                empty += 1
                continue
            }
            for i in start..<end where inputIDs[i] != Self.imageTokenIndex { labels[i] = inputIDs[i] }
        }
        return (labels, empty)
    }

    private func ids(_ text: String, hasImage: Bool) -> [Int32] {
        hasImage ? tokenizerImageToken(text) : encode(text)
    }

    /// `preprocess_v1` / `preprocess_llama_2`.
    private func rounds(_ turns: [Turn], hasImage: Bool, roundSeparator: String, answerSeparator: String,
                        startLength: Int, instructionOffset: Int, adjustment: Int) -> LabeledTokens {
        let prompt = template.prompt(turns)
        let input = ids(prompt, hasImage: hasImage)
        var target = input
        let totalLength = input.reduce(0) { $0 + ($1 != padID ? 1 : 0) }
        var cur = startLength
        mask(&target, 0, cur)
        for (i, round) in pythonSplit(prompt, roundSeparator).enumerated() {
            if round.isEmpty { break }
            var parts = pythonSplit(round, answerSeparator)
            if parts.count != 2 { break }
            parts[0] += answerSeparator
            var roundLength = ids(round, hasImage: hasImage).count
            var instructionLength = ids(parts[0], hasImage: hasImage).count - instructionOffset
            if i != 0 {
                roundLength += adjustment
                instructionLength += adjustment
            }
            mask(&target, cur, cur + instructionLength)
            cur += roundLength
        }
        mask(&target, cur, target.count)
        var mismatch = false
        if cur < modelMaxLength, cur != totalLength {
            mask(&target, 0, target.count)
            mismatch = true
        }
        return LabeledTokens(inputIDs: input, labels: target, mismatch: mismatch)
    }

    /// `preprocess_mpt` (chatml).
    private func mpt(_ turns: [Turn], hasImage: Bool) -> LabeledTokens {
        let sep = "<|im_end|>"
        let answerSeparator = sep + "<|im_start|>assistant\n"
        let prompt = template.prompt(turns)
        let input = ids(prompt, hasImage: hasImage)
        var target = input
        let totalLength = input.reduce(0) { $0 + ($1 != padID ? 1 : 0) }
        let rounds = pythonSplit(prompt, sep)
        var reRounds = [rounds.prefix(3).joined(separator: sep)]
        var k = 3
        while k < rounds.count {
            reRounds.append(rounds[k..<min(k + 2, rounds.count)].joined(separator: sep))
            k += 2
        }
        var cur = 0
        for (i, round) in reRounds.enumerated() {
            if round.isEmpty { break }
            var parts = pythonSplit(round, answerSeparator)
            if parts.count != 2 { break }
            parts[0] += answerSeparator
            var roundLength = ids(round, hasImage: hasImage).count
            var instructionLength = ids(parts[0], hasImage: hasImage).count - 1
            if i != 0, legacy {
                roundLength += 1
                instructionLength += 1
            }
            mask(&target, cur, cur + instructionLength)
            cur += roundLength
        }
        mask(&target, cur, target.count)
        var mismatch = false
        if cur < modelMaxLength, cur != totalLength {
            mask(&target, 0, target.count)
            mismatch = true
        }
        return LabeledTokens(inputIDs: input, labels: target, mismatch: mismatch)
    }

    /// `preprocess_plain`: "<image>" + answer + "\n"; the tokens of "<image>" alone are masked.
    private func plain(_ turns: [Turn], record: String) throws -> LabeledTokens {
        guard turns.count == 2 else {
            throw VLMError.badInput(record: record, "the plain template needs exactly one human/gpt pair, found \(turns.count) turns")
        }
        guard turns[0].value.occurrences(of: Conversation.imagePlaceholder) > 0 else {
            throw VLMError.badInput(record: record, "the plain template needs <image> in the first turn")
        }
        let text = Conversation.imagePlaceholder + turns[1].value + "\n"
        let input = tokenizerImageToken(text)
        var target = input
        mask(&target, 0, tokenizerImageToken(Conversation.imagePlaceholder).count)
        return LabeledTokens(inputIDs: input, labels: target, mismatch: false)
    }

    /// Python slice assignment `target[start:end] = IGNORE_INDEX` (bounds clamped, empty when end <= start).
    private func mask(_ target: inout [Int32], _ start: Int, _ end: Int) {
        func bound(_ i: Int) -> Int { max(0, min(i < 0 ? i + target.count : i, target.count)) }
        let s = bound(start)
        let e = max(s, bound(end))
        for i in s..<e { target[i] = Self.ignoreIndex }
    }
}
