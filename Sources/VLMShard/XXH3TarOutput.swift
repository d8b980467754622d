import Foundation
import VLMIO

/// A `TarOutput` that passes every byte on to a `FileWriter` and computes the file's XXH3-128 on the way, from
/// the bytes as they are handed over (still in cache), so a finished file is never read back to be hashed.
/// `patchify` writes pixel shards through it: their integrity hash is this XXH3-128, as for training shards.
///
/// ```swift
/// let output = XXH3TarOutput(try FileWriter(path: tmp))
/// let tar = TarWriter(output: output)
/// try tar.add(name: "k.npy", bytes: npy)
/// try tar.finish()
/// try output.file.sync()
/// let checksum = output.xxh3_128          // as `xxhsum -H2 tmp` prints it
/// ```
public final class XXH3TarOutput: TarOutput {
    public let file: FileWriter
    private let checksum = StreamingXXH3_128()

    public init(_ file: FileWriter) {
        self.file = file
    }

    public var path: String { file.path }
    public var offset: Int { file.offset }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        checksum.update(bytes)
        try file.write(bytes)
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    public func write(zeros count: Int) throws {
        if count > 0 { try write([UInt8](repeating: 0, count: count)) }
    }

    /// XXH3-128 of everything written so far (32 hex digits, xxhsum's order).
    public var xxh3_128: String { checksum.finalize() }
}
