import Foundation
import VLMCore

/// A JSON value small enough to materialize (one COCO image, annotation or LLaVA record).
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int: "an integer"
        case .double: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A JSON object's members in file order. Records are small (a handful of members), so a linear scan beats
/// hashing every key into a dictionary.
public struct JSONObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    public var keys: [String] = []
    public var values: [JSONValue] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        for (key, value) in elements { self[key] = value }
    }

    public subscript(key: String) -> JSONValue? {
        get {
            // The last duplicate wins, as in Python's json.load.
            var i = keys.count - 1
            while i >= 0 {
                if keys[i] == key { return values[i] }
                i -= 1
            }
            return nil
        }
        set {
            if let i = keys.lastIndex(of: key) {
                if let newValue { values[i] = newValue } else { keys.remove(at: i); values.remove(at: i) }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }

    public var count: Int { keys.count }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.keys.count == b.keys.count else { return false }
        for key in a.keys where a[key] != b[key] { return false }
        return true
    }
}

/// A pull parser over a file, read in 1 MiB blocks: memory stays bounded by the largest single element
/// materialized, however large the file (a 450 MB COCO instances file parses in a few MB).
///
/// ```swift
/// let reader = try JSONStreamReader(path: "instances_train2017.json")
/// try reader.forEachTopLevelMember { key in
///     key == "images" ? .eachElement { element, index in print(index, element["id"] ?? .null) } : .skip
/// }
/// ```
public final class JSONStreamReader {
    public enum MemberAction {
        case skip
        /// Materialize the member's value whole.
        case value((JSONValue) throws -> Void)
        /// The member must be an array; materialize and pass each element with its index.
        case eachElement((JSONValue, Int) throws -> Void)
    }

    public let path: String
    private let fd: Int32
    private var buffer: [UInt8]
    private var position = 0
    private var limit = 0
    private var consumedBefore = 0
    private var eof = false
    /// Members of array elements (objects at the top of an element) to skip without materializing, e.g.
    /// COCO's "segmentation" polygons when only boxes are wanted.
    public var elementSkipKeys: Set<String> = []
    /// Where the parser is, for errors: e.g. "annotations[12]".
    public private(set) var context = ""

    public init(path: String, blockSize: Int = 1 << 20) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw VLMError(.notFound, file: path, "file does not exist")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw VLMError.badInput(file: path, "not a regular file")
        }
        fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        buffer = [UInt8](repeating: 0, count: blockSize)
    }

    deinit { close(fd) }

    /// Byte offset of the next unread byte.
    public var offset: Int { consumedBefore + position }

    private func fill() throws -> Bool {
        if eof { return false }
        consumedBefore += limit
        position = 0
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 { throw VLMError.io(file: path, "read failed: \(String(cString: strerror(errno)))") }
        limit = n
        if n == 0 { eof = true; return false }
        return true
    }

    private func error(_ message: String) -> VLMError {
        VLMError.badInput(file: path, record: context.isEmpty ? nil : context, "\(message) at byte \(offset)")
    }

    @inline(__always) private func peek() throws -> UInt8? {
        if position < limit { return buffer[position] }
        return try fill() ? buffer[position] : nil
    }

    @inline(__always) private func next() throws -> UInt8 {
        guard let b = try peek() else { throw error("unexpected end of file (truncated JSON?)") }
        position += 1
        return b
    }

    private func skipWhitespace() throws {
        while let b = try peek(), b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 { position += 1 }
    }

    private func expect(_ byte: UInt8) throws {
        try skipWhitespace()
        let b = try next()
        guard b == byte else {
            throw error("expected '\(Character(Unicode.Scalar(byte)))', found '\(Character(Unicode.Scalar(b)))'")
        }
    }

    /// Walks the top-level object, asking `action` what to do with each member.
    public func forEachTopLevelMember(_ action: (String) throws -> MemberAction) throws {
        try expect(UInt8(ascii: "{"))
        try skipWhitespace()
        if try peek() == UInt8(ascii: "}") { position += 1; return }
        while true {
            try skipWhitespace()
            guard try peek() == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let key = try readString()
            try expect(UInt8(ascii: ":"))
            switch try action(key) {
            case .skip:
                context = key
                try skipValue()
            case .value(let body):
                context = key
                try body(try readValue())
            case .eachElement(let body):
                try forEachElement(named: key, body)
            }
            context = ""
            try skipWhitespace()
            let b = try next()
            if b == UInt8(ascii: "}") { break }
            guard b == UInt8(ascii: ",") else { throw error("expected ',' or '}' after member '\(key)'") }
        }
        try skipWhitespace()
        if try peek() != nil { throw error("unexpected data after the top-level object") }
    }

    /// Reads a top-level array (a LLaVA file), materializing one element at a time.
    public func forEachTopLevelElement(_ body: (JSONValue, Int) throws -> Void) throws {
        try forEachElement(named: "", body)
        try skipWhitespace()
        if try peek() != nil { throw error("unexpected data after the top-level array") }
    }

    private func forEachElement(named name: String, _ body: (JSONValue, Int) throws -> Void) throws {
        context = name
        try skipWhitespace()
        guard try peek() == UInt8(ascii: "[") else {
            throw error(name.isEmpty ? "expected a JSON array" : "member '\(name)' is not an array")
        }
        position += 1
        try skipWhitespace()
        if try peek() == UInt8(ascii: "]") { position += 1; return }
        var index = 0
        while true {
            context = "\(name)[\(index)]"
            let value = try readValue()
            try body(value, index)
            index += 1
            try skipWhitespace()
            let b = try next()
            if b == UInt8(ascii: "]") { break }
            guard b == UInt8(ascii: ",") else { throw error("expected ',' or ']' in array") }
        }
    }

    /// Materializes the next value.
    public func readValue(depth: Int = 0) throws -> JSONValue {
        guard depth < 512 else { throw error("nesting deeper than 512 levels") }
        try skipWhitespace()
        guard let b = try peek() else { throw error("unexpected end of file (truncated JSON?)") }
        switch b {
        case UInt8(ascii: "{"):
            position += 1
            var object = JSONObject()
            try skipWhitespace()
            if try peek() == UInt8(ascii: "}") { position += 1; return .object(object) }
            while true {
                try skipWhitespace()
                guard try peek() == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let key = try readString()
                try expect(UInt8(ascii: ":"))
                if depth == 0, elementSkipKeys.contains(key) {
                    try skipValue()
                } else {
                    object.keys.append(key)
                    object.values.append(try readValue(depth: depth + 1))
                }
                try skipWhitespace()
                let c = try next()
                if c == UInt8(ascii: "}") { return .object(object) }
                guard c == UInt8(ascii: ",") else { throw error("expected ',' or '}' in object") }
            }
        case UInt8(ascii: "["):
            position += 1
            var items: [JSONValue] = []
            try skipWhitespace()
            if try peek() == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                items.append(try readValue(depth: depth + 1))
                try skipWhitespace()
                let c = try next()
                if c == UInt8(ascii: "]") { return .array(items) }
                guard c == UInt8(ascii: ",") else { throw error("expected ',' or ']' in array") }
            }
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"):
            try literal("true"); return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false"); return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null"); return .null
        default:
            return try readNumber()
        }
    }

    /// Skips the next value without materializing it.
    public func skipValue() throws {
        try skipWhitespace()
        guard let b = try peek() else { throw error("unexpected end of file (truncated JSON?)") }
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            // Scan the buffer directly: skipping is most of a pass over a COCO file.
            var depth = 0
            var inString = false
            var escaped = false
            while true {
                if position >= limit {
                    guard try fill() else { throw error("unexpected end of file (truncated JSON?)") }
                }
                var done = false
                let start = position, end = limit
                let stop: Int = buffer.withUnsafeBufferPointer { buf in
                    var i = start
                    while i < end {
                        let c = buf[i]
                        i += 1
                        if inString {
                            if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { inString = false }
                            continue
                        }
                        if c == 0x22 {
                            inString = true
                        } else if c == 0x7B || c == 0x5B {
                            depth += 1
                        } else if c == 0x7D || c == 0x5D {
                            depth -= 1
                            if depth == 0 { done = true; return i }
                        }
                    }
                    return i
                }
                position = stop
                if done { return }
            }
        case UInt8(ascii: "\""):
            try skipString()
        default:
            _ = try readValue()
        }
    }

    private func skipString() throws {
        _ = try next()  // opening quote
        while true {
            let c = try next()
            if c == UInt8(ascii: "\\") { _ = try next() } else if c == UInt8(ascii: "\"") { return }
        }
    }

    private func literal(_ word: String) throws {
        for expected in word.utf8 {
            guard try next() == expected else { throw error("invalid literal (expected \(word))") }
        }
    }

    private func readNumber() throws -> JSONValue {
        var text: [UInt8] = []
        var isInteger = true
        var value: Int64 = 0
        var negative = false
        var overflow = false
        while let c = try peek() {
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                if isInteger {
                    let (m, o1) = value.multipliedReportingOverflow(by: 10)
                    let (a, o2) = m.addingReportingOverflow(Int64(c - UInt8(ascii: "0")))
                    value = a
                    overflow = overflow || o1 || o2
                }
            } else if c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
                // A sign starts the number (minus only) or follows an exponent mark.
                let afterExponent = text.last == UInt8(ascii: "e") || text.last == UInt8(ascii: "E")
                guard afterExponent || (text.isEmpty && c == UInt8(ascii: "-")) else {
                    throw error("invalid number '\(String(decoding: text + [c], as: UTF8.self))'")
                }
                if text.isEmpty { negative = true } else { isInteger = false }
            } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
                isInteger = false
            } else {
                break
            }
            text.append(c)
            position += 1
        }
        guard !text.isEmpty else {
            let found = try peek().map { String(UnicodeScalar($0)) } ?? "end of file"
            throw error("unexpected '\(found)' where a value was expected")
        }
        let string = String(decoding: text, as: UTF8.self)
        let digits = negative ? text.count - 1 : text.count
        let leadingZero = digits > 1 && text[negative ? 1 : 0] == UInt8(ascii: "0") && (isInteger || text[negative ? 2 : 1] != UInt8(ascii: "."))
        guard digits > 0, !leadingZero, text.first != UInt8(ascii: "+") else { throw error("invalid number '\(string)'") }
        if isInteger && !overflow { return .int(negative ? -value : value) }
        guard let double = Double(string) else { throw error("invalid number '\(string)'") }
        return .double(double)
    }

    /// Reads a string, decoding escapes and rejecting invalid UTF-8 and raw control characters.
    public func readString() throws -> String {
        guard try next() == UInt8(ascii: "\"") else { throw error("expected a string") }
        // Fast path: the whole string, without escapes, is in the buffer.
        var end = position
        while end < limit {
            let c = buffer[end]
            if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 { break }
            end += 1
        }
        if end < limit, buffer[end] == UInt8(ascii: "\"") {
            let start = position
            let string = buffer.withUnsafeBufferPointer { String(validating: UnsafeBufferPointer(rebasing: $0[start..<end]), as: UTF8.self) }
            guard let string else { throw error("invalid UTF-8 in a string") }
            position = end + 1
            return string
        }
        var bytes: [UInt8] = []
        while true {
            // Fast path: copy a run of plain bytes from the buffer.
            if position < limit {
                var end = position
                while end < limit {
                    let c = buffer[end]
                    if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 { break }
                    end += 1
                }
                if end > position {
                    bytes.append(contentsOf: buffer[position..<end])
                    position = end
                }
            }
            let c = try next()
            if c == UInt8(ascii: "\"") { break }
            if c < 0x20 { throw error("raw control character 0x\(String(c, radix: 16)) in a string") }
            if c == UInt8(ascii: "\\") {
                let e = try next()
                switch e {
                case UInt8(ascii: "\""): bytes.append(0x22)
                case UInt8(ascii: "\\"): bytes.append(0x5C)
                case UInt8(ascii: "/"): bytes.append(0x2F)
                case UInt8(ascii: "b"): bytes.append(0x08)
                case UInt8(ascii: "f"): bytes.append(0x0C)
                case UInt8(ascii: "n"): bytes.append(0x0A)
                case UInt8(ascii: "r"): bytes.append(0x0D)
                case UInt8(ascii: "t"): bytes.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard try next() == UInt8(ascii: "\\"), try next() == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                        }
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid surrogate pair") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error("unpaired surrogate \\u\(String(scalar, radix: 16))")
                    }
                    bytes.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default:
                    throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'")
                }
            } else {
                bytes.append(c)
            }
        }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw error("invalid UTF-8 in a string")
        }
        return string
    }

    private func hex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            let c = try next()
            let digit: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | digit
        }
        return value
    }
}

/// Typed field access with errors that name the record and field.
extension JSONValue {
    public func int(_ key: String, file: String, record: String) throws -> Int64 {
        switch self[key] {
        case .int(let v)?: return v
        case .double(let v)? where v == v.rounded() && abs(v) < 9e15: return Int64(v)
        case nil: throw VLMError.badInput(file: file, record: record, "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record, "field '\(key)' is \(other.typeName), expected an integer")
        }
    }

    public func double(_ key: String, file: String, record: String) throws -> Double {
        switch self[key] {
        case .int(let v)?: return Double(v)
        case .double(let v)?: return v
        case nil: throw VLMError.badInput(file: file, record: record, "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record, "field '\(key)' is \(other.typeName), expected a number")
        }
    }

    public func string(_ key: String, file: String, record: String) throws -> String {
        switch self[key] {
        case .string(let v)?: return v
        case nil: throw VLMError.badInput(file: file, record: record, "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record, "field '\(key)' is \(other.typeName), expected a string")
        }
    }

    public func optionalString(_ key: String, file: String, record: String) throws -> String? {
        switch self[key] {
        case .string(let v)?: return v
        case nil, .null?: return nil
        case let other?: throw VLMError.badInput(file: file, record: record, "field '\(key)' is \(other.typeName), expected a string")
        }
    }
}
