import Foundation
import VLMCore
import VLMIO

/// A SentencePiece `tokenizer.model` (the `ModelProto` protobuf) with the BPE encoder and the decoder of the
/// `sentencepiece` library (bpe_model.cc `Model::SampleEncode` without sampling, normalizer.cc, and
/// sentencepiece_processor.cc `Encode`/`Decode` with byte fallback). LLaMA, LLaMA-2 and Mistral ship this file.
///
/// ```swift
/// let sp = try SentencePieceModel(contentsOf: "mistral-v1/tokenizer.model")
/// sp.encode("Hello world")            // [22557, 1526]: "▁Hello", "▁world" (the dummy prefix adds "▁")
/// sp.decode([22557, 1526])            // "Hello world"
/// ```
public final class SentencePieceModel: Sendable {
    public enum PieceType: Int, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    public let path: String
    public let sha256: String
    public let pieces: [String]
    let pieceBytes: [[UInt8]]
    public let scores: [Float]
    public let types: [PieceType]
    public let unkID: Int32
    public let bosID: Int32?
    public let eosID: Int32?
    public let padID: Int32?
    public let byteFallback: Bool
    /// NormalizerSpec: prepend "▁" to non-empty input.
    public let addDummyPrefix: Bool
    public let removeExtraWhitespaces: Bool
    public let escapeWhitespaces: Bool
    let unkSurface: String
    /// NORMAL, USER_DEFINED and UNUSED pieces (the ones merges may produce): bytes → id.
    let mergeable: TextBytesMap
    /// Every piece: bytes → id (CONTROL, UNKNOWN, BYTE included).
    let all: TextBytesMap
    /// Byte b → id of "<0xHH>", when byte fallback is on.
    let byteIDs: [Int32]
    /// User-defined pieces, matched whole before BPE (by first byte, longest first).
    let userDefined: [[[UInt8]]]
    /// No piece merges may produce holds "▁" after another character, so no symbol ever spans the start of a
    /// "▁" run: the text can be encoded word by word (each word from such a start), with a cache.
    let wordsAreIndependent: Bool

    public convenience init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read tokenizer.model")
        }
        try self.init(data: data, path: path)
    }

    /// Parses the protobuf. `addDummyPrefix` overrides the file's NormalizerSpec (transformers' non-legacy
    /// LlamaTokenizer loads the model with `add_dummy_prefix = false`).
    public init(data: Data, path: String = "tokenizer.model", addDummyPrefix overrideDummyPrefix: Bool? = nil) throws {
        self.path = path
        sha256 = Hashing.sha256(data)
        let bytes = [UInt8](data)
        var pieces: [String] = [], pieceBytes: [[UInt8]] = [], scores: [Float] = [], types: [PieceType] = []
        var modelType = 1 // UNIGRAM is the protobuf default
        var byteFallback = false, treatWhitespaceAsSuffix = false
        var unkID = 0, bosID = 1, eosID = 2, padID = -1
        var unkSurface = " \u{2047} "
        var normalizerName = "", charsmap = 0
        var dummyPrefix = true, removeExtra = true, escape = true
        func fail(_ what: String) -> VLMError { VLMError.badInput(file: path, "not a SentencePiece model: \(what)") }
        do {
            var top = ProtoReader(bytes[...])
            while let (field, value) = try top.next() {
                switch (field, value) {
                case (1, .bytes(let m)):
                    var r = ProtoReader(m)
                    var piece = [UInt8](), score: Float = 0, type = 1
                    while let (f, v) = try r.next() {
                        switch (f, v) {
                        case (1, .bytes(let s)): piece = Array(s)
                        case (2, .fixed32(let bits)): score = Float(bitPattern: bits)
                        case (3, .varint(let t)): type = Int(t)
                        default: break
                        }
                    }
                    guard let t = PieceType(rawValue: type) else { throw fail("piece \(pieces.count) has unknown type \(type)") }
                    guard let s = String(validating: piece, as: UTF8.self) else { throw fail("piece \(pieces.count) is not UTF-8") }
                    pieces.append(s); pieceBytes.append(piece); scores.append(score); types.append(t)
                case (2, .bytes(let m)):
                    var r = ProtoReader(m)
                    while let (f, v) = try r.next() {
                        switch (f, v) {
                        case (3, .varint(let n)): modelType = Int(n)
                        case (24, .varint(let n)): treatWhitespaceAsSuffix = n != 0
                        case (35, .varint(let n)): byteFallback = n != 0
                        case (40, .varint(let n)): unkID = Int(Int32(truncatingIfNeeded: n))
                        case (41, .varint(let n)): bosID = Int(Int32(truncatingIfNeeded: n))
                        case (42, .varint(let n)): eosID = Int(Int32(truncatingIfNeeded: n))
                        case (43, .varint(let n)): padID = Int(Int32(truncatingIfNeeded: n))
                        case (44, .bytes(let s)): unkSurface = String(decoding: s, as: UTF8.self)
                        default: break
                        }
                    }
                case (3, .bytes(let m)):
                    var r = ProtoReader(m)
                    while let (f, v) = try r.next() {
                        switch (f, v) {
                        case (1, .bytes(let s)): normalizerName = String(decoding: s, as: UTF8.self)
                        case (2, .bytes(let s)): charsmap = s.count
                        case (3, .varint(let n)): dummyPrefix = n != 0
                        case (4, .varint(let n)): removeExtra = n != 0
                        case (5, .varint(let n)): escape = n != 0
                        default: break
                        }
                    }
                default: break
                }
            }
        } catch let e as ProtoReader.Malformed {
            throw fail(e.what)
        }
        guard !pieces.isEmpty else { throw fail("no pieces") }
        guard modelType == 2 else {
            throw VLMError(.unsupported, file: path, "SentencePiece model type \(modelType == 1 ? "UNIGRAM" : String(modelType)) is not supported (only BPE, as LLaMA and Mistral use)")
        }
        guard charsmap == 0 else {
            throw VLMError(.unsupported, file: path, "SentencePiece normalizer '\(normalizerName)' with a precompiled charsmap is not supported (only the identity normalizer, as LLaMA and Mistral use)")
        }
        guard !treatWhitespaceAsSuffix else {
            throw VLMError(.unsupported, file: path, "SentencePiece treat_whitespace_as_suffix is not supported")
        }
        guard unkID >= 0, unkID < pieces.count, types[unkID] == .unknown else { throw fail("unk_id \(unkID) is not an UNKNOWN piece") }

        self.pieces = pieces
        self.pieceBytes = pieceBytes
        self.scores = scores
        self.types = types
        self.unkID = Int32(unkID)
        self.bosID = bosID >= 0 && bosID < pieces.count ? Int32(bosID) : nil
        self.eosID = eosID >= 0 && eosID < pieces.count ? Int32(eosID) : nil
        self.padID = padID >= 0 && padID < pieces.count ? Int32(padID) : nil
        self.byteFallback = byteFallback
        addDummyPrefix = overrideDummyPrefix ?? dummyPrefix
        removeExtraWhitespaces = removeExtra
        escapeWhitespaces = escape
        self.unkSurface = unkSurface
        var mergeable = TextBytesMap(capacity: pieces.count)
        var all = TextBytesMap(capacity: pieces.count)
        var byteIDs = [Int32](repeating: -1, count: 256)
        var user = [[[UInt8]]](repeating: [], count: 256)
        for (i, p) in pieceBytes.enumerated() {
            // sentencepiece rejects duplicates; the first one wins here.
            if all.get(p) == nil { all.set(p, UInt32(i)) }
            switch types[i] {
            case .normal, .unused:
                if mergeable.get(p) == nil { mergeable.set(p, UInt32(i)) }
            case .userDefined:
                if mergeable.get(p) == nil { mergeable.set(p, UInt32(i)) }
                if let first = p.first { user[Int(first)].append(p) }
            case .byte:
                guard byteFallback else { throw fail("BYTE piece '\(pieces[i])' without byte_fallback") }
                let hex = pieces[i].dropFirst(3).dropLast()
                guard pieces[i].hasPrefix("<0x"), pieces[i].hasSuffix(">"), let b = UInt8(hex, radix: 16) else {
                    throw fail("BYTE piece '\(pieces[i])' is not <0xHH>")
                }
                byteIDs[Int(b)] = Int32(i)
            case .unknown, .control:
                break
            }
        }
        if byteFallback, byteIDs.contains(-1) { throw fail("byte_fallback is on but not all 256 <0xHH> pieces exist") }
        for b in 0..<256 { user[b].sort { $0.count > $1.count } }
        self.mergeable = mergeable
        self.all = all
        let underline: [UInt8] = [0xE2, 0x96, 0x81]
        wordsAreIndependent = escape && zip(pieceBytes, types).allSatisfy { piece, type in
            guard type == .normal || type == .unused || type == .userDefined else { return true }
            // Every "▁" must be preceded only by "▁"s (a run at the start of the piece).
            var k = 0
            while k + 3 <= piece.count, Array(piece[k..<(k + 3)]) == underline { k += 3 }
            var j = k
            while j + 3 <= piece.count {
                if piece[j] == 0xE2, piece[j + 1] == 0x96, piece[j + 2] == 0x81 { return false }
                j += 1
            }
            return true
        }
        self.byteIDs = byteIDs
        userDefined = user
    }

    public var vocabSize: Int { pieces.count }

    /// The id of a piece (any type), as `SentencePieceProcessor.piece_to_id` (unknown pieces → unk).
    public func pieceID(_ piece: String) -> Int32 {
        all.get(Array(piece.utf8)).map { Int32($0.0) } ?? unkID
    }

    public func isControl(_ id: Int32) -> Bool { id >= 0 && Int(id) < types.count && types[Int(id)] == .control }

    /// normalizer.cc `Normalize` for the identity rule set: extra whitespace removal, the dummy prefix, and
    /// " " → "▁".
    func normalize(_ text: String) -> [UInt8] {
        var input = Array(text.utf8)[...]
        if removeExtraWhitespaces {
            while input.first == 0x20 { input = input.dropFirst() }
        }
        if input.isEmpty { return [] }
        var out: [UInt8] = []
        out.reserveCapacity(input.count + input.count / 4 + 3)
        let space: [UInt8] = escapeWhitespaces ? [0xE2, 0x96, 0x81] : [0x20]
        if addDummyPrefix { out.append(contentsOf: space) }
        var previousSpace = addDummyPrefix
        for b in input {
            if b == 0x20 {
                if removeExtraWhitespaces, previousSpace { continue }
                out.append(contentsOf: space)
                previousSpace = true
            } else {
                out.append(b)
                previousSpace = false
            }
        }
        if removeExtraWhitespaces {
            while out.count >= space.count, Array(out.suffix(space.count)) == space { out.removeLast(space.count) }
        }
        return out
    }

    /// `SentencePieceProcessor.encode(text)` (ids; no BOS/EOS).
    public func encode(_ text: String) -> [Int32] {
        var cache: [ArraySlice<UInt8>: [Int32]]? = nil
        return encode(text, cache: &cache)
    }

    /// `encode` with a per-thread cache of words (used when `wordsAreIndependent`; same ids).
    func encode(_ text: String, cache: inout [ArraySlice<UInt8>: [Int32]]?) -> [Int32] {
        let normalized = normalize(text)
        if normalized.isEmpty { return [] }
        guard wordsAreIndependent, cache != nil else {
            return normalized.withUnsafeBytes { encodeNormalized($0) }
        }
        var out: [Int32] = []
        out.reserveCapacity(normalized.count / 3 + 2)
        var start = 0
        var i = 0
        func flush(_ end: Int) {
            guard end > start else { return }
            let word = normalized[start..<end]
            if let ids = cache![word] {
                out.append(contentsOf: ids)
            } else {
                let ids = word.withUnsafeBytes { encodeNormalized($0) }
                if cache!.count > 100_000 { cache!.removeAll(keepingCapacity: true) }
                cache![word] = ids
                out.append(contentsOf: ids)
            }
            start = end
        }
        while i < normalized.count {
            // A word starts at a "▁" that follows another character than "▁".
            if i > 0, i + 2 < normalized.count, normalized[i] == 0xE2, normalized[i + 1] == 0x96, normalized[i + 2] == 0x81,
               !(i >= 3 && normalized[i - 3] == 0xE2 && normalized[i - 2] == 0x96 && normalized[i - 1] == 0x81) {
                flush(i)
                i += 3
                continue
            }
            i += 1
        }
        flush(normalized.count)
        return out
    }

    struct Symbol {
        var start: Int
        var length: Int
        var prev: Int
        var next: Int
        var freeze: Bool
    }

    struct Pair {
        var score: Float
        var left: Int
        var right: Int
        var size: Int
        /// The heap's order: higher score first, then the leftmost pair.
        @inline(__always) func before(_ o: Pair) -> Bool { score > o.score || (score == o.score && left < o.left) }
    }

    /// bpe_model.cc: characters (and user-defined pieces) as symbols, then the highest-scoring adjacent pair that
    /// is a piece is merged until none is left; UNUSED pieces are split back into the pieces they were made of;
    /// pieces outside the vocabulary become their bytes (byte fallback) or unk.
    func encodeNormalized(_ text: UnsafeRawBufferPointer) -> [Int32] {
        let base = text.baseAddress!
        var symbols: [Symbol] = []
        symbols.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            var length = 0
            var freeze = false
            for candidate in userDefined[Int(text[i])] where candidate.count <= text.count - i {
                if candidate.withUnsafeBytes({ memcmpEqual(base + i, $0.baseAddress!, candidate.count) }) {
                    length = candidate.count
                    freeze = true
                    break
                }
            }
            if length == 0 { length = min(sentencePieceCharLength(text[i]), text.count - i) }
            symbols.append(Symbol(start: i, length: length, prev: symbols.count - 1, next: i + length < text.count ? symbols.count + 1 : -1, freeze: freeze))
            i += length
        }
        var heap: [Pair] = []
        heap.reserveCapacity(symbols.count)
        var revMerge: [Int: (Symbol, Symbol)] = [:] // UNUSED piece id → (left, right), last seen
        func lookup(_ start: Int, _ size: Int) -> Int? {
            let key = UnsafeRawBufferPointer(start: base + start, count: size)
            return mergeable.get(key, hash: textHashBytes(key)).map { Int($0.0) }
        }
        func push(_ p: Pair) {
            heap.append(p)
            var c = heap.count - 1
            while c > 0 {
                let parent = (c - 1) / 2
                if !heap[c].before(heap[parent]) { break }
                heap.swapAt(c, parent)
                c = parent
            }
        }
        func pop() -> Pair {
            let top = heap[0]
            let last = heap.removeLast()
            if !heap.isEmpty {
                heap[0] = last
                var c = 0
                while true {
                    let l = 2 * c + 1, r = l + 1
                    var best = c
                    if l < heap.count, heap[l].before(heap[best]) { best = l }
                    if r < heap.count, heap[r].before(heap[best]) { best = r }
                    if best == c { break }
                    heap.swapAt(c, best)
                    c = best
                }
            }
            return top
        }
        func maybeAdd(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0, !symbols[left].freeze, !symbols[right].freeze else { return }
            let size = symbols[left].length + symbols[right].length
            guard let id = lookup(symbols[left].start, size) else { return }
            push(Pair(score: scores[id], left: left, right: right, size: size))
        }
        for k in symbols.indices.dropFirst() { maybeAdd(k - 1, k) }
        while !heap.isEmpty {
            let top = pop()
            let l = top.left, r = top.right
            if symbols[l].length == 0 || symbols[r].length == 0 || symbols[l].length + symbols[r].length != top.size { continue }
            if let id = lookup(symbols[l].start, top.size), types[id] == .unused {
                revMerge[id] = (symbols[l], symbols[r])
            }
            symbols[l].length = top.size
            symbols[l].next = symbols[r].next
            if symbols[r].next >= 0 { symbols[symbols[r].next].prev = l }
            symbols[r].length = 0
            maybeAdd(symbols[l].prev, l)
            maybeAdd(l, symbols[l].next)
        }
        var out: [Int32] = []
        out.reserveCapacity(symbols.count)
        func emit(_ start: Int, _ length: Int) {
            let key = UnsafeRawBufferPointer(start: base + start, count: length)
            let found = all.get(key, hash: textHashBytes(key)).map { Int($0.0) }
            if let id = found, types[id] == .unused, let (a, b) = revMerge[id] {
                emit(a.start, a.length)
                emit(b.start, b.length)
                return
            }
            // PieceToId: CONTROL/UNKNOWN/BYTE pieces are found too; a piece that is none is unk.
            let id = found ?? Int(unkID)
            if id == Int(unkID), byteFallback {
                for k in 0..<length { out.append(byteIDs[Int(text[start + k])]) }
            } else {
                out.append(Int32(id))
            }
        }
        var k = symbols.isEmpty ? -1 : 0
        while k >= 0 {
            emit(symbols[k].start, symbols[k].length)
            k = symbols[k].next
        }
        return out
    }

    /// `SentencePieceProcessor.decode(ids)`: control pieces are invisible, unk is " ⁇ ", runs of byte pieces
    /// are UTF-8 (invalid bytes become U+FFFD), "▁" is a space, and the first piece that is not a control
    /// piece loses its leading "▁" when the model adds a dummy prefix.
    public func decode(_ ids: [Int32]) -> String {
        decode(pieces: ids.compactMap { $0 >= 0 && Int($0) < pieces.count ? pieces[Int($0)] : nil })
    }

    /// `SentencePieceProcessor.decode(pieces)` (`DecodePieces`): a string that is no piece is kept as written.
    public func decode(pieces words: [String]) -> String {
        var out: [UInt8] = []
        var isBOSWhitespace = true
        var pendingBytes: [UInt8] = []
        func flushBytes() {
            guard !pendingBytes.isEmpty else { return }
            let surface = utf8Repaired(pendingBytes)
            pendingBytes.removeAll()
            out.append(contentsOf: surface)
            if isBOSWhitespace, !surface.isEmpty { isBOSWhitespace = false }
        }
        let dummy: [UInt8] = [0xE2, 0x96, 0x81]
        for word in words where !word.isEmpty { // an empty string (a lone "▁" stripped by LlamaTokenizer) is no piece
            let id = Int(pieceID(word))
            let type = types[id]
            if type == .byte {
                pendingBytes.append(UInt8(pieces[id].dropFirst(3).dropLast(), radix: 16) ?? 0)
                continue
            }
            flushBytes()
            var piece = Array(word.utf8)[...]
            var surface: [UInt8]
            switch type {
            case .control: surface = []
            case .unknown: surface = word == pieces[id] ? Array(unkSurface.utf8) : Array(piece)
            default:
                if isBOSWhitespace, addDummyPrefix || removeExtraWhitespaces, piece.starts(with: dummy) { piece = piece.dropFirst(3) }
                surface = replaceMetaspace(Array(piece))
            }
            // Only the first piece that is not a control piece may lose its "▁", even when it decodes to nothing.
            if type != .control { isBOSWhitespace = false }
            out.append(contentsOf: surface)
        }
        flushBytes()
        return String(decoding: out, as: UTF8.self)
    }
}

/// "▁" → " ".
func replaceMetaspace(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    while i < bytes.count {
        if i + 2 < bytes.count, bytes[i] == 0xE2, bytes[i + 1] == 0x96, bytes[i + 2] == 0x81 {
            out.append(0x20)
            i += 3
        } else {
            out.append(bytes[i])
            i += 1
        }
    }
    return out
}

/// Valid UTF-8 sequences kept, each byte of an invalid one replaced by U+FFFD (sentencepiece's byte decoding).
func utf8Repaired(_ bytes: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < bytes.count {
        let n = sentencePieceCharLength(bytes[i])
        if bytes[i] >= 0x80, n > 1, i + n <= bytes.count,
           String(validating: bytes[i..<(i + n)], as: UTF8.self) != nil {
            out.append(contentsOf: bytes[i..<(i + n)])
            i += n
        } else if bytes[i] < 0x80 {
            out.append(bytes[i])
            i += 1
        } else {
            out.append(contentsOf: [0xEF, 0xBF, 0xBD])
            i += 1
        }
    }
    return out
}

/// The length of the UTF-8 sequence a lead byte starts (1 for a stray continuation byte, as sentencepiece).
@inline(__always) func sentencePieceCharLength(_ lead: UInt8) -> Int {
    switch lead {
    case 0..<0x80: return 1
    case 0xC0..<0xE0: return 2
    case 0xE0..<0xF0: return 3
    case 0xF0..<0xF8: return 4
    default: return 1
    }
}

/// A minimal protobuf wire-format reader (varint, 64-bit, length-delimited, 32-bit fields).
struct ProtoReader {
    struct Malformed: Error { var what: String }
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed32(UInt32)
    }

    var data: ArraySlice<UInt8>

    init(_ data: ArraySlice<UInt8>) { self.data = data }

    mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while let b = data.first {
            data = data.dropFirst()
            guard shift < 64 else { throw Malformed(what: "varint longer than 10 bytes") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
        }
        throw Malformed(what: "truncated varint")
    }

    mutating func next() throws -> (Int, Value)? {
        if data.isEmpty { return nil }
        let key = try varint()
        let field = Int(key >> 3)
        switch key & 7 {
        case 0: return (field, .varint(try varint()))
        case 1:
            guard data.count >= 8 else { throw Malformed(what: "truncated 64-bit field \(field)") }
            var v: UInt64 = 0
            for (k, b) in data.prefix(8).enumerated() { v |= UInt64(b) << (8 * UInt64(k)) }
            data = data.dropFirst(8)
            return (field, .fixed64(v))
        case 2:
            let n = try varint()
            guard n <= UInt64(data.count) else { throw Malformed(what: "field \(field) runs past the end") }
            let value = data.prefix(Int(n))
            data = data.dropFirst(Int(n))
            return (field, .bytes(value))
        case 5:
            guard data.count >= 4 else { throw Malformed(what: "truncated 32-bit field \(field)") }
            var v: UInt32 = 0
            for (k, b) in data.prefix(4).enumerated() { v |= UInt32(b) << (8 * UInt32(k)) }
            data = data.dropFirst(4)
            return (field, .fixed32(v))
        default:
            throw Malformed(what: "wire type \(key & 7) of field \(field)")
        }
    }
}
