import Foundation
import VLMCore

/// One entry of tokenizer.json `added_tokens`.
package struct AddedToken: Sendable, Equatable {
    package var id: UInt32
    package var content: String
    package var singleWord: Bool
    package var lstrip: Bool
    package var rstrip: Bool
    package var normalized: Bool
    package var special: Bool
}

/// Finds added tokens in text as HF `AddedVocabulary::find_matches` does: leftmost-longest matching, then
/// `single_word`, `lstrip` (bounded by the previous match) and `rstrip`.
package struct AddedTokenMatcher: Sendable {
    /// Patterns (bytes, token index) grouped by first byte, longest first.
    let byFirstByte: [[(pattern: [UInt8], token: Int)]]
    let tokens: [AddedToken]
    package let isEmpty: Bool

    init(tokens: [AddedToken], patterns: [[UInt8]]) {
        var table = [[(pattern: [UInt8], token: Int)]](repeating: [], count: 256)
        for (i, p) in patterns.enumerated() where !p.isEmpty {
            table[Int(p[0])].append((p, i))
        }
        for b in 0..<256 {
            // Longest first; equal length keeps declaration order (aho-corasick's leftmost-longest picks
            // the first-added pattern among equal matches).
            table[b] = table[b].enumerated().sorted {
                $0.element.pattern.count != $1.element.pattern.count ? $0.element.pattern.count > $1.element.pattern.count : $0.offset < $1.offset
            }.map(\.element)
        }
        byFirstByte = table
        self.tokens = tokens
        isEmpty = patterns.allSatisfy(\.isEmpty)
    }

    /// A segment of text: a range and the added token it is, if any.
    package struct Segment {
        package var range: Range<Int>
        package var token: UInt32?
    }

    /// Splits `text` into plain segments and token segments (empty plain segments are dropped).
    package func split(_ text: UnsafeBufferPointer<UInt8>) -> [Segment] {
        if isEmpty || text.isEmpty {
            return text.isEmpty ? [] : [Segment(range: 0..<text.count, token: nil)]
        }
        var segments: [Segment] = []
        var startOffset = 0
        var i = 0
        let n = text.count
        while i < n {
            var matched: (Int, Int)? = nil
            for (pattern, token) in byFirstByte[Int(text[i])] where pattern.count <= n - i {
                if pattern.withUnsafeBufferPointer({ memcmpEqual(text.baseAddress! + i, $0.baseAddress!, pattern.count) }) {
                    matched = (pattern.count, token)
                    break
                }
            }
            guard let (length, index) = matched else {
                i += 1
                continue
            }
            var start = i
            var stop = i + length
            i = stop
            let token = tokens[index]
            if token.singleWord {
                let startSpace = start == 0 || !Self.endsWithWord(text, start)
                let stopSpace = stop == n || !Self.startsWithWord(text, stop)
                if !startSpace || !stopSpace { continue }
            }
            if token.lstrip {
                var s = start
                while s > 0 {
                    let p = utf8PreviousStart(text, s)
                    if !TextUnicode.isWhitespace(utf8Scalar(text, p).0) { break }
                    s = p
                }
                start = max(s, startOffset)
            }
            if token.rstrip {
                while stop < n {
                    let (s, len) = utf8Scalar(text, stop)
                    if !TextUnicode.isWhitespace(s) { break }
                    stop += len
                }
            }
            if startOffset < start { segments.append(Segment(range: startOffset..<start, token: nil)) }
            segments.append(Segment(range: start..<stop, token: token.id))
            startOffset = stop
        }
        if startOffset < n { segments.append(Segment(range: startOffset..<n, token: nil)) }
        return segments
    }

    static func endsWithWord(_ text: UnsafeBufferPointer<UInt8>, _ end: Int) -> Bool {
        guard end > 0 else { return false }
        return TextUnicode.isWord(utf8Scalar(text, utf8PreviousStart(text, end)).0)
    }

    static func startsWithWord(_ text: UnsafeBufferPointer<UInt8>, _ start: Int) -> Bool {
        guard start < text.count else { return false }
        return TextUnicode.isWord(utf8Scalar(text, start).0)
    }
}
