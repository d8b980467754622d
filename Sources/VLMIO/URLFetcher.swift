import CCurl
import Foundation
import VLMCore

/// Where one transfer's body goes: the fetcher hands it each chunk in order. Returning false stops the transfer
/// (the fetcher reports it as `.aborted`, with the sink's reason).
public protocol URLFetchSink: AnyObject {
    /// Takes one chunk; false aborts the transfer.
    func receive(_ chunk: UnsafeRawBufferPointer) -> Bool
    /// Why `receive` said no, for the report.
    var abortReason: String? { get }
}

/// Many HTTP(S) GETs at once on one thread through libcurl's multi interface: keep-alive and HTTP/2 multiplexing,
/// redirects up to a limit (http and https only), a per-host connection cap, an overall deadline and a stall
/// detector per transfer, a body limit, and retries of transient failures. Each body streams into a sink the
/// caller makes per attempt; nothing is held in memory but curl's buffers.
///
/// ```swift
/// let fetcher = try URLFetcher(options: .init(concurrency: 64))
/// try fetcher.run(next: { queue.popFirst() }, open: { job in FileSink(job) }, done: { result in record(result) })
/// ```
///
/// One thread runs it; only `wakeup()` may be called from others (hence `@unchecked Sendable`).
public final class URLFetcher: @unchecked Sendable {
    public struct Options: Sendable {
        public var concurrency = 64
        /// Connections open to one host at once (0 = no cap).
        public var perHost = 16
        /// Whole-transfer deadline, seconds.
        public var timeout = 20.0
        /// A transfer receiving less than 1 byte/s for this many seconds is stalled (0 = off).
        public var stall = 10.0
        /// Bodies larger than this stop at it.
        public var maxBytes: Int64 = 20 << 20
        public var maxRedirects = 5
        /// Attempts after the first for transient failures (timeouts, stalls, connection errors, 429, 5xx).
        public var retries = 2
        public var userAgent = URLFetcher.defaultUserAgent
        /// Stop a reply whose `X-Robots-Tag` says noai or noimageai (as img2dataset does by default).
        public var honourOptOut = true

        public init(concurrency: Int = 64, perHost: Int = 16, timeout: Double = 20, stall: Double = 10,
                    maxBytes: Int64 = 20 << 20, maxRedirects: Int = 5, retries: Int = 2) {
            self.concurrency = concurrency
            self.perHost = perHost
            self.timeout = timeout
            self.stall = stall
            self.maxBytes = maxBytes
            self.maxRedirects = maxRedirects
            self.retries = retries
        }
    }

    public static let defaultUserAgent = "vlmdata/1.0 (+https://github.com/vlmdata/vlmdata; image-text dataset builder)"

    /// One URL to fetch; `id` is the caller's.
    public struct Job: Sendable {
        public var id: Int
        public var url: String

        public init(id: Int, url: String) {
            self.id = id
            self.url = url
        }
    }

    /// How a transfer ended.
    public enum Outcome: Sendable, Equatable {
        /// The server answered (any status); the body went to the sink when the status was 2xx.
        case answered
        case timeout
        case stalled
        /// The body passed `maxBytes` (announced or received).
        case tooLarge
        case dnsError
        case connectError
        case redirectLoop
        /// A redirect to a scheme other than http(s).
        case refusedScheme
        /// `X-Robots-Tag: noai` / `noimageai` on the final reply.
        case optedOut
        /// The sink said no.
        case aborted
    }

    public struct Result: Sendable {
        public var job: Job
        public var outcome: Outcome
        public var httpStatus: Int?
        public var finalURL: String?
        public var contentType: String?
        public var bytes: Int64
        public var error: String?
        public var attempts: Int
    }

    public let options: Options
    private let multi: UnsafeMutableRawPointer

    public init(options: Options) throws {
        guard urlFetcherGlobalInit == CURLE_OK else {
            throw VLMError(.io, "curl_global_init failed: \(String(cString: curl_easy_strerror(urlFetcherGlobalInit)))")
        }
        guard let multi = curl_multi_init() else { throw VLMError(.io, "curl_multi_init returned NULL") }
        self.options = options
        self.multi = multi
        _ = vlm_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, options.perHost)
        _ = vlm_curl_multi_setopt_long(multi, CURLMOPT_PIPELINING, 2)   // CURLPIPE_MULTIPLEX: HTTP/2 streams share a connection
    }

    deinit { curl_multi_cleanup(multi) }

    /// Fetches every job `next` yields (nil = no more), at most `concurrency` at a time, and calls `done` once per
    /// job with its last attempt. `open` makes a fresh sink for each attempt. Returns when the last transfer ends.
    /// `shouldStop` is asked between rounds; when it says yes no new job starts and the running ones are dropped
    /// without a `done` call. `round` runs once per round of the loop (after `done` calls, before waiting for the
    /// network), for work that other threads finish; they call `wakeup()` to end the wait early.
    public func run(next: () throws -> Job?, open: (Job) -> any URLFetchSink, done: (Result) throws -> Void,
                    round: () throws -> Void = {}, shouldStop: () -> Bool = { false }) throws {
        var idle: [Transfer] = []
        var active: [UnsafeMutableRawPointer: Transfer] = [:]
        var delayed: [(due: Double, job: Job, attempts: Int)] = []
        var exhausted = false
        defer {
            for (easy, transfer) in active {
                curl_multi_remove_handle(multi, easy)
                transfer.sink = nil
            }
        }

        func start(_ job: Job, attempts: Int) throws {
            let transfer = try idle.popLast() ?? Transfer()
            transfer.prepare(job: job, attempts: attempts, sink: open(job), options: options)
            let code = curl_multi_add_handle(multi, transfer.easy)
            guard code == CURLM_OK else {
                throw VLMError(.io, "curl_multi_add_handle: \(String(cString: curl_multi_strerror(code)))")
            }
            active[transfer.easy] = transfer
        }

        while true {
            let now = Self.clock()
            if !shouldStop() {
                while active.count < options.concurrency, let i = delayed.firstIndex(where: { $0.due <= now }) {
                    let retry = delayed.remove(at: i)
                    try start(retry.job, attempts: retry.attempts)
                }
                while !exhausted, active.count < options.concurrency {
                    guard let job = try next() else { exhausted = true; break }
                    try start(job, attempts: 1)
                }
            } else {
                return
            }
            if active.isEmpty && delayed.isEmpty && exhausted { return }

            var running: Int32 = 0
            let performed = curl_multi_perform(multi, &running)
            guard performed == CURLM_OK else {
                throw VLMError(.io, "curl_multi_perform: \(String(cString: curl_multi_strerror(performed)))")
            }
            var easy: UnsafeMutableRawPointer?
            var code = CURLE_OK
            while vlm_curl_multi_next_done(multi, &easy, &code) == 1, let handle = easy {
                curl_multi_remove_handle(multi, handle)
                guard let transfer = active.removeValue(forKey: handle) else { continue }
                let result = transfer.finish(code, options: options)
                transfer.sink = nil
                idle.append(transfer)
                if Self.isTransient(result), result.attempts <= options.retries {
                    delayed.append((Self.clock() + 0.25 * Double(result.attempts), result.job, result.attempts + 1))
                } else {
                    try done(result)
                }
            }
            try round()
            if active.isEmpty, !delayed.isEmpty, active.count < options.concurrency {
                let wait = max(0, (delayed.map(\.due).min() ?? now) - Self.clock())
                if wait > 0 { usleep(UInt32(min(wait, 0.1) * 1_000_000)) }
                continue
            }
            var fds: Int32 = 0
            _ = curl_multi_poll(multi, nil, 0, 100, &fds)
        }
    }

    /// Ends `run`'s wait for the network at once (callable from any thread), so its `round` runs.
    public func wakeup() { _ = curl_multi_wakeup(multi) }

    /// Failures worth another attempt: the network or the server may do better next time.
    static func isTransient(_ result: Result) -> Bool {
        switch result.outcome {
        case .timeout, .stalled, .connectError: true
        // A resolver that did not answer in time may next time; a name that does not exist will not.
        case .dnsError: result.error?.contains("Resolving timed out") ?? false
        case .answered: result.httpStatus.map { $0 == 429 || $0 == 408 || (500...599).contains($0) } ?? false
        default: false
        }
    }

    /// Monotonic seconds.
    package static func clock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

private let urlFetcherGlobalInit: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

/// One easy handle and the state of the attempt it is running; reused across jobs (keeps its connection cache
/// through the multi handle).
private final class Transfer {
    let easy: UnsafeMutableRawPointer
    let errorBuffer: UnsafeMutablePointer<CChar>
    var job = URLFetcher.Job(id: 0, url: "")
    var attempts = 0
    var sink: (any URLFetchSink)?
    var maxBytes: Int64 = 0
    var received: Int64 = 0
    var optedOut = false
    var honourOptOut = true
    var overLimit = false
    var sinkRefused = false
    /// Status of the reply whose headers are being read (each redirect hop starts a new one).
    var status = 0
    var contentType: String?

    init() throws {
        guard let easy = curl_easy_init() else { throw VLMError(.io, "curl_easy_init returned NULL (out of memory?)") }
        self.easy = easy
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(easy)
        errorBuffer.deallocate()
    }

    func prepare(job: URLFetcher.Job, attempts: Int, sink: any URLFetchSink, options: URLFetcher.Options) {
        self.job = job
        self.attempts = attempts
        self.sink = sink
        maxBytes = options.maxBytes
        honourOptOut = options.honourOptOut
        received = 0
        optedOut = false
        overLimit = false
        sinkRefused = false
        status = 0
        contentType = nil
        errorBuffer[0] = 0
        curl_easy_reset(easy)
        _ = vlm_curl_setopt_string(easy, CURLOPT_URL, job.url)
        _ = vlm_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = vlm_curl_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = vlm_curl_setopt_string(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        _ = vlm_curl_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 1)
        _ = vlm_curl_setopt_long(easy, CURLOPT_MAXREDIRS, options.maxRedirects)
        _ = vlm_curl_setopt_long(easy, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        _ = vlm_curl_setopt_string(easy, CURLOPT_USERAGENT, options.userAgent)
        _ = vlm_curl_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, "")
        _ = vlm_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(options.timeout * 1000))
        _ = vlm_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(min(options.timeout, 10) * 1000))
        if options.stall > 0 {
            _ = vlm_curl_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1)
            _ = vlm_curl_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, max(1, Int(options.stall.rounded(.up))))
        }
        _ = vlm_curl_setopt_off(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(options.maxBytes))
        // Most images arrive in one or two reads (and one or two sink calls) instead of four or more; under
        // glibc's mmap threshold, so the buffer comes from the heap, not a fresh mapping per transfer.
        _ = vlm_curl_setopt_long(easy, CURLOPT_BUFFERSIZE, 64 << 10)
        _ = vlm_curl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer)
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = vlm_curl_setopt_callback(easy, CURLOPT_WRITEFUNCTION, transferWrite)
        _ = vlm_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, me)
        _ = vlm_curl_setopt_callback(easy, CURLOPT_HEADERFUNCTION, transferHeader)
        _ = vlm_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, me)
    }

    /// One header line of the reply being read.
    func header(_ line: String) -> Bool {
        if line.hasPrefix("HTTP/") {
            status = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            optedOut = false
            contentType = nil
            return true
        }
        guard let colon = line.firstIndex(of: ":") else { return true }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        switch name {
        case "content-type": contentType = value
        case "x-robots-tag":
            if honourOptOut, (200..<300).contains(status), Self.forbidsAI(value) {
                optedOut = true
                return false   // stop before the body
            }
        default: break
        }
        return true
    }

    /// `X-Robots-Tag` values, optionally "bot: " prefixed, comma-separated: noai or noimageai forbid.
    static func forbidsAI(_ value: String) -> Bool {
        for directive in value.lowercased().split(separator: ",") {
            let token = directive.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if token == "noai" || token == "noimageai" { return true }
        }
        return false
    }

    func write(_ chunk: UnsafeRawBufferPointer) -> Bool {
        guard (200..<300).contains(status) else { return true }   // error bodies are dropped
        received += Int64(chunk.count)
        if received > maxBytes {
            overLimit = true
            return false
        }
        guard let sink, sink.receive(chunk) else {
            sinkRefused = true
            return false
        }
        return true
    }

    func finish(_ code: CURLcode, options: URLFetcher.Options) -> URLFetcher.Result {
        var httpStatus = 0
        _ = vlm_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &httpStatus)
        var effective: UnsafeMutablePointer<CChar>?
        _ = vlm_curl_getinfo_string(easy, CURLINFO_EFFECTIVE_URL, &effective)
        let finalURL = effective.map { String(cString: $0) }
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        var result = URLFetcher.Result(job: job, outcome: .answered, httpStatus: httpStatus == 0 ? nil : httpStatus,
                                       finalURL: finalURL, contentType: contentType, bytes: received,
                                       error: nil, attempts: attempts)
        if optedOut {
            result.outcome = .optedOut
            result.error = "X-Robots-Tag forbids AI use"
            return result
        }
        if overLimit {
            result.outcome = .tooLarge
            result.error = "body passed --max-bytes (\(options.maxBytes) bytes)"
            return result
        }
        if sinkRefused {
            result.outcome = .aborted
            result.error = sink?.abortReason ?? "stopped by the receiver"
            return result
        }
        switch code {
        case CURLE_OK: return result
        case CURLE_FILESIZE_EXCEEDED:
            result.outcome = .tooLarge
            result.error = "announced body is over --max-bytes (\(options.maxBytes) bytes)"
            return result
        case CURLE_OPERATION_TIMEDOUT:
            // A resolver that does not answer ends at the connect deadline ("Resolving timed out after N
            // milliseconds"): the name could not be resolved, whatever the reason.
            result.outcome = message.contains("too slow") ? .stalled : message.hasPrefix("Resolving timed out") ? .dnsError : .timeout
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: result.outcome = .dnsError
        case CURLE_TOO_MANY_REDIRECTS: result.outcome = .redirectLoop
        case CURLE_UNSUPPORTED_PROTOCOL: result.outcome = .refusedScheme
        default: result.outcome = .connectError
        }
        result.error = "\(message) (curl code \(code.rawValue))"
        return result
    }
}

private func transferWrite(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ me: UnsafeMutableRawPointer?) -> Int {
    guard let data, let me else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(me).takeUnretainedValue()
    let n = size * count
    return transfer.write(UnsafeRawBufferPointer(start: data, count: n)) ? n : 0
}

private func transferHeader(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ me: UnsafeMutableRawPointer?) -> Int {
    guard let data, let me else { return 0 }
    let n = size * count
    let bytes = UnsafeRawBufferPointer(start: data, count: n)
    // Most header lines (dates, lengths, caching) matter to no one: skip them before making a String.
    guard headerPrefixes.contains(where: { hasPrefixIgnoringCase(bytes, $0) }) else { return n }
    let transfer = Unmanaged<Transfer>.fromOpaque(me).takeUnretainedValue()
    return transfer.header(String(decoding: bytes, as: UTF8.self)) ? n : 0
}

/// The header lines `Transfer.header` reads: the status line and two fields (lower case).
private let headerPrefixes: [[UInt8]] = ["http/", "content-type:", "x-robots-tag:"].map { Array($0.utf8) }

private func hasPrefixIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ prefix: [UInt8]) -> Bool {
    guard bytes.count >= prefix.count else { return false }
    for i in 0..<prefix.count {
        let b = bytes[i]
        if (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) != prefix[i] { return false }
    }
    return true
}
