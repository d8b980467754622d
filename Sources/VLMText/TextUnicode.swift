/// Unicode helpers over UTF-8 bytes: scalar decoding and the character classes the HF regexes use
/// (Oniguruma / Rust `regex`: `\s` = White_Space, `\p{L}`, `\p{N}`, `\w`).

/// Decodes the scalar starting at `i` in valid UTF-8; returns (scalar, byte length).
@inlinable @inline(__always)
package func utf8Scalar(_ p: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    if b0 < 0xE0 { return (((b0 & 0x1F) << 6) | (UInt32(p[i + 1]) & 0x3F), 2) }
    if b0 < 0xF0 {
        return (((b0 & 0x0F) << 12) | ((UInt32(p[i + 1]) & 0x3F) << 6) | (UInt32(p[i + 2]) & 0x3F), 3)
    }
    return (((b0 & 0x07) << 18) | ((UInt32(p[i + 1]) & 0x3F) << 12) | ((UInt32(p[i + 2]) & 0x3F) << 6)
        | (UInt32(p[i + 3]) & 0x3F), 4)
}

/// Byte length of the UTF-8 sequence a lead byte starts.
@inlinable @inline(__always)
package func utf8Length(_ b0: UInt8) -> Int {
    b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4
}

/// Start index of the scalar that ends just before `end`.
@inlinable @inline(__always)
package func utf8PreviousStart(_ p: UnsafeBufferPointer<UInt8>, _ end: Int) -> Int {
    var i = end - 1
    while i > 0, p[i] & 0xC0 == 0x80 { i -= 1 }
    return i
}

package func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
    if scalar < 0x80 {
        out.append(UInt8(scalar))
    } else if scalar < 0x800 {
        out.append(UInt8(0xC0 | (scalar >> 6)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    } else if scalar < 0x10000 {
        out.append(UInt8(0xE0 | (scalar >> 12)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    } else {
        out.append(UInt8(0xF0 | (scalar >> 18)))
        out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    }
}

/// The class of a scalar for the GPT-2 / LLaMA-3 pre-tokenizer patterns.
package enum CharClass: UInt8, Sendable {
    case letter, number, space, other
}

package enum TextUnicode {
    /// Classes of the ASCII range, computed once.
    package static let asciiClass: [CharClass] = (0..<128).map { classifySlow(UInt32($0)) }

    @inlinable @inline(__always)
    package static func charClass(_ scalar: UInt32) -> CharClass {
        if scalar < 128 { return asciiClass[Int(scalar)] }
        return classifySlow(scalar)
    }

    package static func classifySlow(_ value: UInt32) -> CharClass {
        guard let scalar = Unicode.Scalar(value) else { return .other }
        let props = scalar.properties
        if props.isWhitespace { return .space }
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// `\s`: the White_Space property (Oniguruma, Rust `regex` and Rust `char::is_whitespace` agree).
    package static func isWhitespace(_ value: UInt32) -> Bool {
        if value < 128 { return asciiClass[Int(value)] == .space }
        return Unicode.Scalar(value)?.properties.isWhitespace ?? false
    }

    /// `\w` in Rust `regex` / Oniguruma Unicode mode: Alphabetic, marks, decimal numbers, connector punctuation,
    /// Join_Control.
    package static func isWord(_ value: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(value) else { return false }
        let props = scalar.properties
        if props.isAlphabetic || props.isJoinControl { return true }
        switch props.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// Rust `char::is_numeric`: general categories Nd, Nl, No.
    package static func isNumeric(_ value: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(value) else { return false }
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// HF `is_punc`: ASCII punctuation or any P* category.
    package static func isPunctuation(_ value: UInt32) -> Bool {
        if value < 128 {
            let c = UInt8(value)
            return (0x21...0x2F).contains(c) || (0x3A...0x40).contains(c) || (0x5B...0x60).contains(c) || (0x7B...0x7E).contains(c)
        }
        guard let scalar = Unicode.Scalar(value) else { return false }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// Scalars of valid UTF-8 bytes.
    package static func scalars(_ bytes: [UInt8]) -> [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(bytes.count)
        bytes.withUnsafeBufferPointer { p in
            var i = 0
            while i < p.count {
                let (s, n) = utf8Scalar(p, i)
                out.append(s)
                i += n
            }
        }
        return out
    }

    package static func bytes(_ scalars: [UInt32]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(scalars.count)
        for s in scalars { appendUTF8(s, to: &out) }
        return out
    }
}
