import Foundation
import Testing
@testable import VLMImage
@testable import VLMIO
import VLMCore

/// Crop mode from a decoded region: the resampler on a part of an image gives the whole image's window, and the
/// JPEG region decode gives the whole decode's tile. (The broad proof over every JPEG kind and the shared data is
/// `Tests/parity/test_image_region.py`, on the release binary.)
@Suite struct RegionDecodeTests {
    /// A deterministic noisy image, so a misplaced tap changes the result.
    static func noise(width: Int, height: Int, seed: UInt64) -> PixelBuffer {
        var state = seed
        let bytes = (0..<(width * height * 3)).map { _ -> UInt8 in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        return PixelBuffer(width: width, height: height, pixels: bytes)
    }

    @Test(arguments: ResampleFilter.allCases)
    func resizeOfAPartEqualsTheWholeImagesWindow(filter: ResampleFilter) {
        let image = Self.noise(width: 97, height: 61, seed: 5)
        // (out size, window): shrink both ways (both pass orders), grow, one axis unchanged, same size.
        let cases: [(Int, Int, PixelRect)] = [
            (40, 25, PixelRect(x: 7, y: 3, width: 25, height: 20)),
            (60, 20, PixelRect(x: 20, y: 0, width: 20, height: 20)),
            (30, 60, PixelRect(x: 0, y: 15, width: 30, height: 30)),
            (150, 90, PixelRect(x: 30, y: 0, width: 90, height: 90)),
            (97, 30, PixelRect(x: 40, y: 2, width: 5, height: 26)),
            (50, 61, PixelRect(x: 10, y: 10, width: 30, height: 40)),
            (97, 61, PixelRect(x: 18, y: 0, width: 61, height: 61)),
        ]
        for (outW, outH, window) in cases {
            for order in ResizePassOrder.allCases {
                let whole = image.resized(width: outW, height: outH, filter: filter, window: window, order: order)
                let need = PixelBuffer.sourceRect(width: 97, height: 61, outW: outW, outH: outH, filter: filter, window: window)
                #expect(need.x >= 0 && need.y >= 0 && need.x + need.width <= 97 && need.y + need.height <= 61)
                // The part as a decoder gives it: the needed pixels plus some margin, clipped to the image.
                for margin in [0, 3] {
                    let x0 = max(need.x - margin, 0), y0 = max(need.y - margin, 0)
                    let part = PixelRect(x: x0, y: y0, width: min(need.x + need.width + margin, 97) - x0,
                                         height: min(need.y + need.height + margin, 61) - y0)
                    let fromPart = image.cropped(part).resized(part: part, ofImageWidth: 97, height: 61, toWidth: outW, height: outH,
                                                               filter: filter, window: window, order: order)
                    #expect(fromPart == whole, "\(filter) \(order) \(outW)x\(outH) \(window) part \(part)")
                }
            }
        }
    }

    @Test func sourceRectIsWhatTheTapsRead() {
        // Bicubic 640 -> 336 on x: scale 1.905, support 3.81 source pixels each side of the window's columns.
        let need = PixelBuffer.sourceRect(width: 640, height: 480, outW: 448, outH: 336, filter: .bicubic,
                                          window: PixelRect(x: 56, y: 0, width: 336, height: 336))
        #expect(need.y == 0 && need.height == 480)
        #expect(need.x > 0 && need.x < 80 && need.x + need.width > 560 && need.x + need.width < 640)
        // No resize: exactly the window.
        #expect(PixelBuffer.sourceRect(width: 500, height: 336, outW: 500, outH: 336, filter: .bicubic,
                                       window: PixelRect(x: 82, y: 0, width: 336, height: 336))
                == PixelRect(x: 82, y: 0, width: 336, height: 336))
    }

    @Test func cocoJPEGsByRegionEqualTheWholeDecode() throws {
        let files = cocoFiles()
        try #require(files.count >= 80, "coco-mini not found under \(sharedData)")
        let byRegion = Preprocessor(config: PreprocessConfig(imageSize: 224, patchSize: 14))
        let whole = Preprocessor(config: PreprocessConfig(imageSize: 224, patchSize: 14))
        byRegion.regionDecode = true
        whole.regionDecode = false
        var regions = 0
        for path in files.prefix(4) {
            let bytes = try ImageFileReader.read(path)
            let a = try byRegion.process(bytes, name: path)
            regions += byRegion.lastDecodedRegion == nil ? 0 : 1
            let b = try whole.process(bytes, name: path)
            #expect(whole.lastDecodedRegion == nil)
            #expect(a == b, "\(path): region \(String(describing: byRegion.lastDecodedRegion))")
        }
        #expect(regions >= 3)
    }

    @Test func truncatedJPEGIsStillReportedTruncated() throws {
        let path = cocoFiles().first!
        let bytes = try ImageFileReader.read(path)
        let pre = Preprocessor(config: PreprocessConfig(imageSize: 224, patchSize: 14))
        pre.regionDecode = true
        // Only the bottom rows are missing, which a region decode never reads: it must decline, and the whole
        // decode report the truncation as PIL does.
        let cut = Array(bytes.prefix(bytes.count * 95 / 100))
        #expect {
            _ = try pre.process(cut, name: "cut.jpg")
        } throws: { error in
            "\(error)".contains("truncated") && "\(error)".contains("cut.jpg")
        }
        #expect(pre.lastDecodedRegion == nil)
    }
}
