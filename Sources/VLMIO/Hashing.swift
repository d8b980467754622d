import Crypto
import Foundation
import VLMCore

/// SHA-256 helpers (swift-crypto), hex-encoded lower case.
public enum Hashing {
    public static func sha256(_ bytes: some DataProtocol) -> String {
        SHA256.hash(data: bytes).hexString
    }

    public static func sha256(_ text: String) -> String {
        sha256(Array(text.utf8))
    }

    /// Streams a file through SHA-256 in 1 MiB blocks.
    public static func sha256(file path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw VLMError(.notFound, file: path, "cannot open file")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk: Data
            do { chunk = try handle.read(upToCount: 1 << 20) ?? Data() } catch {
                throw VLMError.io(file: path, "read failed: \(error)")
            }
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
        }
        return hasher.finalize().hexString
    }

    /// A hash of a Codable value's canonical JSON (sorted keys): used for parameter and request hashes.
    public static func canonicalHash(_ value: some Encodable) -> String {
        sha256(canonicalJSON(value))
    }

    public static func canonicalJSON(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data())
    }
}

/// Incremental SHA-256 for streams (shards being written, downloads).
public struct StreamingSHA256 {
    private var hasher = SHA256()
    public init() {}
    public mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }
    public mutating func update(_ bytes: [UInt8]) { hasher.update(data: bytes) }
    public func finalize() -> String { hasher.finalize().hexString }
}

extension Digest {
    var hexString: String {
        var out = ""
        out.reserveCapacity(64)
        for byte in self {
            let hex = String(byte, radix: 16)
            if hex.count == 1 { out += "0" }
            out += hex
        }
        return out
    }
}
