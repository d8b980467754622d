import Crypto
import Foundation
import VLMCore

/// `s3://bucket/key`.
public struct S3Location: Sendable, Hashable, CustomStringConvertible {
    public var bucket: String
    public var key: String

    public init(bucket: String, key: String) {
        self.bucket = bucket
        self.key = key
    }

    /// Parses `s3://bucket/key` (the key may be empty: `s3://bucket` or `s3://bucket/`).
    public init(_ url: String) throws {
        guard url.hasPrefix("s3://") else { throw VLMError(.invalidArgument, record: url, "not an s3:// URL") }
        let rest = url.dropFirst(5)
        let bucket = rest.prefix { $0 != "/" }
        guard !bucket.isEmpty else { throw VLMError(.invalidArgument, record: url, "the s3:// URL names no bucket") }
        self.bucket = String(bucket)
        key = String(rest.dropFirst(bucket.count + 1))
    }

    public static func isS3(_ url: String) -> Bool { url.hasPrefix("s3://") }

    public var description: String { "s3://\(bucket)/\(key)" }

    /// This location with `name` appended under its key as a folder.
    public func appending(_ name: String) -> S3Location {
        S3Location(bucket: bucket, key: key.isEmpty || key.hasSuffix("/") ? key + name : key + "/" + name)
    }
}

/// Where S3 is and who is asking: credentials, region, and an optional custom endpoint (path-style addressing).
public struct S3Config: Sendable {
    public var credentials: S3Credentials
    public var region: String
    /// `AWS_ENDPOINT_URL` (e.g. `http://127.0.0.1:9000`): buckets are then addressed by path (`endpoint/bucket/key`);
    /// without it, `https://bucket.s3.REGION.amazonaws.com/key`.
    public var endpoint: String?
    /// Attempts per request on 5xx, `SlowDown` and transport errors (exponential backoff between them).
    public var attempts: Int
    /// First backoff in seconds (doubled each attempt, with jitter, at most 20 s).
    public var backoff: Double

    public init(credentials: S3Credentials, region: String = "us-east-1", endpoint: String? = nil, attempts: Int = 6,
                backoff: Double = 0.2) {
        self.credentials = credentials
        self.region = region
        self.endpoint = endpoint.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.attempts = max(1, attempts)
        self.backoff = backoff
    }

    /// From `AWS_*` variables and the shared credentials file; `VLMDATA_S3_ATTEMPTS` overrides the attempt count.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Config {
        let region = env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ?? "us-east-1"
        let endpoint = (env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"]).flatMap { $0.isEmpty ? nil : $0 }
        let attempts = env["VLMDATA_S3_ATTEMPTS"].flatMap(Int.init) ?? 6
        return S3Config(credentials: try S3Credentials.resolve(environment: env), region: region, endpoint: endpoint,
                        attempts: attempts)
    }
}

/// A blocking S3 client over `HTTPClient` (libcurl) and `SigV4Signer`: HEAD, range GET into a file, PUT, and
/// multipart upload (aborted on failure, so a failed or killed upload never leaves a half object).
///
/// Not thread-safe (one libcurl handle): give each thread its own client. Errors name the `s3://` URL and carry
/// S3's error code and message; the secret never appears in them.
///
/// ```swift
/// let s3 = try S3Client(config: try S3Config.fromEnvironment())
/// try s3.upload(file: "shards/train-000000.tar", to: try S3Location("s3://bucket/ds/train-000000.tar"))
/// _ = try s3.download(try S3Location("s3://bucket/ds/train-000000.tar"), to: "/cache/.train-000000.tar.part")
/// ```
public final class S3Client {
    public let config: S3Config
    private let http: HTTPClient
    private let signer: SigV4Signer
    private let redactor: SecretRedactor
    /// HTTP requests sent so far (retries included), and GETs among them.
    public private(set) var requests = 0
    public private(set) var gets = 0
    /// Seconds to add to the local clock when signing (tests use it to provoke `RequestTimeTooSkewed`).
    public var clockOffset: Double = 0

    public init(config: S3Config) throws {
        self.config = config
        http = try HTTPClient()
        signer = SigV4Signer(credentials: config.credentials, region: config.region, service: "s3")
        redactor = SecretRedactor(secret: config.credentials.secretKey)
    }

    /// The HTTP(S) URL of `location` (path-style on a custom endpoint), with an optional encoded query.
    public func httpURL(_ location: S3Location, query: String? = nil) -> String {
        let key = SigV4Signer.uriEncode(location.key, keepSlash: true)
        let base: String
        if let endpoint = config.endpoint {
            base = "\(endpoint)/\(location.bucket)/\(key)"
        } else {
            base = "https://\(location.bucket).s3.\(config.region).amazonaws.com/\(key)"
        }
        return query.map { base + "?" + $0 } ?? base
    }

    /// Signs `request` for now (each retry is signed afresh).
    func signed(_ request: HTTPRequest, payloadSHA256: String = SigV4Signer.emptySHA256) throws -> HTTPRequest {
        guard let components = URLComponents(string: request.url) else {
            throw VLMError(.invalidArgument, record: request.url, "not a URL")
        }
        var headers = request.headers
        if let range = request.range { headers.append((name: "Range", value: "bytes=" + range.headerValue)) }
        let signed = signer.sign(method: request.method, url: components, headers: headers, payloadSHA256: payloadSHA256,
                                 date: Date().addingTimeInterval(clockOffset))
        var out = request
        out.headers = signed.headers.filter { $0.name.lowercased() != "host" && $0.name.lowercased() != "range" }
        return out
    }

    // MARK: Requests with retries

    /// True for replies worth another attempt: 5xx, and S3's throttling codes under any status.
    static func isRetryable(status: Int, code: String?) -> Bool {
        if status >= 500 { return true }
        return ["SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"]
            .contains(code ?? "")
    }

    private func sleepBefore(attempt: Int, retryAfter: Double?) {
        let base = min(20, config.backoff * pow(2, Double(attempt)))
        let wait = retryAfter.map { min(20, $0) } ?? base * Double.random(in: 0.5...1.0)
        if wait > 0 { Thread.sleep(forTimeInterval: wait) }
    }

    /// Sends a request (signed per attempt), retrying 5xx / throttling / transport errors. Returns the last
    /// response, successful or not.
    private func send(_ request: HTTPRequest, payloadSHA256: String = SigV4Signer.emptySHA256,
                      location: S3Location) throws -> HTTPResponse {
        var attempt = 0
        while true {
            let response: HTTPResponse
            do {
                requests += 1
                if request.method == "GET" { gets += 1 }
                response = try http.send(try signed(request, payloadSHA256: payloadSHA256))
            } catch let error as VLMError where error.kind == .network && attempt + 1 < config.attempts {
                sleepBefore(attempt: attempt, retryAfter: nil)
                attempt += 1
                continue
            }
            if !response.isSuccess, attempt + 1 < config.attempts,
               Self.isRetryable(status: response.status, code: Self.errorField("Code", in: response.body)) {
                sleepBefore(attempt: attempt, retryAfter: response.retryAfter)
                attempt += 1
                continue
            }
            return response
        }
    }

    /// `<Error><Code>…</Code><Message>…</Message></Error>` fields of an S3 error body.
    static func errorField(_ name: String, in body: [UInt8]) -> String? {
        let text = String(decoding: body, as: UTF8.self)
        guard let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else {
            return nil
        }
        return String(text[open.upperBound..<close.lowerBound])
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    /// The one place an S3 error reply becomes a Swift error: not-found, authentication, or other, each naming the
    /// `s3://` URL with S3's code and message (redacted).
    func failure(_ status: Int, body: [UInt8], location: S3Location, operation: String) -> VLMError {
        let code = Self.errorField("Code", in: body)
        let message = Self.errorField("Message", in: body).map(redactor.redact)
        let detail = [code, message].compactMap { $0 }.joined(separator: ": ")
        let what = detail.isEmpty ? "HTTP \(status)" : "HTTP \(status) \(detail)"
        let url = location.description
        if status == 404 || ["NoSuchKey", "NoSuchBucket", "NoSuchUpload"].contains(code ?? "") {
            let thing = code == "NoSuchBucket" ? "bucket" : "object"
            return VLMError(.notFound, file: url, "\(operation): not found: no such \(thing) (\(what))")
        }
        if status == 403 || status == 401 || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                              "RequestTimeTooSkewed", "ExpiredToken", "InvalidToken"].contains(code ?? "") {
            var hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile)"
            if code == "RequestTimeTooSkewed" { hint = "the local clock differs from the server's by more than 15 minutes; fix the clock" }
            if detail.isEmpty { hint += "; a HEAD reply carries no error code" }
            return VLMError(.network, file: url, "\(operation): S3 refused the credentials (\(what)); \(hint)")
        }
        return VLMError(.network, file: url, "\(operation) failed (\(what))")
    }

    // MARK: Operations

    /// Size and ETag of an object; nil when it does not exist (404). Other errors throw.
    public func head(_ location: S3Location) throws -> (bytes: Int, etag: String)? {
        let response = try send(HTTPRequest(method: "HEAD", url: httpURL(location)), location: location)
        if response.status == 404 { return nil }
        guard response.isSuccess else { throw failure(response.status, body: response.body, location: location, operation: "HEAD") }
        let bytes = response.header("content-length").flatMap { Int($0) } ?? 0
        let etag = (response.header("etag") ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        return (bytes, etag)
    }

    /// Reads the whole object (or `range` of it) into memory.
    public func get(_ location: S3Location, range: HTTPByteRange? = nil) throws -> [UInt8] {
        let response = try send(HTTPRequest(url: httpURL(location), range: range), location: location)
        guard response.isSuccess else { throw failure(response.status, body: response.body, location: location, operation: "GET") }
        return response.body
    }

    /// Downloads the object into `path`, continuing bytes already there with a range GET; retries like every
    /// request. Throws `.notFound` naming the URL for a missing bucket or object.
    public func download(_ location: S3Location, to path: String) throws -> LoaderHTTP.Result {
        var attempt = 0
        let url = httpURL(location)
        while true {
            var transfer: LoaderHTTP.Transfer
            do {
                transfer = try LoaderHTTP.transfer(url, to: path, client: http) { request in
                    self.requests += 1
                    self.gets += 1
                    return try self.signed(request)
                }
            } catch let error as VLMError where error.kind == .network && attempt + 1 < config.attempts {
                sleepBefore(attempt: attempt, retryAfter: nil)
                attempt += 1
                continue
            }
            if transfer.isSuccess { return transfer.result }
            if attempt + 1 < config.attempts,
               Self.isRetryable(status: transfer.result.status, code: Self.errorField("Code", in: transfer.errorBody)) {
                sleepBefore(attempt: attempt, retryAfter: nil)
                attempt += 1
                continue
            }
            throw failure(transfer.result.status, body: transfer.errorBody, location: location, operation: "GET")
        }
    }

    /// One PUT of `bytes` (S3 makes it appear whole or not at all). Returns the ETag.
    @discardableResult
    public func put(_ bytes: [UInt8], to location: S3Location, contentType: String = "application/octet-stream") throws -> String {
        let hash = bytes.withUnsafeBytes(SigV4Signer.payloadHash)
        let response = try send(HTTPRequest(method: "PUT", url: httpURL(location), headers: [("Content-Type", contentType)],
                                            body: bytes, timeout: 0, stallTimeout: 60),
                                payloadSHA256: hash, location: location)
        guard response.isSuccess else { throw failure(response.status, body: response.body, location: location, operation: "PUT") }
        return (response.header("etag") ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    /// Uploads a local file: one PUT up to `partSize` bytes, a multipart upload above (parts of `partSize`,
    /// at least 5 MiB as S3 requires). A failed multipart upload is aborted, so no half object is ever visible.
    /// Returns the ETag.
    @discardableResult
    public func upload(file path: String, to location: S3Location, partSize: Int = 64 << 20) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw VLMError(.notFound, file: path, "cannot open the file to upload")
        }
        defer { try? handle.close() }
        var info = stat()
        guard stat(path, &info) == 0 else { throw VLMError(.notFound, file: path, "cannot stat the file to upload") }
        let size = Int(info.st_size)
        let partSize = max(5 << 20, partSize)
        if size <= partSize {
            let bytes = [UInt8](try handle.readToEnd() ?? Data())
            return try put(bytes, to: location)
        }
        let created = try send(HTTPRequest(method: "POST", url: httpURL(location, query: "uploads"),
                                           headers: [("Content-Type", "application/octet-stream")], body: []),
                               location: location)
        guard created.isSuccess, let uploadID = Self.errorField("UploadId", in: created.body) else {
            throw failure(created.status, body: created.body, location: location, operation: "CreateMultipartUpload")
        }
        do {
            var etags: [String] = []
            var number = 1
            while true {
                let chunk = [UInt8](try handle.read(upToCount: partSize) ?? Data())
                if chunk.isEmpty { break }
                let query = "partNumber=\(number)&uploadId=\(SigV4Signer.uriEncode(uploadID, keepSlash: false))"
                let response = try send(HTTPRequest(method: "PUT", url: httpURL(location, query: query),
                                                    headers: [("Content-Type", "application/octet-stream")], body: chunk,
                                                    timeout: 0, stallTimeout: 60),
                                        payloadSHA256: chunk.withUnsafeBytes(SigV4Signer.payloadHash), location: location)
                guard response.isSuccess, let etag = response.header("etag") else {
                    throw failure(response.status, body: response.body, location: location, operation: "UploadPart \(number)")
                }
                etags.append(etag)
                number += 1
            }
            var xml = "<CompleteMultipartUpload>"
            for (i, etag) in etags.enumerated() { xml += "<Part><PartNumber>\(i + 1)</PartNumber><ETag>\(etag)</ETag></Part>" }
            xml += "</CompleteMultipartUpload>"
            let body = Array(xml.utf8)
            let query = "uploadId=\(SigV4Signer.uriEncode(uploadID, keepSlash: false))"
            let done = try send(HTTPRequest(method: "POST", url: httpURL(location, query: query),
                                            headers: [("Content-Type", "application/xml")], body: body, timeout: 0),
                                payloadSHA256: body.withUnsafeBytes(SigV4Signer.payloadHash), location: location)
            // CompleteMultipartUpload can fail with 200 and an <Error> body.
            guard done.isSuccess, Self.errorField("Code", in: done.body) == nil else {
                throw failure(done.isSuccess ? 500 : done.status, body: done.body, location: location, operation: "CompleteMultipartUpload")
            }
            return (Self.errorField("ETag", in: done.body) ?? "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        } catch {
            try? abort(location, uploadID: uploadID)
            throw error
        }
    }

    /// Aborts one multipart upload (its parts are deleted; no object appears).
    public func abort(_ location: S3Location, uploadID: String) throws {
        let query = "uploadId=\(SigV4Signer.uriEncode(uploadID, keepSlash: false))"
        let response = try send(HTTPRequest(method: "DELETE", url: httpURL(location, query: query)), location: location)
        guard response.isSuccess || response.status == 404 else {
            throw failure(response.status, body: response.body, location: location, operation: "AbortMultipartUpload")
        }
    }

    /// Aborts every unfinished multipart upload of exactly `location`'s key (left by a killed process); returns
    /// how many.
    @discardableResult
    public func abortUnfinishedUploads(_ location: S3Location) throws -> Int {
        let bucket = S3Location(bucket: location.bucket, key: "")
        let query = "prefix=\(SigV4Signer.uriEncode(location.key, keepSlash: false))&uploads"
        let response = try send(HTTPRequest(url: httpURL(bucket, query: query)), location: location)
        guard response.isSuccess else {
            throw failure(response.status, body: response.body, location: location, operation: "ListMultipartUploads")
        }
        let text = String(decoding: response.body, as: UTF8.self)
        var aborted = 0
        for upload in text.components(separatedBy: "<Upload>").dropFirst() {
            let bytes = Array(upload.utf8)
            guard let key = Self.errorField("Key", in: bytes), key == location.key,
                  let id = Self.errorField("UploadId", in: bytes) else { continue }
            try abort(location, uploadID: id)
            aborted += 1
        }
        return aborted
    }

    /// The ETag S3 gives a local file uploaded by `upload(file:partSize:)`: MD5 for one PUT, MD5 of the parts'
    /// MD5s with `-N` for a multipart upload.
    public static func expectedETag(file path: String, partSize: Int = 64 << 20) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw VLMError(.notFound, file: path, "cannot open") }
        defer { try? handle.close() }
        let partSize = max(5 << 20, partSize)
        var digests: [UInt8] = []
        var parts = 0
        var whole = Insecure.MD5()
        while let chunk = try handle.read(upToCount: partSize), !chunk.isEmpty {
            whole.update(data: chunk)
            digests += Array(Insecure.MD5.hash(data: chunk))
            parts += 1
        }
        if parts <= 1 { return SigV4Signer.hex(whole.finalize()) }
        return SigV4Signer.hex(Insecure.MD5.hash(data: digests)) + "-\(parts)"
    }
}
