import Foundation
import VLMCore

/// Element types of the `.npy` files we read and write (little-endian, C order).
public enum NpyDType: String, Sendable, CaseIterable {
    case uint8
    case int32
    case float32

    /// The numpy `descr` we write; numpy itself writes `|u1` for one-byte types (no byte order).
    public var descr: String {
        switch self {
        case .uint8: "|u1"
        case .int32: "<i4"
        case .float32: "<f4"
        }
    }

    public var itemSize: Int {
        switch self {
        case .uint8: 1
        case .int32, .float32: 4
        }
    }

    /// Accepts what numpy writes on a little-endian machine (`|u1`, `<u1`, `<i4`, `<f4`; `=` too).
    public init?(descr: String) {
        switch descr {
        case "|u1", "<u1", ">u1", "=u1", "u1", "B": self = .uint8
        case "<i4", "=i4": self = .int32
        case "<f4", "=f4": self = .float32
        default: return nil
        }
    }
}

/// The parsed preamble of a `.npy` file: element type, shape, and where the data starts.
public struct NpyHeader: Hashable, Sendable {
    public var dtype: NpyDType
    public var shape: [Int]
    /// Bytes before the data (magic, version, header length, header text): the data starts here.
    public var dataOffset: Int

    public init(dtype: NpyDType, shape: [Int], dataOffset: Int) {
        self.dtype = dtype
        self.shape = shape
        self.dataOffset = dataOffset
    }

    /// Number of elements (1 for a 0-d array).
    public var count: Int { shape.reduce(1, *) }
    public var dataByteCount: Int { count * dtype.itemSize }
    /// Total size of the file: preamble plus data.
    public var fileByteCount: Int { dataOffset + dataByteCount }
}

/// A `.npy` (format v1.0) codec: encode arrays to bytes exactly as `numpy.save` does, parse headers and view data.
///
/// ```swift
/// let bytes = Npy.encode([1, -200, 3] as [Int32], shape: [3])   // numpy.load reads it
/// let header = try Npy.parseHeader(bytes)                        // .int32, [3], dataOffset 128
/// let values: [Int32] = try Npy.decode(bytes)                    // [1, -200, 3]
/// let pixels = Npy.header(dtype: .uint8, shape: [1, 576, 588])   // preamble only, then stream the data
/// ```
public enum Npy {
    public static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)

    /// The preamble `numpy.save` writes for a C-order array of `dtype` and `shape` (v1.0; its header text,
    /// with numpy's spare room for growing the first axis, is padded with spaces so that the data starts at a
    /// multiple of 64 bytes).
    public static func header(dtype: NpyDType, shape: [Int]) -> [UInt8] {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var text = "{'descr': '\(dtype.descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        // numpy.lib.format: GROWTH_AXIS_MAX_DIGITS = 21 spare spaces minus the digits of the first axis.
        if let first = shape.first { text += String(repeating: " ", count: max(0, 21 - String(first).count)) }
        let unpadded = magic.count + 2 + 2 + text.utf8.count + 1
        text += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        let length = text.utf8.count
        precondition(length <= 0xFFFF, "npy header too long for format 1.0")
        return magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(text.utf8)
    }

    /// A whole `.npy` file for `values` viewed as `shape` (the element count must match).
    public static func encode<T: NpyElement>(_ values: [T], shape: [Int]) -> [UInt8] {
        precondition(shape.reduce(1, *) == values.count, "npy shape \(shape) does not hold \(values.count) values")
        var out = header(dtype: T.npyDType, shape: shape)
        values.withUnsafeBytes { raw in out.append(contentsOf: raw) }
        return out
    }

    /// Parses the preamble at the start of `bytes` (v1, v2 or v3 header). Throws `corrupt` on anything else.
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, name: String = "npy") throws -> NpyHeader {
        func bad(_ message: String) -> VLMError { VLMError(.corrupt, record: name, message) }
        guard bytes.count >= 10, bytes.prefix(6).elementsEqual(magic) else { throw bad("not an .npy file (bad magic)") }
        let major = bytes[6]
        let textStart: Int
        let textLength: Int
        switch major {
        case 1:
            textStart = 10
            textLength = Int(bytes[8]) | Int(bytes[9]) << 8
        case 2, 3:
            guard bytes.count >= 12 else { throw bad("truncated npy header") }
            textStart = 12
            textLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        default:
            throw bad("unsupported npy format version \(major).\(bytes[7])")
        }
        guard textStart + textLength <= bytes.count else { throw bad("npy header runs past the end of the data") }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[textStart ..< textStart + textLength]),
                          as: UTF8.self)
        var parser = NpyDictParser(text: text)
        let dict: [String: NpyDictParser.Value]
        do { dict = try parser.parseDict() } catch { throw bad("cannot parse npy header \(text.debugDescription)") }
        guard case .string(let descr)? = dict["descr"] else { throw bad("npy header has no 'descr'") }
        guard let dtype = NpyDType(descr: descr) else {
            throw VLMError(.unsupported, record: name, "npy dtype '\(descr)' (supported: |u1, <i4, <f4)")
        }
        guard case .bool(let fortran)? = dict["fortran_order"] else { throw bad("npy header has no 'fortran_order'") }
        guard !fortran else { throw VLMError(.unsupported, record: name, "Fortran-order npy arrays") }
        guard case .tuple(let shape)? = dict["shape"], shape.allSatisfy({ $0 >= 0 }) else {
            throw bad("npy header has no valid 'shape'")
        }
        // The byte count must fit an Int: a crafted shape such as (2**32, 2**32) would otherwise trap in `count`.
        var bytes = dtype.itemSize
        for extent in shape {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: extent)
            guard !overflow else { throw bad("npy shape \(shape) of \(dtype) is more bytes than any file holds") }
            bytes = product
        }
        guard !bytes.addingReportingOverflow(textStart + textLength).overflow else {
            throw bad("npy shape \(shape) of \(dtype) is more bytes than any file holds")
        }
        return NpyHeader(dtype: dtype, shape: shape, dataOffset: textStart + textLength)
    }

    /// Parses the preamble at the start of `bytes`.
    public static func parseHeader(_ bytes: [UInt8], name: String = "npy") throws -> NpyHeader {
        try bytes.withUnsafeBytes { raw in try parseHeader(raw, name: name) }
    }

    /// Calls `body` with the header and the raw data bytes of a whole `.npy` file, without copying.
    /// Throws if the data is shorter or longer than the shape says.
    public static func withData<R>(_ bytes: UnsafeRawBufferPointer, name: String = "npy",
                                   _ body: (NpyHeader, UnsafeRawBufferPointer) throws -> R) throws -> R {
        let header = try parseHeader(bytes, name: name)
        guard bytes.count == header.fileByteCount else {
            throw VLMError(.corrupt, record: name,
                           "npy data is \(bytes.count - header.dataOffset) bytes, shape \(header.shape) of \(header.dtype) needs \(header.dataByteCount)")
        }
        return try body(header, UnsafeRawBufferPointer(rebasing: bytes[header.dataOffset...]))
    }

    /// The values of a whole `.npy` file of element type `T` (throws if the file holds another type).
    public static func decode<T: NpyElement>(_ bytes: [UInt8], name: String = "npy") throws -> [T] {
        try decode(bytes, name: name).values
    }

    /// The shape and values of a whole `.npy` file of element type `T`.
    public static func decode<T: NpyElement>(_ bytes: [UInt8], name: String = "npy") throws -> (shape: [Int], values: [T]) {
        try bytes.withUnsafeBytes { raw in
            try withData(raw, name: name) { header, data in
                guard header.dtype == T.npyDType else {
                    throw VLMError(.badInput, record: name, "npy holds \(header.dtype), expected \(T.npyDType)")
                }
                let values = [T](unsafeUninitializedCapacity: header.count) { buffer, initialized in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(from: data)
                    initialized = header.count
                }
                return (header.shape, values)
            }
        }
    }
}

/// Element types `Npy` can encode and decode (stored little-endian; this package targets little-endian hosts).
public protocol NpyElement: BitwiseCopyable {
    static var npyDType: NpyDType { get }
}

extension UInt8: NpyElement { public static var npyDType: NpyDType { .uint8 } }
extension Int32: NpyElement { public static var npyDType: NpyDType { .int32 } }
extension Float: NpyElement { public static var npyDType: NpyDType { .float32 } }

/// The tiny subset of Python literal syntax an npy header uses: a dict of strings, booleans and int tuples.
struct NpyDictParser {
    enum Value { case string(String), bool(Bool), tuple([Int]), int(Int) }
    struct Failure: Error {}

    let chars: [Character]
    var i = 0

    init(text: String) { chars = Array(text) }

    mutating func skipSpace() { while i < chars.count, chars[i].isWhitespace { i += 1 } }

    mutating func expect(_ c: Character) throws {
        skipSpace()
        guard i < chars.count, chars[i] == c else { throw Failure() }
        i += 1
    }

    mutating func peek() -> Character? {
        skipSpace()
        return i < chars.count ? chars[i] : nil
    }

    mutating func parseDict() throws -> [String: Value] {
        try expect("{")
        var out: [String: Value] = [:]
        while peek() != "}" {
            guard case .string(let key) = try parseValue() else { throw Failure() }
            try expect(":")
            out[key] = try parseValue()
            if peek() == "," { i += 1 } else { break }
        }
        try expect("}")
        return out
    }

    mutating func parseValue() throws -> Value {
        guard let c = peek() else { throw Failure() }
        if c == "'" || c == "\"" {
            i += 1
            var s = ""
            while i < chars.count, chars[i] != c { s.append(chars[i]); i += 1 }
            try expect(c)
            return .string(s)
        }
        if c == "(" {
            i += 1
            var items: [Int] = []
            while peek() != ")" {
                guard case .int(let v) = try parseValue() else { throw Failure() }
                items.append(v)
                if peek() == "," { i += 1 } else { break }
            }
            try expect(")")
            return .tuple(items)
        }
        var word = ""
        while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "-" { word.append(chars[i]); i += 1 }
        if word == "True" { return .bool(true) }
        if word == "False" { return .bool(false) }
        if word.hasSuffix("L") { word.removeLast() }
        guard let v = Int(word) else { throw Failure() }
        return .int(v)
    }
}
