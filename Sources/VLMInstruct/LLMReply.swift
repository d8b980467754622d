import Foundation
import VLMCore

/// Turns a model's reply into question/answer pairs, or says why it cannot be used. A reply is used whole or not
/// at all: one bad block rejects the reply. The reply must have the shape of its kind, as LLaVA-Instruct's
/// generator reads them: `detail` is one paragraph, `complex` one `Question:`/`Answer:` pair, `conversation` one or
/// more pairs; anything else (blocks where a paragraph was asked for, a paragraph where blocks were) is rejected.
///
/// ```swift
/// let pairs = try LLMReply.parse("Question:\nWhat is it?\n===\nAnswer:\nA dog.", kind: .conversation, json: false)
/// ```
public enum LLMReply {
    /// Why a reply cannot be used: a stable `code` (counted per run, `rejected_<code>`) and a sentence.
    public struct Rejection: Error, Equatable, CustomStringConvertible {
        public enum Code: String, Sendable, Codable, CaseIterable {
            /// Nothing but whitespace.
            case empty
            /// The shape of another kind: blocks for a paragraph, a paragraph for blocks, several pairs for one.
            case wrongKind = "wrong_kind"
            /// Blocks out of order, a label inside an answer, JSON without the asked-for keys.
            case format
            case tooShort = "too_short"
            /// A refusal, or the model talking about its text input instead of the image.
            case refusal
            case coordinates
            case placeholder
            /// finish_reason "length".
            case truncated
            /// The reply quotes the API key.
            case secret
            /// The conversation it makes breaks the LLaVA rules (`Conversation.validate`).
            case invalid
        }

        public var code: Code
        public var reason: String
        public var description: String { "\(code.rawValue): \(reason)" }

        public init(_ code: Code, _ reason: String) {
            self.code = code
            self.reason = reason
        }
    }

    /// Phrases that mark a refusal or a model talking about its input instead of the image.
    static let forbidden = ["i'm sorry", "i am sorry", "i cannot", "i can't", "as an ai", "language model",
                            "bounding box", "the descriptions", "the captions"]
    /// The phrases of `forbidden` that mark a refusal.
    static let refusals = Array(forbidden.prefix(6))

    /// A line that is a block label (`Question:`, `Answer:`, with or without text after it) or a block separator.
    static func isLabelLine(_ line: Substring) -> Bool {
        let trimmed = line.trimmingCharacters(in: .whitespaces).lowercased()
        return trimmed == "===" || trimmed.hasPrefix("question:") || trimmed.hasPrefix("answer:")
    }

    static func hasLabelLine(_ text: String) -> Bool {
        text.split(separator: "\n", omittingEmptySubsequences: true).contains(where: isLabelLine)
    }

    /// A quoted coordinate pair such as `[0.12, 0.4`, compiled once.
    nonisolated(unsafe) static let boxPattern = try! NSRegularExpression(pattern: #"\[\s*[01]?\.\d+\s*,\s*[01]?\.\d+"#)

    /// For `.detail` the single pair's question is empty (the caller supplies a detail prompt).
    public static func parse(_ content: String, kind: LLMKind, json: Bool) throws -> [(question: String, answer: String)] {
        let text = content.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw Rejection(.empty, "empty reply") }
        // A refusal is named as one, whatever its shape.
        let lowerText = text.lowercased()
        if let phrase = refusals.first(where: { lowerText.contains($0) }) {
            throw Rejection(.refusal, "the reply contains \"\(phrase)\"")
        }
        var pairs: [(question: String, answer: String)]
        if json {
            pairs = try parseJSON(text, kind: kind)
        } else if kind == .detail {
            pairs = [("", text)]
        } else {
            pairs = try parseBlocks(text)
        }
        if kind == .detail && hasLabelLine(pairs[0].answer) {
            throw Rejection(.wrongKind, "a detail reply must be one paragraph, but it has Question:/Answer: blocks")
        }
        if kind == .complex && pairs.count != 1 {
            throw Rejection(.wrongKind, "expected one question and answer for complex reasoning, found \(pairs.count)")
        }
        if kind == .conversation && pairs.count < 1 {
            throw Rejection(.format, "no question and answer pairs")
        }
        for (index, pair) in pairs.enumerated() {
            if kind != .detail && pair.question.isEmpty { throw Rejection(.format, "question \(index + 1) is empty") }
            if pair.answer.isEmpty { throw Rejection(.format, "answer \(index + 1) is empty") }
            if kind != .detail && (hasLabelLine(pair.question) || hasLabelLine(pair.answer)) {
                throw Rejection(.format, "pair \(index + 1) has a Question:/Answer: line inside its text")
            }
            if kind == .detail && pair.answer.count < 20 {
                throw Rejection(.tooShort, "description is too short (\(pair.answer.count) characters)")
            }
            let lower = (pair.question + " " + pair.answer).lowercased()
            if let phrase = forbidden.first(where: { lower.contains($0) }) {
                throw Rejection(.refusal, "pair \(index + 1) contains \"\(phrase)\"")
            }
            if boxPattern.firstMatch(in: lower, range: NSRange(lower.startIndex..., in: lower)) != nil {
                throw Rejection(.coordinates, "pair \(index + 1) quotes box coordinates")
            }
            if pair.question.contains(Conversation.imagePlaceholder) || pair.answer.contains(Conversation.imagePlaceholder) {
                throw Rejection(.placeholder, "pair \(index + 1) contains the <image> placeholder")
            }
        }
        return pairs
    }

    /// `Question:` / `===` / `Answer:` blocks, alternating, starting with a question.
    static func parseBlocks(_ text: String) throws -> [(question: String, answer: String)] {
        let normalized = text.replacingOccurrences(of: "\r\n", with: "\n")
        var blocks: [String] = []
        var current: [Substring] = []
        for line in normalized.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces) == "===" {
                blocks.append(current.joined(separator: "\n"))
                current = []
            } else {
                current.append(line)
            }
        }
        blocks.append(current.joined(separator: "\n"))
        blocks = blocks.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        guard !blocks.isEmpty else { throw Rejection(.format, "no Question:/Answer: blocks") }
        if !blocks.contains(where: { strip(label: "Question:", from: $0) != nil || strip(label: "Answer:", from: $0) != nil }) {
            throw Rejection(.wrongKind, "expected Question:/Answer: blocks, got a paragraph")
        }
        var pairs: [(question: String, answer: String)] = []
        var pendingQuestion: String?
        for (index, block) in blocks.enumerated() {
            if let body = strip(label: "Question:", from: block) {
                guard pendingQuestion == nil else { throw Rejection(.format, "block \(index + 1): two questions in a row") }
                pendingQuestion = body
            } else if let body = strip(label: "Answer:", from: block) {
                guard let question = pendingQuestion else { throw Rejection(.format, "block \(index + 1): an answer without a question") }
                pairs.append((question, body))
                pendingQuestion = nil
            } else {
                throw Rejection(.format, "block \(index + 1) starts with neither \"Question:\" nor \"Answer:\"")
            }
        }
        if pendingQuestion != nil { throw Rejection(.format, "the last question has no answer") }
        return pairs
    }

    private static func strip(label: String, from block: String) -> String? {
        guard block.lowercased().hasPrefix(label.lowercased()) else { return nil }
        return String(block.dropFirst(label.count)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func parseJSON(_ text: String, kind: LLMKind) throws -> [(question: String, answer: String)] {
        var body = text
        // Some endpoints wrap JSON in a Markdown fence even in JSON mode.
        if body.hasPrefix("```") {
            body = body.split(separator: "\n", omittingEmptySubsequences: false).dropFirst()
                .filter { !$0.hasPrefix("```") }.joined(separator: "\n")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
            throw Rejection(.format, "reply is not a JSON object")
        }
        if kind == .detail {
            guard let description = object["description"] as? String else {
                throw Rejection(object["qa"] != nil ? .wrongKind : .format, "JSON reply has no string \"description\"")
            }
            return [("", description.trimmingCharacters(in: .whitespacesAndNewlines))]
        }
        guard let items = object["qa"] as? [Any] else {
            throw Rejection(object["description"] != nil ? .wrongKind : .format, "JSON reply has no array \"qa\"")
        }
        return try items.enumerated().map { index, item in
            guard let pair = item as? [String: Any], let q = pair["question"] as? String, let a = pair["answer"] as? String else {
                throw Rejection(.format, "qa[\(index)] is not {\"question\": string, \"answer\": string}")
            }
            return (q.trimmingCharacters(in: .whitespacesAndNewlines), a.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}
