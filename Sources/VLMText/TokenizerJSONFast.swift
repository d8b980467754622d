import Foundation
import VLMCore

/// A fast path for the two large members of tokenizer.json, `model.vocab` and `model.merges` (tens of thousands of
/// entries that `JSONSerialization` would turn into boxed objects): a structural scan finds them, they are parsed
/// straight into bytes, and the rest of the document (small) goes through `JSONSerialization` with them blanked.
package struct FastModelTables {
    package var vocab: [([UInt8], Int)]
    /// Each merge as its two token strings' bytes.
    package var merges: [([UInt8], [UInt8])]
    /// The document with `vocab` replaced by `{}` and `merges` by `[]`.
    package var rest: Data

    /// Returns nil when `model.vocab` is missing or either member is not the layout HF writes.
    package static func extract(_ data: Data) -> FastModelTables? {
        let bytes = [UInt8](data)
        var scanner = JSONScan(bytes)
        guard let model = scanner.memberValue(path: ["model"], in: 0..<bytes.count) else { return nil }
        guard let vocabRange = scanner.memberValue(path: ["vocab"], in: model), let vocab = scanner.parseVocab(vocabRange) else {
            return nil
        }
        // A missing merges list is an empty one.
        let mergesRange = scanner.memberValue(path: ["merges"], in: model) ?? vocabRange.upperBound..<vocabRange.upperBound
        guard let merges = mergesRange.isEmpty ? [] : scanner.parseMerges(mergesRange) else { return nil }
        var rest: [UInt8] = []
        rest.reserveCapacity(bytes.count - vocabRange.count - mergesRange.count + 4)
        let first = vocabRange.lowerBound <= mergesRange.lowerBound ? (vocabRange, "{}") : (mergesRange, mergesRange.isEmpty ? "" : "[]")
        let second = vocabRange.lowerBound <= mergesRange.lowerBound ? (mergesRange, mergesRange.isEmpty ? "" : "[]") : (vocabRange, "{}")
        rest.append(contentsOf: bytes[0..<first.0.lowerBound])
        rest.append(contentsOf: first.1.utf8)
        rest.append(contentsOf: bytes[first.0.upperBound..<second.0.lowerBound])
        rest.append(contentsOf: second.1.utf8)
        rest.append(contentsOf: bytes[second.0.upperBound...])
        return FastModelTables(vocab: vocab, merges: merges, rest: Data(rest))
    }
}

/// A minimal JSON scanner over bytes: skips values, finds object members, decodes strings.
struct JSONScan {
    let b: [UInt8]
    init(_ bytes: [UInt8]) { b = bytes }

    func skipSpace(_ i: inout Int) {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    /// End index (exclusive) of the value starting at `i`, or nil if malformed.
    func valueEnd(_ start: Int) -> Int? {
        var i = start
        guard i < b.count else { return nil }
        switch b[i] {
        case UInt8(ascii: "\""): return stringEnd(i)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") { guard let e = stringEnd(i) else { return nil }; i = e; continue }
                if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
                if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
                    depth -= 1
                    if depth == 0 { return i + 1 }
                }
                i += 1
            }
            return nil
        default:
            while i < b.count, !(b[i] == UInt8(ascii: ",") || b[i] == UInt8(ascii: "}") || b[i] == UInt8(ascii: "]")
                                 || b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09) { i += 1 }
            return i
        }
    }

    func stringEnd(_ start: Int) -> Int? {
        var i = start + 1
        while i < b.count {
            if b[i] == UInt8(ascii: "\\") { i += 2; continue }
            if b[i] == UInt8(ascii: "\"") { return i + 1 }
            i += 1
        }
        return nil
    }

    /// Decodes the string literal at `start` (which must be a quote) into UTF-8 bytes.
    func string(_ start: Int, _ end: Int) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(end - start)
        var i = start + 1
        let last = end - 1
        while i < last {
            let c = b[i]
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            guard i + 1 < last else { return nil }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard var unit = hex4(i) else { return nil }
                i += 4
                if (0xD800..<0xDC00).contains(unit), i + 6 <= last, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                   let low = hex4(i + 2), (0xDC00..<0xE000).contains(low) {
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
                } else if (0xD800..<0xE000).contains(unit) {
                    unit = 0xFFFD // lone surrogate: what serde_json would reject; keep going with U+FFFD
                }
                appendUTF8(unit, to: &out)
            default: return nil
            }
        }
        return out
    }

    func hex4(_ i: Int) -> UInt32? {
        guard i + 4 <= b.count else { return nil }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = b[i + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: return nil
            }
            v = v << 4 | d
        }
        return v
    }

    /// The value range of member `path[0]` of the object spanning `range` (first occurrence), recursively.
    mutating func memberValue(path: [String], in range: Range<Int>) -> Range<Int>? {
        var i = range.lowerBound
        skipSpace(&i)
        guard i < range.upperBound, b[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        let wanted = Array(path[0].utf8)
        while i < range.upperBound {
            skipSpace(&i)
            if b[i] == UInt8(ascii: "}") { return nil }
            guard b[i] == UInt8(ascii: "\""), let keyEnd = stringEnd(i), let key = string(i, keyEnd) else { return nil }
            i = keyEnd
            skipSpace(&i)
            guard i < range.upperBound, b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            skipSpace(&i)
            guard let end = valueEnd(i) else { return nil }
            if key == wanted {
                return path.count == 1 ? i..<end : memberValue(path: Array(path.dropFirst()), in: i..<end)
            }
            i = end
            skipSpace(&i)
            if i < range.upperBound, b[i] == UInt8(ascii: ",") { i += 1 }
        }
        return nil
    }

    /// `{"token": id, ...}`.
    func parseVocab(_ range: Range<Int>) -> [([UInt8], Int)]? {
        var out: [([UInt8], Int)] = []
        var i = range.lowerBound
        guard b[i] == UInt8(ascii: "{") else { return nil }
        i += 1
        while true {
            skipSpace(&i)
            guard i < range.upperBound else { return nil }
            if b[i] == UInt8(ascii: "}") { return out }
            guard b[i] == UInt8(ascii: "\""), let end = stringEnd(i), let key = string(i, end) else { return nil }
            i = end
            skipSpace(&i)
            guard b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            skipSpace(&i)
            var n = 0
            var digits = 0
            while i < range.upperBound, b[i] >= 0x30, b[i] <= 0x39 {
                n = n * 10 + Int(b[i] - 0x30)
                i += 1
                digits += 1
            }
            guard digits > 0 else { return nil } // negative or non-integer ids: generic path
            out.append((key, n))
            skipSpace(&i)
            if b[i] == UInt8(ascii: ",") { i += 1 }
        }
    }

    /// `["a b", ...]` or `[["a", "b"], ...]`.
    func parseMerges(_ range: Range<Int>) -> [([UInt8], [UInt8])]? {
        var out: [([UInt8], [UInt8])] = []
        var i = range.lowerBound
        guard b[i] == UInt8(ascii: "[") else { return nil }
        i += 1
        while true {
            skipSpace(&i)
            guard i < range.upperBound else { return nil }
            if b[i] == UInt8(ascii: "]") { return out }
            if b[i] == UInt8(ascii: "\"") {
                guard let end = stringEnd(i), let line = string(i, end) else { return nil }
                i = end
                let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
                guard parts.count == 2 else { return nil }
                out.append((Array(parts[0]), Array(parts[1])))
            } else if b[i] == UInt8(ascii: "[") {
                i += 1
                skipSpace(&i)
                guard b[i] == UInt8(ascii: "\""), let e1 = stringEnd(i), let a = string(i, e1) else { return nil }
                i = e1
                skipSpace(&i)
                guard b[i] == UInt8(ascii: ",") else { return nil }
                i += 1
                skipSpace(&i)
                guard b[i] == UInt8(ascii: "\""), let e2 = stringEnd(i), let c = string(i, e2) else { return nil }
                i = e2
                skipSpace(&i)
                guard b[i] == UInt8(ascii: "]") else { return nil }
                i += 1
                out.append((a, c))
            } else {
                return nil
            }
            skipSpace(&i)
            if b[i] == UInt8(ascii: ",") { i += 1 }
        }
    }
}
