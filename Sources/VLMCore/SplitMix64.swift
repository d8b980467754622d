/// SplitMix64 (Steele, Lea, Flood 2014): the project's one source of seeded randomness.
///
/// Fully specified, so every seeded output (loader orders, synthetic images, instruction phrasings, model
/// initialization) can be recomputed on any machine and in any language; Swift's randomized hashing and
/// `Int.random` are never used:
/// `state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
/// z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31)`.
///
/// ```swift
/// var rng = SplitMix64(seed: 7)
/// var order = Array(0..<10)
/// rng.shuffle(&order)
/// let coin = rng.below(2)
/// ```
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in `0..<bound` by rejection (no modulo bias): draws `x` until `x < 2^64 - (2^64 mod bound)`,
    /// then returns `x mod bound`.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        let limit = UInt64.max - (UInt64.max % b + 1) % b
        while true {
            let x = next()
            if x <= limit { return Int(x % b) }
        }
    }

    /// A uniform double in [0, 1) from the top 53 bits.
    public mutating func unit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// One element, uniformly.
    public mutating func pick<T>(_ items: [T]) -> T {
        items[below(items.count)]
    }

    /// Fisher–Yates, from the last element down: for i = n-1 ... 1, swap a[i] with a[below(i + 1)].
    public mutating func shuffle<C: MutableCollection & RandomAccessCollection>(_ items: inout C) where C.Index == Int {
        var i = items.endIndex - 1
        while i > items.startIndex {
            let j = items.startIndex + below(i - items.startIndex + 1)
            items.swapAt(i, j)
            i -= 1
        }
    }
}
