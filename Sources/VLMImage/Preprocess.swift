import Foundation
import VLMCore
import VLMIO

/// How an image becomes square tiles for a ViT.
public enum ResizeMode: String, Sendable, Codable, CaseIterable {
    /// CLIP / LLaVA-1.0: shortest edge to S (long side truncated as HF does), then a center crop of S×S.
    case crop
    /// LLaVA-1.5 `expand2square`: centred on a square filled with the mean colour, then resized to S×S.
    case pad
    /// SigLIP: straight to S×S, aspect ratio not kept.
    case squash
    /// LLaVA-NeXT: a global S×S view plus the S×S tiles of the best grid resolution (resize keeping aspect, pad).
    case anyres
}

/// Everything that decides the pixels: hashed into `pixels.config_hash`.
public struct PreprocessConfig: Sendable, Codable, Hashable {
    public var imageSize: Int
    public var patchSize: Int
    public var mode: ResizeMode
    public var resample: ResampleFilter
    /// Which resize pass runs first: Pillow 13's rule or Pillow ≤ 12.1's horizontal-first (see `ResizePassOrder`).
    public var passOrder: ResizePassOrder
    /// JPEG decoded at 1/2, 1/4 or 1/8 scale when the target is that much smaller. Not bit-identical to PIL.
    public var fastDecode: Bool
    /// Apply the EXIF orientation before preprocessing (HF and LLaVA do not).
    public var exifTranspose: Bool
    /// `pad` background, `int(x * 255)` of the normalization mean (CLIP's: 122, 116, 104).
    public var background: [Int]
    /// `anyres` candidate resolutions as (width, height) pairs, each a multiple of `imageSize`.
    public var gridPinpoints: [[Int]]

    public static let clipBackground = [122, 116, 104]

    /// LLaVA-NeXT's default pinpoints for 336 px towers: 336x672, 672x336, 672x672, 1008x336, 336x1008.
    public static func defaultPinpoints(imageSize: Int) -> [[Int]] {
        [[1, 2], [2, 1], [2, 2], [3, 1], [1, 3]].map { [$0[0] * imageSize, $0[1] * imageSize] }
    }

    public init(imageSize: Int = 336, patchSize: Int = 14, mode: ResizeMode = .crop, resample: ResampleFilter = .bicubic,
                passOrder: ResizePassOrder = .pillow13, fastDecode: Bool = false, exifTranspose: Bool = false, background: [Int] = PreprocessConfig.clipBackground,
                gridPinpoints: [[Int]]? = nil) {
        self.imageSize = imageSize
        self.patchSize = patchSize
        self.mode = mode
        self.resample = resample
        self.passOrder = passOrder
        self.fastDecode = fastDecode
        self.exifTranspose = exifTranspose
        self.background = background
        self.gridPinpoints = gridPinpoints ?? PreprocessConfig.defaultPinpoints(imageSize: imageSize)
    }

    /// Checks the sizes; the messages are meant for a user.
    public func validate() throws {
        guard imageSize > 0, imageSize <= 8192 else {
            throw VLMError(.invalidArgument, "image size \(imageSize) must be between 1 and 8192")
        }
        guard patchSize > 0, imageSize % patchSize == 0 else {
            throw VLMError(.invalidArgument, "image size \(imageSize) is not divisible by patch size \(patchSize)")
        }
        guard background.count == 3, background.allSatisfy({ (0...255).contains($0) }) else {
            throw VLMError(.invalidArgument, "background must be three values 0...255")
        }
        if mode == .anyres {
            guard !gridPinpoints.isEmpty,
                  gridPinpoints.allSatisfy({ $0.count == 2 && $0[0] > 0 && $0[1] > 0 && $0[0] % imageSize == 0 && $0[1] % imageSize == 0 }) else {
                throw VLMError(.invalidArgument, "anyres grid pinpoints must be (width, height) pairs that are multiples of \(imageSize)")
            }
        }
    }

    /// The sha256 of the canonical JSON: equal configs give equal hashes.
    public var hash: String { Hashing.canonicalHash(self) }
    public var canonicalJSON: String { String(decoding: Hashing.canonicalJSON(self), as: UTF8.self) }

    /// One tile of this config's patch geometry (`PatchGrid`, the one place that derives patch counts).
    public var patchGrid: PatchGrid { PatchGrid(imageSize: imageSize, patchSize: patchSize) }
    /// The most tiles one image can take: 1, or for anyres 1 + the largest pinpoint grid.
    public var maxTiles: Int {
        mode == .anyres ? 1 + gridPinpoints.map { ($0[0] / imageSize) * ($0[1] / imageSize) }.max()! : 1
    }
    /// Patches per tile side.
    public var gridSide: Int { patchGrid.side }
    public var patchesPerTile: Int { patchGrid.patchesPerTile }
    public var patchDim: Int { patchGrid.patchDim }

    /// Decode options for this config: the smallest JPEG scale that still covers what the mode resizes to.
    public func decodeOptions(pixelLimit: Int? = PixelLimit.error) -> DecodeOptions {
        DecodeOptions(pixelLimit: pixelLimit, minimumSize: nil, readOrientation: exifTranspose)
    }
}

/// The S×S tiles an image becomes (one for crop/pad/squash; 1 + rows·cols for anyres, the global view first).
public struct PreprocessedImage: Sendable, Equatable {
    public var tiles: [PixelBuffer]
    public var gridRows: Int
    public var gridCols: Int

    public init(tiles: [PixelBuffer], gridRows: Int, gridCols: Int) {
        self.tiles = tiles
        self.gridRows = gridRows
        self.gridCols = gridCols
    }

    /// All tiles as one `[tiles, S, S, 3]` uint8 array.
    public var stacked: [UInt8] {
        tiles.count == 1 ? tiles[0].pixels : tiles.flatMap(\.pixels)
    }
}

/// Decode + preprocess in one object per worker thread.
///
/// ```swift
/// let pre = Preprocessor(config: PreprocessConfig(imageSize: 336, mode: .pad))
/// let result = try pre.process(file: "cat.jpg")      // result.tiles[0] is 336x336 RGB
/// ```
public final class Preprocessor {
    public let config: PreprocessConfig
    private let decoder: ImageDecoder

    /// Crop mode decodes only the JPEG region its kept window reads (`processRegion`); false decodes every image
    /// whole. `VLMDATA_FULL_DECODE=1` sets false for a process, to compare the two paths.
    public var regionDecode: Bool
    /// The JPEG region the last `process` call decoded (`processRegion`), nil when it decoded the whole image.
    public private(set) var lastDecodedRegion: PixelRect?

    public init(config: PreprocessConfig, pixelLimit: Int? = PixelLimit.error) {
        self.config = config
        self.decoder = ImageDecoder(options: config.decodeOptions(pixelLimit: pixelLimit))
        self.regionDecode = ProcessInfo.processInfo.environment["VLMDATA_FULL_DECODE"] == nil
    }

    public func process(file path: String) throws -> PreprocessedImage {
        try process(ImageFileReader.read(path), name: path)
    }

    public func process(_ bytes: [UInt8], name: String) throws -> PreprocessedImage {
        lastDecodedRegion = nil
        if regionDecode, config.mode == .crop, !config.fastDecode,
           let tile = try bytes.withUnsafeBytes({ try processRegion($0, name: name) }) {
            return PreprocessedImage(tiles: [tile], gridRows: 1, gridCols: 1)
        }
        return preprocess(try decode(bytes, name: name))
    }

    /// Crop mode from a JPEG region: the source pixels the kept window reads (`PixelBuffer.sourceRect`) are
    /// decoded alone (`ImageDecoder.decodeRegion`), and the window is computed from them with the whole image's
    /// coefficients, so the tile is the whole decode's tile byte for byte. Nil when the decoder declines (not a
    /// JPEG, the window reads the whole image, an EXIF rotation to apply, a file that does not end cleanly).
    func processRegion(_ raw: UnsafeRawBufferPointer, name: String) throws -> PixelBuffer? {
        guard let size = JPEGSize.read(raw),
              let crop = Preprocessor.cropGeometry(width: size.width, height: size.height, size: config.imageSize) else { return nil }
        let need = PixelBuffer.sourceRect(width: size.width, height: size.height, outW: crop.width, outH: crop.height,
                                          filter: config.resample, window: crop.window)
        guard let region = try decoder.decodeRegion(raw, name: name, covering: (need.x, need.y, need.width, need.height)),
              region.imageWidth == size.width, region.imageHeight == size.height else { return nil }
        let part = PixelRect(x: region.x, y: region.y, width: region.width, height: region.height)
        lastDecodedRegion = part
        precondition(part.x <= need.x && part.y <= need.y && part.x + part.width >= need.x + need.width
                     && part.y + part.height >= need.y + need.height, "\(name): JPEG region \(part) does not cover \(need)")
        return PixelBuffer(width: region.width, height: region.height, pixels: region.rgb)
            .resized(part: part, ofImageWidth: size.width, height: size.height, toWidth: crop.width, height: crop.height,
                     filter: config.resample, window: crop.window, order: config.passOrder)
    }

    /// Only the decode (plus the EXIF transpose when configured): the RGB image the modes start from.
    public func decode(_ bytes: [UInt8], name: String) throws -> PixelBuffer {
        try bytes.withUnsafeBytes { raw in
            if config.fastDecode, let minimum = fastDecodeMinimum(raw, name: name) {
                decoder.options.minimumSize = minimum
            } else {
                decoder.options.minimumSize = nil
            }
            let decoded = try decoder.decode(raw, name: name)
            let image = PixelBuffer(decoded)
            return config.exifTranspose ? image.oriented(decoded.orientation) : image
        }
    }

    /// The smallest decoded size that still lets the mode resize down (never up) to its targets.
    private func fastDecodeMinimum(_ raw: UnsafeRawBufferPointer, name: String) -> (width: Int, height: Int)? {
        guard let size = JPEGSize.read(raw) else { return nil }
        let s = config.imageSize
        // An EXIF rotation swaps width and height; every bound below is symmetric in them or uses the long side.
        let (w, h) = (size.width, size.height)
        switch config.mode {
        case .crop, .squash:
            // Both sides at least S: the shortest edge is never upscaled after a reduced decode.
            return (s, s)
        case .pad:
            let m = min(w, h) * s / max(w, h, 1)
            return (m, m)
        case .anyres:
            let largest = config.gridPinpoints.reduce(0) { max($0, $1[0], $1[1]) }
            let factor = Double(largest) / Double(max(w, h))
            let m = Int((Double(min(w, h)) * factor).rounded(.up))
            return (m, m)
        }
    }

    /// The mode applied to a decoded RGB image.
    public func preprocess(_ image: PixelBuffer) -> PreprocessedImage {
        Preprocessor.preprocess(image, config: config)
    }

    public static func preprocess(_ image: PixelBuffer, config: PreprocessConfig) -> PreprocessedImage {
        let s = config.imageSize
        switch config.mode {
        case .crop:
            return PreprocessedImage(tiles: [centerCropped(image, size: s, filter: config.resample, order: config.passOrder)], gridRows: 1, gridCols: 1)
        case .pad:
            let bg = (UInt8(config.background[0]), UInt8(config.background[1]), UInt8(config.background[2]))
            let square = image.expandedToSquare(background: bg)
            return PreprocessedImage(tiles: [square.resized(width: s, height: s, filter: config.resample, order: config.passOrder)], gridRows: 1, gridCols: 1)
        case .squash:
            return PreprocessedImage(tiles: [image.resized(width: s, height: s, filter: config.resample, order: config.passOrder)], gridRows: 1, gridCols: 1)
        case .anyres:
            return AnyRes.process(image, config: config)
        }
    }

    /// HF `CLIPImageProcessor`: resize the shortest edge to `size` (long edge `int(size * long / short)`),
    /// then center crop at ((h − size) // 2, (w − size) // 2). Only the kept window is computed.
    public static func centerCropped(_ image: PixelBuffer, size s: Int, filter: ResampleFilter,
                                     order: ResizePassOrder = .pillow13) -> PixelBuffer {
        let (w, h) = (image.width, image.height)
        if let crop = cropGeometry(width: w, height: h, size: s) {
            return image.resized(width: crop.width, height: crop.height, filter: filter, window: crop.window, order: order)
        }
        let short = min(w, h), long = max(w, h)
        let newLong = Int(Double(s * long) / Double(short))
        let (newW, newH) = w <= h ? (s, newLong) : (newLong, s)
        // Smaller than the crop (only when S·long/short rounds below S): HF pads with zeros, centred (ceil).
        let resized = image.resized(width: newW, height: newH, filter: filter, order: order)
        var canvas = PixelBuffer(width: max(s, newW), height: max(s, newH))
        let padTop = (canvas.height - newH + 1) / 2, padLeft = (canvas.width - newW + 1) / 2
        canvas.paste(resized, x: padLeft, y: padTop)
        return canvas.cropped(PixelRect(x: (canvas.width - s) / 2, y: (canvas.height - s) / 2, width: s, height: s))
    }

    /// The crop mode's resize of a `width` x `height` image and the window it keeps; nil when the resized image is
    /// smaller than the crop (S·long/short rounding below S), which HF pads instead.
    static func cropGeometry(width w: Int, height h: Int, size s: Int) -> (width: Int, height: Int, window: PixelRect)? {
        let short = min(w, h), long = max(w, h)
        guard short > 0 else { return nil }
        let newLong = Int(Double(s * long) / Double(short))
        let (newW, newH) = w <= h ? (s, newLong) : (newLong, s)
        let top = (newH - s) / 2, left = (newW - s) / 2
        guard top >= 0, left >= 0 else { return nil }
        return (newW, newH, PixelRect(x: left, y: top, width: s, height: s))
    }
}

/// Width and height from a JPEG's SOF marker (for choosing the fast-decode scale before decoding).
enum JPEGSize {
    static func read(_ bytes: UnsafeRawBufferPointer) -> (width: Int, height: Int)? {
        guard bytes.count > 4, bytes[0] == 0xFF, bytes[1] == 0xD8 else { return nil }
        var i = 2
        while i + 9 < bytes.count {
            guard bytes[i] == 0xFF else { return nil }
            let marker = bytes[i + 1]
            if marker == 0xFF { i += 1; continue }
            if (0xC0...0xCF).contains(marker), marker != 0xC4, marker != 0xC8, marker != 0xCC {
                let h = Int(bytes[i + 5]) << 8 | Int(bytes[i + 6])
                let w = Int(bytes[i + 7]) << 8 | Int(bytes[i + 8])
                return (w, h)
            }
            let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
            i += 2 + length
        }
        return nil
    }
}
