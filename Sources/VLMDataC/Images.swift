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
            // Output row by output row: each plane is written sequentially (about 40% less time than patch by
            // patch, which jumps between rows every 14 values), reading each patch's row of 14 RGB pixels.
            for tile in 0..<tiles {
                let source = patches + tile * count * dim
                let red = out + tile * 3 * s * s, green = red + s * s, blue = green + s * s
                for y in 0..<s {
                    let (gy, py) = y.quotientAndRemainder(dividingBy: p)
                    let rowBase = source + gy * g * dim + py * p * 3
                    let ro = red + y * s, go = green + y * s, bo = blue + y * s
                    var x = 0
                    for gx in 0..<g {
                        let row = rowBase + gx * dim
                        for px in 0..<p {
                            ro[x] = r[Int(row[px * 3])]
                            go[x] = gr[Int(row[px * 3 + 1])]
                            bo[x] = b[Int(row[px * 3 + 2])]
                            x += 1
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

/// Fills `out` (float32 `[n, tiles, 3, S, S]`, the caller's) from `n` samples' patches: `patches[i]` points to
/// uint8 `[tiles, count, dim]`, or is null for a zero image (a text-only row). One call per batch. (Populating
/// the output's pages up front with `MADV_POPULATE_WRITE` was measured and saved nothing: see BENCHMARKS.md.)
@_cdecl("vlmdata_images_fill")
public func vlmdata_images_fill(_ patches: UnsafePointer<UnsafePointer<UInt8>?>?, _ n: Int64, _ tiles: Int64,
                                _ count: Int64, _ dim: Int64, _ normalize: UnsafePointer<CChar>?,
                                _ out: UnsafeMutablePointer<Float>?, _ err: UnsafeMutablePointer<CChar>?,
                                _ errCapacity: Int) -> Int32 {
    guarded(err, errCapacity) {
        guard let patches, let out else { throw VLMError(.invalidArgument, record: "patches", "is a null pointer") }
        guard n >= 0, tiles >= 1, count >= 1, dim >= 3 else {
            throw VLMError(.invalidArgument, record: "images [\(n), \(tiles), \(count), \(dim)]", "not a batch of patches")
        }
        let name = try string(normalize, "normalize")
        guard let normalization = Normalization.preset(name) else {
            throw VLMError(.invalidArgument, record: "normalize", "must be clip, siglip or imagenet, not '\(name)'")
        }
        let image = Int(tiles) * Int(count) * Int(dim)  // floats per image: tiles × 3 × S × S = tiles × count × dim
        for i in 0..<Int(n) {
            let target = out + i * image
            if let source = patches[i] {
                try ImageFill.fill(source, tiles: Int(tiles), count: Int(count), dim: Int(dim),
                                   normalization: normalization, into: target)
            } else {
                target.initialize(repeating: 0, count: image)
            }
        }
        return Code.ok
    }
}

