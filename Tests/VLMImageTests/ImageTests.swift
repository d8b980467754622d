import Foundation
import Testing
@testable import VLMImage
@testable import VLMIO
import VLMCore

/// `<package root>/../shared/data`, found from this file's path (CI clones the repo with shared/ beside it).
let sharedData: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.deletingLastPathComponent().appendingPathComponent("shared/data").path
}()

func cocoFiles() -> [String] {
    let dir = sharedData + "/coco-mini/train2017"
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.filter { $0.hasSuffix(".jpg") }.sorted().map { dir + "/" + $0 }
}

// MARK: - crafted PNG bytes

/// CRC-32 (ISO 3309, as PNG chunks use), to craft valid and deliberately broken chunks.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~UInt32(0)
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }
}

func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let body = Array(type.utf8) + data
    let crc = body.withUnsafeBytes { CRC32.checksum($0) }
    return be32(data.count) + body + be32(Int(crc))
}

/// A zlib stream of stored (uncompressed) deflate blocks.
func zlibStored(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x78, 0x01]
    var i = 0
    repeat {
        let n = min(65535, data.count - i)
        let final: UInt8 = i + n >= data.count ? 1 : 0
        out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
        out += data[i..<(i + n)]
        i += n
    } while i < data.count
    var a: UInt32 = 1, b: UInt32 = 0
    for byte in data { a = (a + UInt32(byte)) % 65521; b = (b + a) % 65521 }
    return out + be32(Int(b << 16 | a))
}

/// `rows` already packed, filter type 0 added here; `idat` replaces the zlib stream of them; `after` goes after IDAT.
func makePNG(width: Int, height: Int, depth: Int, colorType: Int, rows: [[UInt8]], extra: [UInt8] = [],
             interlaced: Bool = false, idat: [UInt8]? = nil, after: [UInt8] = []) -> [UInt8] {
    let ihdr = be32(width) + be32(height) + [UInt8(depth), UInt8(colorType), 0, 0, interlaced ? 1 : 0]
    let raw: [UInt8] = rows.flatMap { row -> [UInt8] in [UInt8(0)] + row }
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + extra
        + chunk("IDAT", idat ?? zlibStored(raw)) + after + chunk("IEND", [])
}

/// Samples of `depth` bits packed MSB first into bytes.
func packBits(_ values: [Int], depth: Int) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: (values.count * depth + 7) / 8)
    for (i, v) in values.enumerated() { out[i * depth / 8] |= UInt8(v << (8 - depth - (i * depth) % 8)) }
    return out
}

/// The Adam7 pass rows (each packed) of a `width` x `height` grid of samples.
func adam7Rows(_ grid: [[Int]], depth: Int) -> [[UInt8]] {
    let passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    var rows: [[UInt8]] = []
    for (x0, y0, dx, dy) in passes {
        guard x0 < grid[0].count else { continue }
        for y in stride(from: y0, to: grid.count, by: dy) {
            rows.append(packBits(stride(from: x0, to: grid[0].count, by: dx).map { grid[y][$0] }, depth: depth))
        }
    }
    return rows
}

func decodeError(_ bytes: [UInt8], name: String = "test-input") -> VLMError? {
    do {
        _ = try ImageDecoder().decode(bytes, name: name)
        return nil
    } catch let error as VLMError {
        return error
    } catch {
        return VLMError(.io, "unexpected error type: \(error)")
    }
}

struct DecodeTests {
    @Test func emptyFileIsAClearError() {
        let error = decodeError([], name: "empty.jpg")
        #expect(error?.file == "empty.jpg")
        #expect(error?.message.contains("empty") == true)
    }

    @Test func unknownBytesAreRejected() {
        let error = decodeError(Array("this is not an image at all".utf8), name: "notes.jpg")
        #expect(error?.message.contains("cannot identify image file") == true)
        #expect(error?.description.hasPrefix("notes.jpg") == true)
    }

    @Test func pngBombIsRejectedFromTheHeader() {
        // 100000 x 100000 claimed; the IDAT is tiny, so only the header check can reject it (before allocating).
        let bytes = makePNG(width: 100_000, height: 100_000, depth: 8, colorType: 2, rows: [[0, 0, 0]])
        let error = decodeError(bytes, name: "bomb.png")
        #expect(error?.message.contains("decompression bomb") == true)
        #expect(error?.file == "bomb.png")
    }

    @Test func pixelLimitCanBeDisabledButDataMustThenSuffice() {
        let bytes = makePNG(width: 100_000, height: 100_000, depth: 8, colorType: 2, rows: [[0, 0, 0]])
        do {
            _ = try ImageDecoder(options: DecodeOptions(pixelLimit: nil)).decode(bytes, name: "bomb.png")
            Issue.record("a 100000x100000 header over 3 pixels of data decoded")
        } catch let error as VLMError {
            #expect(error.message.contains("truncated"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func truncatedAndCorruptJPEGsAreErrors() throws {
        let file = try #require(cocoFiles().first)
        let bytes = try ImageFileReader.read(file)
        let truncated = decodeError(Array(bytes.prefix(bytes.count / 2)), name: "half.jpg")
        #expect(truncated?.message.contains("truncated") == true)
        var corrupt: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0]
        var state: UInt32 = 12345
        for _ in 0..<4000 { state = state &* 1_103_515_245 &+ 12345; corrupt.append(UInt8(state >> 24)) }
        #expect(decodeError(corrupt, name: "corrupt.jpg") != nil)
        // Every prefix length decodes or fails cleanly, never crashes.
        for cut in stride(from: 2, to: bytes.count, by: max(1, bytes.count / 40)) {
            _ = decodeError(Array(bytes.prefix(cut)))
        }
    }

    @Test func cocoJPEGsDecodeToTheirHeaderSize() throws {
        let decoder = ImageDecoder()
        for file in cocoFiles().prefix(10) {
            let image = try decoder.decode(file: file)
            let header = try ImageFileReader.read(file).withUnsafeBytes { JPEGSize.read($0) }
            #expect(image.width == header?.width && image.height == header?.height)
            #expect(image.rgb.count == image.width * image.height * 3)
        }
    }

    @Test func fastDecodeUsesAReducedScaleThatStillCovers() throws {
        let file = try #require(cocoFiles().first)
        var options = DecodeOptions()
        options.minimumSize = (100, 100)
        let image = try ImageDecoder(options: options).decode(file: file)
        #expect(image.reducedScale)
        #expect(image.width >= 100 && image.height >= 100)
        let full = try ImageDecoder().decode(file: file)
        #expect(image.width < full.width)
    }

    @Test func cmykConversionFollowsPIL() {
        // libjpeg CMYK bytes (Adobe-inverted): PIL inverts, then cmyk2rgb: k - MULDIV255(255 - c, k).
        let rgb = JPEGDecoder.invertedCMYKToRGB([255, 255, 255, 255, 0, 0, 0, 255, 255, 128, 0, 200, 10, 20, 30, 0], pixels: 4)
        #expect(Array(rgb[0..<3]) == [255, 255, 255])
        #expect(Array(rgb[3..<6]) == [0, 0, 0])
        func muldiv(_ a: Int, _ b: Int) -> Int { let t = a * b + 128; return ((t >> 8) + t) >> 8 }
        #expect(Array(rgb[6..<9]).map(Int.init) == [200 - muldiv(0, 200), 200 - muldiv(127, 200), 200 - muldiv(255, 200)])
        #expect(Array(rgb[9..<12]) == [0, 0, 0])
    }

    @Test func png16BitKeepsTheHighByteAndGray16Clamps() throws {
        let rgb16: [UInt8] = [0x12, 0x34, 0xAB, 0xCD, 0xFF, 0x00]   // one pixel, big-endian samples
        let image = try ImageDecoder().decode(makePNG(width: 1, height: 1, depth: 16, colorType: 2, rows: [rgb16]), name: "rgb16.png")
        #expect(image.rgb == [0x12, 0xAB, 0xFF])
        let gray16: [UInt8] = [0x00, 0x80, 0x01, 0x00, 0xFF, 0xFF]   // 128, 256, 65535 → 128, 255, 255
        let gray = try ImageDecoder().decode(makePNG(width: 3, height: 1, depth: 16, colorType: 0, rows: [gray16]), name: "g16.png")
        #expect(gray.rgb == [128, 128, 128, 255, 255, 255, 255, 255, 255])
    }

    @Test func paletteWithTransparencyIsLookedUpWithoutBlending() throws {
        let plte = chunk("PLTE", [255, 0, 0, 0, 255, 0, 0, 0, 255])
        let trns = chunk("tRNS", [0, 128])
        // 2-bit indices 0, 1, 2, 3 (3 is past the palette: black).
        let bytes = makePNG(width: 4, height: 1, depth: 2, colorType: 3, rows: [[0b0001_1011]], extra: plte + trns)
        let image = try ImageDecoder().decode(bytes, name: "pal.png")
        #expect(image.rgb == [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0])
    }

    @Test func rgbaDropsAlphaAndGrayExpands() throws {
        let rgba = try ImageDecoder().decode(makePNG(width: 2, height: 1, depth: 8, colorType: 6, rows: [[10, 20, 30, 0, 40, 50, 60, 255]]), name: "a.png")
        #expect(rgba.rgb == [10, 20, 30, 40, 50, 60])
        let gray2 = try ImageDecoder().decode(makePNG(width: 4, height: 1, depth: 2, colorType: 0, rows: [[0b0001_1011]]), name: "g2.png")
        #expect(gray2.rgb == [0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255])
    }

    @Test func pngWithBadHeaderCRCOrMissingDataFails() {
        var bytes = makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: [[1, 2], [3, 4]])
        bytes[29] ^= 0xFF   // inside the IHDR CRC
        #expect(decodeError(bytes)?.message.contains("checksum") == true)
        let short = makePNG(width: 2, height: 3, depth: 8, colorType: 0, rows: [[1, 2]])
        #expect(decodeError(short, name: "short.png")?.message.contains("truncated") == true)
    }

    @Test func pngChunksAreCheckedAsPILChecksThem() throws {
        let rows: [[UInt8]] = [[1, 2], [3, 4]]
        let pixels: [UInt8] = [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        var text = chunk("tEXt", Array("a\0b".utf8))
        text[text.count - 1] ^= 1
        // A bad CRC before the image data fails opening, ancillary chunk or not ...
        let early = decodeError(makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: rows, extra: text))
        #expect(early?.message == "cannot identify image file: broken PNG file (bad header checksum in 'tEXt')")
        // ... one after it is never read; neither is the IDAT CRC.
        let late = try ImageDecoder().decode(makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: rows, after: text), name: "late.png")
        #expect(late.rgb == pixels)
        var idat = makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: rows)
        idat[idat.count - 13] ^= 1   // the last byte of the IDAT CRC (IEND is 12 bytes)
        #expect(try ImageDecoder().decode(idat, name: "idat.png").rgb == pixels)
        // An unknown critical chunk is skipped, as PIL skips it (libpng alone would refuse it).
        let unknown = makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: rows, extra: chunk("ABCD", [1, 2, 3]))
        #expect(try ImageDecoder().decode(unknown, name: "unknown.png").rgb == pixels)
    }

    @Test func pngImageDataIsNeededOnlyUpToTheLastRow() throws {
        let raw: [UInt8] = [0, 1, 2, 0, 3, 4]
        // One non-final stored block and no adler32: every row is there, the zlib stream never ends. PIL decodes it.
        let open = [0x78, 0x01, 0, UInt8(raw.count), 0, ~UInt8(raw.count), 0xFF] + raw
        let image = try ImageDecoder().decode(makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: [], idat: open), name: "open.png")
        #expect(image.rgb == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])
        // Garbage instead of deflate data is PIL's "broken data stream".
        let broken = makePNG(width: 2, height: 2, depth: 8, colorType: 0, rows: [], idat: [0x78, 0x9C, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        let error = decodeError(broken, name: "broken.png")
        #expect(error?.message.hasPrefix("broken data stream") == true)
        #expect(error?.file == "broken.png")
    }

    @Test func interlacedSubByteSamplesMatchTheProgressiveImage() throws {
        let width = 11, height = 9
        let grid = (0..<height).map { y in (0..<width).map { x in (x * 7 + y * 3) % 4 } }
        let plain = makePNG(width: width, height: height, depth: 2, colorType: 0, rows: grid.map { packBits($0, depth: 2) })
        let adam7 = makePNG(width: width, height: height, depth: 2, colorType: 0, rows: adam7Rows(grid, depth: 2), interlaced: true)
        let expected = grid.flatMap { row in row.flatMap { v in [UInt8(v * 85), UInt8(v * 85), UInt8(v * 85)] } }
        #expect(try ImageDecoder().decode(plain, name: "plain.png").rgb == expected)
        #expect(try ImageDecoder().decode(adam7, name: "adam7.png").rgb == expected)
        let plte = chunk("PLTE", [10, 20, 30, 40, 50, 60, 70, 80, 90])   // index 3 is past it: black
        let palette = makePNG(width: width, height: height, depth: 2, colorType: 3, rows: adam7Rows(grid, depth: 2),
                              extra: plte, interlaced: true)
        let colours: [[UInt8]] = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [0, 0, 0]]
        #expect(try ImageDecoder().decode(palette, name: "pal.png").rgb == grid.flatMap { $0.flatMap { colours[$0] } })
    }

    @Test func malformedPalettesAreReadAsPILReadsThem() throws {
        func decode(_ extra: [UInt8]) throws -> [UInt8] {
            try ImageDecoder().decode(makePNG(width: 2, height: 1, depth: 8, colorType: 3, rows: [[0, 1]], extra: extra), name: "p.png").rgb
        }
        // libpng alone refuses each of these; PIL decodes them.
        #expect(try decode(chunk("PLTE", [9, 8, 7, 6])) == [9, 8, 7, 0, 0, 0])                  // not a multiple of 3
        #expect(try decode([]) == [0, 0, 0, 0, 0, 0])                                             // no PLTE
        #expect(try decode(chunk("PLTE", [])) == [0, 0, 0, 0, 0, 0])                              // empty PLTE
        #expect(try decode(chunk("PLTE", [9, 8, 7, 6, 5, 4]) + chunk("PLTE", [1, 2, 3])) == [1, 2, 3, 0, 0, 0])   // the last wins
        // More than 256 entries fails in PIL too.
        #expect(decodeError(makePNG(width: 2, height: 1, depth: 8, colorType: 3, rows: [[0, 1]],
                                    extra: chunk("PLTE", [UInt8](repeating: 1, count: 771)))) != nil)
    }

    @Test func pngEXIFOrientationIsReadBeforeOrAfterTheImageData() throws {
        let tiff: [UInt8] = [0x4D, 0x4D, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]
        let decoder = ImageDecoder(options: DecodeOptions(readOrientation: true))
        let before = makePNG(width: 1, height: 1, depth: 8, colorType: 0, rows: [[7]], extra: chunk("eXIf", tiff))
        let after = makePNG(width: 1, height: 1, depth: 8, colorType: 0, rows: [[7]], after: chunk("eXIf", tiff))
        #expect(try decoder.decode(before, name: "before.png").orientation == 6)
        #expect(try decoder.decode(after, name: "after.png").orientation == 6)
        #expect(try ImageDecoder().decode(after, name: "after.png").orientation == 1)
    }

    @Test func encodedPNGDecodesToTheSamePixels() throws {
        let rgb = (0..<(37 * 23 * 3)).map { UInt8(($0 * 31) % 251) }
        let image = try ImageDecoder().decode(try ImageEncode.png(rgb: rgb, width: 37, height: 23), name: "rgb.png")
        #expect(image.width == 37 && image.height == 23 && image.rgb == rgb)
        let gray = (0..<(5 * 4)).map { UInt8($0 * 12) }
        let decoded = try ImageDecoder().decode(try ImageEncode.png(rgb: gray, width: 5, height: 4, channels: 1), name: "g.png")
        #expect(decoded.rgb == gray.flatMap { [$0, $0, $0] })
    }

    @Test func exifOrientationIsRead() {
        // Big-endian TIFF, one IFD entry: 0x0112 SHORT 1 value 6.
        let tiff: [UInt8] = [0x4D, 0x4D, 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]
        let app1 = [0xFF, 0xE1] + [UInt8((tiff.count + 8) >> 8), UInt8((tiff.count + 8) & 0xFF)] + Array("Exif".utf8) + [0, 0] + tiff
        let jpeg: [UInt8] = [0xFF, 0xD8] + app1 + [0xFF, 0xD9]
        #expect(jpeg.withUnsafeBytes { EXIFOrientation.fromJPEG($0) } == 6)
    }
}

// MARK: - preprocessing

func randomImage(width: Int, height: Int, seed: UInt64) -> PixelBuffer {
    var state = seed
    let pixels = (0..<(width * height * 3)).map { _ -> UInt8 in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
    return PixelBuffer(width: width, height: height, pixels: pixels)
}

struct PreprocessTests {
    @Test func sameSizeResizeIsACopy() {
        let image = randomImage(width: 20, height: 10, seed: 1)
        #expect(image.resized(width: 20, height: 10) == image)
    }

    @Test func constantImageStaysConstant() {
        let image = PixelBuffer(width: 37, height: 23, fill: (200, 10, 99))
        for (w, h) in [(10, 10), (80, 50), (37, 5), (3, 23)] {
            let out = image.resized(width: w, height: h)
            #expect(out.pixels == PixelBuffer(width: w, height: h, fill: (200, 10, 99)).pixels)
        }
    }

    @Test(arguments: [ResizePassOrder.pillow13, .horizontalFirst])
    func windowedResizeEqualsCropOfFullResize(order: ResizePassOrder) {
        let image = randomImage(width: 64, height: 90, seed: 2)
        for (w, h) in [(40, 30), (30, 80), (64, 40), (50, 90), (100, 120)] {
            let full = image.resized(width: w, height: h, filter: .bicubic, order: order)
            let window = PixelRect(x: w / 4, y: h / 5, width: w / 2, height: h / 2)
            #expect(image.resized(width: w, height: h, filter: .bicubic, window: window, order: order) == full.cropped(window))
        }
    }

    /// The SIMD resampler against a scalar transcription of PIL's `ImagingResampleInner` (one Int32 sum per
    /// channel, `clip8`), on the sizes that reach its edge paths: lines that are not a multiple of 16 bytes or
    /// shorter than 16, fewer or not a multiple of 16 rows in a band, single pixels, and kernels past 256 taps.
    @Test(arguments: [ResampleFilter.bicubic, .bilinear])
    func resamplerMatchesScalarPIL(filter: ResampleFilter) {
        let sizes = [(200, 150, 140, 105), (150, 200, 105, 140), (37, 23, 10, 50), (5, 3, 17, 2), (1, 1, 7, 9), (9, 1, 2, 1),
                     (3, 40, 1, 17), (100, 33, 6, 5), (16, 16, 5, 31), (2000, 7, 3, 7), (7, 2000, 7, 3), (70, 70, 71, 69)]
        for (i, (w, h, outW, outH)) in sizes.enumerated() {
            let image = randomImage(width: w, height: h, seed: UInt64(10 + i))
            for order in ResizePassOrder.allCases {
                let expected = scalarResize(image, width: outW, height: outH, filter: filter, order: order)
                #expect(image.resized(width: outW, height: outH, filter: filter, order: order) == expected, "\(w)x\(h) → \(outW)x\(outH)")
            }
        }
    }

    /// Both copies of the line kernel (AVX2 where the CPU has it, and the baseline) against the plain Int32 sum,
    /// with weights over the whole range, odd and even tap counts, and line lengths around the vector widths.
    @Test func lineKernelsAgreeWithTheIntegerSum() {
        var state: UInt64 = 99
        func next(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(state >> 33) % n
        }
        for (taps, byteCount) in [(1, 16), (2, 31), (3, 32), (5, 33), (6, 48), (7, 100), (12, 1008), (301, 47)] {
            let stride = byteCount + next(5)
            let lines = (0..<(taps * stride)).map { _ in UInt8(next(256)) }
            let raw = (0..<taps).map { _ in Int32(next(1 << 23)) - (1 << 22) }
            // Scaled so that the sums cover 0...255 and beyond on both sides, as clip8 sees them.
            let weights = raw.map { $0 / Int32(max(taps / 2, 1)) }
            var paired: [SIMD8<Int16>] = []
            for k in Swift.stride(from: 0, to: taps, by: 2) {
                let pair = ResampleKernel.split(weights[k], k + 1 < taps ? weights[k + 1] : 0)
                paired += [pair.high, pair.low]
            }
            let expected = (0..<byteCount).map { i -> UInt8 in
                var sum: Int32 = 1 << 21
                for k in 0..<taps { sum &+= Int32(lines[k * stride + i]) &* weights[k] }
                return UInt8(min(max(sum >> 22, 0), 255))
            }
            for avx2 in [false, true] where !avx2 || (ResampleKernel.hasAVX2 && byteCount >= 32) {
                var out = [UInt8](repeating: 0, count: byteCount)
                lines.withUnsafeBytes { src in
                    paired.withUnsafeBufferPointer { w in
                        out.withUnsafeMutableBytes { dst in
                            if avx2 {
                                ResampleKernel.line(src.baseAddress!, stride: stride, taps: taps, weights: w.baseAddress!,
                                                    byteCount: byteCount, into: dst.baseAddress!)
                            } else {
                                ResampleKernel.baselineLine(src.baseAddress!, stride: stride, taps: taps, weights: w.baseAddress!,
                                                            byteCount: byteCount, into: dst.baseAddress!)
                            }
                        }
                    }
                }
                #expect(out == expected, "taps \(taps), \(byteCount) bytes, AVX2 \(avx2)")
            }
        }
    }

    @Test func passOrderRule() {
        #expect(ResizePassOrder.pillow13.verticalFirst(width: 427, height: 640, outW: 336, outH: 336))
        #expect(!ResizePassOrder.pillow13.verticalFirst(width: 640, height: 480, outW: 336, outH: 336))
        #expect(!ResizePassOrder.pillow13.verticalFirst(width: 200, height: 300, outW: 100, outH: 100))
        #expect(!ResizePassOrder.horizontalFirst.verticalFirst(width: 427, height: 640, outW: 336, outH: 336))
    }

    @Test func cropModeShapesFollowHF() {
        let image = randomImage(width: 640, height: 427, seed: 3)
        let out = Preprocessor.preprocess(image, config: PreprocessConfig(imageSize: 336, mode: .crop))
        #expect(out.tiles.count == 1 && out.tiles[0].width == 336 && out.tiles[0].height == 336)
    }

    @Test func padUsesTheClipMeanBackground() {
        let image = PixelBuffer(width: 100, height: 20, fill: (0, 0, 0))
        let square = image.expandedToSquare(background: (122, 116, 104))
        #expect(square.width == 100 && square.height == 100)
        #expect(square[0, 0] == (122, 116, 104) && square[50, 40] == (0, 0, 0) && square[50, 39] == (122, 116, 104))
        #expect(square[50, 59] == (0, 0, 0) && square[50, 60] == (122, 116, 104))
    }

    @Test func anyresChoosesLLaVANeXTGrids() {
        let pins = PreprocessConfig.defaultPinpoints(imageSize: 336)
        #expect(AnyRes.selectBestResolution(width: 640, height: 480, candidates: pins) == (672, 672))
        #expect(AnyRes.selectBestResolution(width: 1000, height: 200, candidates: pins) == (1008, 336))
        #expect(AnyRes.selectBestResolution(width: 200, height: 1000, candidates: pins) == (336, 1008))
        // Upscaling keeps every candidate at the original area: the least waste wins, the first of equals (336x672).
        #expect(AnyRes.selectBestResolution(width: 30, height: 20, candidates: pins) == (336, 672))
        let out = Preprocessor.preprocess(randomImage(width: 640, height: 480, seed: 4), config: PreprocessConfig(mode: .anyres))
        #expect(out.tiles.count == 5 && out.gridRows == 2 && out.gridCols == 2)
    }

    @Test func patchifyLayoutAndInverse() {
        let s = 28, p = 14
        let image = randomImage(width: s, height: s, seed: 5)
        let patches = Patchify.patchify(image.pixels + image.pixels, tiles: 2, size: s, patch: p)
        // Patch 1 (row 0, column 1), position (y 3, x 5), channel 2 == pixel (x 14 + 5, y 3).
        let fromPatch = patches[1 * p * p * 3 + (3 * p + 5) * 3 + 2]
        #expect(fromPatch == image[19, 3].2)
        #expect(Patchify.unpatchify(patches, tiles: 2, size: s, patch: p) == image.pixels + image.pixels)
    }

    @Test func clipNormalizationMatchesHFArithmetic() {
        let values = Normalization.clip.apply([0, 128, 255])
        #expect(values[0] == (Float(0) - Float(0.48145466)) / Float(0.26862954))
        #expect(values[1] == (Float(Double(128) * (1.0 / 255.0)) - Float(0.4578275)) / Float(0.26130258))
        #expect(values[2] == (Float(1.0) - Float(0.40821073)) / Float(0.27577711))
    }

    @Test func orientationTransforms() {
        let image = PixelBuffer(width: 2, height: 1, pixels: [1, 1, 1, 2, 2, 2])
        #expect(image.oriented(6).width == 1 && image.oriented(6).pixels == [1, 1, 1, 2, 2, 2])
        #expect(image.oriented(8).pixels == [2, 2, 2, 1, 1, 1])
        #expect(image.oriented(2).pixels == [2, 2, 2, 1, 1, 1])
        #expect(image.oriented(1) == image)
    }

    @Test func configValidation() {
        #expect(throws: VLMError.self) { try PreprocessConfig(imageSize: 300, patchSize: 14).validate() }
        #expect(throws: VLMError.self) { try PreprocessConfig(imageSize: 336, mode: .anyres, gridPinpoints: [[300, 600]]).validate() }
        #expect(throws: Never.self) { try PreprocessConfig(imageSize: 224, patchSize: 16, mode: .squash).validate() }
        #expect(PreprocessConfig().hash != PreprocessConfig(mode: .pad).hash)
    }
}

/// PIL's two passes in scalar Int32 arithmetic, weights read back from the kernel's split table.
func scalarResize(_ image: PixelBuffer, width outW: Int, height outH: Int, filter: ResampleFilter, order: ResizePassOrder) -> PixelBuffer {
    func pass(_ src: PixelBuffer, horizontal: Bool, size: Int) -> PixelBuffer {
        let c = ResampleCoefficients(inSize: horizontal ? src.width : src.height, outSize: size, filter: filter)
        let (w, h) = horizontal ? (size, src.height) : (src.width, size)
        var out = PixelBuffer(width: w, height: h)
        for y in 0..<h {
            for x in 0..<w {
                let o = horizontal ? x : y
                for ch in 0..<3 {
                    var sum: Int32 = 1 << 21
                    for k in 0..<c.count[o] {
                        let pair = o * c.vectorsPerOutput + k / 2 * 2
                        let weight = Int32(c.pairedWeights[pair][k % 2]) << 15 + Int32(c.pairedWeights[pair + 1][k % 2])
                        let (sx, sy) = horizontal ? (c.start[o] + k, y) : (x, c.start[o] + k)
                        sum += Int32(src.pixels[(sy * src.width + sx) * 3 + ch]) * weight
                    }
                    out.pixels[(y * w + x) * 3 + ch] = UInt8(min(max(sum >> 22, 0), 255))
                }
            }
        }
        return out
    }
    var result = image
    let verticalFirst = order.verticalFirst(width: image.width, height: image.height, outW: outW, outH: outH)
    for horizontal in verticalFirst ? [false, true] : [true, false] {
        if horizontal, outW != image.width { result = pass(result, horizontal: true, size: outW) }
        if !horizontal, outH != image.height { result = pass(result, horizontal: false, size: outH) }
    }
    return result
}
