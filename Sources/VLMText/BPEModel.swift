import Foundation
import VLMCore

/// The tokenizer.json `model`. Only BPE is built; the factory names any other type as unsupported.
package func makeModel(_ json: JSONObject, tables: FastModelTables? = nil) throws -> BPEModel {
    let type = json.type ?? (json.dict["merges"] != nil ? "BPE" : nil)
    guard type == "BPE" else {
        throw json.error("unsupported model type '\(type ?? "(none)")' (supported: BPE)")
    }
    return try BPEModel(json: json, tables: tables)
}

/// Per-thread scratch space and the per-word cache of a `BPEModel` (not shared between threads).
package struct BPEScratch {
    var ids: [UInt32] = []
    var next: [Int32] = []
    var prev: [Int32] = []
    var heap: [UInt64] = []
    var bytes: [UInt8] = []
    var cache = TextBytesMap(capacity: 1 << 14)
    var cacheIds: [UInt32] = []
    static let cacheLimit = 1 << 17

    package init() {}
}

/// Byte-pair encoding with HF's exact rules: per-character symbols (with `continuing_subword_prefix` /
/// `end_of_word_suffix`), `byte_fallback` to `<0xHH>`, `unk_token` with `fuse_unk`, `ignore_merges`, then merges
/// applied lowest rank first (ties: leftmost). Symbol ids are integers and the merge table is keyed by
/// `(left << 32) | right`.
package final class BPEModel: Sendable {
    package let vocab: TextBytesMap
    /// Token text by id (model vocabulary only).
    package let idToToken: [[UInt8]?]
    package let vocabSize: Int
    let merges: PairTable
    package let mergeCount: Int
    /// id of the one-character token of each byte's byte-level character, or -1.
    let byteLevelIds: [Int32]
    /// id of `<0xHH>` for each byte, or -1.
    let fallbackIds: [Int32]
    /// id of the one-character token of each ASCII byte (as itself), or -1.
    let asciiIds: [Int32]
    let byteFallback: Bool
    package let unkId: UInt32?
    let fuseUnk: Bool
    let prefix: [UInt8]?
    let suffix: [UInt8]?
    let ignoreMerges: Bool
    /// True when no token holds "▁" (U+2581) right after another character and "▁" itself is a token: then no merge
    /// can cross the start of a "▁"-word, so a long SentencePiece-style piece is split there and each part goes
    /// through the per-word cache, with the same result.
    package let splitsAtMetaspace: Bool

    init(json: JSONObject, tables: FastModelTables? = nil) throws {
        if let dropout = json.double("dropout"), dropout > 0 {
            throw json.error("BPE dropout \(dropout) is not supported (encoding would not be deterministic)")
        }
        // Vocabulary and merges come from the byte-exact scan of the file (a `[String: Any]` would merge tokens that
        // are canonically equivalent but differ in bytes, e.g. "é" and "e\u{301}": Swift String keys compare equal).
        guard let tables else {
            throw json.error("model.vocab must be an object of token → non-negative integer id and model.merges an array of \"a b\" strings or [a, b] pairs")
        }
        let vocabPairs = tables.vocab
        let mergePairs = tables.merges
        var vocab = TextBytesMap(capacity: vocabPairs.count)
        var maxId = -1
        for (bytes, id) in vocabPairs {
            vocab.set(bytes, UInt32(id))
            maxId = max(maxId, id)
        }
        var idToToken = [[UInt8]?](repeating: nil, count: maxId + 1)
        for (bytes, id) in vocabPairs { idToToken[id] = bytes }
        self.vocab = vocab
        self.idToToken = idToToken
        vocabSize = vocab.count

        prefix = json.string("continuing_subword_prefix", default: nil).flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        suffix = json.string("end_of_word_suffix", default: nil).flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        byteFallback = json.bool("byte_fallback", default: false)
        fuseUnk = json.bool("fuse_unk", default: false)
        ignoreMerges = json.bool("ignore_merges", default: false)
        if let unk = json.string("unk_token", default: nil) {
            guard let (id, _) = vocab.get(Array(unk.utf8)) else {
                throw json.error("unk_token '\(unk)' is not in the vocabulary")
            }
            unkId = id
        } else {
            unkId = nil
        }

        var byteLevelIds = [Int32](repeating: -1, count: 256)
        var fallbackIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let (id, _) = vocab.get(ByteLevelTable.utf8[b]) { byteLevelIds[b] = Int32(id) }
            let name = "<0x" + String(format: "%02X", b) + ">"
            if let (id, _) = vocab.get(Array(name.utf8)) { fallbackIds[b] = Int32(id) }
        }
        self.byteLevelIds = byteLevelIds
        let meta: [UInt8] = [0xE2, 0x96, 0x81]
        var safe = prefix == nil && suffix == nil && !ignoreMerges && vocab.get(meta) != nil
        if safe {
            outer: for case let token? in idToToken where token.count > 3 {
                var i = 3
                while i + 3 <= token.count {
                    if token[i] == 0xE2, token[i + 1] == 0x96, token[i + 2] == 0x81,
                       !(token[i - 3] == 0xE2 && token[i - 2] == 0x96 && token[i - 1] == 0x81) {
                        safe = false
                        break outer
                    }
                    i += 1
                }
            }
        }
        splitsAtMetaspace = safe
        asciiIds = (0..<128).map { b in vocab.get([UInt8(b)]).map { Int32($0.0) } ?? -1 }
        self.fallbackIds = fallbackIds

        // Merges: "a b" strings or [a, b] pairs; rank = line index; a duplicate pair keeps the later line.
        var mergeEntries: [(UInt32, UInt32, UInt32, UInt32)] = []
        mergeEntries.reserveCapacity(mergePairs.count)
        let prefixLength = prefix?.count ?? 0
        for (rank, (aBytes, bBytes)) in mergePairs.enumerated() {
            func name(_ x: [UInt8]) -> String { String(decoding: x, as: UTF8.self) }
            guard let (idA, _) = vocab.get(aBytes) else { throw json.error("merge \(rank): token '\(name(aBytes))' is not in the vocabulary") }
            guard let (idB, _) = vocab.get(bBytes) else { throw json.error("merge \(rank): token '\(name(bBytes))' is not in the vocabulary") }
            let merged = aBytes + bBytes.dropFirst(min(prefixLength, bBytes.count))
            guard let (newId, _) = vocab.get(merged) else {
                throw json.error("merge \(rank): '\(name(merged))' is not in the vocabulary")
            }
            mergeEntries.append((idA, idB, UInt32(rank), newId))
        }
        merges = PairTable(entries: mergeEntries, maxID: maxId)
        mergeCount = mergePairs.count
    }

    package func tokenID(_ token: String) -> UInt32? {
        vocab.get(Array(token.utf8))?.0
    }

    /// Appends the ids of a piece the model sees whole (no pre-tokenizer): split before each "▁"-word when that
    /// cannot change the result (`splitsAtMetaspace`), so the parts hit the per-word cache.
    @inline(__always)
    package func tokenizeWhole(_ word: UnsafeBufferPointer<UInt8>, scratch: inout BPEScratch, into out: inout [Int32]) {
        guard splitsAtMetaspace, word.count > 3 else { return tokenize(word, byteLevel: false, scratch: &scratch, into: &out) }
        var start = 0
        var i = 1
        let n = word.count
        while i + 3 <= n {
            if word[i] == 0xE2, word[i + 1] == 0x96, word[i + 2] == 0x81,
               !(i >= 3 && word[i - 3] == 0xE2 && word[i - 2] == 0x96 && word[i - 1] == 0x81) {
                tokenize(UnsafeBufferPointer(rebasing: word[start..<i]), byteLevel: false, scratch: &scratch, into: &out)
                start = i
                i += 3
            } else {
                i += 1
            }
        }
        tokenize(UnsafeBufferPointer(rebasing: word[start..<n]), byteLevel: false, scratch: &scratch, into: &out)
    }

    /// Appends the ids of one pre-token.
    @inline(__always)
    package func tokenize(_ word: UnsafeBufferPointer<UInt8>, byteLevel: Bool, scratch: inout BPEScratch, into out: inout [Int32]) {
        if word.isEmpty { return }
        let raw = UnsafeRawBufferPointer(word)
        let hash = textHashBytes(raw) ^ (byteLevel ? 0x5BD1_E995_0000_0001 : 0)
        if let (start, count) = scratch.cache.get(raw, hash: hash) {
            let s = Int(start)
            for k in 0..<Int(count) { out.append(Int32(bitPattern: scratch.cacheIds[s + k])) }
            return
        }
        let outStart = out.count
        compute(word, byteLevel: byteLevel, scratch: &scratch, into: &out)
        if scratch.cache.count >= BPEScratch.cacheLimit {
            scratch.cache.removeAll()
            scratch.cacheIds.removeAll(keepingCapacity: true)
        }
        let start = UInt32(scratch.cacheIds.count)
        for k in outStart..<out.count { scratch.cacheIds.append(UInt32(bitPattern: out[k])) }
        scratch.cache.set(raw, hash: hash, start, UInt32(out.count - outStart))
    }

    private func compute(_ word: UnsafeBufferPointer<UInt8>, byteLevel: Bool, scratch: inout BPEScratch, into out: inout [Int32]) {
        scratch.ids.removeAll(keepingCapacity: true)
        // Fast path: byte-level word, no prefix/suffix, every byte's character in the vocabulary.
        var done = false
        if byteLevel, prefix == nil, suffix == nil {
            done = true
            for b in word {
                let id = byteLevelIds[Int(b)]
                if id < 0 { done = false; break }
                scratch.ids.append(UInt32(id))
            }
            if done, ignoreMerges, word.count > 1 {
                var text: [UInt8] = []
                for b in word { text.append(contentsOf: ByteLevelTable.utf8[Int(b)]) }
                if let (id, _) = vocab.get(text) {
                    out.append(Int32(bitPattern: id))
                    return
                }
            }
        }
        if !done {
            scratch.ids.removeAll(keepingCapacity: true)
            if byteLevel {
                var text: [UInt8] = []
                text.reserveCapacity(word.count * 2)
                for b in word { text.append(contentsOf: ByteLevelTable.utf8[Int(b)]) }
                text.withUnsafeBufferPointer { symbolize($0, scratch: &scratch) }
                if ignoreMerges, let (id, _) = vocab.get(text) {
                    out.append(Int32(bitPattern: id))
                    return
                }
            } else {
                if ignoreMerges, let (id, _) = vocab.get(UnsafeRawBufferPointer(word), hash: textHashBytes(UnsafeRawBufferPointer(word))) {
                    out.append(Int32(bitPattern: id))
                    return
                }
                symbolize(word, scratch: &scratch)
            }
        }
        mergeAll(scratch: &scratch)
        for id in scratch.ids where id != .max { out.append(Int32(bitPattern: id)) }
    }

    /// HF `merge_word` before merging: one symbol per character, byte fallback, unk handling.
    private func symbolize(_ word: UnsafeBufferPointer<UInt8>, scratch: inout BPEScratch) {
        var pendingUnk = false
        var i = 0
        while i < word.count {
            let n = utf8Length(word[i])
            let end = i + n
            var found: UInt32?
            var piece: UnsafeRawBufferPointer
            if prefix == nil, suffix == nil {
                if n == 1, asciiIds[Int(word[i])] >= 0 {
                    if pendingUnk, let unkId { scratch.ids.append(unkId) }
                    pendingUnk = false
                    scratch.ids.append(UInt32(asciiIds[Int(word[i])]))
                    i = end
                    continue
                }
                piece = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(word)[i..<end])
                found = vocab.get(piece, hash: textHashBytes(piece))?.0
                if found == nil, byteFallback, appendFallback(piece, scratch: &scratch) {
                    i = end
                    continue
                }
            } else {
                scratch.bytes.removeAll(keepingCapacity: true)
                if let prefix, i > 0 { scratch.bytes.append(contentsOf: prefix) }
                scratch.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: word[i..<end]))
                if let suffix, end == word.count { scratch.bytes.append(contentsOf: suffix) }
                let bytes = scratch.bytes
                found = bytes.withUnsafeBytes { vocab.get($0, hash: textHashBytes($0))?.0 }
                if found == nil, byteFallback, bytes.withUnsafeBytes({ appendFallback($0, scratch: &scratch) }) {
                    i = end
                    continue
                }
            }
            if let id = found {
                if pendingUnk, let unkId { scratch.ids.append(unkId) }
                pendingUnk = false
                scratch.ids.append(id)
            } else if let unkId {
                if pendingUnk, !fuseUnk { scratch.ids.append(unkId) }
                pendingUnk = true
            }
            // No unk_token: the character is dropped.
            i = end
        }
        if pendingUnk, let unkId { scratch.ids.append(unkId) }
    }

    /// Appends `<0xHH>` for every byte if all exist (without flushing a pending unk, as HF).
    private func appendFallback(_ bytes: UnsafeRawBufferPointer, scratch: inout BPEScratch) -> Bool {
        for b in bytes where fallbackIds[Int(b)] < 0 { return false }
        for b in bytes { scratch.ids.append(UInt32(fallbackIds[Int(b)])) }
        return true
    }

    /// Applies merges lowest rank first, ties leftmost, as HF `Word::merge_all` (a min-heap of rank << 32 | pos).
    private func mergeAll(scratch: inout BPEScratch) {
        let n = scratch.ids.count
        if n < 2 { return }
        if n <= 256 { return mergeShort(scratch: &scratch) }
        scratch.next.removeAll(keepingCapacity: true)
        scratch.prev.removeAll(keepingCapacity: true)
        scratch.heap.removeAll(keepingCapacity: true)
        for i in 0..<n {
            scratch.next.append(i + 1 < n ? Int32(i + 1) : -1)
            scratch.prev.append(Int32(i - 1))
        }
        let merges = self.merges
        for i in 0..<(n - 1) {
            if let m = merges.get(scratch.ids[i], scratch.ids[i + 1]) {
                heapPush(&scratch.heap, (m & 0xFFFF_FFFF_0000_0000) | UInt64(i))
            }
        }
        while let top = heapPop(&scratch.heap) {
            let pos = Int(top & 0xFFFF_FFFF)
            let rank = top >> 32
            let left = scratch.ids[pos]
            if left == .max { continue }
            let nx = Int(scratch.next[pos])
            if nx < 0 { continue }
            guard let m = merges.get(left, scratch.ids[nx]), m >> 32 == rank else { continue }
            let newId = UInt32(truncatingIfNeeded: m)
            scratch.ids[pos] = newId
            scratch.ids[nx] = .max
            let after = scratch.next[nx]
            scratch.next[pos] = after
            if after >= 0 { scratch.prev[Int(after)] = Int32(pos) }
            let pv = Int(scratch.prev[pos])
            if pv >= 0, let m2 = merges.get(scratch.ids[pv], newId) {
                heapPush(&scratch.heap, (m2 & 0xFFFF_FFFF_0000_0000) | UInt64(pv))
            }
            if after >= 0, let m3 = merges.get(newId, scratch.ids[Int(after)]) {
                heapPush(&scratch.heap, (m3 & 0xFFFF_FFFF_0000_0000) | UInt64(pos))
            }
        }
    }
}

extension BPEModel {
    /// The same merge order for short words without a heap: ranks of adjacent pairs in an array, the lowest
    /// (leftmost on ties) merged and the array compacted, as tiktoken does. Equivalent to the heap: at every step
    /// both pick the lowest (rank, position) among the current pairs.
    @inline(__always)
    func mergeShort(scratch: inout BPEScratch) {
        let merges = self.merges
        var n = scratch.ids.count
        scratch.heap.removeAll(keepingCapacity: true) // reused as the rank array: (rank << 32 | new id) or max
        for i in 0..<(n - 1) {
            scratch.heap.append(merges.get(scratch.ids[i], scratch.ids[i + 1]) ?? .max)
        }
        scratch.ids.withUnsafeMutableBufferPointer { ids in
            scratch.heap.withUnsafeMutableBufferPointer { ranks in
                while n > 1 {
                    var best = UInt64.max
                    var at = -1
                    for i in 0..<(n - 1) where ranks[i] < best {
                        best = ranks[i]
                        at = i
                    }
                    if at < 0 { break }
                    let newId = UInt32(truncatingIfNeeded: best)
                    ids[at] = newId
                    // Remove symbol at+1 and the rank of pair (at+1, at+2).
                    var k = at + 1
                    while k < n - 1 {
                        ids[k] = ids[k + 1]
                        k += 1
                    }
                    k = at + 1
                    while k < n - 2 {
                        ranks[k] = ranks[k + 1]
                        k += 1
                    }
                    n -= 1
                    if at + 1 < n {
                        ranks[at] = merges.get(newId, ids[at + 1]) ?? .max
                    }
                    if at > 0 {
                        ranks[at - 1] = merges.get(ids[at - 1], newId) ?? .max
                    }
                }
            }
        }
        scratch.ids.removeLast(scratch.ids.count - n)
    }
}

@inline(__always)
func heapPush(_ heap: inout [UInt64], _ value: UInt64) {
    heap.append(value)
    var i = heap.count - 1
    while i > 0 {
        let parent = (i - 1) >> 1
        if heap[parent] <= value { break }
        heap[i] = heap[parent]
        i = parent
    }
    heap[i] = value
}

@inline(__always)
func heapPop(_ heap: inout [UInt64]) -> UInt64? {
    guard let last = heap.popLast() else { return nil }
    if heap.isEmpty { return last }
    let top = heap[0]
    let n = heap.count
    var i = 0
    while true {
        let l = 2 * i + 1
        if l >= n { break }
        var c = l
        if l + 1 < n, heap[l + 1] < heap[l] { c = l + 1 }
        if heap[c] >= last { break }
        heap[i] = heap[c]
        i = c
    }
    heap[i] = last
    return top
}
