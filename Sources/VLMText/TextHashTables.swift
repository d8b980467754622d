/// Open-addressing hash tables with integer and byte-string keys: the tokenizer's hot lookups (merge pairs,
/// vocabulary pieces, the per-word cache) without `String` or `Array` keys.

/// `UInt64 → UInt64`, linear probing, multiplicative hash. `UInt64.max` marks an empty slot (never a valid key:
/// merge keys are `(left << 32) | right` with ids below `UInt32.max`).
package struct TextIntMap: Sendable {
    /// Interleaved (key, value) slots: one cache line holds both.
    @usableFromInline var slots: [UInt64]
    @usableFromInline var shift: UInt64
    @usableFromInline var mask: Int
    package private(set) var count = 0

    package init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [UInt64](repeating: .max, count: size * 2)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    @inlinable @inline(__always)
    func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Inserts or overwrites.
    package mutating func set(_ key: UInt64, _ value: UInt64) {
        if (count + 1) * 2 > mask + 1 { grow() }
        var i = slot(key)
        while true {
            if slots[2 * i] == .max {
                slots[2 * i] = key
                slots[2 * i + 1] = value
                count += 1
                return
            }
            if slots[2 * i] == key {
                slots[2 * i + 1] = value
                return
            }
            i = (i + 1) & mask
        }
    }

    @inlinable @inline(__always)
    package func get(_ key: UInt64) -> UInt64? {
        slots.withUnsafeBufferPointer { s in
            var i = slot(key)
            while true {
                let found = s[2 * i]
                if found == key { return s[2 * i + 1] }
                if found == .max { return nil }
                i = (i + 1) & mask
            }
        }
    }

    private mutating func grow() {
        var bigger = TextIntMap(capacity: mask + 1)
        for i in 0...mask where slots[2 * i] != .max { bigger.set(slots[2 * i], slots[2 * i + 1]) }
        self = bigger
    }
}

/// A 64-bit hash of bytes (8 at a time, multiply-xorshift mixing).
@inlinable @inline(__always)
package func textHashBytes(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(bytes.count)
    var i = 0
    let n = bytes.count
    while i + 8 <= n {
        let v = bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        h = (h ^ v) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
        i += 8
    }
    if i < n {
        var v: UInt64 = 0
        var s: UInt64 = 0
        while i < n {
            v |= UInt64(bytes[i]) << s
            s += 8
            i += 1
        }
        h = (h ^ v) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 29
    }
    h = (h ^ (h >> 32)) &* 0xD6E8_FEB8_6659_FD93
    return h ^ (h >> 32)
}

/// Byte string → (UInt32, UInt32), keys copied into one arena. Used for the vocabulary (token UTF-8 → id) and,
/// in a `TextSession`, the per-word cache (word bytes → range of ids).
package struct TextBytesMap: Sendable {
    @usableFromInline var slots: [Int32]
    @usableFromInline var hashes: [UInt64] = []
    @usableFromInline var keyStart: [Int32] = []
    @usableFromInline var keyLength: [Int32] = []
    @usableFromInline var valueA: [UInt32] = []
    @usableFromInline var valueB: [UInt32] = []
    @usableFromInline var arena: [UInt8] = []
    @usableFromInline var mask: Int

    package var count: Int { hashes.count }
    package var arenaBytes: Int { arena.count }

    package init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = Array(repeating: -1, count: size)
        mask = size - 1
    }

    package mutating func removeAll() {
        for i in 0..<slots.count { slots[i] = -1 }
        hashes.removeAll(keepingCapacity: true)
        keyStart.removeAll(keepingCapacity: true)
        keyLength.removeAll(keepingCapacity: true)
        valueA.removeAll(keepingCapacity: true)
        valueB.removeAll(keepingCapacity: true)
        arena.removeAll(keepingCapacity: true)
    }

    @inlinable
    package func get(_ key: UnsafeRawBufferPointer, hash: UInt64) -> (UInt32, UInt32)? {
        var i = Int(truncatingIfNeeded: hash) & mask
        return slots.withUnsafeBufferPointer { s -> (UInt32, UInt32)? in
            while true {
                let e = Int(s[i])
                if e < 0 { return nil }
                if hashes[e] == hash, Int(keyLength[e]) == key.count {
                    let start = Int(keyStart[e])
                    let same = arena.withUnsafeBytes { a in
                        key.count == 0 || memcmpEqual(a.baseAddress! + start, key.baseAddress!, key.count)
                    }
                    if same { return (valueA[e], valueB[e]) }
                }
                i = (i + 1) & mask
            }
        }
    }

    package func get(_ key: [UInt8]) -> (UInt32, UInt32)? {
        key.withUnsafeBytes { get($0, hash: textHashBytes($0)) }
    }

    /// Inserts or overwrites.
    package mutating func set(_ key: UnsafeRawBufferPointer, hash: UInt64, _ a: UInt32, _ b: UInt32) {
        if (hashes.count + 1) * 2 > slots.count { grow() }
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let e = Int(slots[i])
            if e < 0 { break }
            if hashes[e] == hash, Int(keyLength[e]) == key.count {
                let start = Int(keyStart[e])
                let same = arena.withUnsafeBytes { arenaBytes in
                    key.count == 0 || memcmpEqual(arenaBytes.baseAddress! + start, key.baseAddress!, key.count)
                }
                if same {
                    valueA[e] = a
                    valueB[e] = b
                    return
                }
            }
            i = (i + 1) & mask
        }
        slots[i] = Int32(hashes.count)
        hashes.append(hash)
        keyStart.append(Int32(arena.count))
        keyLength.append(Int32(key.count))
        arena.append(contentsOf: key)
        valueA.append(a)
        valueB.append(b)
    }

    package mutating func set(_ key: [UInt8], _ a: UInt32, _ b: UInt32 = 0) {
        key.withUnsafeBytes { set($0, hash: textHashBytes($0), a, b) }
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = Array(repeating: -1, count: size)
        mask = size - 1
        for e in 0..<hashes.count {
            var i = Int(truncatingIfNeeded: hashes[e]) & mask
            while slots[i] >= 0 { i = (i + 1) & mask }
            slots[i] = Int32(e)
        }
    }
}

@inlinable @inline(__always)
package func memcmpEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if a.loadUnaligned(fromByteOffset: i, as: UInt64.self) != b.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n {
        if a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

/// The BPE merge table: (left id, right id) → (rank << 32 | merged id). When every id and rank fits in 16 bits
/// (GPT-2, LLaMA/Mistral) slots are 32-bit key + 32-bit value, so the whole table stays in L2.
package struct PairTable: Sendable {
    @usableFromInline let compact: Bool
    @usableFromInline var small: [UInt32] = []
    @usableFromInline var wide: TextIntMap
    @usableFromInline var mask = 0
    @usableFromInline var shift: UInt32 = 0

    package init(entries: [(UInt32, UInt32, UInt32, UInt32)], maxID: Int) {
        // entries: (left, right, rank, new id); later entries overwrite earlier ones.
        compact = maxID < 0xFFFF && entries.count < 0xFFFF
        wide = TextIntMap(capacity: compact ? 1 : entries.count + 16)
        if compact {
            var size = 16
            while size < entries.count * 2 { size <<= 1 }
            small = [UInt32](repeating: .max, count: size * 2)
            mask = size - 1
            shift = UInt32(32 - size.trailingZeroBitCount)
            for (a, b, rank, id) in entries {
                let key = a << 16 | b
                var i = Int((key &* 0x9E37_79B1) >> shift)
                while small[2 * i] != .max, small[2 * i] != key { i = (i + 1) & mask }
                small[2 * i] = key
                small[2 * i + 1] = rank << 16 | id
            }
        } else {
            for (a, b, rank, id) in entries { wide.set(UInt64(a) << 32 | UInt64(b), UInt64(rank) << 32 | UInt64(id)) }
        }
    }

    @inlinable @inline(__always)
    package func get(_ a: UInt32, _ b: UInt32) -> UInt64? {
        if !compact { return wide.get(UInt64(a) << 32 | UInt64(b)) }
        let key = a << 16 | b
        return small.withUnsafeBufferPointer { s -> UInt64? in
            var i = Int((key &* 0x9E37_79B1) >> shift)
            while true {
                let found = s[2 * i]
                if found == key {
                    let v = s[2 * i + 1]
                    return UInt64(v >> 16) << 32 | UInt64(v & 0xFFFF)
                }
                if found == .max { return nil }
                i = (i + 1) & mask
            }
        }
    }
}
