import Foundation
import VLMCore

/// A pre-tokenizer / normalizer regex with Oniguruma's semantics (what HF `tokenizers` runs).
///
/// The GPT-2, LLaMA-3 and Qwen2 split patterns run through hand-written scanners (exact alternation order,
/// `\s+(?!\S)` backtracking, White_Space / `\p{L}` / `\p{N}` classes); any other pattern goes through ICU's
/// `NSRegularExpression`, whose syntax and Unicode classes agree with Oniguruma on the patterns tokenizers use.
package struct TextRegex: @unchecked Sendable {
    package enum Engine {
        case gpt2
        case llama3(maxDigits: Int)
        case icu(NSRegularExpression)
    }

    package static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    package static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    package static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    package let pattern: String
    package let engine: Engine

    package init(_ pattern: String, json: JSONObject? = nil) throws {
        self.pattern = pattern
        switch pattern {
        case Self.gpt2Pattern: engine = .gpt2
        case Self.llama3Pattern: engine = .llama3(maxDigits: 3)
        case Self.qwen2Pattern: engine = .llama3(maxDigits: 1)
        default:
            do {
                engine = .icu(try NSRegularExpression(pattern: Self.oniguruma(pattern), options: []))
            } catch {
                let message = "regex '\(pattern)' is not supported: \(error)"
                throw json?.error(message) ?? VLMError(.unsupported, message)
            }
        }
    }

    /// Oniguruma's `\s` is White_Space (it includes U+000B and U+0085); ICU's is `[\t\n\f\r\p{Z}]`. Rewrites
    /// `\s` / `\S` to the explicit set so the ICU fallback agrees.
    static func oniguruma(_ pattern: String) -> String {
        let space = #"\t\n\x{0B}\f\r\x{85}\p{Z}"#
        var out = ""
        var inClass = 0
        let chars = Array(pattern)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "\\", i + 1 < chars.count {
                let n = chars[i + 1]
                if n == "s" { out += inClass > 0 ? space : "[\(space)]" }
                else if n == "S", inClass == 0 { out += "[^\(space)]" }
                else { out.append(c); out.append(n) }
                i += 2
                continue
            }
            if c == "[" { inClass += 1 } else if c == "]", inClass > 0 { inClass -= 1 }
            out.append(c)
            i += 1
        }
        return out
    }

    /// Byte ranges of the successive non-overlapping matches in `text` (valid UTF-8).
    package func matches(_ text: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        text.withUnsafeBufferPointer { p in forEachMatch(p) { out.append($0..<$1) } }
        return out
    }

    /// Calls `body(start, end)` for each match, left to right.
    @inline(__always)
    package func forEachMatch(_ p: UnsafeBufferPointer<UInt8>, _ body: (Int, Int) throws -> Void) rethrows {
        switch engine {
        case .gpt2:
            var i = 0
            while i < p.count {
                let end = TextScanners.gpt2(p, i)
                try body(i, end)
                i = end
            }
        case .llama3(let maxDigits):
            var i = 0
            while i < p.count {
                let end = TextScanners.llama3(p, i, maxDigits: maxDigits)
                try body(i, end)
                i = end
            }
        case .icu(let regex):
            let string = String(decoding: p, as: UTF8.self)
            let utf16 = Array(string.utf16)
            // UTF-16 offset → UTF-8 offset table.
            var map = [Int](repeating: 0, count: utf16.count + 1)
            var u8 = 0
            var k = 0
            while k < utf16.count {
                map[k] = u8
                let unit = utf16[k]
                if unit < 0x80 { u8 += 1; k += 1 }
                else if unit < 0x800 { u8 += 2; k += 1 }
                else if unit >= 0xD800 && unit < 0xDC00 { map[k + 1] = u8 + 4; u8 += 4; k += 2 }
                else { u8 += 3; k += 1 }
            }
            map[utf16.count] = u8
            let results = regex.matches(in: string, options: [], range: NSRange(location: 0, length: utf16.count))
            for r in results where r.range.length > 0 {
                try body(map[r.range.location], map[r.range.location + r.range.length])
            }
        }
    }
}

/// Hand-written matchers: given a start index, the end of the match the pattern's alternation finds there.
/// Every position matches some alternative in these patterns, so matches tile the text.
package enum TextScanners {
    @inline(__always)
    static func cls(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (CharClass, UInt32, Int) {
        let b = p[i]
        if b < 0x80 { return (TextUnicode.asciiClass[Int(b)], UInt32(b), 1) }
        let (s, n) = utf8Scalar(p, i)
        return (TextUnicode.classifySlow(s), s, n)
    }

    /// End of the run of `kind` characters starting at `i`.
    @inline(__always)
    static func run(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ kind: CharClass) -> Int {
        var j = i
        while j < p.count {
            let b = p[j]
            if b < 0x80 {
                if TextUnicode.asciiClass[Int(b)] != kind { break }
                j += 1
            } else {
                let (s, n) = utf8Scalar(p, j)
                if TextUnicode.classifySlow(s) != kind { break }
                j += n
            }
        }
        return j
    }

    /// `\s+(?!\S)|\s+` at a whitespace character.
    @inline(__always)
    static func whitespace(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        let j = run(p, i, .space)
        if j == p.count { return j }
        let back = utf8PreviousStart(p, j)
        return back > i ? back : j
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    static func gpt2(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> Int {
        let b = p[i]
        let n = p.count
        if b == 0x27, i + 1 < n { // '
            let c1 = p[i + 1]
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 } // s t m d
            if i + 2 < n {
                let c2 = p[i + 2]
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return i + 3 }
            }
        }
        if b == 0x20, i + 1 < n {
            let (k, _, len) = cls(p, i + 1)
            if k != .space { return run(p, i + 1 + len, k) }
        }
        let (k, _, len) = cls(p, i)
        if k == .space { return whitespace(p, i) }
        return run(p, i + len, k)
    }

    @inline(__always)
    static func isCRLF(_ s: UInt32) -> Bool { s == 0x0D || s == 0x0A }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    static func llama3(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, maxDigits: Int) -> Int {
        let n = p.count
        let (k, s, len) = cls(p, i)
        // 1. contractions, case-insensitive (Unicode folding: 'ſ' U+017F folds to 's').
        if s == 0x27, i + 1 < n {
            let (_, c1, l1) = cls(p, i + 1)
            let lower1 = c1 < 0x80 ? c1 | 0x20 : c1
            if lower1 == 0x73 || lower1 == 0x74 || lower1 == 0x6D || lower1 == 0x64 || c1 == 0x17F { return i + 1 + l1 }
            if i + 1 + l1 < n, c1 < 0x80 {
                let (_, c2, l2) = cls(p, i + 1 + l1)
                let lower2 = c2 < 0x80 ? c2 | 0x20 : c2
                if (lower1 == 0x72 && lower2 == 0x65) || (lower1 == 0x76 && lower2 == 0x65) || (lower1 == 0x6C && lower2 == 0x6C) {
                    return i + 1 + l1 + l2
                }
            }
        }
        // 2. [^\r\n\p{L}\p{N}]?\p{L}+
        if k == .letter { return run(p, i + len, .letter) }
        if k != .number, !isCRLF(s), i + len < n {
            let (k2, _, l2) = cls(p, i + len)
            if k2 == .letter { return run(p, i + len + l2, .letter) }
        }
        // 3. \p{N}{1,max}
        if k == .number {
            var j = i + len
            var count = 1
            while count < maxDigits, j < n {
                let (k2, _, l2) = cls(p, j)
                if k2 != .number { break }
                j += l2
                count += 1
            }
            return j
        }
        // 4.  ?[^\s\p{L}\p{N}]+[\r\n]*
        var start = -1
        if k == .other { start = i }
        else if s == 0x20, i + 1 < n, cls(p, i + 1).0 == .other { start = i + 1 }
        if start >= 0 {
            var j = run(p, start, .other)
            while j < n, p[j] == 0x0D || p[j] == 0x0A { j += 1 }
            return j
        }
        // k == .space from here.
        // 5. \s*[\r\n]+
        let j = run(p, i, .space)
        var last = -1
        var q = i
        while q < j {
            if p[q] == 0x0D || p[q] == 0x0A { last = q }
            q += utf8Length(p[q])
        }
        if last >= 0 { return last + 1 }
        // 6, 7.
        if j == n { return j }
        let back = utf8PreviousStart(p, j)
        return back > i ? back : j
    }
}
