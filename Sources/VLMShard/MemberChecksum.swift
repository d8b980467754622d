import VLMCore
import VLMIO

/// The check every read of a training-shard member makes: its bytes against the XXH3_64bits the index recorded
/// when the shard was written (`sample_parts.xxh3`). Used by `vlmdata show` (`ShardIndex`) and the loader.
///
/// ```swift
/// try MemberChecksum.check(bytes, expected: part.xxh3, shard: "shards/train-000003.tar",
///                          key: "k0001", member: "input_ids.npy", offset: 1536)
/// ```
public enum MemberChecksum {
    /// Throws `corrupt` naming the shard, the member and its offset when `bytes` do not hash to `expected`.
    /// A nil `expected` (an index written before checksums were recorded) checks nothing.
    public static func check(_ bytes: UnsafeRawBufferPointer, expected: UInt64?, shard: String, key: String,
                             member: String, offset: Int) throws {
        guard let expected else { return }
        let actual = XXH3.hash64(bytes)
        guard actual == expected else {
            throw mismatch(actual: actual, expected: expected, shard: shard, member: "\(key).\(member)", size: bytes.count,
                           offset: offset, fix: "restore the shard, or write it again with `vlmdata shard`")
        }
    }

    /// The error for a member whose bytes no longer hash to what the index recorded; `fix` says how to rewrite it.
    public static func mismatch(actual: UInt64, expected: UInt64, shard: String, member: String, size: Int, offset: Int,
                                fix: String) -> VLMError {
        VLMError(.corrupt, file: shard, record: "\(member) (\(size) bytes at offset \(offset))",
                 "xxh3 is \(XXH3.hex(actual)) but the index recorded \(XXH3.hex(expected)) when the shard was "
                 + "written: its bytes changed since (\(fix))")
    }

    /// What to do about a changed pixel shard member.
    public static let pixelFix = "restore the pixel shard from a copy: patchify does not rewrite members it has indexed"

    /// The error for a member the file no longer holds (a truncated or emptied shard).
    public static func truncated(shard: String, fileSize: Int, key: String, member: String, offset: Int, size: Int) -> VLMError {
        VLMError(.corrupt, file: shard, record: "\(key).\(member) (\(size) bytes at offset \(offset))",
                 "the shard is \(fileSize) bytes, so it ends before this member does: it was truncated after it was written")
    }
}
