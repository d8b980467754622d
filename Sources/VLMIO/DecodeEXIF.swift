/// Reads the EXIF orientation tag (0x0112) from a JPEG's APP1 "Exif" segment or a PNG's eXIf chunk.
/// Returns 1 (upright) when there is none or it is malformed. Used only for `--exif-transpose`: HF and LLaVA
/// never rotate, so by default the tag is ignored.
package enum EXIFOrientation {
    package static func fromJPEG(_ bytes: UnsafeRawBufferPointer) -> Int {
        var i = 2
        let n = bytes.count
        while i + 4 <= n {
            guard bytes[i] == 0xFF else { return 1 }
            let marker = bytes[i + 1]
            if marker == 0xFF { i += 1; continue }
            if marker == 0xDA || marker == 0xD9 { return 1 }
            let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            guard length >= 2, i + 2 + length <= n else { return 1 }
            if marker == 0xE1, length >= 8 {
                let start = i + 4
                let exif: [UInt8] = [0x45, 0x78, 0x69, 0x66, 0, 0]   // "Exif\0\0"
                if (0..<6).allSatisfy({ bytes[start + $0] == exif[$0] }) {
                    return fromTIFF(UnsafeRawBufferPointer(rebasing: bytes[(start + 6)..<(i + 2 + length)]))
                }
            }
            i += 2 + length
        }
        return 1
    }

    /// Parses IFD0 of a TIFF structure ("II*\0" or "MM\0*") for tag 0x0112.
    package static func fromTIFF(_ tiff: UnsafeRawBufferPointer) -> Int {
        guard tiff.count >= 8 else { return 1 }
        let little: Bool
        switch (tiff[0], tiff[1]) {
        case (0x49, 0x49): little = true
        case (0x4D, 0x4D): little = false
        default: return 1
        }
        func u16(_ at: Int) -> Int? {
            guard at >= 0, at + 2 <= tiff.count else { return nil }
            return little ? Int(tiff[at]) | Int(tiff[at + 1]) << 8 : Int(tiff[at]) << 8 | Int(tiff[at + 1])
        }
        func u32(_ at: Int) -> Int? {
            guard let a = u16(at), let b = u16(at + 2) else { return nil }
            return little ? a | b << 16 : a << 16 | b
        }
        guard let ifd = u32(4), let entries = u16(ifd) else { return 1 }
        for e in 0..<entries {
            let entry = ifd + 2 + e * 12
            guard let tag = u16(entry) else { return 1 }
            if tag == 0x0112 {
                guard let type = u16(entry + 2), type == 3, let value = u16(entry + 8), (1...8).contains(value) else { return 1 }
                return value
            }
        }
        return 1
    }
}
