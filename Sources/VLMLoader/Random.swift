import VLMCore
import VLMIO

/// The loader's seeding of `SplitMix64` (VLMCore): every stream is derived from named parts, so every order can be
/// recomputed on any machine and in any language.
///
/// ```swift
/// var rng = SplitMix64(derivedFrom: ["shards", "7", "0", fingerprint])
/// var order = Array(0..<10)
/// rng.shuffle(&order)
/// ```
extension SplitMix64 {
    /// Seeds from the first 8 bytes (little-endian) of SHA-256 over `vlmdata.loader.v1` and the parts, one per line.
    public init(derivedFrom parts: [String]) {
        let text = (["vlmdata.loader.v1"] + parts).joined(separator: "\n")
        let hex = Hashing.sha256(text)
        var seed: UInt64 = 0
        var bytes: [UInt8] = []
        var index = hex.startIndex
        for _ in 0..<8 {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        for (i, byte) in bytes.enumerated() { seed |= UInt64(byte) << (8 * UInt64(i)) }
        self.init(seed: seed)
    }

}
