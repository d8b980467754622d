import Crypto
import Foundation
import VLMCore

/// AWS Signature Version 4 for one request, with swift-crypto's SHA-256 and HMAC-SHA256 (no AWS SDK).
///
/// The canonical request is `METHOD\nPATH\nQUERY\nHEADERS\n\nSIGNED\nPAYLOAD_HASH`; the path is URI-encoded once
/// per segment (S3's rule: no double encoding, no dot-segment removal), the query sorted by encoded name.
///
/// ```swift
/// let signer = SigV4Signer(credentials: S3Credentials(accessKey: "AKID", secretKey: "..."), region: "us-east-1", service: "s3")
/// let headers = signer.sign(method: "GET", url: URLComponents(string: "https://bucket.s3.amazonaws.com/key")!,
///                           headers: [("Range", "bytes=0-9")], payloadSHA256: SigV4Signer.emptySHA256, date: Date())
/// ```
public struct SigV4Signer: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String

    /// SHA-256 of the empty body.
    public static let emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public init(credentials: S3Credentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// What a signature is made of, for tests and for error messages that must not show the secret.
    public struct Signed: Sendable {
        /// Headers to send: the caller's plus `Host` (if absent), `X-Amz-Date`, `X-Amz-Content-Sha256` (for s3),
        /// `X-Amz-Security-Token` (with a session token) and `Authorization`.
        public var headers: [(name: String, value: String)]
        public var canonicalRequest: String
        public var stringToSign: String
        public var signature: String
        public var authorization: String
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    public static func amzDate(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// Signs a request. `payloadSHA256` is the hex SHA-256 of the body (or `UNSIGNED-PAYLOAD`); `date` is the
    /// signing time (the server rejects a signature more than 15 minutes off its clock).
    public func sign(method: String, url: URLComponents, headers: [(name: String, value: String)],
                     payloadSHA256: String, date: Date) -> Signed {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var all = headers.filter { !["authorization", "x-amz-date"].contains($0.name.lowercased()) }
        if !all.contains(where: { $0.name.lowercased() == "host" }) {
            var host = url.host ?? ""
            if let port = url.port, !(url.scheme == "http" && port == 80), !(url.scheme == "https" && port == 443) {
                host += ":\(port)"
            }
            all.append((name: "Host", value: host))
        }
        all.append((name: "X-Amz-Date", value: amzDate))
        if service == "s3" && !all.contains(where: { $0.name.lowercased() == "x-amz-content-sha256" }) {
            all.append((name: "X-Amz-Content-Sha256", value: payloadSHA256))
        }
        if let token = credentials.sessionToken, !all.contains(where: { $0.name.lowercased() == "x-amz-security-token" }) {
            all.append((name: "X-Amz-Security-Token", value: token))
        }

        // Canonical headers: lower-case names, values trimmed with inner runs of spaces folded, sorted by name;
        // repeated names joined with commas.
        var byName: [String: [String]] = [:]
        for header in all {
            let value = header.value.trimmingCharacters(in: .whitespaces)
                .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            byName[header.name.lowercased(), default: []].append(value)
        }
        let names = byName.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(byName[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")

        let canonicalRequest = [
            method.uppercased(), Self.canonicalPath(url.percentEncodedPath), Self.canonicalQuery(url.percentEncodedQuery),
            canonicalHeaders, signedHeaders, payloadSHA256,
        ].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8)))]
            .joined(separator: "\n")

        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: key))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKey)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"
        all.append((name: "Authorization", value: authorization))
        return Signed(headers: all, canonicalRequest: canonicalRequest, stringToSign: stringToSign,
                      signature: signature, authorization: authorization)
    }

    /// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, everything else `%XX` (upper-case hex).
    public static func uriEncode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(UnicodeScalar(byte))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~".contains(c)) || (keepSlash && c == "/") {
                out.append(c)
            } else {
                out += String(format: "%%%02X", Int(byte))
            }
        }
        return out
    }

    /// The path as sent (already percent-encoded once), normalized to SigV4's encoding of each segment.
    static func canonicalPath(_ encodedPath: String) -> String {
        if encodedPath.isEmpty { return "/" }
        return encodedPath.split(separator: "/", omittingEmptySubsequences: false).map { segment in
            uriEncode(String(segment).removingPercentEncoding ?? String(segment), keepSlash: false)
        }.joined(separator: "/")
    }

    /// Query parameters encoded and sorted by name, then value; `a` alone becomes `a=`.
    static func canonicalQuery(_ encodedQuery: String?) -> String {
        guard let encodedQuery, !encodedQuery.isEmpty else { return "" }
        let pairs = encodedQuery.split(separator: "&").map { item -> (String, String) in
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            return (uriEncode(name, keepSlash: false), uriEncode(value, keepSlash: false))
        }
        return pairs.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", Int($0)) }.joined()
    }

    /// Hex SHA-256 of `bytes` (the `x-amz-content-sha256` of a body).
    public static func payloadHash(_ bytes: UnsafeRawBufferPointer) -> String {
        hex(SHA256.hash(data: bytes))
    }
}

/// AWS credentials: from the standard environment variables, else a profile of the shared credentials file.
public struct S3Credentials: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?

    public init(accessKey: String, secretKey: String, sessionToken: String? = nil) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
    }

    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the `AWS_PROFILE` (or `default`)
    /// section of `AWS_SHARED_CREDENTIALS_FILE` (or `~/.aws/credentials`). Throws naming where it looked.
    public static func resolve(environment env: [String: String]) throws -> S3Credentials {
        if let key = env["AWS_ACCESS_KEY_ID"], !key.isEmpty {
            guard let secret = env["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
                throw VLMError(.invalidArgument, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
            }
            return S3Credentials(accessKey: key, secretKey: secret, sessionToken: env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
        let home = env["HOME"] ?? NSHomeDirectory()
        let path = env["AWS_SHARED_CREDENTIALS_FILE"] ?? home + "/.aws/credentials"
        let profile = env["AWS_PROFILE"] ?? "default"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write a [\(profile)] profile here")
        }
        let sections = parseINI(String(decoding: data, as: UTF8.self))
        guard let section = sections[profile] else {
            throw VLMError(.notFound, file: path, record: profile, "no such profile in the credentials file")
        }
        guard let key = section["aws_access_key_id"], let secret = section["aws_secret_access_key"] else {
            throw VLMError(.badInput, file: path, record: profile, "the profile lacks aws_access_key_id or aws_secret_access_key")
        }
        return S3Credentials(accessKey: key, secretKey: secret, sessionToken: section["aws_session_token"])
    }

    /// `[section]` / `name = value` lines; `#` and `;` comments.
    static func parseINI(_ text: String) -> [String: [String: String]] {
        var out: [String: [String: String]] = [:]
        var current: String?
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                var name = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)).trimmingCharacters(in: .whitespaces) }
                current = name
                out[name, default: [:]] = out[name] ?? [:]
                continue
            }
            guard let current, let eq = line.firstIndex(of: "=") else { continue }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            out[current]?[name] = value
        }
        return out
    }
}
