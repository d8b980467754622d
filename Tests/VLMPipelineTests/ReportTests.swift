import Foundation
import Testing
import VLMCore
@testable import VLMPipeline

/// The report page's pieces: boxes found in a conversation, histogram bars, escaping.
@Test func normalizedBoxesAreTheFourNumberBracketsInTheUnitSquare() {
    let text = "The cat is at [0.12, 0.30, 0.55, 0.90] and the dog at [0.6,0.1,0.95,0.4]; options [1, 2, 3, 4], [0.5, 0.5, 0.2, 0.9], [0.1, 0.2]."
    #expect(SampleCard.normalizedBoxes(in: text) == [[0.12, 0.30, 0.55, 0.90], [0.6, 0.1, 0.95, 0.4]])
    #expect(SampleCard.normalizedBoxes(in: "no boxes [here") == [])
}

@Test func histogramBarsCountEveryValueOnce() throws {
    let values = [3, 5, 5, 8, 8, 8, 40]
    let svg = SVGChart.histogram(values, title: "t", xLabel: "x", maxBins: 4)
    let counts = svg.components(separatedBy: "<title>").dropFirst().compactMap { part -> Int? in
        guard let colon = part.range(of: ": "), let end = part.range(of: "</title>") else { return nil }
        return Int(part[colon.upperBound..<end.lowerBound])
    }
    #expect(counts.reduce(0, +) == values.count)
    #expect(svg.contains("n 7, min 3, median 8, max 40"))
    #expect(SVGChart.histogram([], title: "empty", xLabel: "x").contains("no data"))
}

@Test func htmlEscapingCoversMarkupAndQuotes() {
    #expect(HTML.escape("<image> & \"a\" 'b'") == "&lt;image&gt; &amp; &quot;a&quot; &#39;b&#39;")
}

@Test func tokensAreShownWithSpacesAndNewlinesVisible() {
    #expect(SampleCard.visible("▁the") == " the")
    #expect(SampleCard.visible("<0x0A>") == "⏎")
    #expect(SampleCard.visible("Ġdog") == " dog")
}
