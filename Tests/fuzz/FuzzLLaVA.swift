// libFuzzer target: a LLaVA file (a JSON array, or JSON Lines when its first significant byte is `{`) as
// `ingest llava` reads it: JSONStreamReader with ingest's record limits or much smaller ones, each record through
// LLaVARecord.conversation (the same function ingest calls). Every record must become a valid conversation or be
// rejected with a VLMError naming the file; never crash, hang or read out of bounds.
import Foundation
import VLMCore
import VLMIO

private let path = FuzzScratch.file("llava.json")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzLLaVA(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzScratch.write(data, size, to: path)
    FuzzScratch.walk(path, size: size) { reader in
        let isLines = try reader.firstSignificantByte() == UInt8(ascii: "{")
        var last = 0
        let body: (JSONValue, Int) throws -> Void = { value, index in
            precondition(index > last || (!isLines && index == 0 && last == 0), "record \(index) after \(last)")
            last = index
            FuzzScratch.record(path, index) {
                let record = isLines ? "line \(index)" : "record \(index)"
                guard case .object = value else { throw VLMError.badInput(file: path, record: record, "not an object") }
                let id: String
                switch value["id"] {
                case .string(let s)?: id = s
                case .int(let n)?: id = String(n)
                default: throw VLMError.badInput(file: path, record: record, "no usable id")
                }
                let image = try value.optionalString("image", file: path, record: record)
                let (conversation, _) = try LLaVARecord.conversation(of: value, id: id, image: image, file: path, record: record)
                precondition(conversation.conversations.count % 2 == 0 && !conversation.conversations.isEmpty,
                             "\(record): an invalid conversation passed validation")
                _ = ArchiveReader.isSafeMemberName(image ?? "")
            }
        }
        if isLines {
            try reader.forEachLine(body, rejected: FuzzScratch.rejected(path))
        } else {
            try reader.forEachTopLevelElement(body, rejected: FuzzScratch.rejected(path))
        }
    }
    return 0
}
