import Foundation
import VLMCore

/// A tokenizer.json decoder: rewrites the list of token strings (HF `decode_chain`); the results are joined.
package protocol TokenDecoder: Sendable {
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]]
}

package func makeDecoder(_ json: JSONObject) throws -> any TokenDecoder {
    switch json.type {
    case "Sequence":
        return SequenceDecoder(steps: try json.objects("decoders").map(makeDecoder))
    case "ByteLevel":
        return ByteLevelDecoder()
    case "Replace":
        switch try json.pattern("pattern") {
        case .literal(let s):
            return ReplaceDecoder(pattern: Array(s.utf8), content: Array(try json.string("content").utf8))
        case .regex(let r):
            throw json.error("Replace decoder with a regex ('\(r)') is not supported")
        }
    case "ByteFallback":
        return ByteFallbackDecoder()
    case "Fuse":
        return FuseDecoder()
    case "Strip":
        let content = try json.string("content")
        guard let scalar = content.unicodeScalars.first, content.unicodeScalars.count == 1 else {
            throw json.error("Strip content must be one character")
        }
        return StripDecoder(content: scalar.value, start: json.int("start") ?? 0, stop: json.int("stop") ?? 0)
    case "Metaspace":
        let rep = json.string("replacement", default: "▁") ?? "▁"
        let scheme = json.string("prepend_scheme", default: nil)
        let prepend = scheme.map { $0 != "never" } ?? json.bool("add_prefix_space", default: true)
        return MetaspaceDecoder(replacement: Array(rep.utf8), stripFirst: prepend)
    case "BPEDecoder":
        return BPESuffixDecoder(suffix: Array((json.string("suffix", default: "</w>") ?? "</w>").utf8))
    case let other:
        throw json.error("unsupported decoder type '\(other ?? "(none)")' (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder)")
    }
}

struct SequenceDecoder: TokenDecoder {
    let steps: [any TokenDecoder]
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        steps.reduce(tokens) { $1.decode($0) }
    }
}

/// Characters back to bytes, then lossy UTF-8 (a token with a character outside the table keeps its own bytes).
struct ByteLevelDecoder: TokenDecoder {
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        var bytes: [UInt8] = []
        for token in tokens {
            var mapped: [UInt8] = []
            var ok = true
            for s in TextUnicode.scalars(token) {
                guard let b = ByteLevelTable.bytes[s] else { ok = false; break }
                mapped.append(b)
            }
            bytes.append(contentsOf: ok ? mapped : token)
        }
        return [Array(String(decoding: bytes, as: UTF8.self).utf8)]
    }
}

struct ReplaceDecoder: TokenDecoder {
    let pattern: [UInt8]
    let content: [UInt8]
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.map { token in
            let ranges = literalMatches(token, pattern)
            if ranges.isEmpty { return token }
            var out: [UInt8] = []
            var prev = 0
            for r in ranges {
                out.append(contentsOf: token[prev..<r.lowerBound])
                out.append(contentsOf: content)
                prev = r.upperBound
            }
            out.append(contentsOf: token[prev...])
            return out
        }
    }
}

/// Runs of `<0xHH>` tokens become their UTF-8 text, or one U+FFFD per byte when invalid.
struct ByteFallbackDecoder: TokenDecoder {
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var pending: [UInt8] = []
        func flush() {
            if pending.isEmpty { return }
            if String(validating: pending, as: UTF8.self) != nil {
                out.append(pending)
            } else {
                for _ in pending { out.append(Array("\u{FFFD}".utf8)) }
            }
            pending.removeAll()
        }
        for token in tokens {
            if token.count == 6, token.starts(with: Array("<0x".utf8)), token[5] == UInt8(ascii: ">"),
               let byte = UInt8(String(decoding: token[3..<5], as: UTF8.self), radix: 16) {
                pending.append(byte)
            } else {
                flush()
                out.append(token)
            }
        }
        flush()
        return out
    }
}

struct FuseDecoder: TokenDecoder {
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        [tokens.flatMap { $0 }]
    }
}

/// Removes up to `start` leading and `stop` trailing copies of a character from each token.
struct StripDecoder: TokenDecoder {
    let content: UInt32
    let start: Int
    let stop: Int
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.map { token in
            var scalars = TextUnicode.scalars(token)
            var removed = 0
            while removed < start, scalars.first == content { scalars.removeFirst(); removed += 1 }
            removed = 0
            while removed < stop, scalars.last == content { scalars.removeLast(); removed += 1 }
            return TextUnicode.bytes(scalars)
        }
    }
}

/// Replacement → space; in the first token, replacements are removed when a prefix was prepended.
struct MetaspaceDecoder: TokenDecoder {
    let replacement: [UInt8]
    let stripFirst: Bool
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.enumerated().map { index, token in
            let ranges = literalMatches(token, replacement)
            if ranges.isEmpty { return token }
            var out: [UInt8] = []
            var prev = 0
            for r in ranges {
                out.append(contentsOf: token[prev..<r.lowerBound])
                if !(index == 0 && stripFirst) { out.append(0x20) }
                prev = r.upperBound
            }
            out.append(contentsOf: token[prev...])
            return out
        }
    }
}

/// BPEDecoder: the end-of-word suffix becomes a space (none after the last token).
struct BPESuffixDecoder: TokenDecoder {
    let suffix: [UInt8]
    func decode(_ tokens: [[UInt8]]) -> [[UInt8]] {
        tokens.enumerated().map { index, token in
            let ranges = literalMatches(token, suffix)
            if ranges.isEmpty { return token }
            var out: [UInt8] = []
            var prev = 0
            for r in ranges {
                out.append(contentsOf: token[prev..<r.lowerBound])
                if index != tokens.count - 1 { out.append(0x20) }
                prev = r.upperBound
            }
            out.append(contentsOf: token[prev...])
            return out
        }
    }
}
