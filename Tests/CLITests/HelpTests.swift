import Foundation
import Testing

/// The built CLI: `VLMDATA_BIN` (set by `make test` to the release binary) or the debug build beside the tests.
let vlmdataBinary: String = {
    if let path = ProcessInfo.processInfo.environment["VLMDATA_BIN"], FileManager.default.isExecutableFile(atPath: path) {
        return path
    }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/vlmdata").path
}()

struct CLIResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func runCLI(_ arguments: [String]) throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: vlmdataBinary)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CLIResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                     stderr: String(decoding: stderr, as: UTF8.self))
}

/// Every command and subcommand a user knows answers `--help` with a usage line and exit code 0.
@Test(arguments: [
    [], ["ingest"], ["ingest", "coco"], ["ingest", "llava"], ["ingest", "urls"], ["synth", "shapes"], ["stats"], ["run"],
    ["patchify"], ["preprocess"], ["tokenize"], ["tokenizer"], ["tokenizer", "encode"], ["tokenizer", "decode"],
    ["tokenizer", "train"], ["gen-instructions"], ["export"], ["export", "llava"], ["shard"], ["show"], ["verify"],
    ["catalog"], ["catalog", "merge"], ["stream"], ["train-smoke"],
    ["eval"], ["eval", "build"], ["eval", "score"], ["eval", "check"], ["view"],
])
func helpOnEveryCommand(command: [String]) throws {
    let result = try runCLI(command + ["--help"])
    #expect(result.status == 0, "vlmdata \(command.joined(separator: " ")) --help: \(result.stderr)")
    #expect(result.stdout.contains("USAGE"), "vlmdata \(command.joined(separator: " ")) --help printed no usage")
    #expect(!result.stdout.contains("not built yet"))
}

/// Benchmark fixtures and benchmarks live in `vlmdata-bench`: the shipped command neither lists nor accepts them.
@Test func benchmarkOnlyCommandsAreNotShipped() throws {
    let help = try runCLI(["--help"])
    #expect(help.status == 0)
    #expect(help.stdout.contains("  shard ") && help.stdout.contains("  synth "))
    #expect(!help.stdout.contains("  bench "))
    let bench = try runCLI(["bench", "loader"])
    #expect(bench.status != 0 && bench.stderr.contains("unexpected arguments: 'bench', 'loader'"))
    let synthetic = try runCLI(["shard", "--synthetic", "3", "--workspace", "/nonexistent/vlm-ws"])
    #expect(synthetic.status != 0 && synthetic.stderr.contains("Unknown option '--synthetic'"))
}

@Test func unknownCommandsAndBadFlagsFail() throws {
    #expect(try runCLI(["frobnicate"]).status != 0)
    #expect(try runCLI(["ingest", "coco", "--no-such-flag"]).status != 0)
    let result = try runCLI(["synth", "shapes", "--count", "0", "--out", "/tmp/x"])
    #expect(result.status != 0)
    #expect(result.stderr.contains("--count"))
}

@Test func statsWithoutACatalogSaysSo() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-cli-\(UUID().uuidString)").path
    let result = try runCLI(["stats", "--workspace", dir])
    #expect(result.status == 1)
    #expect(result.stderr.contains("no catalog"))
}
