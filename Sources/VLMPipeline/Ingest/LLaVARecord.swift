import Foundation
import VLMCore
import VLMIO

/// One LLaVA record's conversation, apart from the stage so that it can be tested and fuzzed without a catalog
/// (Tests/fuzz/FuzzLLaVA.swift compiles this file into its target).
enum LLaVARecord {
    /// GPT-4 QA `type` values and the instruction kinds they become.
    static let qaKinds = ["conv": "conversation", "detail": "detail", "complex": "complex"]

    /// A record's turns: its `conversations`, or a GPT-4 QA record's `instruction` and `output`; and its kind.
    static func conversation(of value: JSONValue, id: String, image: String?, file: String, record: String) throws -> (Conversation, String) {
        let parsed: [Turn]
        var kind = "llava"
        if value["conversations"] == nil, value["instruction"] != nil || value["output"] != nil {
            let instruction = try value.string("instruction", file: file, record: record)
            let output = try value.string("output", file: file, record: record)
            if let type = try value.optionalString("type", file: file, record: record) {
                guard let mapped = qaKinds[type] else {
                    throw VLMError.badInput(file: file, record: record,
                        "field 'type' is '\(type)', expected one of \(qaKinds.keys.sorted().joined(separator: ", "))")
                }
                kind = mapped
            }
            let human = image == nil || instruction.contains("<image>") ? instruction : "<image>\n" + instruction
            parsed = [Turn(from: .human, value: human), Turn(from: .gpt, value: output)]
        } else {
            guard case .array(let turns)? = value["conversations"] else {
                throw VLMError.badInput(file: file, record: record, value["conversations"] == nil
                    ? "missing field 'conversations' (or 'instruction' and 'output')" : "field 'conversations' is not an array")
            }
            parsed = try turns.enumerated().map { t, turn -> Turn in
                let from = try turn.string("from", file: file, record: "\(record) turn \(t)")
                let text = try turn.string("value", file: file, record: "\(record) turn \(t)")
                guard let role = Turn.Role(rawValue: from) else {
                    throw VLMError.badInput(file: file, record: "\(record) turn \(t)", "'from' is '\(from)', expected 'human' or 'gpt'")
                }
                return Turn(from: role, value: text)
            }
        }
        let conversation = Conversation(id: id, image: image, conversations: parsed)
        do { try conversation.validate() } catch let error as VLMError {
            throw VLMError.badInput(file: file, record: record, error.message)
        }
        return (conversation, kind)
    }
}
