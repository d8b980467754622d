/// An error a user can act on: what was being done, where (file, member, record), and what is wrong.
///
/// ```swift
/// throw VLMError.badInput(file: "captions.json", record: "annotations[12]", "field 'image_id' is a string, expected an integer")
/// ```
public struct VLMError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case badInput = "bad input"
        case notFound = "not found"
        case io = "I/O error"
        case unsupported = "unsupported"
        case conflict = "conflict"
        case invalidArgument = "invalid argument"
        case network = "network error"
        case corrupt = "corrupt"
        case gateFailed = "gate failed"
    }

    public var kind: Kind
    /// The file, URL or database the error is about.
    public var file: String?
    /// The member, record, key or line inside `file`.
    public var record: String?
    public var message: String

    public init(_ kind: Kind, file: String? = nil, record: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.record = record
        self.message = message
    }

    public static func badInput(file: String? = nil, record: String? = nil, _ message: String) -> VLMError {
        VLMError(.badInput, file: file, record: record, message)
    }

    public static func io(file: String? = nil, _ message: String) -> VLMError {
        VLMError(.io, file: file, message)
    }

    public var description: String {
        var location = ""
        if let file { location += file }
        if let record { location += location.isEmpty ? record : ": \(record)" }
        return location.isEmpty ? "\(kind.rawValue): \(message)" : "\(location): \(message)"
    }
}
