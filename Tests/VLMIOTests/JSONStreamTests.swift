import Foundation
import Testing
import VLMCore
@testable import VLMIO

func tempFile(_ bytes: [UInt8], name: String = "t.json") throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlmio-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(name).path
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

@Test func parsesNestedValuesEscapesAndSurrogates() throws {
    let text = #"{"a": [1, -2.5e2, true, false, null, "x\"\\\/\n\u00e9\ud83d\ude00"], "b": {"c": []}, "skip": [[{"z": "]"}]]}"#
    // A tiny block size makes every token cross a buffer boundary.
    let reader = try JSONStreamReader(path: try tempFile(Array(text.utf8)), blockSize: 3)
    var seen: [String: JSONValue] = [:]
    try reader.forEachTopLevelMember { key in
        key == "skip" ? .skip : .value { seen[key] = $0 }
    }
    #expect(seen["a"] == .array([.int(1), .double(-250), .bool(true), .bool(false), .null, .string("x\"\\/\né😀")]))
    #expect(seen["b"] == .object(["c": .array([])]))
}

@Test func streamsArrayElementsWithTheirIndex() throws {
    let text = #"{"images": [{"id": 1}, {"id": 2}, {"id": 3}], "annotations": []}"#
    let reader = try JSONStreamReader(path: try tempFile(Array(text.utf8)), blockSize: 4)
    var ids: [Int64] = []
    try reader.forEachTopLevelMember { key in
        key == "images" ? .eachElement { value, index in
            ids.append(try value.int("id", file: "f", record: "images[\(index)]"))
        } : .skip
    }
    #expect(ids == [1, 2, 3])
}

@Test(arguments: [
    (#"{"images": [{"id": 1}, {"id": 2"#, "unexpected end of file", "images"),
    (#"{"images": [{"id": 1} {"id": 2}]}"#, "expected ',' or ']'", "images"),
    (#"{"a": "\ud800x"}"#, "unpaired surrogate", "a"),
    (#"{"a": "\q"}"#, "invalid escape", "a"),
    (#"{"a": tru}"#, "invalid literal", "a"),
    ("{\"a\": \"tab\there\"}", "raw control character", "a"),
])
func reportsWhereAndWhatIsWrong(text: String, message: String, record: String) throws {
    let reader = try JSONStreamReader(path: try tempFile(Array(text.utf8)))
    do {
        try reader.forEachTopLevelMember { _ in .eachElementOrValue }
        Issue.record("expected an error for \(text)")
    } catch let error as VLMError {
        #expect(error.message.contains(message), "\(error)")
        #expect(error.record?.hasPrefix(record) == true, "\(error)")
    }
}

@Test func rejectsInvalidUTF8() throws {
    var bytes = Array(#"{"a": "ok", "b": "XX"}"#.utf8)
    let i = bytes.firstIndex(of: UInt8(ascii: "X"))!
    bytes[i] = 0xFF
    bytes[i + 1] = 0xC0
    let reader = try JSONStreamReader(path: try tempFile(bytes))
    #expect(throws: VLMError.self) { try reader.forEachTopLevelMember { _ in .value { _ in } } }
}

@Test func missingFileIsNotFound() {
    do {
        _ = try JSONStreamReader(path: "/nonexistent/x.json")
        Issue.record("expected an error")
    } catch let error as VLMError {
        #expect(error.kind == .notFound)
        #expect(error.description.contains("/nonexistent/x.json"))
    } catch { Issue.record("\(error)") }
}

@Test func typedFieldErrorsNameTheField() {
    let value = JSONValue.object(["id": .string("7")])
    #expect(throws: VLMError.badInput(file: "f.json", record: "images[3]", "field 'id' is a string, expected an integer")) {
        _ = try value.int("id", file: "f.json", record: "images[3]")
    }
}

extension JSONStreamReader.MemberAction {
    /// Arrays element by element, anything else whole (for error tests).
    static var eachElementOrValue: Self { .value { _ in } }
}

@Test func numbersAsJSONDefinesThem() throws {
    let text = #"{"a": [0, -0, 12, -7, 9223372036854775807, 92233720368547758070, 1.5, -0.25, 1e3, 2E-2, 0.5]}"#
    let reader = try JSONStreamReader(path: try tempFile(Array(text.utf8)))
    var got: JSONValue?
    try reader.forEachTopLevelMember { _ in .value { got = $0 } }
    #expect(got == .array([.int(0), .int(0), .int(12), .int(-7), .int(Int64.max), .double(92233720368547758070),
                           .double(1.5), .double(-0.25), .double(1000), .double(0.02), .double(0.5)]))
    for bad in ["0123", "+1", "-", "1.2.3", "--1"] {
        let r = try JSONStreamReader(path: try tempFile(Array("{\"a\": \(bad)}".utf8)))
        #expect(throws: VLMError.self, "\(bad)") { try r.forEachTopLevelMember { _ in .value { _ in } } }
    }
}
