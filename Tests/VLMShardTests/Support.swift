import Foundation
import Testing
import VLMCore
import VLMIO

/// A fresh temporary folder for one test, removed at the end of the process.
func temporaryDirectory(_ label: String = #function) throws -> String {
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("vlmshard-tests-\(getpid())")
    let clean = label.filter { $0.isLetter || $0.isNumber }
    let dir = base.appendingPathComponent("\(clean)-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// The Python interpreter of the test environment (`VLMDATA_PYTHON`, set by `make test`), or nil.
let python: String? = ProcessInfo.processInfo.environment["VLMDATA_PYTHON"].flatMap { $0.isEmpty ? nil : $0 }

/// Runs a program and returns its standard output; a non-zero exit fails with its standard error.
@discardableResult
func run(_ executable: String, _ arguments: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Drain both pipes concurrently so a chatty child cannot block.
    nonisolated(unsafe) var errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// Runs a Python script with the test interpreter; fails the test with stderr when it exits non-zero.
func runPython(_ script: String, _ arguments: [String] = []) throws -> String {
    guard let python else { throw VLMError(.notFound, "VLMDATA_PYTHON is not set") }
    let result = try run(python, ["-c", script] + arguments)
    #expect(result.status == 0, "python failed: \(result.err)")
    return result.out
}

func which(_ tool: String) -> String? {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(tool)") {
        return "\(dir)/\(tool)"
    }
    return nil
}

func readFile(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}
