import VLMCore

/// The ViT patch layout: `[tiles, (S/P)², P·P·3]` uint8, patches row-major over the tile, and inside a patch
/// (y, x, channel) order — what `x.reshape(S/P, P, S/P, P, 3).transpose(0, 2, 1, 3, 4).reshape(-1, P*P*3)` gives.
public enum Patchify {
    /// `tiles` stacked `[tiles, S, S, 3]` uint8 → `[tiles, (S/P)², P·P·3]`.
    public static func patchify(_ stacked: [UInt8], tiles: Int, size s: Int, patch p: Int) -> [UInt8] {
        precondition(s % p == 0 && stacked.count == tiles * s * s * 3)
        let g = s / p
        let rowBytes = p * 3
        return [UInt8](unsafeUninitializedCapacity: stacked.count) { out, initialized in
            stacked.withUnsafeBufferPointer { src in
                var dst = out.baseAddress!
                for t in 0..<tiles {
                    let tile = src.baseAddress! + t * s * s * 3
                    for py in 0..<g {
                        for px in 0..<g {
                            var line = tile + (py * p * s + px * p) * 3
                            for _ in 0..<p {
                                dst.update(from: line, count: rowBytes)
                                dst += rowBytes
                                line += s * 3
                            }
                        }
                    }
                }
            }
            initialized = stacked.count
        }
    }

    /// The inverse: `[tiles, (S/P)², P·P·3]` → `[tiles, S, S, 3]`, for viewing.
    public static func unpatchify(_ patches: [UInt8], tiles: Int, size s: Int, patch p: Int) -> [UInt8] {
        precondition(s % p == 0 && patches.count == tiles * s * s * 3)
        let g = s / p
        let rowBytes = p * 3
        return [UInt8](unsafeUninitializedCapacity: patches.count) { out, initialized in
            patches.withUnsafeBufferPointer { src in
                var from = src.baseAddress!
                for t in 0..<tiles {
                    let tile = out.baseAddress! + t * s * s * 3
                    for py in 0..<g {
                        for px in 0..<g {
                            var line = tile + (py * p * s + px * p) * 3
                            for _ in 0..<p {
                                line.update(from: from, count: rowBytes)
                                from += rowBytes
                                line += s * 3
                            }
                        }
                    }
                }
            }
            initialized = patches.count
        }
    }
}
