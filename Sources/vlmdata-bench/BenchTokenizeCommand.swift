import ArgumentParser
import Dispatch
import Foundation
import VLMText

/// `vlmdata-bench tokenize`: single-thread encoding of a file's lines, timed in-process (tokenizer load and process
/// start excluded), for Benchmarks/bench_text.py. Prints one JSON object: the median pass's seconds, bytes, tokens.
struct BenchTokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Time single-thread encoding of a file's lines in-process (for Benchmarks/bench_text.py).")

    @Option(help: "A tokenizer.json or tokenizer.model.") var tokenizer: String
    @Option(help: "A UTF-8 text file, one text per line.") var lines: String
    @Option(help: "Timed passes over the lines (the median is reported).") var repeats = 5

    func run() throws {
        let tok = try runOrExit { try loadTokenizer(tokenizer) }
        guard let data = FileManager.default.contents(atPath: lines) else {
            throw ValidationError("cannot read --lines file '\(lines)'")
        }
        var records = Array(data).split(separator: 0x0A, omittingEmptySubsequences: false)
        if records.last?.isEmpty == true { records.removeLast() }
        let texts = try records.enumerated().map { index, record in
            guard let text = String(validating: record, as: UTF8.self) else {
                throw ValidationError("\(lines): line \(index + 1) is not valid UTF-8")
            }
            return text
        }
        let bytes = texts.reduce(0) { $0 + $1.utf8.count }
        var times: [Double] = []
        var tokens = 0
        for _ in 0..<max(1, repeats) {
            let session = tok.makeEncoder() // a fresh cache each pass: the first pass pays for its misses
            let start = DispatchTime.now().uptimeNanoseconds
            var count = 0
            for text in texts { count += session.encode(text, addSpecialTokens: false).count }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            tokens = count
        }
        times.sort()
        let median = times[times.count / 2]
        print("{\"seconds\": \(median), \"bytes\": \(bytes), \"tokens\": \(tokens), \"texts\": \(texts.count), \"mb_per_s\": \(Double(bytes) / median / 1e6)}")
    }
}
