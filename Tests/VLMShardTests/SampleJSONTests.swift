import Foundation
import Testing
import VLMCore
import VLMIO
@testable import VLMShard

/// The per-sample json is written without JSONEncoder; it must stay byte-identical to what JSONEncoder writes.
@Test func sampleJSONMatchesJSONEncoderByteForByte() {
    var random = SplitMix64(seed: 11)
    let nasty = (0 ..< 0x80).map { String(UnicodeScalar(UInt8($0))) } + ["é", "日本", "😀", "\u{2028}", "\u{FEFF}", "a/b", "<image>\n", ""]
    func text() -> String { (0 ..< random.below(12)).map { _ in random.pick(nasty) }.joined() }
    for round in 0 ..< 300 {
        let maybe = round % 3 == 0
        var turns: [[String: String]] = []
        for _ in 0 ..< random.below(4) {
            var turn = ["from": random.pick(["human", "gpt"]), "value": text()]
            if random.below(4) == 0 { turn[text()] = text() }
            turns.append(turn)
        }
        let meta = SampleMetadata(
            key: text(), source: maybe ? nil : text(), kind: text(), generator: text(), image: maybe ? nil : text(),
            imageID: maybe ? nil : random.below(1_000_000) - 500, imageFile: maybe ? nil : text(), imageSHA256: maybe ? nil : text(),
            imageSize: maybe ? nil : [random.below(700), random.below(700)], boxFrame: round % 4 == 1 ? nil : text(),
            conversations: turns, template: text(), tokenizerSHA256: text(), tokenizedConfig: text(), status: text(),
            length: random.below(5000), tokens: random.below(5000), supervised: random.below(5000), imageTokens: random.below(3000),
            pixelsConfig: maybe ? nil : text(), pixelsShape: maybe ? nil : [1, random.below(600), 588],
            grid: round % 2 == 0 ? nil : [random.below(4), random.below(4)], imageMember: maybe ? nil : text())
        let expected = Hashing.canonicalJSON(meta)
        #expect(meta.canonicalJSON == expected, "\(String(decoding: expected, as: UTF8.self))")
        if meta.canonicalJSON != expected { break }
    }
}
