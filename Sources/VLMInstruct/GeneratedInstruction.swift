import Foundation
import VLMCore

/// A JSON value for instruction metadata: the answer facts a check needs (box, count, letter, ...).
public enum MetaValue: Encodable, Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case array([MetaValue])
    case object([String: MetaValue])

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let v): try container.encode(v)
        case .int(let v): try container.encode(v)
        case .double(let v): try container.encode(v)
        case .bool(let v): try container.encode(v)
        case .array(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        }
    }

    static func box(_ values: [Double]) -> MetaValue { .array(values.map { .double($0) }) }
}

/// One instruction ready for the catalog's `instructions` table.
public struct GeneratedInstruction: Sendable, Equatable {
    public var key: String
    public var imageID: Int64?
    public var sourceID: Int64?
    public var generator: String
    public var kind: String
    public var groupID: String?
    public var turns: [Turn]
    public var meta: [String: MetaValue]

    public init(key: String, imageID: Int64?, sourceID: Int64?, generator: String, kind: String, groupID: String?,
                turns: [Turn], meta: [String: MetaValue]) {
        self.key = key
        self.imageID = imageID
        self.sourceID = sourceID
        self.generator = generator
        self.kind = kind
        self.groupID = groupID
        self.turns = turns
        self.meta = meta
    }

    /// The conversations column: a JSON array of `{"from", "value"}` with sorted keys.
    public var conversationsJSON: String { InstructJSON.encode(turns) }
    public var metaJSON: String { InstructJSON.encode(meta) }
}

enum InstructJSON {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }
}
