import VLMCore

/// The inverse of ViT patchify for viewing: uint8 `[tiles, patches, P*P*3]` (patches row-major, inside a patch
/// (y, x, channel)) back to RGB images, laid side by side left to right.
///
/// ```swift
/// let image = try Unpatchify.strip(pixels, shape: [1, 576, 588])   // 336 x 336 RGB
/// let png = try ImageEncode.png(rgb: image.rgb, width: image.width, height: image.height)
/// ```
public enum Unpatchify {
    /// Patch side P and grid side G for `patches` patches of `patchDim` values, when both are whole squares.
    public static func geometry(patches: Int, patchDim: Int) throws -> (patch: Int, grid: Int) {
        let p = Int(Double(patchDim / 3).squareRoot().rounded())
        let g = Int(Double(patches).squareRoot().rounded())
        guard p > 0, g > 0, p * p * 3 == patchDim, g * g == patches else {
            throw VLMError(.unsupported, "cannot lay out \(patches) patches of \(patchDim) values as a square grid of square RGB patches")
        }
        return (p, g)
    }

    /// All tiles as one RGB image, `tiles * G * P` wide and `G * P` high.
    public static func strip(_ pixels: [UInt8], shape: [Int]) throws -> (rgb: [UInt8], width: Int, height: Int) {
        guard shape.count == 3, pixels.count == shape.reduce(1, *) else {
            throw VLMError(.badInput, "pixels of shape \(shape) and \(pixels.count) values: expected [tiles, patches, patch_dim]")
        }
        let (tiles, patches, dim) = (shape[0], shape[1], shape[2])
        let (p, g) = try geometry(patches: patches, patchDim: dim)
        let side = g * p
        let width = tiles * side
        var rgb = [UInt8](repeating: 0, count: width * side * 3)
        for t in 0 ..< tiles {
            for patch in 0 ..< patches {
                let (gy, gx) = patch.quotientAndRemainder(dividingBy: g)
                let source = (t * patches + patch) * dim
                for y in 0 ..< p {
                    let row = (gy * p + y) * width + t * side + gx * p
                    for i in 0 ..< p * 3 { rgb[row * 3 + i] = pixels[source + y * p * 3 + i] }
                }
            }
        }
        return (rgb, width, side)
    }
}
