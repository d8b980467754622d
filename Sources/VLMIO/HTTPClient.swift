import CCurl
import Foundation
import VLMCore

/// One HTTP request: method, URL, headers, optional body, timeouts and an optional byte range.
///
/// ```swift
/// let request = HTTPRequest(method: "GET", url: "http://host/shard-000001.tar", range: HTTPByteRange(0, 511))
/// ```
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    /// Header lines in order; names as given (HTTP names are case-insensitive).
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]?
    /// Whole-transfer limit in seconds (0 = none).
    public var timeout: Double
    /// Connection-phase limit in seconds (0 = curl's default of 300).
    public var connectTimeout: Double
    /// Abort when fewer than 1 byte/s arrives for this many seconds (0 = off). Suits long downloads where a
    /// total `timeout` would be wrong.
    public var stallTimeout: Double
    /// `Range: bytes=lower-upper`; the server answers 206 when it honours it.
    public var range: HTTPByteRange?

    public init(method: String = "GET", url: String, headers: [(name: String, value: String)] = [],
                body: [UInt8]? = nil, timeout: Double = 60, connectTimeout: Double = 10,
                stallTimeout: Double = 0, range: HTTPByteRange? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.stallTimeout = stallTimeout
        self.range = range
    }
}

/// An inclusive byte range, as the HTTP `Range` header writes it; `upperBound == nil` means "to the end".
public struct HTTPByteRange: Sendable, Equatable {
    public var lowerBound: Int64
    public var upperBound: Int64?

    public init(_ lowerBound: Int64, _ upperBound: Int64?) {
        self.lowerBound = lowerBound
        self.upperBound = upperBound
    }

    /// The range `offset ..< offset + length`.
    public init(offset: Int64, length: Int64) {
        self.init(offset, offset + length - 1)
    }

    /// The value after `bytes=` (and the CURLOPT_RANGE string): `"0-511"` or `"512-"`.
    public var headerValue: String {
        upperBound.map { "\(lowerBound)-\($0)" } ?? "\(lowerBound)-"
    }
}

/// A response: status, headers of the final hop (after redirects), and the body (empty for streamed transfers
/// with a 2xx status).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }

    public var isSuccess: Bool { (200..<300).contains(status) }

    /// How long the server asks the client to wait, from `retry-after-ms` (OpenAI) or `Retry-After`
    /// (seconds or an HTTP date), in seconds; nil when neither is present or parseable.
    public var retryAfter: Double? {
        if let ms = header("retry-after-ms").flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) }), ms >= 0 {
            return ms / 1000
        }
        guard let value = header("retry-after")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let seconds = Double(value), seconds >= 0 { return seconds }
        if let date = HTTPResponse.parseHTTPDate(value) { return max(0, date.timeIntervalSinceNow) }
        return nil
    }

    /// The body as UTF-8 text (invalid sequences repaired).
    public var text: String { String(decoding: body, as: UTF8.self) }

    static func parseHTTPDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text)
    }
}

/// A blocking HTTP(S) client over one libcurl easy handle, which keeps connections alive between requests.
///
/// Not thread-safe and not `Sendable`: give each worker thread its own client. Every call blocks, so call it
/// from a worker thread (or `Thread`/`DispatchQueue`), never from Swift's cooperative pool.
///
/// ```swift
/// let client = try HTTPClient()
/// let response = try client.send(HTTPRequest(url: "http://127.0.0.1:8000/shard.tar", range: HTTPByteRange(0, 1023)))
/// try AtomicFile.withWriter(to: "/tmp/a.tar") { writer in
///     _ = try client.download(HTTPRequest(url: url, timeout: 0, stallTimeout: 30), to: writer)
/// }
/// ```
public final class HTTPClient {
    private let handle: CurlEasyHandle
    /// Largest body kept in memory for a non-2xx reply during a streamed download.
    private let errorBodyLimit = 1 << 16

    public init() throws {
        handle = try CurlEasyHandle()
    }

    /// Sends `request` and returns the whole response in memory. Throws `VLMError(.network)` for transport
    /// failures (refused, reset, timed out, DNS) and `.invalidArgument` for a request curl refuses to build;
    /// an HTTP error status is a normal response, not a throw.
    public func send(_ request: HTTPRequest) throws -> HTTPResponse {
        var body: [UInt8] = []
        var response = try perform(request) { chunk, _ in
            body.append(contentsOf: chunk)
        }
        response.body = body
        return response
    }

    /// Sends `request` and streams a 2xx body into `writer` (the returned response's body is then empty).
    /// A non-2xx body is kept in the response instead (up to 64 KiB) and nothing is written.
    /// `onChunk` sees every chunk written (for hashing or progress).
    public func download(_ request: HTTPRequest, to writer: FileWriter,
                         onChunk: ((UnsafeRawBufferPointer) -> Void)? = nil) throws -> HTTPResponse {
        var errorBody: [UInt8] = []
        let limit = errorBodyLimit
        var response = try perform(request) { chunk, status in
            if (200..<300).contains(status) {
                try writer.write(chunk)
                onChunk?(chunk)
            } else if errorBody.count < limit {
                errorBody.append(contentsOf: chunk.prefix(limit - errorBody.count))
            }
        }
        response.body = errorBody
        return response
    }

    /// Runs one transfer, handing each body chunk and the current status to `sink`. An error thrown by `sink`
    /// aborts the transfer and is rethrown as is.
    public func perform(_ request: HTTPRequest,
                        sink: (UnsafeRawBufferPointer, Int) throws -> Void) throws -> HTTPResponse {
        let curl = handle
        let url = request.url
        curl_easy_reset(curl.raw)
        try curl.set(CURLOPT_URL, request.url, url: url)
        try curl.set(CURLOPT_NOSIGNAL, 1, url: url)
        try curl.set(CURLOPT_FOLLOWLOCATION, 1, url: url)
        try curl.set(CURLOPT_MAXREDIRS, 10, url: url)
        try curl.set(CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000), url: url)
        try curl.set(CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000), url: url)
        if request.stallTimeout > 0 {
            try curl.set(CURLOPT_LOW_SPEED_LIMIT, 1, url: url)
            try curl.set(CURLOPT_LOW_SPEED_TIME, max(1, Int(request.stallTimeout.rounded(.up))), url: url)
        }
        try curl.set(CURLOPT_ERRORBUFFER, pointer: curl.errorBuffer, url: url)
        if let range = request.range {
            try curl.set(CURLOPT_RANGE, range.headerValue, url: url)
        }

        let method = request.method.uppercased()
        switch method {
        case "GET":
            try curl.set(CURLOPT_HTTPGET, 1, url: url)
        case "HEAD":
            try curl.set(CURLOPT_NOBODY, 1, url: url)
        default:
            if method != "POST" { try curl.set(CURLOPT_CUSTOMREQUEST, method, url: url) }
        }
        if let body = request.body, method == "GET" || method == "HEAD", !body.isEmpty {
            throw VLMError(.invalidArgument, file: HTTPClient.redacted(url), "\(method) request with a body")
        }
        if method != "GET" && method != "HEAD" && (request.body != nil || method == "POST") {
            let body = request.body ?? []
            try curl.check(vlm_curl_setopt_off(curl.raw, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)),
                           "curl_easy_setopt(CURLOPT_POSTFIELDSIZE_LARGE)", url: url)
            // COPYPOSTFIELDS copies the bytes, so no pointer has to outlive this call.
            if body.isEmpty {
                try curl.set(CURLOPT_COPYPOSTFIELDS, "", url: url)
            } else {
                try body.withUnsafeBytes { raw in
                    try curl.set(CURLOPT_COPYPOSTFIELDS, pointer: UnsafeMutableRawPointer(mutating: raw.baseAddress!),
                                 url: url)
                }
            }
        }

        // Header list: the caller's, plus an empty `Expect:` so curl does not wait for `100 Continue` on bodies.
        let headerList = CurlHeaderList()
        for header in request.headers { headerList.append("\(header.name): \(header.value)") }
        if request.body != nil && !request.headers.contains(where: { $0.name.lowercased() == "expect" }) {
            headerList.append("Expect:")
        }
        try curl.check(vlm_curl_setopt_slist(curl.raw, CURLOPT_HTTPHEADER, headerList.list),
                       "curl_easy_setopt(CURLOPT_HTTPHEADER)", url: url)

        // The sink lives in `state` only during curl_easy_perform; `state` never outlives this closure.
        let headers = try withoutActuallyEscaping(sink) { sink in
            let state = TransferState(sink: sink, handle: curl.raw)
            try withExtendedLifetime(state) {
                let context = Unmanaged.passUnretained(state).toOpaque()
                try curl.set(CURLOPT_WRITEDATA, pointer: context, url: url)
                try curl.set(CURLOPT_HEADERDATA, pointer: context, url: url)
                try curl.check(vlm_curl_setopt_callback(curl.raw, CURLOPT_WRITEFUNCTION, curlWriteCallback),
                               "curl_easy_setopt(CURLOPT_WRITEFUNCTION)", url: url)
                try curl.check(vlm_curl_setopt_callback(curl.raw, CURLOPT_HEADERFUNCTION, curlHeaderCallback),
                               "curl_easy_setopt(CURLOPT_HEADERFUNCTION)", url: url)
                curl.clearErrorBuffer()
                let code = curl_easy_perform(curl.raw)
                if let sinkError = state.sinkError { throw sinkError }
                if code != CURLE_OK {
                    throw VLMError(.network, file: HTTPClient.redacted(url),
                                   "\(method) failed: \(curl.describe(code))")
                }
            }
            let headers = state.headers
            return headers
        }
        withExtendedLifetime(headerList) {}

        var status = 0
        try curl.check(vlm_curl_getinfo_long(curl.raw, CURLINFO_RESPONSE_CODE, &status),
                       "curl_easy_getinfo(CURLINFO_RESPONSE_CODE)", url: url)
        return HTTPResponse(status: status, headers: headers, body: [])
    }

    /// `url` without user info and with the query replaced by `?…`, for error messages: presigned URLs carry
    /// credentials in their query.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return url.split(separator: "?").first.map(String.init) ?? url }
        let hadQuery = components.query != nil
        components.user = nil
        components.password = nil
        components.query = nil
        components.fragment = nil
        return (components.string ?? url) + (hadQuery ? "?…" : "")
    }
}

// MARK: - libcurl plumbing

/// `curl_global_init` runs exactly once, before the first easy handle (Swift globals initialize once, thread-safely).
private let curlGlobalInitCode: CURLcode = curl_global_init(3)  // CURL_GLOBAL_ALL = SSL | WIN32

/// One libcurl easy handle, cleaned up in `deinit`, with the error buffer curl writes details into.
final class CurlEasyHandle {
    let raw: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>

    init() throws {
        guard curlGlobalInitCode == CURLE_OK else {
            throw VLMError(.io, "curl_global_init failed: \(String(cString: curl_easy_strerror(curlGlobalInitCode)))")
        }
        guard let handle = curl_easy_init() else {
            throw VLMError(.io, "curl_easy_init returned NULL (out of memory?)")
        }
        raw = handle
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(raw)
        errorBuffer.deallocate()
    }

    func clearErrorBuffer() { errorBuffer[0] = 0 }

    /// curl's own message for `code`, followed by the handle's detail (e.g. "Failed to connect to ... port 1").
    func describe(_ code: CURLcode) -> String {
        let generic = String(cString: curl_easy_strerror(code))
        let detail = String(cString: errorBuffer)
        return detail.isEmpty || detail == generic ? "\(generic) (curl code \(code.rawValue))"
            : "\(generic): \(detail) (curl code \(code.rawValue))"
    }

    /// The one place a CURLcode becomes a Swift error, naming the operation and the (redacted) URL.
    func check(_ code: CURLcode, _ operation: @autoclosure () -> String, url: String) throws {
        guard code != CURLE_OK else { return }
        throw VLMError(.invalidArgument, file: HTTPClient.redacted(url), "\(operation()) failed: \(describe(code))")
    }

    func set(_ option: CURLoption, _ value: Int, url: String) throws {
        try check(vlm_curl_setopt_long(raw, option, value), "curl_easy_setopt(\(Self.name(option)), \(value))", url: url)
    }

    func set(_ option: CURLoption, _ value: String, url: String) throws {
        // Strings are copied by libcurl (since 7.17), so the temporary C string may go away after the call.
        try check(vlm_curl_setopt_string(raw, option, value), "curl_easy_setopt(\(Self.name(option)))", url: url)
    }

    func set(_ option: CURLoption, pointer: UnsafeMutableRawPointer, url: String) throws {
        try check(vlm_curl_setopt_pointer(raw, option, pointer), "curl_easy_setopt(\(Self.name(option)))", url: url)
    }

    func set(_ option: CURLoption, pointer: UnsafeMutablePointer<CChar>, url: String) throws {
        try set(option, pointer: UnsafeMutableRawPointer(pointer), url: url)
    }

    static func name(_ option: CURLoption) -> String {
        if let entry = curl_easy_option_by_id(option), let name = entry.pointee.name {
            return "CURLOPT_" + String(cString: name)
        }
        return "option \(option.rawValue)"
    }
}

/// A `curl_slist` owned for the duration of one transfer.
final class CurlHeaderList {
    private(set) var list: UnsafeMutablePointer<curl_slist>?

    func append(_ line: String) {
        if let grown = curl_slist_append(list, line) { list = grown }
    }

    deinit { curl_slist_free_all(list) }
}

/// What the C callbacks reach through their `userdata` pointer during one `curl_easy_perform`.
private final class TransferState {
    let sink: (UnsafeRawBufferPointer, Int) throws -> Void
    let handle: UnsafeMutableRawPointer
    var headers: [(name: String, value: String)] = []
    var sinkError: Error?
    var status = 0

    init(sink: @escaping (UnsafeRawBufferPointer, Int) throws -> Void, handle: UnsafeMutableRawPointer) {
        self.sink = sink
        self.handle = handle
    }
}

private func curlWriteCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int,
                               _ context: UnsafeMutableRawPointer?) -> Int {
    guard let context else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    if state.status == 0 {
        var status = 0
        _ = vlm_curl_getinfo_long(state.handle, CURLINFO_RESPONSE_CODE, &status)
        state.status = status
    }
    do {
        try state.sink(UnsafeRawBufferPointer(start: data, count: length), state.status)
        return length
    } catch {
        state.sinkError = error
        return 0  // makes curl stop with CURLE_WRITE_ERROR
    }
}

private func curlHeaderCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int,
                                _ context: UnsafeMutableRawPointer?) -> Int {
    guard let context, let data else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    let length = size * count
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    if line.hasPrefix("HTTP/") {
        // A new status line: a redirect hop or a 100 Continue; keep only the final response's headers.
        state.headers.removeAll()
        state.status = 0
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].trimmingCharacters(in: .whitespaces)
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        state.headers.append((name: name, value: value))
    }
    return length
}

/// The one redaction every string leaving an authenticated HTTP exchange goes through (error messages, stored
/// replies, log lines, `reason` columns): it removes the secret itself, any `Bearer <token>` and the value of any
/// `Authorization` header quoted in the text.
///
/// ```swift
/// let redactor = SecretRedactor(secret: apiKey)
/// redactor.redact("HTTP 500 (Authorization: Bearer sk-...)")  // "HTTP 500 (Authorization: [redacted])"
/// redactor.redact("sent Bearer abc123")                       // "sent [redacted]"
/// ```
public struct SecretRedactor: Sendable {
    /// What replaces a removed secret.
    public static let mask = "[redacted]"

    private let secret: String?

    /// `secret` is matched literally when it has 8 or more characters; a shorter one only as a whole word (so a
    /// 3-letter test key does not mask every word it occurs in).
    public init(secret: String?) {
        self.secret = secret.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `Authorization: [scheme] <value>` and `Bearer <token>`, compiled once. A value already masked (it starts with
    /// `[`) is left alone, so redacting twice changes nothing.
    nonisolated(unsafe) private static let authorization = try! NSRegularExpression(
        pattern: #"(?i)(authorization["']?\s*[:=]\s*["']?)(?>(?:(?:bearer|basic|token)\s+)?)[^\s"',;(){}\[\]]+"#)
    nonisolated(unsafe) private static let bearer = try! NSRegularExpression(
        pattern: #"(?i)\bbearer\s+[^\s"',;(){}\[\]]+"#)

    /// True when `text` holds the secret (matched as `redact` matches it).
    public func appears(in text: String) -> Bool {
        guard let secret else { return false }
        if secret.count >= 8 { return text.contains(secret) }
        return Self.wholeWord(secret).firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil
    }

    /// `text` with the secret, bearer tokens and Authorization values replaced by `SecretRedactor.mask`.
    public func redact(_ text: String) -> String {
        let mask = NSRegularExpression.escapedTemplate(for: Self.mask)
        // Header values first, so `Authorization: Bearer <key>` loses its scheme too, then the key wherever it is.
        var out = Self.replace(Self.authorization, in: text, with: "$1" + mask)
        out = Self.replace(Self.bearer, in: out, with: mask)
        if let secret {
            if secret.count >= 8 {
                out = out.replacingOccurrences(of: secret, with: Self.mask)
            } else {
                out = Self.replace(Self.wholeWord(secret), in: out, with: mask)
            }
        }
        return out
    }

    private static func wholeWord(_ secret: String) -> NSRegularExpression {
        let escaped = NSRegularExpression.escapedPattern(for: secret)
        return try! NSRegularExpression(pattern: "(?<![A-Za-z0-9_-])\(escaped)(?![A-Za-z0-9_-])")
    }

    private static func replace(_ regex: NSRegularExpression, in text: String, with template: String) -> String {
        regex.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: template)
    }
}
