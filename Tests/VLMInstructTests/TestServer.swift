import Foundation

/// Paths of the package and the shared test data, found from this file (CI clones the repo elsewhere).
enum TestPaths {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let sharedData: URL = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data")
    static let llmServer: URL = packageRoot.appendingPathComponent("Tests/support/llm_server.py")

    /// `Tests/support/llm_server.py` needs only the standard library, so any python3 runs it.
    static var python: String {
        ProcessInfo.processInfo.environment["VLMDATA_PYTHON"] ?? "/usr/bin/python3"
    }

    static func temporaryDirectory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("vlm-instruct-\(name)-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// `Tests/support/llm_server.py` on a free loopback port, stopped in `deinit`.
final class TestServer {
    let process = Process()
    let port: Int
    var baseURL: String { "http://127.0.0.1:\(port)" }

    init(_ arguments: [String] = []) throws {
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: TestPaths.python)
        process.arguments = [TestPaths.llmServer.path, "--port", "0"] + arguments
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice  // broken pipes from aborted transfers are expected
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            kill(process.processIdentifier, SIGKILL)
            throw TestServerError(message: "llm_server.py did not report its port (got \(text.debugDescription))")
        }
        self.port = port
    }

    deinit {
        if process.isRunning {
            // SIGKILL: the child may have inherited a mask that blocks SIGTERM from a Dispatch worker thread.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

struct TestServerError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
