import VLMCore
import VLMIO

/// The generators' PRNG: SplitMix64 seeded from SHA-256 of (seed, image key, kind), so every image and kind draws
/// from its own stream and output never depends on processing order, Swift's per-process hash seeds or
/// `Int.random`.
///
/// Seeding: state = the first 8 bytes (big-endian) of SHA-256("vlmdata-instruct/1" ␟ seed ␟ key ␟ kind), with ␟ the
/// unit separator U+001F. Each `next()` is one SplitMix64 step (Steele, Lea & Flood 2014).
///
/// ```swift
/// var rng = InstructRandom(seed: 7, key: "train2017_000000000139", kind: "caption")
/// let prompt = rng.pick(Phrasings.brief)
/// ```
public struct InstructRandom: Sendable {
    private var rng: SplitMix64

    public init(seed: UInt64, key: String, kind: String) {
        let digest = Hashing.sha256("vlmdata-instruct/1\u{1F}\(seed)\u{1F}\(key)\u{1F}\(kind)")
        rng = SplitMix64(seed: UInt64(digest.prefix(16), radix: 16)!)
    }

    public mutating func next() -> UInt64 { rng.next() }

    /// A uniform integer in `0..<n` (rejection sampling, no modulo bias).
    public mutating func below(_ n: Int) -> Int { rng.below(n) }

    public mutating func pick<T>(_ items: [T]) -> T { rng.pick(items) }

    /// Fisher–Yates from the end.
    public mutating func shuffled<T>(_ items: [T]) -> [T] {
        var out = items
        rng.shuffle(&out)
        return out
    }

    public mutating func chance(_ numerator: Int, in denominator: Int) -> Bool {
        below(denominator) < numerator
    }
}
