import VLMCore

/// The ViT patch layout: `[tiles, (S/P)², P·P·3]` uint8, patches row-major over the tile, and inside a patch
/// (y, x, channel) order — what `x.reshape(S/P, P, S/P, P, 3).transpose(0, 2, 1, 3, 4).reshape(-1, P*P*3)` gives.
public enum Patchify {
    /// `tiles` stacked `[tiles, S, S, 3]` uint8 → `[tiles, (S/P)², P·P·3]`, after `prefix` (an npy header, say:
    /// the file is then built in one allocation, with no second copy of the pixels).
    public static func patchify(_ stacked: [UInt8], tiles: Int, size s: Int, patch p: Int, prefix: [UInt8] = []) -> [UInt8] {
        rearrange(stacked, tiles: tiles, size: s, patch: p, toPatches: true, prefix: prefix)
    }

    /// The inverse: `[tiles, (S/P)², P·P·3]` → `[tiles, S, S, 3]`, for viewing.
    public static func unpatchify(_ patches: [UInt8], tiles: Int, size s: Int, patch p: Int) -> [UInt8] {
        rearrange(patches, tiles: tiles, size: s, patch: p, toPatches: false)
    }

    /// One walk over the patch rows (P·3 bytes each) in patch order, pairing each with its place in the image;
    /// `toPatches` says which side is read and which written.
    static func rearrange(_ input: [UInt8], tiles: Int, size s: Int, patch p: Int, toPatches: Bool, prefix: [UInt8] = []) -> [UInt8] {
        precondition(s % p == 0 && input.count == tiles * s * s * 3)
        let g = s / p
        let rowBytes = p * 3
        return [UInt8](unsafeUninitializedCapacity: prefix.count + input.count) { out, initialized in
            _ = UnsafeMutableBufferPointer(rebasing: out[..<prefix.count]).initialize(from: prefix)
            input.withUnsafeBufferPointer { src in
                let from = src.baseAddress!, to = out.baseAddress! + prefix.count
                var patched = 0
                for t in 0..<tiles {
                    let tile = t * s * s * 3
                    for py in 0..<g {
                        for px in 0..<g {
                            var image = tile + (py * p * s + px * p) * 3
                            for _ in 0..<p {
                                if toPatches {
                                    (to + patched).update(from: from + image, count: rowBytes)
                                } else {
                                    (to + image).update(from: from + patched, count: rowBytes)
                                }
                                patched += rowBytes
                                image += s * 3
                            }
                        }
                    }
                }
            }
            initialized = prefix.count + input.count
        }
    }
}
