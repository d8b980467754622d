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
    private var state: UInt64

    public init(seed: UInt64, key: String, kind: String) {
        let digest = Hashing.sha256("vlmdata-instruct/1\u{1F}\(seed)\u{1F}\(key)\u{1F}\(kind)")
        state = UInt64(digest.prefix(16), radix: 16)!
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in `0..<n` (rejection sampling, no modulo bias).
    public mutating func below(_ n: Int) -> Int {
        precondition(n > 0, "below(0)")
        let bound = UInt64(n)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let value = next()
            if value < limit { return Int(value % bound) }
        }
    }

    public mutating func pick<T>(_ items: [T]) -> T {
        items[below(items.count)]
    }

    /// Fisher–Yates from the end.
    public mutating func shuffled<T>(_ items: [T]) -> [T] {
        var out = items
        var i = out.count - 1
        while i > 0 {
            let j = below(i + 1)
            out.swapAt(i, j)
            i -= 1
        }
        return out
    }

    public mutating func chance(_ numerator: Int, in denominator: Int) -> Bool {
        below(denominator) < numerator
    }
}
