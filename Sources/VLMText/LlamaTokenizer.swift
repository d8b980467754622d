import Foundation
import VLMCore
import VLMIO

/// transformers' slow `LlamaTokenizer` (`use_fast=False`, what LLaVA trains with) over a SentencePiece
/// `tokenizer.model`: special tokens written in the text (`</s>`, `<s>`, `<unk>` and the config's added tokens)
/// are matched whole and the pieces between them are encoded separately, in one of two modes:
///
/// - `legacy: true`: each piece is `sentencepiece.encode(piece)`, so each gets the dummy "▁" prefix
///   (`</s>USER` → `</s>`, `▁US`, `ER`).
/// - `legacy: false`: "▁" in the text becomes " ", one "▁" is put before the whole text, the model runs
///   without its dummy prefix, and a piece that starts with a space is encoded after `<unk>` whose pieces are
///   then dropped (`</s>USER` → `</s>`, `USER`).
///
/// Settings come from a `tokenizer_config.json` beside the model when there is one (`legacy`, `add_bos_token`,
/// `add_eos_token`, `add_prefix_space`, `added_tokens_decoder`, the special tokens); `legacy` given here wins.
/// Without one, transformers' defaults: legacy true, BOS added, no EOS.
public final class LlamaTokenizer: TextTokenizer {
    struct Added: Sendable {
        var id: Int32
        var content: String
        var lstrip: Bool
        var rstrip: Bool
        var singleWord: Bool
        var special: Bool
    }

    public let path: String
    public let sha256: String
    public let model: SentencePieceModel
    public let legacy: Bool
    public let addBOS: Bool
    public let addEOS: Bool
    public let addPrefixSpace: Bool
    public let bosID: Int32?
    public let eosID: Int32?
    public let unkID: Int32?
    public let specialIDs: Set<Int32>
    let added: [Added]
    let addedByContent: [String: Added]
    let addedByID: [Int32: Added]
    /// Patterns for the trie split, longest first per first character.
    let patterns: [[UInt8]]
    let unkToken: String
    let unkTokenLength: Int
    let underlineID: Int32?

    public var legacyMode: Bool? { legacy }
    public var vocabSize: Int { max(model.vocabSize, (added.map { Int($0.id) }.max() ?? -1) + 1) }

    public convenience init(contentsOf path: String, legacy: Bool? = nil) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read tokenizer.model")
        }
        try self.init(modelData: data, path: path, legacy: legacy)
    }

    public init(modelData: Data, path: String, legacy legacyOverride: Bool? = nil) throws {
        self.path = path
        let configPath = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("tokenizer_config.json").path
        var config: [String: Any] = [:]
        if let data = FileManager.default.contents(atPath: configPath) {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw VLMError.badInput(file: configPath, "not a JSON object")
            }
            config = object
        }
        func flag(_ key: String, _ fallback: Bool) throws -> Bool {
            guard let value = config[key], !(value is NSNull) else { return fallback }
            guard let b = value as? Bool else { throw VLMError.badInput(file: configPath, "'\(key)' is not true or false") }
            return b
        }
        legacy = try legacyOverride ?? flag("legacy", true)
        addBOS = try flag("add_bos_token", true)
        addEOS = try flag("add_eos_token", false)
        addPrefixSpace = try flag("add_prefix_space", true)
        // Non-legacy: transformers rewrites the NormalizerSpec with add_dummy_prefix = false.
        model = try SentencePieceModel(data: modelData, path: path, addDummyPrefix: legacy ? nil : false)

        func tokenContent(_ key: String, _ fallback: String?) -> String? {
            switch config[key] {
            case let s as String: return s
            case let d as [String: Any]: return d["content"] as? String
            case is NSNull: return nil
            default: return fallback
            }
        }
        let unk = tokenContent("unk_token", "<unk>") ?? "<unk>"
        let bos = tokenContent("bos_token", "<s>")
        let eos = tokenContent("eos_token", "</s>")
        let pad = tokenContent("pad_token", nil)
        var addedTokens: [Added] = []
        if let decoder = config["added_tokens_decoder"] as? [String: Any] {
            for (key, value) in decoder {
                guard let id = Int32(key), let d = value as? [String: Any], let content = d["content"] as? String else {
                    throw VLMError.badInput(file: configPath, "added_tokens_decoder entry '\(key)' needs an integer id and a content")
                }
                addedTokens.append(Added(id: id, content: content, lstrip: d["lstrip"] as? Bool ?? false, rstrip: d["rstrip"] as? Bool ?? false,
                                         singleWord: d["single_word"] as? Bool ?? false, special: d["special"] as? Bool ?? true))
            }
        }
        let model = self.model
        func ensure(_ content: String?) throws {
            guard let content, !addedTokens.contains(where: { $0.content == content }) else { return }
            let id = model.pieceID(content)
            guard id != model.unkID || content == unk else {
                throw VLMError.badInput(file: configPath, "special token '\(content)' is not a piece of the model and has no id in added_tokens_decoder")
            }
            addedTokens.append(Added(id: id, content: content, lstrip: false, rstrip: false, singleWord: false, special: true))
        }
        try ensure(unk)
        try ensure(bos)
        try ensure(eos)
        try ensure(pad)
        let additional = (config["additional_special_tokens"] as? [Any] ?? []).compactMap { ($0 as? String) ?? ($0 as? [String: Any])?["content"] as? String }
        for a in additional { try ensure(a) }
        addedTokens.sort { $0.id < $1.id }
        added = addedTokens
        var byContent: [String: Added] = [:], byID: [Int32: Added] = [:]
        for a in addedTokens {
            byContent[a.content] = a
            byID[a.id] = a
        }
        addedByContent = byContent
        addedByID = byID
        patterns = addedTokens.map { Array($0.content.utf8) }.filter { !$0.isEmpty }.sorted { $0.count > $1.count }
        unkToken = unk
        bosID = bos.flatMap { byContent[$0]?.id }
        eosID = eos.flatMap { byContent[$0]?.id }
        unkID = byContent[unk]?.id
        // all_special_tokens: bos, eos, unk, pad and the additional special tokens.
        specialIDs = Set(([bos, eos, unk, pad].compactMap { $0 } + additional).compactMap { byContent[$0]?.id })
        unkTokenLength = model.encode(unk).count
        let underline = model.pieceID("\u{2581}")
        underlineID = underline == model.unkID ? nil : underline
        var identity = modelData
        identity.append(contentsOf: Array("\nlegacy=\(legacy) bos=\(addBOS) eos=\(addEOS) prefix=\(addPrefixSpace) added=\(addedTokens.map { "\($0.id):\($0.content):\($0.lstrip):\($0.rstrip):\($0.singleWord):\($0.special)" })".utf8))
        sha256 = Hashing.sha256(identity)
    }

    public func makeEncoder() -> any TokenEncoder { LlamaEncoder(self) }

    /// `tokenizer(text, add_special_tokens=...).input_ids`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        var cache: [ArraySlice<UInt8>: [Int32]]? = nil
        return encode(text, addSpecialTokens: addSpecialTokens, cache: &cache)
    }

    func encode(_ text: String, addSpecialTokens: Bool, cache: inout [ArraySlice<UInt8>: [Int32]]?) -> [Int32] {
        var ids = tokenize(text, cache: &cache)
        if addSpecialTokens {
            if addBOS, let bosID { ids.insert(bosID, at: 0) }
            if addEOS, let eosID { ids.append(eosID) }
        }
        return ids
    }

    /// `LlamaTokenizer.tokenize` (as ids): the legacy prefix handling, then `PreTrainedTokenizer.tokenize`'s
    /// split on added tokens (with their lstrip/rstrip/single_word), then `_tokenize` of each plain piece.
    func tokenize(_ input: String, cache: inout [ArraySlice<UInt8>: [Int32]]?) -> [Int32] {
        var text = input
        if !legacy, !text.isEmpty {
            text = text.replacingOccurrences(of: "\u{2581}", with: " ")
            if addPrefixSpace { text = "\u{2581}" + text }
        }
        var parts = splitOnAddedTokens(text)
        // Whitespace stripping and single_word, as PreTrainedTokenizer.tokenize does it.
        for i in parts.indices {
            guard let token = parts[i].token else { continue }
            if token.rstrip, i + 1 < parts.count, parts[i + 1].token == nil, !parts[i + 1].text.isEmpty {
                parts[i + 1].text = pythonLStripWhitespace(parts[i + 1].text)
            }
            if token.lstrip, i > 0, parts[i - 1].token == nil, !parts[i - 1].text.isEmpty {
                parts[i - 1].text = pythonRStripWhitespace(parts[i - 1].text)
            }
            if token.singleWord, i > 0, parts[i - 1].token == nil, let last = parts[i - 1].text.last, last != " " {
                parts[i - 1].text += token.content
                parts[i].token = nil
                parts[i].text = ""
            } else if token.singleWord, i + 1 < parts.count, parts[i + 1].token == nil, let first = parts[i + 1].text.first, first != " " {
                parts[i].text = token.content + parts[i + 1].text
                parts[i].token = nil
                parts[i + 1].text = ""
            }
        }
        var ids: [Int32] = []
        for part in parts {
            if let token = part.token {
                ids.append(token.id)
            } else if !part.text.isEmpty {
                ids.append(contentsOf: pieceIDs(part.text, cache: &cache))
            }
        }
        if !legacy, !input.isEmpty, ids.count > 1, ids[0] == underlineID, specialIDs.contains(ids[1]) {
            ids.removeFirst()
        }
        return ids
    }

    /// `LlamaTokenizer._tokenize`.
    func pieceIDs(_ text: String, cache: inout [ArraySlice<UInt8>: [Int32]]?) -> [Int32] {
        if legacy || !(text.unicodeScalars.first == "\u{2581}" || text.unicodeScalars.first == " ") {
            return model.encode(text, cache: &cache)
        }
        let ids = model.encode(unkToken + text, cache: &cache)
        return ids.count >= unkTokenLength ? Array(ids.dropFirst(unkTokenLength)) : ids
    }

    struct Part {
        var text: String
        var token: Added?
    }

    /// transformers' `Trie.split`: the added tokens found left to right, the longest at each start.
    func splitOnAddedTokens(_ text: String) -> [Part] {
        let bytes = Array(text.utf8)
        var parts: [Part] = []
        var plainStart = 0
        var i = 0
        while i < bytes.count {
            var found: [UInt8]? = nil
            for p in patterns where p.count <= bytes.count - i && p[0] == bytes[i] {
                if bytes[i..<(i + p.count)].elementsEqual(p) {
                    found = p
                    break
                }
            }
            if let p = found, let token = addedByContent[String(decoding: p, as: UTF8.self)] {
                if plainStart < i { parts.append(Part(text: String(decoding: bytes[plainStart..<i], as: UTF8.self), token: nil)) }
                parts.append(Part(text: token.content, token: token))
                i += p.count
                plainStart = i
            } else {
                i += 1
            }
        }
        if plainStart < bytes.count { parts.append(Part(text: String(decoding: bytes[plainStart...], as: UTF8.self), token: nil)) }
        return parts
    }

    public func tokenID(_ token: String) -> Int32? {
        if let a = addedByContent[token] { return a.id }
        let id = model.pieceID(token)
        return id == model.unkID && token != model.pieces[Int(model.unkID)] ? nil : id
    }

    public func token(_ id: Int32) -> String? {
        if let a = addedByID[id] { return a.content }
        guard id >= 0, Int(id) < model.pieces.count else { return nil }
        return model.pieces[Int(id)]
    }

    /// transformers' slow `decode(ids, skip_special_tokens)` for LlamaTokenizer (`_decode` and
    /// `convert_tokens_to_string`; spaces_between_special_tokens is false and no clean-up, as LLaMA's defaults).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        var tokens: [String] = []
        for id in ids {
            if skipSpecialTokens, specialIDs.contains(id) { continue }
            guard let t = token(id) else { continue }
            tokens.append(t)
        }
        guard !tokens.isEmpty else { return "" }
        // convert_tokens_to_string: the prefix space added when encoding is removed from the first token.
        if tokens[0].unicodeScalars.first == "\u{2581}", addPrefixSpace { tokens[0] = String(tokens[0].unicodeScalars.dropFirst()) }
        let allSpecial = Set(specialIDs.compactMap { token($0) })
        var out = ""
        var current: [String] = []
        var previousSpecial = false
        for (i, t) in tokens.enumerated() {
            if allSpecial.contains(t) {
                if !previousSpecial, i != 0, legacy { out += " " }
                out += model.decode(pieces: current) + t
                previousSpecial = true
                current = []
            } else {
                if previousSpecial, i == 1, addPrefixSpace, t.unicodeScalars.first != "\u{2581}" { out += " " }
                current.append(t)
                previousSpecial = false
            }
        }
        out += model.decode(pieces: current)
        return out
    }
}

/// The encoder of a `LlamaTokenizer` for one thread (it keeps a cache of words).
final class LlamaEncoder: TokenEncoder {
    let tokenizer: LlamaTokenizer
    /// Words (normalized text from a "▁" run to the next) → ids.
    var cache: [ArraySlice<UInt8>: [Int32]]? = [:]
    init(_ tokenizer: LlamaTokenizer) { self.tokenizer = tokenizer }
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int32] {
        tokenizer.encode(text, addSpecialTokens: addSpecialTokens, cache: &cache)
    }
}

/// Python `str.lstrip()` / `str.rstrip()` (whitespace per `str.isspace`).
func pythonLStripWhitespace(_ s: String) -> String {
    String(s.unicodeScalars.drop(while: isPythonSpace).map(Character.init))
}

func pythonRStripWhitespace(_ s: String) -> String {
    var scalars = Array(s.unicodeScalars)
    while let last = scalars.last, isPythonSpace(last) { scalars.removeLast() }
    var out = String.UnicodeScalarView()
    out.append(contentsOf: scalars)
    return String(out)
}

func isPythonSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }
