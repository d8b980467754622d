@testable import VLMTrain

/// A self-contained stand-in for `synth shapes` used only by these tests: 32×32 RGB images with one coloured shape,
/// answered by the three tokens "colour shape side" (LLaVA's plain template: BOS, <image>, answer, EOS).
enum SyntheticShapes {
    static let colours: [(name: String, rgb: (Int, Int, Int))] = [
        ("red", (220, 40, 40)), ("green", (40, 170, 60)), ("blue", (40, 80, 225)),
        ("yellow", (235, 215, 40)), ("purple", (140, 50, 190)), ("orange", (245, 135, 25)),
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

    /// The same geometry as `synth shapes --size 32` with one shape: radius 14–24 % of the side, centre clearly left
    /// or right of the midline, square half-side 0.9·r, upward triangle, light noisy background.
    static func make(count: Int, seed: UInt64) -> [Sample] {
        var rng = SeededRNG(seed: seed)
        func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        let s = Double(size)
        return (0..<count).map { _ in
            var image = [UInt8](repeating: 0, count: size * size * 3)
            for i in 0..<(size * size) {
                let base = 232 + int(17) - 8
                for ch in 0..<3 { image[i * 3 + ch] = UInt8(clamping: base + int(5) - 2) }
            }
            let colour = int(colours.count), shape = int(shapes.count), side = int(sides.count)
            let r = s * (0.14 + 0.10 * rng.uniform())
            let lo = side == 0 ? r + 1 : s * 0.62, hi = side == 0 ? s * 0.38 : s - r - 1
            let cx = lo + (hi - lo) * rng.uniform()
            let cy = r + 1 + (s - 2 * r - 2) * rng.uniform()
            let rgb = colours[colour].rgb
            for y in 0..<size {
                for x in 0..<size {
                    let px = Double(x) + 0.5, py = Double(y) + 0.5
                    let inside: Bool
                    switch shape {
                    case 0: inside = (px - cx) * (px - cx) + (py - cy) * (py - cy) <= r * r
                    case 1: inside = abs(px - cx) <= r * 0.9 && abs(py - cy) <= r * 0.9
                    default:
                        let t = (py - (cy - r)) / (2 * r)
                        inside = t >= 0 && t <= 1 && abs(px - cx) <= r * t
                    }
                    guard inside else { continue }
                    let jitter = int(9) - 4
                    let i = (y * size + x) * 3
                    image[i] = UInt8(clamping: rgb.0 + jitter)
                    image[i + 1] = UInt8(clamping: rgb.1 + jitter)
                    image[i + 2] = UInt8(clamping: rgb.2 + jitter)
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
                                             pixels: chunk.flatMap(\.patches), maxNewTokens: 3, stopTokens: [eos])
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
