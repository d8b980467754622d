import CCurl
import Foundation
import VLMCore

/// The loader's HTTP(S) downloads over libcurl: a whole file into a local path, continuing a partial one with a
/// range request (`Range: bytes=N-`).
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
    }

    private static let globalInit: Bool = {
        curl_global_init(Int(CURL_GLOBAL_DEFAULT)) == CURLE_OK
    }()

    /// Downloads `url` into `path`. If `path` already holds bytes, asks for the rest with a range request; a server
    /// that answers 200 instead gets the file rewritten from the start. HTTP 404/410 throw `.notFound`, other
    /// failures `.network`, each naming the URL. Blocking: call it from a worker thread.
    public static func download(_ url: String, to path: String, connectTimeout: Int = 15, lowSpeedSeconds: Int = 60) throws -> Result {
        guard globalInit else { throw VLMError(.network, file: url, "curl_global_init failed") }
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open for writing: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let have = Int(lseek(fd, 0, SEEK_END))
        guard let handle = curl_easy_init() else { throw VLMError(.network, file: url, "curl_easy_init failed") }
        defer { curl_easy_cleanup(handle) }

        let sink = Sink(fd: fd, handle: handle, resumeFrom: have)
        let context = Unmanaged.passRetained(sink)
        defer { context.release() }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)

        func set(_ code: CURLcode, _ what: String) throws {
            guard code == CURLE_OK else {
                throw VLMError(.network, file: url, "curl_easy_setopt(\(what)) failed: \(String(cString: curl_easy_strerror(code)))")
            }
        }
        try set(vlm_curl_setopt_string(handle, CURLOPT_URL, url), "URL")
        try set(vlm_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 1), "FOLLOWLOCATION")
        try set(vlm_curl_setopt_long(handle, CURLOPT_FAILONERROR, 1), "FAILONERROR")
        try set(vlm_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        try set(vlm_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, connectTimeout), "CONNECTTIMEOUT")
        try set(vlm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1), "LOW_SPEED_LIMIT")
        try set(vlm_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, lowSpeedSeconds), "LOW_SPEED_TIME")
        if have > 0 { try set(vlm_curl_setopt_string(handle, CURLOPT_RANGE, "\(have)-"), "RANGE") }
        try set(vlm_curl_setopt_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, user in
            let sink = Unmanaged<Sink>.fromOpaque(user!).takeUnretainedValue()
            return sink.write(data, size * count)
        }, "WRITEFUNCTION")
        try set(vlm_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context.toOpaque()), "WRITEDATA")
        try errorBuffer.withUnsafeMutableBufferPointer { buffer in
            try set(vlm_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, buffer.baseAddress), "ERRORBUFFER")
            let code = curl_easy_perform(handle)
            var status = 0
            _ = vlm_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            if let failure = sink.failure { throw VLMError.io(file: path, failure) }
            if code == CURLE_RANGE_ERROR || status == 416 {
                // The partial file is at least as long as the resource: start again.
                sink.status = 416
                return
            }
            guard code == CURLE_OK else {
                let detail = String(cString: buffer.baseAddress!)
                let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
                if status == 404 || status == 410 {
                    throw VLMError(.notFound, file: url, "the server has no such shard (HTTP \(status))")
                }
                throw VLMError(.network, file: url, "download failed\(status > 0 ? " (HTTP \(status))" : ""): \(message)")
            }
            sink.status = status
        }
        if sink.status == 416 {
            guard ftruncate(fd, 0) == 0 else { throw VLMError.io(file: path, "cannot truncate a stale partial download") }
            return try download(url, to: path, connectTimeout: connectTimeout, lowSpeedSeconds: lowSpeedSeconds)
        }
        return Result(status: sink.status, received: sink.received, resumed: have > 0 && !sink.restarted)
    }

    /// Writes the body to the descriptor; on the first chunk, restarts the file if the server ignored the range.
    private final class Sink {
        let fd: Int32
        let handle: UnsafeMutableRawPointer
        let resumeFrom: Int
        var started = false
        var restarted = false
        var received = 0
        var status = 0
        var failure: String?

        init(fd: Int32, handle: UnsafeMutableRawPointer, resumeFrom: Int) {
            self.fd = fd
            self.handle = handle
            self.resumeFrom = resumeFrom
        }

        func write(_ data: UnsafeMutablePointer<CChar>?, _ count: Int) -> Int {
            if !started {
                started = true
                var code = 0
                _ = vlm_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &code)
                if resumeFrom > 0 && code != 206 {
                    restarted = true
                    guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
                        failure = "cannot restart the partial download: \(String(cString: strerror(errno)))"
                        return 0
                    }
                }
            }
            var done = 0
            while done < count {
                let n = Foundation.write(fd, data! + done, count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = "write failed: \(String(cString: strerror(errno)))"
                    return 0
                }
                done += n
            }
            received += count
            return count
        }
    }
}
