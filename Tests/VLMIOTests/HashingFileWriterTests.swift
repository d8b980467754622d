import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// Appends a mix of writes and zero runs; the file and the returned hash must equal what was appended, for sizes
/// around the chunk boundaries, with direct I/O and without; the sha256 only when asked for, the XXH3-128 always.
@Test(arguments: [(true, true), (false, true), (true, false)])
func hashingWriterMatchesWhatWasAppended(directIO: Bool, sha256: Bool) throws {
    let base = try tempFile([], name: "out-\(directIO)-\(sha256).bin")
    var generator = SplitMix64(seed: 5)
    for total in [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 1, 50_000] {
        let path = base + "-\(total)"
        let writer = try HashingFileWriter(path: path, chunkSize: 4096, chunks: 2, directIO: directIO, sha256: sha256)
        #expect(directIO || !writer.usesDirectIO)
        var expected: [UInt8] = []
        while expected.count < total {
            let n = min(total - expected.count, 1 + generator.below(6000))
            if generator.below(3) == 0 {
                try writer.write(zeros: n)
                expected += [UInt8](repeating: 0, count: n)
            } else {
                let bytes = (0 ..< n).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                try writer.write(bytes)
                expected += bytes
            }
            #expect(writer.offset == expected.count)
        }
        let (sha, bytes) = try writer.finish()
        #expect(bytes == total)
        #expect(sha == (sha256 ? Hashing.sha256(expected) : nil), "total \(total)")
        #expect(writer.xxh3_128 == expected.withUnsafeBytes { XXH3.hash128($0) }, "total \(total)")
        #expect(try XXH3.hash128(file: path) == writer.xxh3_128)
        #expect(FileManager.default.contents(atPath: path) == Data(expected), "total \(total), direct \(directIO)")
    }
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
