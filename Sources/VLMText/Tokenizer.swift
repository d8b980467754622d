import Foundation
import VLMCore
import VLMIO

/// A HF `tokenizer.json` loaded into its pipeline: added tokens → normalizer → pre-tokenizer → BPE model →
/// post-processor, and the decoder for the way back. Immutable and shareable between threads; encoding goes
/// through a `TokenizerSession` (one per thread), which owns the per-word cache.
///
/// ```swift
/// let tokenizer = try Tokenizer(contentsOf: "tokenizers/gpt2/tokenizer.json")
/// let session = tokenizer.makeSession()
/// let ids = session.encode("A cat on a mat.")      // [32, 3797, 319, 257, 2603, 13]
/// let text = tokenizer.decode(ids)                 // "A cat on a mat."
/// ```
public final class Tokenizer: Sendable {
    public let path: String
    /// sha256 of the tokenizer.json bytes.
    public let sha256: String
    package let normalizer: (any Normalizer)?
    package let preTokenizer: (any PreTokenizer)?
    package let model: BPEModel
    package let postProcessor: (any PostProcessor)?
    package let decoder: (any TokenDecoder)?
    package let addedTokens: [AddedToken]
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher
    let addedById: [UInt32: AddedToken]
    let truncation: (maxLength: Int, left: Bool)?
    struct Padding: Sendable {
        var fixed: Int?
        var multipleOf: Int
        var id: Int32
        var left: Bool
    }
    let padding: Padding?

    public convenience init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read tokenizer.json")
        }
        try self.init(data: data, path: path)
    }

    public init(data: Data, path: String = "tokenizer.json") throws {
        self.path = path
        sha256 = Hashing.sha256(data)
        let tables = FastModelTables.extract(data)
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: tables?.rest ?? data) } catch {
            throw VLMError.badInput(file: path, "not valid JSON: \(error.localizedDescription)")
        }
        guard let dict = parsed as? [String: Any] else { throw VLMError.badInput(file: path, "top level is not an object") }
        let root = JSONObject(dict, path: "tokenizer", file: path)

        model = try makeModel(try root.object("model"), tables: tables)
        normalizer = try root.optionalObject("normalizer").map(makeNormalizer)
        preTokenizer = try root.optionalObject("pre_tokenizer").map(makePreTokenizer)
        let modelForIDs = model
        postProcessor = try root.optionalObject("post_processor").flatMap { try makePostProcessor($0, tokenID: modelForIDs.tokenID) }
        decoder = try root.optionalObject("decoder").map(makeDecoder)

        if let p = root.optionalObject("padding") {
            // HF pads a single encoding to the fixed length, or to its own length (BatchLongest), rounded up to
            // pad_to_multiple_of.
            var fixed: Int? = nil
            if let strategy = p.dict["strategy"] as? [String: Any] {
                guard let n = (strategy["Fixed"] as? NSNumber)?.intValue else { throw p.error("unknown padding strategy") }
                fixed = n
            } else if p.dict["strategy"] as? String != "BatchLongest" {
                throw p.error("unknown padding strategy")
            }
            padding = Padding(fixed: fixed, multipleOf: p.int("pad_to_multiple_of") ?? 0, id: Int32(p.int("pad_id") ?? 0),
                              left: p.string("direction", default: "Right") == "Left")
        } else {
            padding = nil
        }
        if let t = root.optionalObject("truncation") {
            guard let maxLength = t.int("max_length") else { throw t.error("truncation without max_length") }
            truncation = (maxLength, t.string("direction", default: "Right") == "Left")
        } else {
            truncation = nil
        }

        var tokens: [AddedToken] = []
        let addedJSON = (root.dict["added_tokens"] as? [Any]) == nil ? [] : try root.objects("added_tokens")
        for item in addedJSON {
            let content = try item.string("content")
            let special = item.bool("special", default: false)
            let id: UInt32
            if let explicit = item.int("id") { id = UInt32(explicit) } else if let known = model.tokenID(content) { id = known } else {
                throw item.error("added token '\(content)' has no id")
            }
            tokens.append(AddedToken(id: id, content: content, singleWord: item.bool("single_word", default: false),
                                     lstrip: item.bool("lstrip", default: false), rstrip: item.bool("rstrip", default: false),
                                     normalized: item.bool("normalized", default: !special), special: special))
        }
        addedTokens = tokens
        // HF orders the matching set as special tokens first, then the others.
        let ordered = tokens.filter(\.special) + tokens.filter { !$0.special }
        let raw = ordered.filter { !$0.normalized }
        let normalized = ordered.filter(\.normalized)
        rawMatcher = AddedTokenMatcher(tokens: raw, patterns: raw.map { Array($0.content.utf8) })
        let norm = normalizer
        normalizedMatcher = AddedTokenMatcher(tokens: normalized, patterns: normalized.map { token in
            let bytes = Array(token.content.utf8)
            return norm?.normalize(bytes) ?? bytes
        })
        var byId: [UInt32: AddedToken] = [:]
        for t in tokens { byId[t.id] = t }
        addedById = byId
    }

    public func makeSession() -> TokenizerSession { TokenizerSession(self) }

    /// Size of the vocabulary including added tokens (HF `get_vocab_size(with_added_tokens=True)`).
    public var vocabSize: Int {
        var ids = Set<UInt32>()
        for t in addedTokens where model.idToToken.count <= Int(t.id) || model.idToToken[Int(t.id)] == nil { ids.insert(t.id) }
        return model.vocabSize + ids.count
    }

    /// The id of a token string (added tokens first, then the model vocabulary).
    public func tokenID(_ token: String) -> Int32? {
        if let t = addedTokens.first(where: { $0.content == token }) { return Int32(t.id) }
        return model.tokenID(token).map { Int32($0) }
    }

    /// The token string of an id, if any.
    public func token(_ id: Int32) -> String? {
        tokenBytes(id).map { String(decoding: $0, as: UTF8.self) }
    }

    func tokenBytes(_ id: Int32) -> [UInt8]? {
        guard id >= 0 else { return nil }
        if let t = addedById[UInt32(id)] { return Array(t.content.utf8) }
        guard Int(id) < model.idToToken.count else { return nil }
        return model.idToToken[Int(id)]
    }

    /// HF `decode`: ids → tokens (special added tokens skipped by default, unknown ids skipped) → decoder chain →
    /// joined (tokens joined by spaces when there is no decoder).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = true) -> String {
        var tokens: [[UInt8]] = []
        tokens.reserveCapacity(ids.count)
        for id in ids {
            if skipSpecialTokens, id >= 0, let t = addedById[UInt32(id)], t.special { continue }
            if let bytes = tokenBytes(id) { tokens.append(bytes) }
        }
        guard let decoder else {
            var out: [UInt8] = []
            for (i, t) in tokens.enumerated() {
                if i > 0 { out.append(0x20) }
                out.append(contentsOf: t)
            }
            return String(decoding: out, as: UTF8.self)
        }
        return String(decoding: decoder.decode(tokens).flatMap { $0 }, as: UTF8.self)
    }
}

/// Encodes text with a `Tokenizer` on one thread, keeping the per-word BPE cache and scratch buffers.
public final class TokenizerSession {
    public let tokenizer: Tokenizer
    var scratch = BPEScratch()

    init(_ tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// HF `encode(text, add_special_tokens)`.ids.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        var text = text
        return text.withUTF8 { encode(bytes: $0, addSpecialTokens: addSpecialTokens) }
    }

    /// Encodes valid UTF-8 bytes.
    public func encode(bytes: UnsafeBufferPointer<UInt8>, addSpecialTokens: Bool = true) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3 + 4)
        appendIDs(bytes, into: &out)
        let t = tokenizer
        if let truncation = t.truncation {
            let limit = max(0, truncation.maxLength - (addSpecialTokens ? (t.postProcessor?.addedCount ?? 0) : 0))
            if out.count > limit {
                out = truncation.left ? Array(out.suffix(limit)) : Array(out.prefix(limit))
            }
        }
        if addSpecialTokens, let post = t.postProcessor { out = post.process(out) }
        if let padding = t.padding {
            var target = padding.fixed ?? out.count
            if padding.multipleOf > 0, target % padding.multipleOf != 0 { target += padding.multipleOf - target % padding.multipleOf }
            if target > out.count {
                let pad = [Int32](repeating: padding.id, count: target - out.count)
                out = padding.left ? pad + out : out + pad
            }
        }
        return out
    }

    /// The ids of the text alone (no post-processor, no truncation).
    public func appendIDs(_ bytes: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        let t = tokenizer
        if bytes.isEmpty { return }
        if t.rawMatcher.isEmpty {
            normalizeAndContinue(bytes, atStart: true, into: &out)
            return
        }
        for segment in t.rawMatcher.split(bytes) {
            if let id = segment.token {
                out.append(Int32(bitPattern: id))
            } else {
                normalizeAndContinue(UnsafeBufferPointer(rebasing: bytes[segment.range]), atStart: segment.range.lowerBound == 0, into: &out)
            }
        }
    }

    private func normalizeAndContinue(_ piece: UnsafeBufferPointer<UInt8>, atStart: Bool, into out: inout [Int32]) {
        let t = tokenizer
        guard let normalizer = t.normalizer else { return splitNormalized(piece, atStart: atStart, into: &out) }
        let normalized = normalizer.normalize(Array(piece))
        normalized.withUnsafeBufferPointer { splitNormalized($0, atStart: atStart, into: &out) }
    }

    private func splitNormalized(_ piece: UnsafeBufferPointer<UInt8>, atStart: Bool, into out: inout [Int32]) {
        if piece.isEmpty { return }
        let t = tokenizer
        if t.normalizedMatcher.isEmpty { return preTokenize(piece, atStart: atStart, into: &out) }
        for segment in t.normalizedMatcher.split(piece) {
            if let id = segment.token {
                out.append(Int32(bitPattern: id))
            } else {
                preTokenize(UnsafeBufferPointer(rebasing: piece[segment.range]), atStart: atStart && segment.range.lowerBound == 0, into: &out)
            }
        }
    }

    private func preTokenize(_ piece: UnsafeBufferPointer<UInt8>, atStart: Bool, into out: inout [Int32]) {
        let model = tokenizer.model
        let flags = PieceFlags(atStart: atStart, byteLevel: false)
        guard let pre = tokenizer.preTokenizer else {
            return model.tokenizeWhole(piece, scratch: &scratch, into: &out)
        }
        withoutActuallyEscaping({ (word: UnsafeBufferPointer<UInt8>, f: PieceFlags) in
            model.tokenize(word, byteLevel: f.byteLevel, scratch: &self.scratch, into: &out)
        }) { emit in
            try? pre.split(piece, flags, emit)
        }
    }
}
