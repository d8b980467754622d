import CXXHash
import Foundation
import VLMCore

/// XXH3 checksums from libxxhash: `hash64` is what the index records per shard member (checked on every read),
/// `StreamingXXH3_128` what it records per shard file (checked by `vlmdata verify`). Both are non-cryptographic:
/// they catch flipped, torn and truncated bytes at memory speed; `sha256` stays the digest for tamper checks.
///
/// ```swift
/// let member = XXH3.hash64(bytes)                 // as `xxhsum -H3` prints it: XXH3.hex(member)
/// var file = StreamingXXH3_128()
/// file.update(chunk)
/// let digest = file.finalize()                    // 32 hex digits, as `xxhsum -H2` prints them
/// ```
public enum XXH3 {
    /// XXH3_64bits of `bytes` (seed 0).
    public static func hash64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        #if arch(x86_64)
        XXH3_64bits_dispatch(bytes.baseAddress, bytes.count)
        #else
        XXH3_64bits(bytes.baseAddress, bytes.count)
        #endif
    }

    public static func hash64(_ bytes: [UInt8]) -> UInt64 {
        bytes.withUnsafeBytes { hash64($0) }
    }

    /// XXH3_128bits of `bytes`, as 32 lower-case hex digits in xxhsum's canonical (big-endian) order.
    public static func hash128(_ bytes: UnsafeRawBufferPointer) -> String {
        #if arch(x86_64)
        hex(XXH3_128bits_dispatch(bytes.baseAddress, bytes.count))
        #else
        hex(XXH3_128bits(bytes.baseAddress, bytes.count))
        #endif
    }

    /// XXH3_128bits of a file (as `xxhsum -H2` prints it), streamed in 4 MiB blocks.
    public static func hash128(file path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VLMError(.notFound, file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let hasher = StreamingXXH3_128()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw VLMError.io(file: path, "read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
        }
        return hasher.finalize()
    }

    /// 16 lower-case hex digits, as `xxhsum -H3` prints an XXH3_64bits value.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func hex(_ value: XXH128_hash_t) -> String { hex(value.high64) + hex(value.low64) }

    /// The index stores a 64-bit checksum in a signed SQLite INTEGER; these convert without changing a bit.
    public static func stored(_ value: UInt64) -> Int64 { Int64(bitPattern: value) }
    public static func loaded(_ value: Int64) -> UInt64 { UInt64(bitPattern: value) }
}

/// Incremental XXH3_128bits over a stream (a shard being written). Not thread-safe; one owner at a time.
public final class StreamingXXH3_128: @unchecked Sendable {
    private let state: OpaquePointer

    public init() {
        // XXH3_createState only fails when malloc does; there is nothing sensible to do but stop.
        guard let state = XXH3_createState() else { fatalError("XXH3_createState: out of memory") }
        self.state = state
        Self.check(XXH3_128bits_reset(state), "XXH3_128bits_reset")
    }

    deinit { XXH3_freeState(state) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        // libxxhash's runtime dispatch on x86 (AVX2/AVX-512 where the CPU has them; Debian's plain entry points
        // are SSE2): it was 30% of a shard run's CPU before.
        #if arch(x86_64)
        Self.check(XXH3_128bits_update_dispatch(state, bytes.baseAddress, bytes.count), "XXH3_128bits_update")
        #else
        Self.check(XXH3_128bits_update(state, bytes.baseAddress, bytes.count), "XXH3_128bits_update")
        #endif
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything passed to `update` so far (the state stays usable).
    public func finalize() -> String {
        XXH3.hex(XXH3_128bits_digest(state))
    }

    /// The one checking call site for libxxhash: its calls fail only on a NULL state, a programming error.
    private static func check(_ code: XXH_errorcode, _ operation: String) {
        precondition(code == XXH_OK, "\(operation) failed")
    }
}
