/// One turn of a LLaVA conversation: `{"from": "human"|"gpt", "value": "..."}`.
public struct Turn: Codable, Hashable, Sendable {
    public enum Role: String, Codable, Hashable, Sendable {
        case human
        case gpt
    }

    public var from: Role
    public var value: String

    public init(from: Role, value: String) {
        self.from = from
        self.value = value
    }
}

/// LLaVA's instruction record: `{"id", "image"?, "conversations": [...]}`.
public struct Conversation: Codable, Hashable, Sendable {
    public static let imagePlaceholder = "<image>"

    public var id: String
    public var image: String?
    public var conversations: [Turn]

    public init(id: String, image: String? = nil, conversations: [Turn]) {
        self.id = id
        self.image = image
        self.conversations = conversations
    }

    /// Checks LLaVA's structure: turns alternate human/gpt starting with human, non-empty, and `<image>` appears
    /// exactly once, in the first human turn, when there is an image (never when there is none).
    public func validate() throws {
        guard !conversations.isEmpty else {
            throw VLMError.badInput(record: id, "conversation has no turns")
        }
        guard conversations.count % 2 == 0 else {
            throw VLMError.badInput(record: id, "conversation has \(conversations.count) turns; expected human/gpt pairs")
        }
        for (index, turn) in conversations.enumerated() {
            let expected: Turn.Role = index % 2 == 0 ? .human : .gpt
            guard turn.from == expected else {
                throw VLMError.badInput(record: id, "turn \(index) is from '\(turn.from.rawValue)', expected '\(expected.rawValue)'")
            }
        }
        let placeholders = conversations.map { $0.value.occurrences(of: Conversation.imagePlaceholder) }
        let total = placeholders.reduce(0, +)
        if image != nil {
            guard total == 1, placeholders[0] == 1 else {
                throw VLMError.badInput(record: id, "expected exactly one <image> in the first human turn, found \(total) in all (\(placeholders[0]) in the first)")
            }
        } else if total != 0 {
            throw VLMError.badInput(record: id, "text-only record contains <image> \(total) time(s)")
        }
    }
}

extension String {
    /// The number of non-overlapping occurrences of `needle`.
    package func occurrences(of needle: String) -> Int {
        let hay = Array(utf8), pat = Array(needle.utf8)
        guard !pat.isEmpty, hay.count >= pat.count else { return 0 }
        var count = 0
        var i = 0
        while i <= hay.count - pat.count {
            if hay[i] == pat[0], Array(hay[i..<(i + pat.count)]) == pat {
                count += 1
                i += pat.count
            } else {
                i += 1
            }
        }
        return count
    }
}
