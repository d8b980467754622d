import Foundation

/// Strings stored end to end in one byte array, for the per-image names and keys ingest keeps for a run.
///
/// Each string costs its UTF-8 bytes plus 4; a `[String]` costs 16 bytes per element plus a heap object of 32
/// bytes and up for every string over 15 bytes (a COCO file name is 16: `000000000139.jpg`), and a dictionary
/// keyed by them about twice that again.
///
/// ```swift
/// var names = PackedStrings()
/// names.append("000000000139.jpg")
/// names[0]   // "000000000139.jpg"
/// ```
struct PackedStrings {
    private(set) var bytes: [UInt8] = []
    private var ends: [UInt32] = []

    var count: Int { ends.count }

    mutating func append(_ string: String) {
        bytes.append(contentsOf: string.utf8)
        finish()
    }

    /// Ends the string whose bytes were added with `appendBytes` since the last one.
    mutating func finish() {
        precondition(bytes.count <= Int(UInt32.max), "packed strings over 4 GiB")
        ends.append(UInt32(bytes.count))
    }

    mutating func appendBytes(_ more: some Sequence<UInt8>) { bytes.append(contentsOf: more) }

    mutating func appendByte(_ byte: UInt8) { bytes.append(byte) }

    func range(_ i: Int) -> Range<Int> { (i == 0 ? 0 : Int(ends[i - 1]))..<Int(ends[i]) }

    subscript(i: Int) -> String { String(decoding: bytes[range(i)], as: UTF8.self) }

    /// Byte-wise order of strings `i` and `j` (negative, zero, positive).
    func compare(_ i: Int, _ j: Int) -> Int {
        let a = range(i), b = range(j)
        return bytes.withUnsafeBufferPointer { buf in Self.compare(buf, a, buf, b) }
    }

    /// Byte-wise order of string `i` and `other`.
    func compare(_ i: Int, _ other: String) -> Int {
        let a = range(i)
        var other = other
        return other.withUTF8 { o in
            bytes.withUnsafeBufferPointer { buf in Self.compare(buf, a, o, 0..<o.count) }
        }
    }

    private static func compare(_ x: UnsafeBufferPointer<UInt8>, _ a: Range<Int>, _ y: UnsafeBufferPointer<UInt8>, _ b: Range<Int>) -> Int {
        let n = min(a.count, b.count)
        if n > 0 {
            let c = memcmp(x.baseAddress! + a.lowerBound, y.baseAddress! + b.lowerBound, n)
            if c != 0 { return Int(c) }
        }
        return a.count - b.count
    }
}
