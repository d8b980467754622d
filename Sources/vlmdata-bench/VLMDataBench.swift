import ArgumentParser
import Foundation
import VLMCore

/// `vlmdata-bench`: what only benchmarks and tests need, kept out of the shipped `vlmdata` command.
///
/// ```
/// vlmdata-bench synthetic --workspace WS --count 20000   # shard inputs of LLaVA-1.5 sizes, no images needed
/// vlmdata shard --workspace WS
/// vlmdata-bench loader --workspace WS --workers 2 --json
/// ```
@main
struct VLMDataBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vlmdata-bench",
        abstract: "Benchmark fixtures and in-process benchmarks for vlmdata (built by `make bench`; not part of the shipped CLI).",
        subcommands: [SyntheticCommand.self, BenchLoaderCommand.self, BenchTokenizeCommand.self])
}

/// Runs `body`, printing a `VLMError` as one line on stderr and exiting 1.
func runOrExit<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as VLMError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
