import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// Appends a mix of writes, zero runs and copies from a source file; the file and the returned hash must equal
/// what was appended, for sizes around the chunk boundaries, with direct I/O and without.
@Test(arguments: [true, false])
func hashingWriterMatchesWhatWasAppended(directIO: Bool) throws {
    let source = (0 ..< 20_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    let sourcePath = try tempFile(source, name: "source.bin")
    let fd = open(sourcePath, O_RDONLY)
    defer { close(fd) }
    var generator = SplitMix64(seed: 5)
    for total in [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 1, 50_000] {
        let path = sourcePath + ".out-\(total)"
        let writer = try HashingFileWriter(path: path, chunkSize: 4096, chunks: 2, directIO: directIO)
        #expect(directIO || !writer.usesDirectIO)
        var expected: [UInt8] = []
        while expected.count < total {
            let n = min(total - expected.count, 1 + generator.below(6000))
            switch generator.below(3) {
            case 0:
                let bytes = (0 ..< n).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                try writer.write(bytes)
                expected += bytes
            case 1:
                try writer.write(zeros: n)
                expected += [UInt8](repeating: 0, count: n)
            default:
                let count = min(n, source.count)
                let at = generator.below(source.count - count + 1)
                try writer.copy(from: fd, at: at, count: count)
                expected += source[at ..< at + count]
            }
            #expect(writer.offset == expected.count)
        }
        let (sha, bytes) = try writer.finish()
        #expect(bytes == total)
        #expect(sha == Hashing.sha256(expected), "total \(total)")
        #expect(FileManager.default.contents(atPath: path) == Data(expected), "total \(total), direct \(directIO)")
    }
}

@Test func hashingWriterReportsAShortCopySource() throws {
    let sourcePath = try tempFile([1, 2, 3], name: "short.bin")
    let fd = open(sourcePath, O_RDONLY)
    defer { close(fd) }
    let writer = try HashingFileWriter(path: sourcePath + ".out", chunkSize: 4096)
    #expect {
        try writer.copy(from: fd, at: 1, count: 10)
    } throws: { error in
        let text = "\(error)"
        return text.contains(sourcePath + ".out") && text.contains("ended 8 bytes early")
    }
    writer.abandon()
}

@Test func hashingWriterReportsAFailedWrite() throws {
    // /dev/full accepts the open and fails every write with ENOSPC; the error surfaces, naming the file.
    let writer = try HashingFileWriter(path: "/dev/full", chunkSize: 4096, chunks: 2)
    #expect {
        for _ in 0 ..< 8 { try writer.write([UInt8](repeating: 1, count: 4096)) }
        _ = try writer.finish()
    } throws: { error in
        "\(error)".contains("/dev/full") && "\(error)".contains("No space left")
    }
}
