import Foundation
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

/// Fills `out` (float32 `[n, tiles, 3, S, S]`, the caller's) from `n` samples' patches: `patches[i]` points to
/// uint8 `[tiles, count, dim]`, or is null for a zero image (a text-only row). One call per batch; the output's
/// pages are populated in one system call first (`MADV_POPULATE_WRITE`), rather than faulted in one by one.
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
        ImageFill.populate(out, bytes: Int(n) * image * MemoryLayout<Float>.stride)
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

extension ImageFill {
    /// Asks the kernel to map every page of `[pointer, pointer + bytes)` writable at once; a fresh tensor would
    /// otherwise take one page fault per 4 KiB as it is filled. Best effort: older kernels refuse, nothing changes.
    static func populate(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: pointer) & ~(page - 1)
        let end = Int(bitPattern: pointer) + bytes
        guard bytes > 0, let base = UnsafeMutableRawPointer(bitPattern: start) else { return }
        let madvPopulateWrite: Int32 = 23  // Linux 5.14+; not in every libc's headers
        _ = madvise(base, end - start, madvPopulateWrite)
    }
}
