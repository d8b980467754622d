import Foundation
import VLMCore

/// The loader's downloads: a whole file into a local path, continuing a partial one with a range request
/// (`Range: bytes=N-`). It runs on `HTTPClient` (the one libcurl wrapper), so HTTP(S) and S3 shards share one
/// transfer and error path; `prepare` lets S3 sign each attempt.
///
/// ```swift
/// let result = try LoaderHTTP.download("http://127.0.0.1:8080/train-000000.tar", to: "/cache/.train-000000.tar.part")
/// ```
public enum LoaderHTTP {
    public struct Result: Sendable, Equatable {
        /// The final HTTP status (206 when a partial file was continued).
        public var status: Int
        /// Bytes received in this call.
        public var received: Int
        /// True when the bytes already in the file were kept (the server honored the range).
        public var resumed: Bool
        /// HTTP requests sent (a stale partial file answered 416 costs a second one).
        public var requests: Int = 1
    }

    /// What one attempt returned: a 2xx with the bytes appended (or rewritten), or an error status with its body.
    public struct Transfer: Sendable {
        public var result: Result
        /// The error body of a non-2xx reply (empty on success).
        public var errorBody: [UInt8]
        public var isSuccess: Bool { (200..<300).contains(result.status) }
    }

    /// Downloads `url` into `path`. If `path` already holds bytes, asks for the rest with a range request; a server
    /// that answers 200 instead gets the file rewritten from the start. HTTP 404/410 throw `.notFound`, other
    /// failures `.network`, each naming the URL. Blocking: call it from a worker thread.
    public static func download(_ url: String, to path: String, connectTimeout: Int = 15, lowSpeedSeconds: Int = 60,
                                client: HTTPClient? = nil) throws -> Result {
        let transfer = try self.transfer(url, to: path, connectTimeout: connectTimeout, lowSpeedSeconds: lowSpeedSeconds,
                                         client: client ?? HTTPClient())
        guard transfer.isSuccess else {
            let status = transfer.result.status
            if status == 404 || status == 410 {
                throw VLMError(.notFound, file: HTTPClient.redacted(url), "the server has no such shard (HTTP \(status))")
            }
            let body = String(decoding: transfer.errorBody.prefix(300), as: UTF8.self)
            throw VLMError(.network, file: HTTPClient.redacted(url), "download failed (HTTP \(status))\(body.isEmpty ? "" : ": \(body)")")
        }
        return transfer.result
    }

    /// One download attempt into `path` that reports an HTTP error status instead of throwing (transport failures
    /// and local write errors still throw). `prepare` adjusts each request before it is sent (S3 signs it).
    public static func transfer(_ url: String, to path: String, connectTimeout: Int = 15, lowSpeedSeconds: Int = 60,
                                client: HTTPClient,
                                prepare: (HTTPRequest) throws -> HTTPRequest = { $0 }) throws -> Transfer {
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open for writing: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var requests = 0
        while true {
            let have = Int(lseek(fd, 0, SEEK_END))
            let request = try prepare(HTTPRequest(url: url, timeout: 0, connectTimeout: Double(connectTimeout),
                                                  stallTimeout: Double(lowSpeedSeconds),
                                                  range: have > 0 ? HTTPByteRange(Int64(have), nil) : nil))
            var started = false
            var restarted = false
            var received = 0
            var errorBody: [UInt8] = []
            requests += 1
            let response = try client.perform(request) { chunk, status in
                guard (200..<300).contains(status) else {
                    if errorBody.count < 1 << 16 { errorBody.append(contentsOf: chunk.prefix((1 << 16) - errorBody.count)) }
                    return
                }
                if !started {
                    started = true
                    // The server ignored the range: rewrite the file from its first byte.
                    if have > 0 && status != 206 {
                        restarted = true
                        guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
                            throw VLMError.io(file: path, "cannot restart the partial download: \(String(cString: strerror(errno)))")
                        }
                    }
                }
                try writeFully(fd, chunk, path: path)
                received += chunk.count
            }
            if response.status == 416 && have > 0 {
                // The partial file is at least as long as the resource: start again.
                guard ftruncate(fd, 0) == 0 else { throw VLMError.io(file: path, "cannot truncate a stale partial download") }
                continue
            }
            if response.isSuccess && have > 0 && !started && response.status != 206 {
                // An empty 200 body for a resumed request: the resource is empty now.
                guard ftruncate(fd, 0) == 0 else { throw VLMError.io(file: path, "cannot truncate a stale partial download") }
                restarted = true
            }
            return Transfer(result: Result(status: response.status, received: received,
                                           resumed: have > 0 && !restarted && response.isSuccess, requests: requests),
                            errorBody: errorBody)
        }
    }

    private static func writeFully(_ fd: Int32, _ chunk: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < chunk.count {
            let n = Foundation.write(fd, chunk.baseAddress! + done, chunk.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw VLMError.io(file: path, "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}
