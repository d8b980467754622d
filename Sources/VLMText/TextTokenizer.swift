import Foundation
import VLMCore

/// What the masker, the tokenize stage and the `tokenizer` commands need of a tokenizer, whichever file it came
/// from: a HF `tokenizer.json` (`Tokenizer`, the fast tokenizer's pipeline) or a SentencePiece `tokenizer.model`
/// (`LlamaTokenizer`, transformers' slow `LlamaTokenizer`, which LLaVA trains with).
///
/// ```swift
/// let tok = try loadTokenizer("tokenizers/mistral-v1/tokenizer.model", legacy: false)
/// let ids = tok.makeEncoder().encode("USER: hi</s>USER: ok", addSpecialTokens: true)
/// ```
public protocol TextTokenizer: AnyObject, Sendable {
    /// The file it was loaded from.
    var path: String { get }
    /// Identity of the tokenizer: the file's sha256 (with the settings that change ids folded in for a
    /// tokenizer.model).
    var sha256: String { get }
    /// The id `encode(_, addSpecialTokens: true)` puts first, if any (LLaMA's BOS).
    var bosID: Int32? { get }
    /// The unknown token's id (LLaVA sets pad = unk).
    var unkID: Int32? { get }
    /// The ids of the special tokens (skipped by `decode(_, skipSpecialTokens: true)`).
    var specialIDs: Set<Int32> { get }
    /// `legacy` as the tokenizer itself applies it (a tokenizer.model), or nil where it changes nothing (a
    /// tokenizer.json: the fast tokenizer is legacy-style).
    var legacyMode: Bool? { get }
    var vocabSize: Int { get }
    /// An encoder for one thread (it may keep caches).
    func makeEncoder() -> any TokenEncoder
    func decode(_ ids: [Int32], skipSpecialTokens: Bool) -> String
    func tokenID(_ token: String) -> Int32?
    func token(_ id: Int32) -> String?
}

/// Encodes text on one thread.
public protocol TokenEncoder: AnyObject {
    func encode(_ text: String, addSpecialTokens: Bool) -> [Int32]
}

extension TokenizerSession: TokenEncoder {}

extension Tokenizer: TextTokenizer {
    public var bosID: Int32? {
        // Only a token the post-processor places before the sequence is a BOS.
        let empty = postProcessor?.process([]) ?? []
        guard let first = empty.first, postProcessor?.process([Int32.max]).first == first else { return nil }
        return first
    }
    public var unkID: Int32? { model.unkId.map { Int32(bitPattern: $0) } }
    public var specialIDs: Set<Int32> { Set(addedTokens.filter(\.special).map { Int32(bitPattern: $0.id) }) }
    public var legacyMode: Bool? { nil }
    public func makeEncoder() -> any TokenEncoder { makeSession() }
}

/// Loads the tokenizer at `path`: a `tokenizer.json`, a SentencePiece `tokenizer.model`, or a folder holding
/// one of them (the `tokenizer.model` first, as LLaVA loads the slow tokenizer). `legacy` overrides the
/// `legacy` of a `tokenizer_config.json` beside a tokenizer.model.
public func loadTokenizer(_ path: String, legacy: Bool? = nil) throws -> any TextTokenizer {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw VLMError(.notFound, file: path, "no tokenizer at this path")
    }
    var file = path
    if isDirectory.boolValue {
        let model = (path as NSString).appendingPathComponent("tokenizer.model")
        let json = (path as NSString).appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: model) {
            file = model
        } else if FileManager.default.fileExists(atPath: json) {
            file = json
        } else {
            throw VLMError(.notFound, file: path, "the folder holds neither tokenizer.model nor tokenizer.json")
        }
    }
    guard let data = FileManager.default.contents(atPath: file) else {
        throw VLMError(.notFound, file: file, "cannot read the tokenizer")
    }
    // A tokenizer.json is a JSON object; a ModelProto starts with field 1 (pieces), key byte 0x0A.
    let firstByte = data.first(where: { ![0x20, 0x09, 0x0A, 0x0D, 0xEF, 0xBB, 0xBF].contains($0) })
    if firstByte == UInt8(ascii: "{") {
        return try Tokenizer(data: data, path: file)
    }
    return try LlamaTokenizer(modelData: data, path: file, legacy: legacy)
}

/// The readable name of a tokenizer path: its folder's name for `tokenizer.json`/`tokenizer.model`
/// (`mistral-v1`), else the file's stem.
public func tokenizerDisplayName(_ path: String) -> String {
    let url = URL(fileURLWithPath: path)
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
        return url.lastPathComponent
    }
    let stem = url.deletingPathExtension().lastPathComponent
    if stem == "tokenizer" {
        let folder = url.deletingLastPathComponent().lastPathComponent
        if !folder.isEmpty, folder != "/", folder != "." { return folder }
    }
    return stem
}
