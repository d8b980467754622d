import Foundation
import VLMCore

/// A tokenizer.json post-processor (only what changes ids matters here: offsets are not produced).
package protocol PostProcessor: Sendable {
    /// Adds the special tokens around a single sequence.
    func process(_ ids: [Int32]) -> [Int32]
    /// How many ids `process` adds to a single sequence.
    var addedCount: Int { get }
}

package func makePostProcessor(_ json: JSONObject, tokenID: (String) -> UInt32?) throws -> (any PostProcessor)? {
    switch json.type {
    case "ByteLevel":
        return nil // offsets only
    case "TemplateProcessing":
        var prefix: [Int32] = []
        var suffix: [Int32] = []
        var sawSequence = false
        let specials = json.optionalObject("special_tokens")
        for item in try json.objects("single") {
            if let special = item.optionalObject("SpecialToken") {
                let name = try special.string("id")
                guard let entry = specials?.optionalObject(name) else {
                    throw json.error("template special token '\(name)' is not in special_tokens")
                }
                let ids = (entry.dict["ids"] as? [Any] ?? []).compactMap { ($0 as? Int) ?? ($0 as? NSNumber)?.intValue }.map(Int32.init)
                if sawSequence { suffix += ids } else { prefix += ids }
            } else if let sequence = item.optionalObject("Sequence") {
                guard try sequence.string("id") == "A" else { throw json.error("single template must use sequence A") }
                guard !sawSequence else { throw json.error("single template names sequence A twice") }
                sawSequence = true
            } else {
                throw item.error("template item is neither SpecialToken nor Sequence")
            }
        }
        return WrapProcessor(prefix: prefix, suffix: suffix)
    case "BertProcessing", "RobertaProcessing":
        func pair(_ key: String) throws -> Int32 {
            guard let arr = json.dict[key] as? [Any], arr.count == 2,
                  let id = (arr[1] as? Int) ?? (arr[1] as? NSNumber)?.intValue else {
                throw json.error("'\(key)' must be [token, id]")
            }
            return Int32(id)
        }
        return WrapProcessor(prefix: [try pair("cls")], suffix: [try pair("sep")])
    case "Sequence":
        let steps = try json.objects("processors").compactMap { try makePostProcessor($0, tokenID: tokenID) }
        return steps.isEmpty ? nil : SequenceProcessor(steps: steps)
    case let other:
        throw json.error("unsupported post_processor type '\(other ?? "(none)")' (supported: TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence)")
    }
}

struct WrapProcessor: PostProcessor {
    let prefix: [Int32]
    let suffix: [Int32]
    var addedCount: Int { prefix.count + suffix.count }
    func process(_ ids: [Int32]) -> [Int32] {
        if prefix.isEmpty && suffix.isEmpty { return ids }
        return prefix + ids + suffix
    }
}

struct SequenceProcessor: PostProcessor {
    let steps: [any PostProcessor]
    var addedCount: Int { steps.reduce(0) { $0 + $1.addedCount } }
    func process(_ ids: [Int32]) -> [Int32] {
        steps.reduce(ids) { $1.process($0) }
    }
}
