import Foundation
import VLMCore

/// A tokenizer.json normalizer: rewrites the UTF-8 of one piece of text (HF normalizes each piece between added
/// tokens separately).
package protocol Normalizer: Sendable {
    func normalize(_ text: [UInt8]) -> [UInt8]
}

/// Builds a normalizer from its JSON config; unsupported types are a load-time error naming them.
package func makeNormalizer(_ json: JSONObject) throws -> any Normalizer {
    switch json.type {
    case "Sequence":
        return SequenceNormalizer(steps: try json.objects("normalizers").map(makeNormalizer))
    case "Prepend":
        return PrependNormalizer(prefix: Array(try json.string("prepend").utf8))
    case "Replace":
        return try ReplaceNormalizer(pattern: json.pattern("pattern"), content: json.string("content"), json: json)
    case "NFC": return UnicodeFormNormalizer(form: .nfc)
    case "NFD": return UnicodeFormNormalizer(form: .nfd)
    case "NFKC": return UnicodeFormNormalizer(form: .nfkc)
    case "NFKD": return UnicodeFormNormalizer(form: .nfkd)
    case "Lowercase": return LowercaseNormalizer()
    case "Strip":
        return StripNormalizer(left: json.bool("strip_left", default: true), right: json.bool("strip_right", default: true))
    case "StripAccents": return StripAccentsNormalizer()
    case let other:
        throw json.error("unsupported normalizer type '\(other ?? "(none)")' (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents)")
    }
}

struct SequenceNormalizer: Normalizer {
    let steps: [any Normalizer]
    func normalize(_ text: [UInt8]) -> [UInt8] {
        var t = text
        for step in steps { t = step.normalize(t) }
        return t
    }
}

/// Prepends a string to non-empty text.
struct PrependNormalizer: Normalizer {
    let prefix: [UInt8]
    func normalize(_ text: [UInt8]) -> [UInt8] {
        text.isEmpty ? text : prefix + text
    }
}

/// Replaces every (non-overlapping, left to right) occurrence of a literal or regex.
struct ReplaceNormalizer: Normalizer {
    let pattern: TextPattern
    let literal: [UInt8]
    let regex: TextRegex?
    let content: [UInt8]

    init(pattern: TextPattern, content: String, json: JSONObject) throws {
        self.pattern = pattern
        self.content = Array(content.utf8)
        switch pattern {
        case .literal(let s):
            literal = Array(s.utf8)
            regex = nil
        case .regex(let r):
            literal = []
            regex = try TextRegex(r, json: json)
        }
    }

    func normalize(_ text: [UInt8]) -> [UInt8] {
        let ranges: [Range<Int>]
        if let regex {
            ranges = regex.matches(text)
        } else {
            ranges = literalMatches(text, literal)
        }
        if ranges.isEmpty { return text }
        var out: [UInt8] = []
        out.reserveCapacity(text.count + ranges.count * content.count)
        var prev = 0
        for r in ranges {
            out.append(contentsOf: text[prev..<r.lowerBound])
            out.append(contentsOf: content)
            prev = r.upperBound
        }
        out.append(contentsOf: text[prev...])
        return out
    }
}

/// Non-overlapping occurrences of `needle`, left to right (an empty needle matches nothing).
package func literalMatches(_ text: [UInt8], _ needle: [UInt8]) -> [Range<Int>] {
    guard !needle.isEmpty, text.count >= needle.count else { return [] }
    var out: [Range<Int>] = []
    let first = needle[0]
    let n = needle.count
    var i = 0
    text.withUnsafeBufferPointer { t in
        needle.withUnsafeBufferPointer { nd in
            while i <= t.count - n {
                if t[i] == first, memcmpEqual(t.baseAddress! + i, nd.baseAddress!, n) {
                    out.append(i..<(i + n))
                    i += n
                } else {
                    i += 1
                }
            }
        }
    }
    return out
}

struct UnicodeFormNormalizer: Normalizer {
    enum Form { case nfc, nfd, nfkc, nfkd }
    let form: Form
    func normalize(_ text: [UInt8]) -> [UInt8] {
        if text.allSatisfy({ $0 < 0x80 }) { return text }
        let s = String(decoding: text, as: UTF8.self)
        let out: String
        switch form {
        case .nfc: out = s.precomposedStringWithCanonicalMapping
        case .nfd: out = s.decomposedStringWithCanonicalMapping
        case .nfkc: out = s.precomposedStringWithCompatibilityMapping
        case .nfkd: out = s.decomposedStringWithCompatibilityMapping
        }
        return Array(out.utf8)
    }
}

/// Rust `char::to_lowercase` per scalar (no context: no final-sigma rule, as HF does).
struct LowercaseNormalizer: Normalizer {
    func normalize(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        text.withUnsafeBufferPointer { p in
            var i = 0
            while i < p.count {
                let b = p[i]
                if b < 0x80 {
                    out.append(b >= 0x41 && b <= 0x5A ? b + 32 : b)
                    i += 1
                    continue
                }
                let (s, n) = utf8Scalar(p, i)
                if let scalar = Unicode.Scalar(s) {
                    out.append(contentsOf: scalar.properties.lowercaseMapping.utf8)
                }
                i += n
            }
        }
        return out
    }
}

/// Strips White_Space from the left and/or right.
struct StripNormalizer: Normalizer {
    let left: Bool
    let right: Bool
    func normalize(_ text: [UInt8]) -> [UInt8] {
        var scalars = TextUnicode.scalars(text)
        if right { while let last = scalars.last, TextUnicode.isWhitespace(last) { scalars.removeLast() } }
        var start = 0
        if left { while start < scalars.count, TextUnicode.isWhitespace(scalars[start]) { start += 1 } }
        return TextUnicode.bytes(Array(scalars[start...]))
    }
}

/// Removes combining marks (Mn, Mc, Me: `is_combining_mark`), as HF's StripAccents (usually after NFD).
struct StripAccentsNormalizer: Normalizer {
    func normalize(_ text: [UInt8]) -> [UInt8] {
        let kept = TextUnicode.scalars(text).filter { value in
            guard let s = Unicode.Scalar(value) else { return true }
            switch s.properties.generalCategory {
            case .nonspacingMark, .spacingMark, .enclosingMark: return false
            default: return true
            }
        }
        return TextUnicode.bytes(kept)
    }
}
