import Foundation
import VLMCore

/// A piece of text on its way through the pre-tokenizers.
///
/// `byteLevel` means the bytes stand for GPT-2's byte-level characters (one character per byte, see
/// `ByteLevelTable`) without having been rewritten yet; the BPE model maps them through a 256-entry table.
/// `atStart` is true when the piece begins at offset 0 of the original text (Metaspace `prepend_scheme: first`).
package struct PieceFlags: Sendable {
    package var atStart: Bool
    package var byteLevel: Bool
}

package typealias PieceSink = (UnsafeBufferPointer<UInt8>, PieceFlags) throws -> Void

/// A tokenizer.json pre-tokenizer: splits a piece into sub-pieces (calling `emit` for each non-empty one).
package protocol PreTokenizer: Sendable {
    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws
}

/// Builds a pre-tokenizer from its JSON config; unsupported types are a load-time error naming them.
package func makePreTokenizer(_ json: JSONObject) throws -> any PreTokenizer {
    switch json.type {
    case "Sequence":
        return SequencePreTokenizer(steps: try json.objects("pretokenizers").map(makePreTokenizer))
    case "ByteLevel":
        return ByteLevelPreTokenizer(addPrefixSpace: json.bool("add_prefix_space", default: true),
                                     useRegex: json.bool("use_regex", default: true))
    case "Split":
        return try SplitPreTokenizer(json: json)
    case "Metaspace":
        return try MetaspacePreTokenizer(json: json)
    case "Whitespace":
        return WhitespacePreTokenizer()
    case "WhitespaceSplit":
        return CharSplitPreTokenizer(behavior: .removed, predicate: TextUnicode.isWhitespace)
    case "Digits":
        return CharSplitPreTokenizer(behavior: json.bool("individual_digits", default: false) ? .isolated : .contiguous,
                                     predicate: TextUnicode.isNumeric)
    case "Punctuation":
        let behavior = try SplitBehavior(json.string("behavior", default: "Isolated") ?? "Isolated", json: json)
        return CharSplitPreTokenizer(behavior: behavior, predicate: TextUnicode.isPunctuation)
    case "BertPreTokenizer":
        return SequencePreTokenizer(steps: [
            CharSplitPreTokenizer(behavior: .removed, predicate: TextUnicode.isWhitespace),
            CharSplitPreTokenizer(behavior: .isolated, predicate: TextUnicode.isPunctuation),
        ])
    case let other:
        throw json.error("unsupported pre_tokenizer type '\(other ?? "(none)")' (supported: Sequence, ByteLevel, Split, Metaspace, Whitespace, WhitespaceSplit, Digits, Punctuation, BertPreTokenizer)")
    }
}

/// The UTF-8 of a piece's text: byte-level pieces are rewritten to their byte-level characters.
@inline(__always)
func materialized(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ body: (UnsafeBufferPointer<UInt8>, PieceFlags) throws -> Void) rethrows {
    if !flags.byteLevel { return try body(piece, flags) }
    var out: [UInt8] = []
    out.reserveCapacity(piece.count * 2)
    for b in piece { out.append(contentsOf: ByteLevelTable.utf8[Int(b)]) }
    var f = flags
    f.byteLevel = false
    try out.withUnsafeBufferPointer { try body($0, f) }
}

struct SequencePreTokenizer: PreTokenizer {
    let steps: [any PreTokenizer]

    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try run(0, piece, flags, emit)
    }

    private func run(_ index: Int, _ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        if index == steps.count { return try emit(piece, flags) }
        try steps[index].split(piece, flags) { sub, f in try run(index + 1, sub, f, emit) }
    }
}

/// GPT-2's byte ↔ character table.
package enum ByteLevelTable {
    /// Byte → its character (bytes 0x21–0x7E, 0xA1–0xAC, 0xAE–0xFF map to themselves, the other 68 to U+0100+n).
    package static let chars: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                table[b] = UInt32(b)
            } else {
                table[b] = 0x100 + n
                n += 1
            }
        }
        return table
    }()

    package static let utf8: [[UInt8]] = chars.map { TextUnicode.bytes([$0]) }

    /// Character → byte, for decoding.
    package static let bytes: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, c) in chars.enumerated() { map[c] = UInt8(b) }
        return map
    }()
}

/// ByteLevel: optional prefix space, the GPT-2 regex split (Isolated), then every byte becomes its character.
struct ByteLevelPreTokenizer: PreTokenizer {
    let addPrefixSpace: Bool
    let useRegex: Bool
    static let regex = try! TextRegex(TextRegex.gpt2Pattern)

    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try materialized(piece, flags) { text, flags in
            var f = flags
            f.byteLevel = true
            if addPrefixSpace, text.first != 0x20 {
                var spaced: [UInt8] = [0x20]
                spaced.append(contentsOf: text)
                try spaced.withUnsafeBufferPointer { try run($0, f, emit) }
            } else {
                try run(text, f, emit)
            }
        }
    }

    @inline(__always)
    private func run(_ text: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        if !useRegex { return try emit(text, flags) }
        try Self.regex.forEachMatch(text) { start, end in
            var f = flags
            f.atStart = flags.atStart && start == 0
            try emit(UnsafeBufferPointer(rebasing: text[start..<end]), f)
        }
    }
}

/// HF `SplitDelimiterBehavior`.
package enum SplitBehavior: Sendable {
    case removed, isolated, mergedWithPrevious, mergedWithNext, contiguous

    init(_ name: String, json: JSONObject) throws {
        switch name {
        case "Removed": self = .removed
        case "Isolated": self = .isolated
        case "MergedWithPrevious": self = .mergedWithPrevious
        case "MergedWithNext": self = .mergedWithNext
        case "Contiguous": self = .contiguous
        default: throw json.error("unknown split behavior '\(name)'")
        }
    }

    /// Turns (range, isMatch) segments tiling a text into the pieces to keep, as HF `NormalizedString::split`.
    func pieces(_ segments: [(Range<Int>, Bool)]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        switch self {
        case .isolated:
            out = segments.map(\.0)
        case .removed:
            out = segments.filter { !$0.1 }.map(\.0)
        case .contiguous:
            var previous = false
            for (i, (range, isMatch)) in segments.enumerated() {
                if i > 0, isMatch == previous, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<range.upperBound
                } else {
                    out.append(range)
                }
                previous = isMatch
            }
        case .mergedWithPrevious:
            var previous = false
            for (range, isMatch) in segments {
                if isMatch, !previous, let last = out.last {
                    out[out.count - 1] = last.lowerBound..<range.upperBound
                } else {
                    out.append(range)
                }
                previous = isMatch
            }
        case .mergedWithNext:
            var previous = false
            for (range, isMatch) in segments.reversed() {
                if isMatch, !previous, let last = out.last {
                    out[out.count - 1] = range.lowerBound..<last.upperBound
                } else {
                    out.append(range)
                }
                previous = isMatch
            }
            out.reverse()
        }
        return out.filter { !$0.isEmpty }
    }
}

/// Segments (range, isMatch) tiling `count` bytes, from match ranges.
func segments(from matches: [Range<Int>], count: Int, invert: Bool) -> [(Range<Int>, Bool)] {
    if count == 0 { return [(0..<0, false)] }
    var out: [(Range<Int>, Bool)] = []
    var prev = 0
    for m in matches {
        if prev != m.lowerBound { out.append((prev..<m.lowerBound, invert)) }
        out.append((m, !invert))
        prev = m.upperBound
    }
    if prev != count { out.append((prev..<count, invert)) }
    return out
}

/// Split with a literal or regex pattern, a behavior and `invert`.
struct SplitPreTokenizer: PreTokenizer {
    let literal: [UInt8]?
    let regex: TextRegex?
    let behavior: SplitBehavior
    let invert: Bool

    init(json: JSONObject) throws {
        switch try json.pattern("pattern") {
        case .literal(let s):
            literal = Array(s.utf8)
            regex = nil
        case .regex(let r):
            literal = nil
            regex = try TextRegex(r, json: json)
        }
        behavior = try SplitBehavior(json.string("behavior"), json: json)
        invert = json.bool("invert", default: false)
    }

    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try materialized(piece, flags) { text, flags in
            // Fast path: the common Isolated split emits matches and gaps in one pass, no arrays.
            if let regex, behavior == .isolated {
                var prev = 0
                try regex.forEachMatch(text) { start, end in
                    if prev != start { try emitRange(text, prev, start, flags, emit) }
                    try emitRange(text, start, end, flags, emit)
                    prev = end
                }
                if prev != text.count { try emitRange(text, prev, text.count, flags, emit) }
                return
            }
            let bytes = Array(text)
            let matches = regex?.matches(bytes) ?? literalMatches(bytes, literal ?? [])
            for r in behavior.pieces(segments(from: matches, count: bytes.count, invert: invert)) {
                try emitRange(text, r.lowerBound, r.upperBound, flags, emit)
            }
        }
    }
}

@inline(__always)
func emitRange(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int, _ flags: PieceFlags, _ emit: PieceSink) throws {
    guard end > start else { return }
    var f = flags
    f.atStart = flags.atStart && start == 0
    try emit(UnsafeBufferPointer(rebasing: text[start..<end]), f)
}

/// Splits where single characters satisfy a predicate (WhitespaceSplit, Digits, Punctuation).
struct CharSplitPreTokenizer: PreTokenizer {
    let behavior: SplitBehavior
    let predicate: @Sendable (UInt32) -> Bool

    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try materialized(piece, flags) { text, flags in
            var matches: [Range<Int>] = []
            var i = 0
            while i < text.count {
                let (s, n) = utf8Scalar(text, i)
                if predicate(s) { matches.append(i..<(i + n)) }
                i += n
            }
            for r in behavior.pieces(segments(from: matches, count: text.count, invert: false)) {
                try emitRange(text, r.lowerBound, r.upperBound, flags, emit)
            }
        }
    }
}

/// Whitespace: keeps the matches of `\w+|[^\w\s]+`.
struct WhitespacePreTokenizer: PreTokenizer {
    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try materialized(piece, flags) { text, flags in
            var i = 0
            while i < text.count {
                let (s, n) = utf8Scalar(text, i)
                if TextUnicode.isWhitespace(s) { i += n; continue }
                let word = TextUnicode.isWord(s)
                var j = i + n
                while j < text.count {
                    let (s2, n2) = utf8Scalar(text, j)
                    if TextUnicode.isWhitespace(s2) || TextUnicode.isWord(s2) != word { break }
                    j += n2
                }
                try emitRange(text, i, j, flags, emit)
                i = j
            }
        }
    }
}

/// Metaspace: every U+0020 becomes the replacement, a replacement is prepended per `prepend_scheme`, then the
/// text splits before each replacement (MergedWithNext).
struct MetaspacePreTokenizer: PreTokenizer {
    enum Scheme { case always, first, never }
    let replacement: [UInt8]
    let scheme: Scheme
    let splitPieces: Bool

    init(json: JSONObject) throws {
        let rep = json.string("replacement", default: "▁") ?? "▁"
        guard rep.unicodeScalars.count == 1 else { throw json.error("replacement must be one character") }
        replacement = Array(rep.utf8)
        if let s = json.string("prepend_scheme", default: nil) {
            switch s {
            case "always": scheme = .always
            case "first": scheme = .first
            case "never": scheme = .never
            default: throw json.error("unknown prepend_scheme '\(s)'")
            }
        } else {
            scheme = json.bool("add_prefix_space", default: true) ? .always : .never
        }
        splitPieces = json.bool("split", default: true)
    }

    var prependsOnDecode: Bool { scheme != .never }

    func split(_ piece: UnsafeBufferPointer<UInt8>, _ flags: PieceFlags, _ emit: PieceSink) throws {
        try materialized(piece, flags) { text, flags in
            var out: [UInt8] = []
            out.reserveCapacity(text.count + 8)
            for b in text {
                if b == 0x20 { out.append(contentsOf: replacement) } else { out.append(b) }
            }
            let startsWithReplacement = out.starts(with: replacement)
            let prepend: Bool
            switch scheme {
            case .always: prepend = !startsWithReplacement
            case .first: prepend = !startsWithReplacement && flags.atStart
            case .never: prepend = false
            }
            if prepend { out.insert(contentsOf: replacement, at: 0) }
            try out.withUnsafeBufferPointer { p in
                if !splitPieces { return try emitRange(p, 0, p.count, flags, emit) }
                let matches = literalMatches(out, replacement)
                for r in SplitBehavior.mergedWithNext.pieces(segments(from: matches, count: out.count, invert: false)) {
                    try emitRange(p, r.lowerBound, r.upperBound, flags, emit)
                }
            }
        }
    }
}
