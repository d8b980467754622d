import Foundation
import Testing
import VLMCore

// MARK: - PatchGrid

@Test func patchGridOfLLaVAsVisionTower() {
    let grid = PatchGrid.clipViTL14at336
    #expect(grid.side == 24)
    #expect(grid.shape == [1, 576, 588])
    #expect(grid.imageTokens == 576)
    #expect(grid.pixelBytes == 576 * 588)
}

@Test func patchGridFromStoredShapes() throws {
    // Issue 12 case 4: 28 px tiles of 14 px patches are 4 patches, 4 image tokens (not 576).
    let small = try PatchGrid(shape: [1, 4, 588])
    #expect(small.imageSize == 28 && small.patchSize == 14 && small.imageTokens == 4)
    // Anyres: base view + 2 x 2 grid, every tile counted (LLaVA-NeXT's "spatial" merge).
    let anyres = try PatchGrid(shape: [5, 576, 588], grid: [2, 2])
    #expect(anyres.imageTokens == 5 * 576)
    #expect(anyres.grid == [2, 2])
    // A single tile records grid 1 x 1.
    #expect(try PatchGrid(shape: [1, 16, 48], grid: [1, 1]).imageTokens == 16)
}

@Test(arguments: [[3, 576, 588], [1, 575, 588], [1, 576, 587], [0, 576, 588], [1, 576]])
func patchGridRefusesShapesNoGridMakes(shape: [Int]) {
    let grid: [Int]? = shape.first == 3 ? [2, 2] : nil
    #expect(throws: VLMError.self) { try PatchGrid(shape: shape, grid: grid) }
}

@Test func patchGridRoundTripsItsShape() throws {
    for (size, patch) in [(336, 14), (224, 16), (64, 16), (28, 14)] {
        for (tiles, grid) in [(1, nil), (3, [1, 2]), (5, [2, 2]), (4, [3, 1])] as [(Int, [Int]?)] {
            let made = PatchGrid(imageSize: size, patchSize: patch).withTiles(tiles, gridRows: grid?[0], gridCols: grid?[1])
            #expect(try PatchGrid(shape: made.shape, grid: grid) == made)
        }
    }
}

// MARK: - BoxFrame

@Test func padFrameIsLLaVAsExpandToSquare() throws {
    // 640 x 480: expand2square pastes the image at (0, (640 - 480) // 2) = (0, 80) on a 640 square.
    let box = Box(x: 64, y: 48, width: 320, height: 240)
    let pad = try #require(BoxFrame.pad.normalized(box, imageWidth: 640, imageHeight: 480))
    #expect(pad == [0.1, 128.0 / 640, 0.6, 368.0 / 640])
    #expect(BoxFrame.original.normalized(box, imageWidth: 640, imageHeight: 480) == [0.1, 0.1, 0.6, 0.6])
    // Odd difference: floor division, as Python's `//`.
    let tall = try #require(BoxFrame.pad.normalized(Box(x: 0, y: 0, width: 3, height: 10), imageWidth: 3, imageHeight: 10))
    #expect(tall[0] == 3.0 / 10 && tall[2] == 6.0 / 10)
}

@Test func cropFrameDropsWhatTheCropCuts() throws {
    // 640 x 480: the centre square is x 80 ..< 560.
    let inside = try #require(BoxFrame.crop.normalized(Box(x: 80, y: 0, width: 240, height: 480), imageWidth: 640, imageHeight: 480))
    #expect(inside == [0, 0, 0.5, 1])
    #expect(BoxFrame.crop.normalized(Box(x: 10, y: 10, width: 100, height: 100), imageWidth: 640, imageHeight: 480) == nil)
    #expect(BoxFrame.crop.normalized(Box(x: 500, y: 10, width: 100, height: 100), imageWidth: 640, imageHeight: 480) == nil)
}

@Test func framesFollowThePixelMode() {
    #expect(BoxFrame(pixelMode: "pad") == .pad)
    #expect(BoxFrame(pixelMode: "crop") == .crop)
    #expect(BoxFrame(pixelMode: "squash") == .original)
    #expect(BoxFrame(pixelMode: "anyres") == .original)
    #expect(BoxFrame(pixelMode: "fisheye") == nil)
}

// MARK: - PartSpec

@Test func onePartitionFunctionOfTheImageKey() {
    let keys = (0 ..< 500).map { "train_\(String(format: "%012d", $0 * 7919))" }
    for n in 1 ... 4 {
        let parts = (0 ..< n).map { PartSpec(index: $0, count: n) }
        for key in keys {
            // Every image is in exactly one part, and its samples follow the image, not their own keys.
            #expect(parts.filter { $0.contains(key: key) }.count == 1)
            let owner = parts.first { $0.contains(key: key) }!
            #expect(owner.owns(imageKey: key, sampleKey: key + "-tpl-caption-0"))
            #expect(owner.owns(imageKey: key, sampleKey: key + "-tpl-grounding-1"))
        }
    }
    // Text-only samples fall back to their own key.
    let part = PartSpec(index: 1, count: 3)
    #expect(part.owns(imageKey: nil, sampleKey: "llava_42") == part.contains(key: "llava_42"))
}

@Test func partIsRecordedAsIOverN() throws {
    let part = PartSpec(index: 2, count: 5)
    let json = try JSONEncoder().encode(["part": part])
    #expect(String(decoding: json, as: UTF8.self) == #"{"part":"2\/5"}"# || String(decoding: json, as: UTF8.self) == #"{"part":"2/5"}"#)
    #expect(try JSONDecoder().decode(PartSpec.self, from: Data(#""2/5""#.utf8)) == part)
    #expect(try JSONDecoder().decode(PartSpec.self, from: Data(#"{"index":2,"count":5}"#.utf8)) == part)
    #expect(throws: (any Error).self) { try JSONDecoder().decode(PartSpec.self, from: Data(#""5/2""#.utf8)) }
}
