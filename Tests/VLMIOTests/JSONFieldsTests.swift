import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// `eachFields` (no JSONValue per record) must see exactly what `eachRecord` sees: the same named values, the same
/// rejections with the same messages, the same non-object records.
struct JSONFieldsTests {
    static let names = ["id", "image_id", "caption", "bbox", "area"]

    struct Walk: Equatable {
        var kept: [[JSONValue?]] = []
        var notObjects: [String] = []
        var rejected: [String] = []
    }

    static func configure(_ reader: JSONStreamReader, maxString: Int, maxDepth: Int, maxRecord: Int) {
        reader.maxStringBytes = maxString
        reader.maxDepth = maxDepth
        reader.maxElementBytes = maxRecord
        reader.elementSkipKeys = ["segmentation"]
    }

    /// Both walks of `annotations`, with a small block size so that tokens cross buffer boundaries.
    static func walks(_ bytes: [UInt8], blockSize: Int, maxString: Int = 40, maxDepth: Int = 6,
                      maxRecord: Int = 400) throws -> (records: Walk, fields: Walk) {
        let path = try tempFile(bytes)
        var records = Walk()
        let a = try JSONStreamReader(path: path, blockSize: blockSize)
        configure(a, maxString: maxString, maxDepth: maxDepth, maxRecord: maxRecord)
        try a.forEachTopLevelMember { key in
            key != "annotations" ? .skip : .eachRecord({ value, index in
                if case .object = value {
                    records.kept.append(names.map { value[$0] })
                } else {
                    records.notObjects.append("\(index): \(value.typeName)")
                }
            }, rejected: { error, index in records.rejected.append("\(index): \(error.description)") })
        }
        var fields = Walk()
        let b = try JSONStreamReader(path: path, blockSize: blockSize)
        configure(b, maxString: maxString, maxDepth: maxDepth, maxRecord: maxRecord)
        try b.forEachTopLevelMember { key in
            key != "annotations" ? .skip : .eachFields(JSONFields(names), { value, index in
                if let typeName = value.notAnObject {
                    fields.notObjects.append("\(index): \(typeName)")
                } else {
                    fields.kept.append(names.indices.map { value[$0] })
                }
            }, rejected: { error, index in fields.rejected.append("\(index): \(error.description)") })
        }
        return (records, fields)
    }

    @Test(arguments: [1, 3, 7, 1 << 16])
    func namedCasesMatchTheRecordWalk(blockSize: Int) throws {
        let long = String(repeating: "z", count: 60)
        let deep = String(repeating: "[", count: 10) + String(repeating: "]", count: 10)
        let records = [
            #"{"id": 1, "image_id": 7, "caption": "a cat"}"#,
            #"{"caption": "x", "id": 2, "id": 3}"#,                              // the last of a repeated name wins
            #"{"capt\u0069on": "escaped name", "id": 4}"#,                       // a name written with an escape
            #"{"id": 5, "bbox": [1, 2.5, 3e1, -4], "segmentation": [[1, 2, 3]], "area": 9.5}"#,
            #"{"id": 6, "other": {"deep": [1, {"caption": "inner is not the record's"}]}}"#,
            #"[1, 2]"#, #""str""#, #"null"#, #"7"#,                               // not objects
            #"{"id": 8, "caption": "\#(long)"}"#,                                // string over the cap
            #"{"id": 9, "x": \#(deep)}"#,                                        // nesting over the cap
            #"{"id": 10, "caption": "tab\#("\t")here"}"#,                              // raw control character
            #"{"id": 11, "caption": "\q"}"#,                                     // invalid escape
            #"{"id": 12, "\#(long)": 1}"#,                                       // a member name over the cap
            #"{"id": 13, "a": "\#(String(repeating: "y", count: 35))", "b": "\#(String(repeating: "y", count: 35))", "c": "\#(String(repeating: "y", count: 35))", "d": "\#(String(repeating: "y", count: 35))", "e": "\#(String(repeating: "y", count: 35))", "f": "\#(String(repeating: "y", count: 35))", "g": "\#(String(repeating: "y", count: 35))", "h": "\#(String(repeating: "y", count: 35))"}"#,
            #"{}"#, #"{"id": 14, "caption": "é😀 \u00e9"}"#,
        ]
        var bytes = Array(("{\"info\": {}, \"annotations\": [" + records.joined(separator: ", ") + "], \"x\": 1}").utf8)
        // One record with invalid UTF-8 in a field that is not named, one in a named field.
        let bad1 = Array(#"{"id": 15, "note": "bad QQ"}"#.utf8), bad2 = Array(#"{"id": 16, "caption": "bad QQ"}"#.utf8)
        for bad in [bad1, bad2] {
            var b = bad
            let q = b.firstIndex(of: UInt8(ascii: "Q"))!
            b[q] = 0xFF
            b[q + 1] = 0xC0
            let close = bytes.lastIndex(of: UInt8(ascii: "]"))!
            bytes.insert(contentsOf: Array(", ".utf8) + b, at: close)
        }
        let (a, b) = try Self.walks(bytes, blockSize: blockSize)
        #expect(a == b)
        #expect(a.kept.count == 7 && a.notObjects.count == 4 && a.rejected.count == 8, "\(a)")
    }

    /// Random records (seeded): names from a small pool that includes the named ones, values of every kind,
    /// now and then an invalid byte, a long string or deep nesting.
    @Test(arguments: [0, 1, 2, 3, 4, 5, 6, 7])
    func randomRecordsMatchTheRecordWalk(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        func pick(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        let pool = ["id", "image_id", "caption", "bbox", "area", "segmentation", "iscrowd", "other", "capt\\u0069on", "i\\u0064"]
        func value(_ depth: Int) -> String {
            switch pick(depth > 3 ? 5 : 8) {
            case 0: return "\(Int64(bitPattern: rng.next()) % 100_000)"
            case 1: return "\(Double(pick(10_000)) / 7)"
            case 2: return ["true", "false", "null"][pick(3)]
            case 3: return "\"" + String(repeating: "w", count: pick(3) == 0 ? 50 : pick(20)) + "\""
            case 4: return "\"caf\\u00e9 \\\"q\\\" \\n\""
            case 5: return "[" + (0..<pick(4)).map { _ in value(depth + 1) }.joined(separator: ", ") + "]"
            default: return "{" + (0..<pick(4)).map { _ in "\"\(pool[pick(pool.count)])\": \(value(depth + 1))" }.joined(separator: ", ") + "}"
            }
        }
        var parts: [String] = []
        for _ in 0..<200 {
            parts.append(pick(10) == 0 ? value(0) : "{" + (0..<pick(6)).map { _ in "\"\(pool[pick(pool.count)])\": \(value(1))" }.joined(separator: ", ") + "}")
        }
        var bytes = Array(("{\"annotations\": [" + parts.joined(separator: ",\n ") + "]}").utf8)
        // Invalid UTF-8 in some string contents (never in the structure).
        for i in bytes.indices where bytes[i] == UInt8(ascii: "w") && pick(40) == 0 { bytes[i] = 0xFE }
        for blockSize in [2, 5, 64] {
            let (a, b) = try Self.walks(bytes, blockSize: blockSize, maxRecord: 300)
            #expect(a == b, "seed \(seed) block \(blockSize)")
            #expect(a.rejected.count > 0 && a.kept.count > 0)
        }
    }
}
