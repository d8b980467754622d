import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// Runs `xxhsum` (Debian's xxhash, the reference) on a file and returns the hex digest it prints.
func xxhsum(_ algorithm: String, _ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/xxhsum")
    process.arguments = [algorithm, path]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    // -H2 prints "HEX  PATH"; -H3 prints "XXH3 (PATH) = HEX".
    let words = text.split(whereSeparator: \.isWhitespace)
    return String(algorithm == "-H2" ? words.first ?? "" : words.last ?? "")
}

/// Our XXH3 values equal what `xxhsum -H3` / `-H2` print, for sizes across XXH3's internal size classes, and the
/// streaming 128-bit hash fed in uneven pieces equals the one-shot one.
@Test func xxh3EqualsXxhsum() throws {
    try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/xxhsum"), "install Debian's xxhash (make deps)")
    var generator = SplitMix64(seed: 9)
    for size in [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 70_000] {
        let bytes = (0 ..< size).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let path = try tempFile(bytes, name: "xxh3-\(size).bin")
        #expect(XXH3.hex(XXH3.hash64(bytes)) == (try xxhsum("-H3", path)), "size \(size)")
        let oneShot = bytes.withUnsafeBytes { XXH3.hash128($0) }
        #expect(oneShot == (try xxhsum("-H2", path)), "size \(size)")
        let streaming = StreamingXXH3_128()
        var at = 0
        while at < size {
            let n = min(size - at, 1 + generator.below(5000))
            streaming.update(Array(bytes[at ..< at + n]))
            at += n
        }
        #expect(streaming.finalize() == oneShot, "size \(size)")
    }
    // Known values, so a missing xxhsum cannot hide a wrong build: "hello".
    #expect(XXH3.hex(XXH3.hash64(Array("hello".utf8))) == "9555e8555c62dcfd")
    #expect(Array("hello".utf8).withUnsafeBytes { XXH3.hash128($0) } == "b5e9c1ad071b3e7fc779cfaa5e523818")
}

/// The shard writer's XXH3-128 is the file's, as `xxhsum -H2` computes it from the bytes on disk.
@Test(arguments: [true, false])
func hashingWriterRecordsTheFilesXXH3(directIO: Bool) throws {
    let path = try tempFile([], name: "xxh3-writer-\(directIO).bin")
    var generator = SplitMix64(seed: 11)
    let writer = try HashingFileWriter(path: path, chunkSize: 4096, chunks: 2, directIO: directIO)
    for _ in 0 ..< 20 {
        try writer.write((0 ..< (1 + generator.below(3000))).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        try writer.write(zeros: generator.below(700))
    }
    #expect(writer.xxh3_128 == nil)
    _ = try writer.finish()
    let onDisk = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    #expect(writer.xxh3_128 == onDisk.withUnsafeBytes { XXH3.hash128($0) })
    if FileManager.default.isExecutableFile(atPath: "/usr/bin/xxhsum") {
        #expect(writer.xxh3_128 == (try xxhsum("-H2", path)))
    }
}
