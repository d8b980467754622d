/// Builds JSON bytes exactly as `Hashing.canonicalJSON` (Foundation's `JSONEncoder` with sorted keys and unescaped
/// slashes) writes them, for records written millions of times (a shard's per-sample json), where `JSONEncoder`
/// costs more than everything else done per sample. The caller emits object keys in sorted order.
///
/// ```swift
/// var json = CanonicalJSONWriter()
/// json.beginObject()
/// json.key("id"); json.value(7)
/// json.key("tags"); json.value(["a", "b"])
/// json.endObject()
/// json.bytes   // {"id":7,"tags":["a","b"]}
/// ```
public struct CanonicalJSONWriter {
    public private(set) var bytes: [UInt8] = []
    /// Per open container: whether the next element needs a comma before it.
    private var needsComma: [Bool] = []

    public init(capacity: Int = 1024) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func beginObject() { open(UInt8(ascii: "{")) }
    public mutating func endObject() { close(UInt8(ascii: "}")) }
    public mutating func beginArray() { open(UInt8(ascii: "[")) }
    public mutating func endArray() { close(UInt8(ascii: "]")) }

    /// An object key; the value written next belongs to it.
    public mutating func key(_ name: String) {
        separate()
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma[needsComma.count - 1] = false   // the value that follows takes no comma
    }

    public mutating func value(_ text: String?) {
        separate()
        if let text { string(text) } else { null() }
    }

    public mutating func value(_ number: Int?) {
        separate()
        if let number { bytes.append(contentsOf: String(number).utf8) } else { null() }
    }

    public mutating func value(_ numbers: [Int]?) {
        guard let numbers else { return value(nil as Int?) }
        beginArray()
        for number in numbers { value(number) }
        endArray()
    }

    /// A string-to-string object with its keys sorted, as `JSONEncoder` writes `[String: String]`.
    public mutating func value(_ object: [String: String]) {
        beginObject()
        for name in object.keys.sorted() {
            key(name)
            value(object[name])
        }
        endObject()
    }

    private mutating func open(_ bracket: UInt8) {
        separate()
        bytes.append(bracket)
        needsComma.append(false)
    }

    private mutating func close(_ bracket: UInt8) {
        needsComma.removeLast()
        bytes.append(bracket)
    }

    /// Writes the comma before an element when one came before it in the same container.
    private mutating func separate() {
        guard let last = needsComma.last else { return }
        if last { bytes.append(UInt8(ascii: ",")) } else { needsComma[needsComma.count - 1] = true }
    }

    private mutating func null() { bytes.append(contentsOf: "null".utf8) }

    /// Foundation's escaping: quote, backslash and the C0 controls (short forms for \b \t \n \f \r, else \u00xx
    /// in lower-case hex); everything else, including `/`, DEL and non-ASCII, as UTF-8.
    private mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0 ..< 0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
