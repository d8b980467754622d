/// The geometry of one image's patches: tile side, patch side, and how many tiles (with the anyres grid).
///
/// It is the one place that knows how pixels become image tokens. `patchify` writes `shape` as the npy shape of
/// each pixel record; `shard` rebuilds the grid from the stored npy (`init(shape:grid:)`) and takes the image-token
/// count from it; the loader and the trainer read the same shape back. Nothing else multiplies sides or hard-codes
/// 576 (= (336 / 14)²) or 588 (= 14 · 14 · 3).
///
/// Image tokens (`imageTokens`) are what LLaVA feeds the language model for the stored pixels: one token per patch
/// of every stored tile. For one tile (crop, pad, squash) that is (S / P)². For anyres it is LLaVA's count with
/// `mm_patch_merge_type` `flat` (its default: every tile's features flattened) or `spatial`: the base (global)
/// tile's patches plus every grid tile's patches, `tiles · (S / P)²`. (`spatial_unpad` also drops padded rows or
/// columns and adds a newline token per row; it needs the original image size, which the sample json records. See
/// docs/geometry.md.)
///
/// ```swift
/// let grid = PatchGrid(imageSize: 336, patchSize: 14)   // 24 × 24 patches of 588 values, 576 image tokens
/// let stored = try PatchGrid(shape: [5, 576, 588], grid: [2, 2])   // anyres 2 × 2 + base: 2880 image tokens
/// ```
public struct PatchGrid: Codable, Hashable, Sendable, CustomStringConvertible {
    /// Side of a square tile in pixels (S).
    public var imageSize: Int
    /// Side of a square patch in pixels (P).
    public var patchSize: Int
    /// Tiles stored: 1, or for anyres 1 (the base view) + rows · cols.
    public var tiles: Int
    /// The anyres tile grid (rows, cols); nil for a single tile.
    public var gridRows: Int?
    public var gridCols: Int?

    /// CLIP ViT-L/14 at 336 px (LLaVA-1.5's vision tower): 24 × 24 = 576 patches of 588 values.
    public static let clipViTL14at336 = PatchGrid(imageSize: 336, patchSize: 14)

    /// One tile of `imageSize` cut into `patchSize` patches.
    public init(imageSize: Int, patchSize: Int) {
        self.init(imageSize: imageSize, patchSize: patchSize, tiles: 1, gridRows: nil, gridCols: nil)
    }

    /// `tiles` tiles; with an anyres grid, `tiles` must be 1 + rows · cols (checked by `validate()`).
    public init(imageSize: Int, patchSize: Int, tiles: Int, gridRows: Int?, gridCols: Int?) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.tiles = tiles
        self.gridRows = gridRows
        self.gridCols = gridCols
    }

    /// The grid of a stored pixel record, from its npy shape `[tiles, patches, patch·patch·3]` and, for anyres,
    /// the `[rows, cols]` patchify recorded. Throws when the shape is not one a patch grid makes.
    public init(shape: [Int], grid: [Int]? = nil) throws {
        guard shape.count == 3, shape.allSatisfy({ $0 > 0 }) else {
            throw VLMError(.corrupt, "pixel shape \(shape) is not [tiles, patches, patch·patch·3]")
        }
        let patch = Self.exactRoot(shape[2] / 3)
        let side = Self.exactRoot(shape[1])
        guard shape[2] % 3 == 0, let patch, let side else {
            throw VLMError(.corrupt, "pixel shape \(shape): \(shape[1]) patches per tile is not a square number or \(shape[2]) is not 3 · P²")
        }
        if let grid {
            guard grid.count == 2 else { throw VLMError(.corrupt, "anyres grid \(grid) is not [rows, cols]") }
        }
        self.init(imageSize: side * patch, patchSize: patch, tiles: shape[0], gridRows: grid?[0], gridCols: grid?[1])
        try validate()
    }

    /// Patches along one side of a tile (S / P).
    public var side: Int { imageSize / patchSize }
    public var patchesPerTile: Int { side * side }
    /// Values in one patch: P · P · 3 (RGB, uint8).
    public var patchDim: Int { patchSize * patchSize * 3 }
    /// The npy shape of the stored pixels.
    public var shape: [Int] { [tiles, patchesPerTile, patchDim] }
    /// Bytes of the stored pixels (uint8), without the npy header.
    public var pixelBytes: Int { tiles * patchesPerTile * patchDim }
    /// Positions the image takes in the language model (see the type's documentation for the rule).
    public var imageTokens: Int { tiles * patchesPerTile }
    /// `[rows, cols]` of the anyres grid, nil for one tile.
    public var grid: [Int]? { gridRows.flatMap { r in gridCols.map { [r, $0] } } }

    /// The same tile geometry with `tiles` tiles (anyres: 1 + rows · cols).
    public func withTiles(_ tiles: Int, gridRows: Int? = nil, gridCols: Int? = nil) -> PatchGrid {
        PatchGrid(imageSize: imageSize, patchSize: patchSize, tiles: tiles, gridRows: gridRows, gridCols: gridCols)
    }

    public func validate() throws {
        guard imageSize > 0, patchSize > 0, imageSize % patchSize == 0 else {
            throw VLMError(.invalidArgument, "image size \(imageSize) is not a positive multiple of patch size \(patchSize)")
        }
        guard tiles >= 1 else { throw VLMError(.corrupt, "\(tiles) tiles") }
        if let rows = gridRows, let cols = gridCols, !(rows == 1 && cols == 1 && tiles == 1) {
            guard rows >= 1, cols >= 1, tiles == 1 + rows * cols else {
                throw VLMError(.corrupt, "\(tiles) tiles do not match an anyres grid of \(rows) × \(cols) (expected 1 + \(rows * cols))")
            }
        }
    }

    public var description: String {
        let tilesText = tiles == 1 ? "1 tile" : "\(tiles) tiles" + (grid.map { " (base + \($0[0])×\($0[1]))" } ?? "")
        return "\(tilesText) of \(imageSize) px, \(side)×\(side) patches of \(patchSize) px: \(imageTokens) image tokens"
    }

    static func exactRoot(_ n: Int) -> Int? {
        guard n > 0 else { return nil }
        var r = Int(Double(n).squareRoot().rounded())
        while r * r > n { r -= 1 }
        while (r + 1) * (r + 1) <= n { r += 1 }
        return r * r == n ? r : nil
    }
}
