import Foundation
import VLMCore

/// A byte-level BPE trainer (GPT-2 style): texts split like GPT-2's ByteLevel pre-tokenizer (special tokens cut out
/// first), then the most frequent adjacent pair merged until the vocabulary is full. Deterministic: words are
/// ordered by their bytes and ties go to the pair of lowest (left id, right id).
///
/// The result is a tokenizer.json that HF `tokenizers` loads and encodes with the same ids as `Tokenizer`:
/// special tokens first (ids 0…), the 256 byte characters next, then one token per merge; `<s>` is prepended as
/// BOS by a TemplateProcessing post-processor when it is among the special tokens (LLaVA's masking counts a BOS).
///
/// ```swift
/// let json = try BPETrainer(vocabSize: 400).train(texts: captions)
/// try json.write(to: URL(fileURLWithPath: "tokenizer.json"))
/// ```
public struct BPETrainer: Sendable {
    public static let defaultSpecialTokens = ["<s>", "</s>", "<unk>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]

    public var vocabSize: Int
    public var specialTokens: [String]
    /// Pairs seen fewer times than this are not merged.
    public var minFrequency: Int
    /// Prepend `<s>` to every encoding (a TemplateProcessing post-processor), as LLaMA does.
    public var addBOS: Bool

    public init(vocabSize: Int, specialTokens: [String] = BPETrainer.defaultSpecialTokens, minFrequency: Int = 2, addBOS: Bool = true) {
        self.vocabSize = vocabSize
        self.specialTokens = specialTokens
        self.minFrequency = minFrequency
        self.addBOS = addBOS
    }

    public struct Result: Sendable {
        /// The tokenizer.json bytes.
        public var json: Data
        public var vocabSize: Int
        public var merges: Int
    }

    /// `progress` gets one phase per merge learned (up to `vocabSize` less the base vocabulary).
    public func train(texts: [String], progress: any ProgressSink = SilentProgress()) throws -> Result {
        let base = specialTokens.count + 256
        guard vocabSize >= base else {
            throw VLMError(.invalidArgument, "--vocab-size \(vocabSize) is below the \(base) tokens every byte-level vocabulary holds (\(specialTokens.count) special + 256 bytes)")
        }
        guard Set(specialTokens).count == specialTokens.count else { throw VLMError(.invalidArgument, "special tokens repeat") }

        // Words and their counts.
        let matcher = AddedTokenMatcher(
            tokens: specialTokens.enumerated().map { AddedToken(id: UInt32($0.offset), content: $0.element, singleWord: false, lstrip: false, rstrip: false, normalized: false, special: true) },
            patterns: specialTokens.map { Array($0.utf8) })
        var counts: [[UInt8]: Int] = [:]
        for text in texts {
            var t = text
            t.withUTF8 { bytes in
                for segment in matcher.split(bytes) where segment.token == nil {
                    let piece = UnsafeBufferPointer(rebasing: bytes[segment.range])
                    var i = 0
                    while i < piece.count {
                        let end = TextScanners.gpt2(piece, i)
                        counts[Array(piece[i..<end]), default: 0] += 1
                        i = end
                    }
                }
            }
        }
        let words = counts.keys.sorted { $0.lexicographicallyPrecedes($1) }
        let wordCounts = words.map { counts[$0]! }

        // Vocabulary: special tokens, then the 256 byte characters in byte order.
        var tokens: [[UInt8]] = specialTokens.map { Array($0.utf8) }
        for b in 0..<256 { tokens.append(ByteLevelTable.utf8[b]) }
        var index: [[UInt8]: Int] = [:]
        for (i, t) in tokens.enumerated() where index[t] == nil { index[t] = i }
        let specialSet = Set(specialTokens.map { Array($0.utf8) })

        var symbols: [[Int]] = words.map { $0.map { specialTokens.count + Int($0) } }
        var pairCounts: [UInt64: Int] = [:]
        var where_: [UInt64: Set<Int>] = [:]
        func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(a) << 32 | UInt64(b) }
        for (w, s) in symbols.enumerated() where s.count > 1 {
            for k in 0..<(s.count - 1) {
                let p = key(s[k], s[k + 1])
                pairCounts[p, default: 0] += wordCounts[w]
                where_[p, default: []].insert(w)
            }
        }
        // Max-heap by count, then lowest pair key; stale entries are skipped.
        var heap = PairHeap()
        for (p, c) in pairCounts { heap.push(count: c, pair: p) }
        var merges: [(Int, Int)] = []
        var forbidden = Set<UInt64>()
        progress.start("tokenizer train (merges)", total: max(vocabSize - tokens.count, 0))
        while tokens.count < vocabSize, let (count, pair) = heap.pop() {
            guard pairCounts[pair] == count, count > 0, !forbidden.contains(pair) else { continue }
            if count < minFrequency { break }
            let a = Int(pair >> 32), b = Int(pair & 0xFFFF_FFFF)
            let merged = tokens[a] + tokens[b]
            if specialSet.contains(merged) {
                forbidden.insert(pair)
                continue
            }
            let newID: Int
            if let existing = index[merged] { newID = existing } else {
                newID = tokens.count
                tokens.append(merged)
                index[merged] = newID
            }
            merges.append((a, b))
            progress.advance(by: 1)
            var changed: [UInt64: Int] = [:]
            for w in (where_[pair] ?? []).sorted() {
                let old = symbols[w]
                let c = wordCounts[w]
                for k in 0..<(old.count - 1) { changed[key(old[k], old[k + 1]), default: 0] -= c }
                var new: [Int] = []
                new.reserveCapacity(old.count)
                var k = 0
                while k < old.count {
                    if k + 1 < old.count, old[k] == a, old[k + 1] == b {
                        new.append(newID)
                        k += 2
                    } else {
                        new.append(old[k])
                        k += 1
                    }
                }
                symbols[w] = new
                if new.count > 1 {
                    for k in 0..<(new.count - 1) {
                        let p = key(new[k], new[k + 1])
                        changed[p, default: 0] += c
                        where_[p, default: []].insert(w)
                    }
                }
            }
            for (p, delta) in changed.sorted(by: { $0.key < $1.key }) where delta != 0 {
                let n = pairCounts[p, default: 0] + delta
                pairCounts[p] = n
                if n > 0 { heap.push(count: n, pair: p) }
            }
            pairCounts[pair] = 0
        }
        progress.finish("\(merges.count) merges, \(tokens.count) tokens")
        return Result(json: try tokenizerJSON(tokens: tokens, merges: merges), vocabSize: tokens.count, merges: merges.count)
    }

    private func tokenizerJSON(tokens: [[UInt8]], merges: [(Int, Int)]) throws -> Data {
        func str(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where vocab[str(t)] == nil { vocab[str(t)] = i }
        let added: [[String: Any]] = specialTokens.enumerated().map { i, t in
            ["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true]
        }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        var post: Any = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true] as [String: Any]
        if addBOS, let bos = specialTokens.firstIndex(of: "<s>") {
            post = [
                "type": "TemplateProcessing",
                "single": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                "pair": [["SpecialToken": ["id": "<s>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                         ["SpecialToken": ["id": "<s>", "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
                "special_tokens": ["<s>": ["id": "<s>", "ids": [bos], "tokens": ["<s>"]]],
            ] as [String: Any]
        }
        let model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
            "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges.map { [str(tokens[$0.0]), str(tokens[$0.1])] },
        ]
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": NSNull(), "pre_tokenizer": byteLevel, "post_processor": post,
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true] as [String: Any],
            "model": model,
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
    }
}

/// Max-heap of (count, pair): higher count first, then the lower pair key.
struct PairHeap {
    var items: [(Int, UInt64)] = []

    static func before(_ x: (Int, UInt64), _ y: (Int, UInt64)) -> Bool {
        x.0 != y.0 ? x.0 > y.0 : x.1 < y.1
    }

    mutating func push(count: Int, pair: UInt64) {
        items.append((count, pair))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !Self.before(items[i], items[parent]) { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (Int, UInt64)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var best = i
            if l < items.count, Self.before(items[l], items[best]) { best = l }
            if r < items.count, Self.before(items[r], items[best]) { best = r }
            if best == i { break }
            items.swapAt(i, best)
            i = best
        }
        return top
    }
}
