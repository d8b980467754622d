import VLMCore
import VLMImage

/// The image a vision tower takes, from a sample's patches: uint8 `[tiles, (S/P)², P·P·3]` (patches row-major,
/// pixels (y, x, channel) inside) → float32 `[tiles, 3, S, S]`, each value looked up in VLMImage's normalization
/// table (`Normalization.table`, what `CLIPImageProcessor` computes). One pass, into the caller's buffer.
enum ImageFill {
    static func fill(_ patches: UnsafePointer<UInt8>, tiles: Int, count: Int, dim: Int, normalization: Normalization,
                     into out: UnsafeMutablePointer<Float>) throws {
        let p = Int((Double(dim / 3)).squareRoot().rounded()), g = Int(Double(count).squareRoot().rounded())
        guard tiles >= 1, p * p * 3 == dim, g * g == count else {
            throw VLMError(.badInput, record: "patches [\(tiles), \(count), \(dim)]",
                           "not tiles of a square grid of square RGB patches")
        }
        let s = g * p
        let table = normalization.table
        try table.withUnsafeBufferPointer { t in
            guard t.count == 768 else { throw VLMError(.badInput, record: "normalization", "needs 3 channels") }
            let r = t.baseAddress!, gr = r + 256, b = r + 512
            for tile in 0..<tiles {
                let source = patches + tile * count * dim
                let red = out + tile * 3 * s * s, green = red + s * s, blue = green + s * s
                for gy in 0..<g {
                    for gx in 0..<g {
                        let patch = source + (gy * g + gx) * dim
                        for py in 0..<p {
                            let row = patch + py * p * 3
                            let at = (gy * p + py) * s + gx * p
                            for px in 0..<p {
                                red[at + px] = r[Int(row[px * 3])]
                                green[at + px] = gr[Int(row[px * 3 + 1])]
                                blue[at + px] = b[Int(row[px * 3 + 2])]
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills `out` (float32 `[tiles, 3, S, S]`, the caller's) from `patches` (uint8 `[tiles, count, dim]`),
/// normalized with the preset `normalize` ("clip", "siglip", "imagenet").
@_cdecl("vlmdata_patches_to_image")
public func vlmdata_patches_to_image(_ patches: UnsafePointer<UInt8>?, _ tiles: Int64, _ count: Int64, _ dim: Int64,
                                     _ normalize: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                                     _ err: UnsafeMutablePointer<CChar>?, _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        guard let patches, let out else { throw VLMError(.invalidArgument, record: "patches", "is a null pointer") }
        let name = try string(normalize, "normalize")
        guard let normalization = Normalization.preset(name) else {
            throw VLMError(.invalidArgument, record: "normalize", "must be clip, siglip or imagenet, not '\(name)'")
        }
        try ImageFill.fill(patches, tiles: Int(tiles), count: Int(count), dim: Int(dim), normalization: normalization,
                           into: out)
        return Code.ok
    }
}
