@testable import VLMTrain

/// A self-contained stand-in for `synth shapes` used only by these tests: 32×32 RGB images with one coloured shape,
/// answered by the three tokens "colour shape side" (LLaVA's plain template: BOS, <image>, answer, EOS).
enum SyntheticShapes {
    static let colours: [(name: String, rgb: (Int, Int, Int))] = [
        ("red", (220, 40, 40)), ("green", (40, 190, 60)), ("blue", (50, 70, 220)), ("yellow", (230, 210, 40)),
    ]
    static let shapes = ["circle", "square", "triangle"]
    static let sides = ["left", "right"]
    static let size = 32, patch = 8
    static var patches: Int { (size / patch) * (size / patch) }
    static var patchDim: Int { patch * patch * 3 }

    // vocabulary: 0 <s>, 1 </s>, then colours, shapes, sides
    static let bos: Int32 = 0, eos: Int32 = 1
    static var vocabSize: Int { 2 + colours.count + shapes.count + sides.count }
    static func colourToken(_ i: Int) -> Int32 { Int32(2 + i) }
    static func shapeToken(_ i: Int) -> Int32 { Int32(2 + colours.count + i) }
    static func sideToken(_ i: Int) -> Int32 { Int32(2 + colours.count + shapes.count + i) }

    struct Sample {
        var colour: Int, shape: Int, side: Int
        /// Patchified pixels `[patches, patch·patch·3]`, row-major patches, HWC inside each patch.
        var patches: [UInt8]
        var inputIDs: [Int32] { [bos, TrainBatch.imageTokenID, colourToken(colour), shapeToken(shape), sideToken(side), eos] }
        var labels: [Int32] { [TrainBatch.ignoreIndex, TrainBatch.ignoreIndex, colourToken(colour), shapeToken(shape), sideToken(side), eos] }
    }

    static func make(count: Int, seed: UInt64) -> [Sample] {
        var rng = SeededRNG(seed: seed)
        func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        return (0..<count).map { _ in
            let colour = int(colours.count), shape = int(shapes.count), side = int(sides.count)
            let r = 5 + int(4)
            let cx = side == 0 ? r + int(16 - 2 * r + 1) : 16 + r + int(16 - 2 * r + 1) - 1
            let cy = r + int(size - 2 * r)
            let bg = 90 + int(60)
            var image = [UInt8](repeating: 0, count: size * size * 3)
            let rgb = colours[colour].rgb
            for y in 0..<size {
                for x in 0..<size {
                    let dx = x - cx, dy = y - cy
                    let inside: Bool
                    switch shape {
                    case 0: inside = dx * dx + dy * dy <= r * r
                    case 1: inside = abs(dx) <= r - 1 && abs(dy) <= r - 1
                    default: inside = dy <= r - 1 && dy >= -r && 2 * abs(dx) <= dy + r  // apex up
                    }
                    let noise = int(21) - 10
                    let px = inside ? [rgb.0, rgb.1, rgb.2] : [bg, bg, bg]
                    for ch in 0..<3 { image[(y * size + x) * 3 + ch] = UInt8(clamping: px[ch] + noise) }
                }
            }
            return Sample(colour: colour, shape: shape, side: side, patches: patchify(image))
        }
    }

    static func patchify(_ image: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(image.count)
        let grid = size / patch
        for py in 0..<grid {
            for px in 0..<grid {
                for y in 0..<patch {
                    for x in 0..<patch {
                        let base = ((py * patch + y) * size + px * patch + x) * 3
                        out.append(contentsOf: image[base..<(base + 3)])
                    }
                }
            }
        }
        return out
    }

    static func batch(_ samples: ArraySlice<Sample>) -> TrainBatch {
        TrainBatch(sequences: samples.map { ($0.inputIDs, $0.labels) }, pixels: samples.flatMap(\.patches),
                   patches: patches, patchDim: patchDim)
    }

    static func config(projector: ProjectorKind = .linear) -> RefVLMConfig {
        RefVLMConfig(vocabSize: vocabSize, maxSeqLen: 32, patches: patches, patchDim: patchDim, projector: projector)
    }

    /// Held-out accuracy per attribute (colour, shape, side) of greedy answers.
    static func evaluate(_ model: RefVLM<Float>, _ samples: [Sample]) throws -> (colour: Double, shape: Double, side: Double) {
        var hits = (0, 0, 0)
        var start = 0
        while start < samples.count {
            let chunk = samples[start..<min(start + 64, samples.count)]
            let answers = try model.generate(prompts: chunk.map { _ in [bos, TrainBatch.imageTokenID] },
                                             pixels: chunk.flatMap(\.patches), maxNewTokens: 3, stopToken: eos)
            for (s, a) in zip(chunk, answers) {
                if a.count > 0, a[0] == colourToken(s.colour) { hits.0 += 1 }
                if a.count > 1, a[1] == shapeToken(s.shape) { hits.1 += 1 }
                if a.count > 2, a[2] == sideToken(s.side) { hits.2 += 1 }
            }
            start += 64
        }
        let n = Double(samples.count)
        return (Double(hits.0) / n, Double(hits.1) / n, Double(hits.2) / n)
    }
}
