import Foundation
import Testing
import VLMCore
@testable import VLMIO

/// The progress line: count, percent, rate and ETA; the bar only on a terminal, coloured unless NO_COLOR.
@Test func theBarIsColouredOnATerminalUnlessNoColor() {
    let coloured = TerminalProgress(quiet: true, isTTY: true, environment: ["TERM": "xterm"])
    coloured.start("patchify", total: 10)
    coloured.advance(by: 5)
    let line = coloured.line(now: Date().addingTimeInterval(1), bar: true)
    #expect(line.contains("\u{1B}[32m"))
    #expect(line.contains("5/10 50%"))
    for environment in [["NO_COLOR": "1"], ["TERM": "dumb"]] {
        let plain = TerminalProgress(quiet: true, isTTY: true, environment: environment)
        plain.start("patchify", total: 10)
        plain.advance(by: 5)
        let text = plain.line(now: Date().addingTimeInterval(1), bar: true)
        #expect(!text.contains("\u{1B}"))
        #expect(text.hasPrefix("patchify [###############...............] 5/10 50% "))
    }
}

@Test func plainLinesHaveTheNumbersWithoutABar() {
    let progress = TerminalProgress(quiet: true, isTTY: false, environment: [:])
    progress.start("shard", total: 80)
    progress.advance(by: 20)
    let line = progress.line(now: Date().addingTimeInterval(2), bar: false)
    #expect(line.range(of: #"^shard 20/80 25% \d+/s ETA \d+s$"#, options: .regularExpression) != nil, "\(line)")
    let unknown = TerminalProgress(quiet: true, isTTY: false, environment: [:])
    unknown.start("reading", total: nil)
    unknown.advance(by: 3)
    #expect(unknown.line(now: Date().addingTimeInterval(1), bar: false).hasPrefix("reading 3 "))
}
