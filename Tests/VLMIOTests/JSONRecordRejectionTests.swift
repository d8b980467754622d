import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// A record with a problem that leaves the JSON structure intact is rejected alone; the walk goes on.
struct JSONRecordRejectionTests {
    /// Walks `annotations` with small blocks (every token crosses a boundary) and the given string cap.
    static func walk(_ bytes: [UInt8], maxString: Int = 64, maxDepth: Int = 8) throws -> (kept: [Int64], rejected: [(Int, String)]) {
        let reader = try JSONStreamReader(path: try tempFile(bytes), blockSize: 5)
        reader.maxStringBytes = maxString
        reader.maxDepth = maxDepth
        var kept: [Int64] = []
        var rejected: [(Int, String)] = []
        try reader.forEachTopLevelMember { key in
            .eachRecord({ value, _ in
                if case .int(let id)? = value["id"] { kept.append(id) }
            }, rejected: { error, index in rejected.append((index, error.description)) })
        }
        return (kept, rejected)
    }

    @Test func invalidUTF8RejectsOnlyItsRecord() throws {
        var bytes = Array(#"{"annotations": [{"id": 1, "caption": "ok"}, {"id": 2, "caption": "bad XX"}, {"id": 3, "caption": "ok"}]}"#.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "X"))!
        bytes[at] = 0xFF
        bytes[at + 1] = 0xFE
        let (kept, rejected) = try Self.walk(bytes)
        #expect(kept == [1, 3])
        #expect(rejected.count == 1 && rejected[0].0 == 1)
        #expect(rejected[0].1.contains("annotations[1]") && rejected[0].1.contains("invalid UTF-8 in a string in 'caption'"))
    }

    /// Found by fuzz-coco and fuzz-llava: once a record was rejected, a number, `true`, `false` or `null` after
    /// the bad string recursed between readValue and skipValue until the stack overflowed.
    @Test func scalarsAfterARejectionAreSkipped() throws {
        var bytes = Array(#"{"annotations": [{"id": 1}, {"caption": "bad XX", "id": 2, "ok": true, "no": false, "x": null, "area": -1.5e3}, {"id": 3}]}"#.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "X"))!
        bytes[at] = 0xFF
        let (kept, rejected) = try Self.walk(bytes)
        #expect(kept == [1, 3])
        #expect(rejected.count == 1 && rejected[0].0 == 1)
        let (keptLong, rejectedLong) = try Self.walk(Array(#"{"annotations": [{"caption": "\#(String(repeating: "z", count: 100))", "id": 1, "b": [1, 2.5, true, null]}, {"id": 2}]}"#.utf8))
        #expect(keptLong == [2] && rejectedLong.count == 1)
    }

    @Test func longStringIsSkippedUnreadAndNamed() throws {
        let long = String(repeating: "z", count: 1000) + #"\"still inside\""# + String(repeating: "y", count: 1000)
        let text = #"{"annotations": [{"id": 1, "caption": "\#(long)"}, {"id": 2, "caption": "ok"}]}"#
        let (kept, rejected) = try Self.walk(Array(text.utf8))
        #expect(kept == [2])
        #expect(rejected.count == 1 && rejected[0].1.contains("'caption' is longer than 64 bytes"))
    }

    @Test func deepNestingRejectsItsRecordWithoutRecursion() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let text = #"{"annotations": [{"id": 1, "x": \#(deep)}, {"id": 2}]}"#
        let (kept, rejected) = try Self.walk(Array(text.utf8))
        #expect(kept == [2])
        #expect(rejected.count == 1 && rejected[0].1.contains("nesting deeper than 8 levels"))
    }

    @Test func structuralErrorsStillStopAnArray() throws {
        let text = #"{"annotations": [{"id": 1} {"id": 2}]}"#
        #expect(throws: VLMError.self) { _ = try Self.walk(Array(text.utf8)) }
    }

    @Test func jsonLinesResynchronizeAtTheNextLine() throws {
        var text = "{\"id\": 1}\n\n{\"id\": 2, \"broken\": [\n{\"id\": 3, \"s\": \"XX\"}\n{\"id\": 4} trailing\n"
        text += "{\"id\": 5, \"s\": \"line one\nline two\"}\n{\"id\": 6}"
        var bytes = Array(text.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "X"))!
        bytes[at] = 0xC0
        let reader = try JSONStreamReader(path: try tempFile(bytes), blockSize: 7)
        #expect(try reader.firstSignificantByte() == UInt8(ascii: "{"))
        var kept: [Int64] = []
        var rejected: [Int] = []
        try reader.forEachLine({ value, line in
            if case .int(let id)? = value["id"] { kept.append(id) }
            #expect(line != 2)
        }, rejected: { error, line in
            rejected.append(line)
            #expect(error.description.contains("line \(line)"))
        })
        // Line 6 holds a raw newline inside a string, so its two halves are lines 6 and 7, both broken.
        #expect(kept == [1, 6])
        #expect(rejected == [3, 4, 5, 6, 7])
    }

    @Test func jsonLinesRejectsAnOverlongLineWithoutHoldingIt() throws {
        let text = "{\"id\": 1}\n{\"id\": 2, \"s\": \"" + String(repeating: "q", count: 5000) + "\"}\n{\"id\": 3}\n"
        let reader = try JSONStreamReader(path: try tempFile(Array(text.utf8)), blockSize: 64)
        reader.maxLineBytes = 1000
        var kept: [Int64] = []
        var messages: [String] = []
        try reader.forEachLine({ value, _ in
            if case .int(let id)? = value["id"] { kept.append(id) }
        }, rejected: { error, _ in messages.append(error.description) })
        #expect(kept == [1, 3])
        #expect(messages.count == 1 && messages[0].contains("line 2") && messages[0].contains("longer than 1000 bytes"))
    }
}
