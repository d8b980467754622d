// libFuzzer target: the tar reader on arbitrary bytes. Every input must either list members whose ranges lie
// inside the input and read back, or throw a VLMError; never crash, hang or touch memory out of bounds.
import VLMCore
import VLMShard

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTar(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let reader = TarReader(bytes: bytes, name: "fuzz.tar")
    guard let entries = try? reader.entries() else { return 0 }
    for entry in entries {
        precondition(entry.headerOffset >= 0 && entry.headerOffset <= entry.contentOffset, "header after content: \(entry)")
        guard entry.isRegularFile, entry.contentEnd <= size else { continue }
        let content = try? reader.read(entry)
        precondition(content == nil || content!.count == entry.size, "read \(content?.count ?? -1) of \(entry.size) bytes")
    }
    return 0
}
