import Foundation
import VLMCore

/// A tokenizer.json object as parsed by `JSONSerialization`, with typed accessors that throw `VLMError`s naming
/// the component and field.
package struct JSONObject {
    package let dict: [String: Any]
    /// Where this object sits in the file, e.g. `pre_tokenizer.pretokenizers[1]`.
    package let path: String
    package let file: String

    package init(_ dict: [String: Any], path: String, file: String) {
        self.dict = dict
        self.path = path
        self.file = file
    }

    package func isNull(_ key: String) -> Bool {
        dict[key] == nil || dict[key] is NSNull
    }

    package func error(_ message: String) -> VLMError {
        VLMError(.badInput, file: file, record: path, message)
    }

    package var type: String? { dict["type"] as? String }

    package func string(_ key: String) throws -> String {
        guard let v = dict[key] as? String else { throw error("field '\(key)' is missing or not a string") }
        return v
    }

    package func string(_ key: String, default value: String?) -> String? {
        isNull(key) ? value : dict[key] as? String
    }

    package func bool(_ key: String, default value: Bool) -> Bool {
        if isNull(key) { return value }
        if let b = dict[key] as? Bool { return b }
        if let n = dict[key] as? NSNumber { return n.boolValue }
        return value
    }

    package func int(_ key: String) -> Int? {
        if isNull(key) { return nil }
        if let n = dict[key] as? Int { return n }
        if let n = dict[key] as? NSNumber { return n.intValue }
        if let d = dict[key] as? Double { return Int(d) }
        return nil
    }

    package func double(_ key: String) -> Double? {
        if isNull(key) { return nil }
        if let d = dict[key] as? Double { return d }
        if let n = dict[key] as? NSNumber { return n.doubleValue }
        return nil
    }

    package func object(_ key: String) throws -> JSONObject {
        guard let v = dict[key] as? [String: Any] else { throw error("field '\(key)' is missing or not an object") }
        return JSONObject(v, path: "\(path).\(key)", file: file)
    }

    package func optionalObject(_ key: String) -> JSONObject? {
        (dict[key] as? [String: Any]).map { JSONObject($0, path: "\(path).\(key)", file: file) }
    }

    package func objects(_ key: String) throws -> [JSONObject] {
        guard let v = dict[key] as? [Any] else { throw error("field '\(key)' is missing or not an array") }
        return try v.enumerated().map { index, item in
            guard let d = item as? [String: Any] else { throw error("\(key)[\(index)] is not an object") }
            return JSONObject(d, path: "\(path).\(key)[\(index)]", file: file)
        }
    }

    /// The `{"String": "..."}` / `{"Regex": "..."}` pattern of Split, Replace.
    package func pattern(_ key: String) throws -> TextPattern {
        let p = try object(key)
        if let s = p.dict["String"] as? String { return .literal(s) }
        if let r = p.dict["Regex"] as? String { return .regex(r) }
        throw p.error("pattern must be {\"String\": ...} or {\"Regex\": ...}")
    }
}

/// A Split / Replace pattern.
package enum TextPattern: Sendable, Equatable {
    case literal(String)
    case regex(String)
}
