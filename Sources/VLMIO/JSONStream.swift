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

/// The members of one record that a reader keeps (`JSONStreamReader.MemberAction.eachFields`): the values of
/// the named members, looked up by their index in `names`, with the typed accessors of `JSONValue`.
///
/// ```swift
/// let fields = JSONFields(["id", "caption"])
/// try reader.forEachTopLevelMember { key in
///     key == "annotations" ? .eachFields(fields, { f, i in print(try f.int(0, file: path, record: "annotations[\(i)]")) },
///                                        rejected: { error, _ in print(error) }) : .skip
/// }
/// ```
public final class JSONFields {
    public let names: [String]
    let utf8Names: [[UInt8]]
    /// Whether each name is one of the reader's `elementSkipKeys` (set when a walk starts).
    var skipped: [Bool]
    /// The value of each named member in the current record; nil when the record lacks it.
    public internal(set) var values: [JSONValue?]
    /// The record's type name ("an array", ...) when it is not an object; nil for an object.
    public internal(set) var notAnObject: String?

    public init(_ names: [String]) {
        self.names = names
        utf8Names = names.map { Array($0.utf8) }
        skipped = Array(repeating: false, count: names.count)
        values = Array(repeating: nil, count: names.count)
    }

    func clear() {
        for i in values.indices { values[i] = nil }
        notAnObject = nil
    }

    public subscript(field: Int) -> JSONValue? { values[field] }

    public func int(_ field: Int, file: String, record: @autoclosure () -> String) throws -> Int64 {
        try JSONValue.int(values[field], key: names[field], file: file, record: record())
    }

    public func double(_ field: Int, file: String, record: @autoclosure () -> String) throws -> Double {
        try JSONValue.double(values[field], key: names[field], file: file, record: record())
    }

    public func string(_ field: Int, file: String, record: @autoclosure () -> String) throws -> String {
        try JSONValue.string(values[field], key: names[field], file: file, record: record())
    }

    public func optionalString(_ field: Int, file: String, record: @autoclosure () -> String) throws -> String? {
        try JSONValue.optionalString(values[field], key: names[field], file: file, record: record())
    }
}

/// A pull parser over a file, read in 1 MiB blocks: memory stays bounded by the largest single element
/// materialized, however large the file (a 450 MB COCO instances file parses in a few MB).
///
/// Inside an array element (a record), problems that leave the JSON structure intact — invalid UTF-8, a string
/// over `maxStringBytes`, nesting deeper than `maxDepth`, a record over `maxElementBytes` — reject that record
/// only: the parser skips the rest of it without materializing it and goes on with the next one. Errors that
/// break the structure (truncation, a missing comma) stop the file, except in JSONL (`forEachLine`), where
/// each line stands alone and the parser resynchronizes at the next newline.
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
        /// As `eachElement`, but a rejected element (see the type's summary) goes to `rejected` with its index
        /// and the walk goes on.
        case eachRecord((JSONValue, Int) throws -> Void, rejected: (VLMError, Int) throws -> Void)
        /// As `eachRecord`, without building the element as a `JSONValue`: an object element's members named in
        /// `fields` are kept there (the last of a repeated name wins), the others are read with the same checks
        /// and limits and dropped. `body` gets the same `fields` each time, refilled per element.
        case eachFields(JSONFields, (JSONFields, Int) throws -> Void, rejected: (VLMError, Int) throws -> Void)
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
    /// Where the parser is, for errors: e.g. "annotations[12]" (built only when asked for: once per record it
    /// was a string allocation per record).
    public var context: String { contextIndex.map { "\(contextName)[\($0)]" } ?? contextName }
    private var contextName = ""
    private var contextIndex: Int?
    /// Digits of the number being read, reused from number to number.
    private var numberText: [UInt8] = []
    /// Strings longer than this (in UTF-8 bytes) reject their record; they are scanned, never stored.
    public var maxStringBytes = Int.max
    /// Containers nested deeper than this inside a record reject it.
    public var maxDepth = 512
    /// A record whose materialized strings and values pass this many bytes is rejected.
    public var maxElementBytes = Int.max
    /// A JSONL line longer than this is rejected without being held in memory.
    public var maxLineBytes = 16 << 20
    /// The first problem in the record being read, if it has one.
    private var rejection: VLMError?
    private var inRecord = false
    private var materialized = 0
    private var lastKey = ""

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

    /// Parses bytes already in memory (one JSONL line); `path` and `context` name them in errors.
    public init(bytes: [UInt8], path: String, context: String = "") {
        self.path = path
        self.contextName = context
        fd = -1
        buffer = bytes
        limit = bytes.count
        eof = true
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Byte offset of the next unread byte.
    public var offset: Int { consumedBefore + position }

    private func fill() throws -> Bool {
        if eof || fd < 0 { return false }
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

    /// A problem that leaves the structure intact: inside a record it rejects the record (the first one is
    /// kept) and parsing goes on; elsewhere it is thrown.
    private func reject(_ message: String) throws {
        let problem = VLMError.badInput(file: path, record: context.isEmpty ? nil : context, "\(message) at byte \(offset)\(inRecord ? ": record rejected" : "")")
        guard inRecord else { throw problem }
        if rejection == nil { rejection = problem }
    }

    private func count(_ bytes: Int) throws {
        materialized += bytes
        if materialized > maxElementBytes, rejection == nil {
            try reject("record is larger than \(maxElementBytes) bytes in memory")
        }
    }

    /// Reads one record: the value, or the first problem that rejected it.
    private func readRecord() throws -> Result<JSONValue, VLMError> {
        inRecord = true
        rejection = nil
        materialized = 0
        lastKey = ""
        defer { inRecord = false; rejection = nil }
        let value = try readValue()
        if let rejection { return .failure(rejection) }
        return .success(value)
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
                (contextName, contextIndex) = (key, nil)
                try skipValue()
            case .value(let body):
                (contextName, contextIndex) = (key, nil)
                try body(try readValue())
            case .eachElement(let body):
                try forEachElement(named: key, body, rejected: nil)
            case .eachRecord(let body, let rejected):
                try forEachElement(named: key, body, rejected: rejected)
            case .eachFields(let fields, let body, let rejected):
                fields.skipped = fields.names.map { elementSkipKeys.contains($0) }
                try forEachArrayElement(named: key) { index in
                    if let problem = try readFieldsRecord(fields) {
                        try rejected(problem, index)
                    } else {
                        try body(fields, index)
                    }
                }
            }
            (contextName, contextIndex) = ("", nil)
            try skipWhitespace()
            let b = try next()
            if b == UInt8(ascii: "}") { break }
            guard b == UInt8(ascii: ",") else { throw error("expected ',' or '}' after member '\(key)'") }
        }
        try skipWhitespace()
        if try peek() != nil { throw error("unexpected data after the top-level object") }
    }

    /// Reads a top-level array (a LLaVA file), materializing one element at a time. With `rejected`, a rejected
    /// element goes there and the walk goes on; without, it is thrown.
    public func forEachTopLevelElement(_ body: (JSONValue, Int) throws -> Void,
                                       rejected: ((VLMError, Int) throws -> Void)? = nil) throws {
        try forEachElement(named: "", body, rejected: rejected)
        try skipWhitespace()
        if try peek() != nil { throw error("unexpected data after the top-level array") }
    }

    /// The first byte that is not whitespace, without consuming it: `[` for a JSON array, `{` for JSONL.
    public func firstSignificantByte() throws -> UInt8? {
        try skipWhitespace()
        return try peek()
    }

    /// Reads JSON Lines: one value per line, blank lines skipped. `body` gets each value with its 1-based line
    /// number; a line that does not parse, or is rejected, goes to `rejected` with its line number, and
    /// reading resumes at the next line.
    public func forEachLine(_ body: (JSONValue, Int) throws -> Void, rejected: (VLMError, Int) throws -> Void) throws {
        var line: [UInt8] = []
        var lineNumber = 1
        var tooLong = false
        func finishLine() throws {
            defer { line.removeAll(keepingCapacity: line.capacity <= 1 << 20); tooLong = false; lineNumber += 1 }
            let where_ = "line \(lineNumber)"
            if tooLong {
                try rejected(VLMError.badInput(file: path, record: where_, "line is longer than \(maxLineBytes) bytes: record rejected"), lineNumber)
                return
            }
            guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
            let parser = JSONStreamReader(bytes: line, path: path, context: where_)
            parser.maxStringBytes = maxStringBytes
            parser.maxDepth = maxDepth
            parser.maxElementBytes = maxElementBytes
            let result: Result<JSONValue, VLMError>
            do {
                result = try parser.readRecord()
                try parser.skipWhitespace()
                if try parser.peek() != nil { throw parser.error("unexpected data after the value") }
            } catch let error as VLMError {
                try rejected(error, lineNumber)
                return
            }
            switch result {
            case .success(let value): try body(value, lineNumber)
            case .failure(let error): try rejected(error, lineNumber)
            }
        }
        while true {
            if position >= limit {
                guard try fill() else { break }
            }
            let start = position, end = limit
            let newline = buffer.withUnsafeBufferPointer { buf -> Int? in
                var i = start
                while i < end { if buf[i] == 0x0A { return i }; i += 1 }
                return nil
            }
            let stop = newline ?? end
            if !tooLong {
                if line.count + (stop - start) > maxLineBytes {
                    tooLong = true
                    line.removeAll()
                } else {
                    line.append(contentsOf: buffer[start..<stop])
                }
            }
            position = stop
            if newline != nil {
                position += 1
                try finishLine()
            }
        }
        if !line.isEmpty || tooLong { try finishLine() }
    }

    private func forEachElement(named name: String, _ body: (JSONValue, Int) throws -> Void,
                                rejected: ((VLMError, Int) throws -> Void)?) throws {
        try forEachArrayElement(named: name) { index in
            switch try readRecord() {
            case .success(let value): try body(value, index)
            case .failure(let problem):
                guard let rejected else { throw problem }
                try rejected(problem, index)
            }
        }
    }

    /// Walks the array that is the value of member `name` (or the top-level array): `element` reads each
    /// element, with the context set to `name[index]`.
    private func forEachArrayElement(named name: String, _ element: (Int) throws -> Void) throws {
        (contextName, contextIndex) = (name, nil)
        try skipWhitespace()
        guard try peek() == UInt8(ascii: "[") else {
            throw error(name.isEmpty ? "expected a JSON array" : "member '\(name)' is not an array")
        }
        position += 1
        try skipWhitespace()
        if try peek() == UInt8(ascii: "]") { position += 1; return }
        var index = 0
        while true {
            contextIndex = index
            try element(index)
            index += 1
            try skipWhitespace()
            let b = try next()
            if b == UInt8(ascii: "]") { break }
            guard b == UInt8(ascii: ",") else { throw error("expected ',' or ']' in array") }
        }
    }

    /// Reads one record into `fields` (see `MemberAction.eachFields`); returns the problem that rejected it, if
    /// one did. Exactly the checks, limits and messages of `readRecord`, whose object branch this mirrors.
    private func readFieldsRecord(_ fields: JSONFields) throws -> VLMError? {
        inRecord = true
        rejection = nil
        materialized = 0
        lastKey = ""
        defer { inRecord = false; rejection = nil }
        fields.clear()
        try skipWhitespace()
        guard maxDepth > 0, try peek() == UInt8(ascii: "{") else {
            // Not an object (or no depth allowed): materialized as before, for its type name.
            let value = try readValue()
            if rejection == nil { fields.notAnObject = value.typeName }
            return rejection
        }
        try count(16)
        position += 1
        try skipWhitespace()
        if try peek() == UInt8(ascii: "}") { position += 1; return rejection }
        while true {
            try skipWhitespace()
            guard try peek() == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let field = try readMemberName(fields)
            try expect(UInt8(ascii: ":"))
            if field >= 0 ? fields.skipped[field] : elementSkipKeys.contains(lastKey) {
                try skipValue()
            } else {
                let value = try readValue(depth: 1)
                if rejection == nil, field >= 0 { fields.values[field] = value }
            }
            try skipWhitespace()
            let c = try next()
            if c == UInt8(ascii: "}") { return rejection }
            guard c == UInt8(ascii: ",") else { throw error("expected ',' or '}' in object") }
        }
    }

    /// Reads a member name (the parser at its opening quote), sets `lastKey`, and returns the index of that
    /// name in `fields`, or -1. A plain name in the buffer is compared byte for byte, without a String.
    private func readMemberName(_ fields: JSONFields) throws -> Int {
        let start = position + 1
        var end = start
        while end < limit {
            let c = buffer[end]
            if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 { break }
            end += 1
        }
        if end < limit, buffer[end] == UInt8(ascii: "\""), end - start <= maxStringBytes {
            let length = end - start
            let match = buffer.withUnsafeBufferPointer { buf -> Int in
                for (i, name) in fields.utf8Names.enumerated() where name.count == length {
                    if name.withUnsafeBufferPointer({ memcmp($0.baseAddress!, buf.baseAddress! + start, length) == 0 }) { return i }
                }
                return -1
            }
            if match >= 0 {
                position = end + 1
                try count(length)
                lastKey = fields.names[match]
                return match
            }
        }
        let key = try readString()
        lastKey = key
        return fields.names.firstIndex(of: key) ?? -1
    }

    /// Materializes the next value.
    public func readValue(depth: Int = 0) throws -> JSONValue {
        if rejection != nil {
            // The record is already rejected: skip the rest of it, materializing nothing.
            try skipValue()
            return .null
        }
        guard depth < maxDepth else {
            try reject("nesting deeper than \(maxDepth) levels")
            try skipValue()
            return .null
        }
        try count(16)
        try skipWhitespace()
        guard let b = try peek() else { throw error("unexpected end of file (truncated JSON?)") }
        switch b {
        case UInt8(ascii: "{"):
            position += 1
            var object = JSONObject()
            try skipWhitespace()
            if try peek() == UInt8(ascii: "}") { position += 1; return .object(object) }
            // Records have a handful of members: one allocation per array instead of one per doubling.
            object.keys.reserveCapacity(8)
            object.values.reserveCapacity(8)
            while true {
                try skipWhitespace()
                guard try peek() == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let key = try readString()
                lastKey = key
                try expect(UInt8(ascii: ":"))
                if depth == 0, elementSkipKeys.contains(key) {
                    try skipValue()
                } else {
                    let value = try readValue(depth: depth + 1)
                    if rejection == nil {
                        object.keys.append(key)
                        object.values.append(value)
                    }
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
                let item = try readValue(depth: depth + 1)
                if rejection == nil { items.append(item) }
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
        // Scalars are parsed here, not by readValue: inside a rejected record readValue skips, so it must not
        // be called back (that recursed until the stack overflowed).
        case UInt8(ascii: "t"):
            try literal("true")
        case UInt8(ascii: "f"):
            try literal("false")
        case UInt8(ascii: "n"):
            try literal("null")
        default:
            _ = try readNumber()
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
        swap(&text, &numberText)   // owned here, so appending does not copy it
        text.removeAll(keepingCapacity: true)
        defer { swap(&text, &numberText) }
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
        if end < limit, buffer[end] == UInt8(ascii: "\""), end - position <= maxStringBytes {
            let start = position
            let string = buffer.withUnsafeBufferPointer { String(validating: UnsafeBufferPointer(rebasing: $0[start..<end]), as: UTF8.self) }
            guard let string else {
                try reject("invalid UTF-8 in a string\(inKey)")
                position = end + 1
                return ""
            }
            position = end + 1
            try count(string.utf8.count)
            return string
        }
        var bytes: [UInt8] = []
        var invalid = false
        while true {
            if bytes.count > maxStringBytes {
                try reject("string\(inKey) is longer than \(maxStringBytes) bytes (skipped unread)")
                bytes = []
                try skipRestOfString()
                return ""
            }
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
            if c < 0x20 {
                try reject("raw control character 0x\(String(c, radix: 16)) in a string\(inKey)")
                invalid = true
                continue
            }
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
                    try reject("invalid escape '\\\(Character(Unicode.Scalar(e)))' in a string\(inKey)")
                    invalid = true
                }
            } else {
                bytes.append(c)
            }
        }
        if invalid { return "" }
        if bytes.count > maxStringBytes {
            try reject("string\(inKey) is longer than \(maxStringBytes) bytes")
            return ""
        }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            try reject("invalid UTF-8 in a string\(inKey)")
            return ""
        }
        try count(string.utf8.count)
        return string
    }

    /// " in 'caption'" when the string is a member's value, for messages.
    private var inKey: String { lastKey.isEmpty ? "" : " in '\(lastKey)'" }

    /// Scans to the end of the string being read (its opening quote already consumed).
    private func skipRestOfString() throws {
        while true {
            if position >= limit {
                guard try fill() else { throw error("unexpected end of file (truncated JSON?)") }
            }
            let start = position, end = limit
            var escaped = false
            var closed = false
            let stop = buffer.withUnsafeBufferPointer { buf -> Int in
                var i = start
                while i < end {
                    let c = buf[i]
                    i += 1
                    if escaped { escaped = false } else if c == 0x5C { escaped = true } else if c == 0x22 { closed = true; return i }
                }
                return i
            }
            position = stop
            if closed { return }
            if escaped {
                // The escaped byte is in the next block.
                _ = try next()
            }
        }
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
    public func int(_ key: String, file: String, record: @autoclosure () -> String) throws -> Int64 {
        try Self.int(self[key], key: key, file: file, record: record())
    }

    public func double(_ key: String, file: String, record: @autoclosure () -> String) throws -> Double {
        try Self.double(self[key], key: key, file: file, record: record())
    }

    public func string(_ key: String, file: String, record: @autoclosure () -> String) throws -> String {
        try Self.string(self[key], key: key, file: file, record: record())
    }

    public func optionalString(_ key: String, file: String, record: @autoclosure () -> String) throws -> String? {
        try Self.optionalString(self[key], key: key, file: file, record: record())
    }

    /// Member `key`'s value as an integer (a whole number written as a double is accepted).
    static func int(_ value: JSONValue?, key: String, file: String, record: @autoclosure () -> String) throws -> Int64 {
        switch value {
        case .int(let v)?: return v
        case .double(let v)? where v == v.rounded() && abs(v) < 9e15: return Int64(v)
        case nil: throw VLMError.badInput(file: file, record: record(), "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record(), "field '\(key)' is \(other.typeName), expected an integer")
        }
    }

    static func double(_ value: JSONValue?, key: String, file: String, record: @autoclosure () -> String) throws -> Double {
        switch value {
        case .int(let v)?: return Double(v)
        case .double(let v)?: return v
        case nil: throw VLMError.badInput(file: file, record: record(), "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record(), "field '\(key)' is \(other.typeName), expected a number")
        }
    }

    static func string(_ value: JSONValue?, key: String, file: String, record: @autoclosure () -> String) throws -> String {
        switch value {
        case .string(let v)?: return v
        case nil: throw VLMError.badInput(file: file, record: record(), "missing field '\(key)'")
        case let other?: throw VLMError.badInput(file: file, record: record(), "field '\(key)' is \(other.typeName), expected a string")
        }
    }

    static func optionalString(_ value: JSONValue?, key: String, file: String, record: @autoclosure () -> String) throws -> String? {
        switch value {
        case .string(let v)?: return v
        case nil, .null?: return nil
        case let other?: throw VLMError.badInput(file: file, record: record(), "field '\(key)' is \(other.typeName), expected a string")
        }
    }
}
