import Foundation
import Testing
import VLMCore
import VLMIO

/// The bytes `llm_server.py` serves at `/bytes/N`: byte i is (i * 31 + 7) mod 251.
private func pattern(_ count: Int, from start: Int = 0) -> [UInt8] {
    (start..<(start + count)).map { UInt8(($0 * 31 + 7) % 251) }
}

@Suite(.serialized) struct HTTPClientTests {
    let server: TestServer
    init() throws { server = try TestServer() }

    @Test func getReturnsStatusHeadersAndBody() throws {
        let client = try HTTPClient()
        let response = try client.send(HTTPRequest(url: server.baseURL + "/bytes/100000"))
        #expect(response.status == 200)
        #expect(response.body == pattern(100_000))
        #expect(response.header("content-length") == "100000")
        #expect(response.header("CONTENT-TYPE") == "application/octet-stream")
        #expect(response.isSuccess)
    }

    @Test func byteRangesReturnTheSlice() throws {
        let client = try HTTPClient()
        let closed = try client.send(HTTPRequest(url: server.baseURL + "/bytes/1000", range: HTTPByteRange(100, 199)))
        #expect(closed.status == 206)
        #expect(closed.body == pattern(100, from: 100))
        #expect(closed.header("Content-Range") == "bytes 100-199/1000")
        let open = try client.send(HTTPRequest(url: server.baseURL + "/bytes/1000", range: HTTPByteRange(900, nil)))
        #expect(open.status == 206)
        #expect(open.body == pattern(100, from: 900))
        let sized = try client.send(HTTPRequest(url: server.baseURL + "/bytes/1000",
                                                range: HTTPByteRange(offset: 10, length: 5)))
        #expect(sized.body == pattern(5, from: 10))
        let beyond = try client.send(HTTPRequest(url: server.baseURL + "/bytes/1000", range: HTTPByteRange(5000, nil)))
        #expect(beyond.status == 416)
    }

    @Test func methodsHeadersAndBodiesReachTheServer() throws {
        let client = try HTTPClient()
        let payload = Array("{\"hello\": \"wörld\"}".utf8) + [UInt8](repeating: 65, count: 5000)
        for method in ["POST", "PUT", "DELETE"] {
            let response = try client.send(HTTPRequest(
                method: method, url: server.baseURL + "/echo",
                headers: [("Content-Type", "application/json"), ("X-Probe", "42")], body: payload))
            #expect(response.status == 200)
            let echo = try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
            let headers = try #require(echo["headers"] as? [String: String])
            #expect(echo["method"] as? String == method)
            #expect(headers["x-probe"] == "42")
            #expect(headers["expect"] == nil, "curl must not wait for 100-continue")
            let body = try #require(Data(base64Encoded: echo["body"] as? String ?? ""))
            #expect(Array(body) == payload)
        }
        let emptyPost = try client.send(HTTPRequest(method: "POST", url: server.baseURL + "/echo"))
        let echo = try #require(try JSONSerialization.jsonObject(with: Data(emptyPost.body)) as? [String: Any])
        #expect(echo["method"] as? String == "POST")
        #expect(echo["body"] as? String == "")
        let head = try client.send(HTTPRequest(method: "HEAD", url: server.baseURL + "/bytes/64"))
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        #expect(head.header("Content-Length") == "64")
    }

    @Test func retryAfterHeadersAreParsed() throws {
        let client = try HTTPClient()
        let seconds = try client.send(HTTPRequest(url: server.baseURL + "/status/429?retry_after=2"))
        #expect(seconds.status == 429)
        #expect(seconds.retryAfter == 2)
        let millis = try client.send(HTTPRequest(url: server.baseURL + "/status/503?retry_after=2&retry_after_ms=1500"))
        #expect(millis.status == 503)
        #expect(millis.retryAfter == 1.5, "retry-after-ms is the more precise of the two")
        let none = try client.send(HTTPRequest(url: server.baseURL + "/status/500"))
        #expect(none.status == 500)
        #expect(none.retryAfter == nil)
        #expect(none.text == "status 500")
        let date = HTTPResponse(status: 429, headers: [("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")], body: [])
        #expect(date.retryAfter == 0, "a date in the past means no wait")
    }

    @Test func redirectsAreFollowedAndOnlyTheFinalHeadersKept() throws {
        let client = try HTTPClient()
        let response = try client.send(HTTPRequest(url: server.baseURL + "/redirect?to=/bytes/32"))
        #expect(response.status == 200)
        #expect(response.body == pattern(32))
        #expect(response.header("Location") == nil)
    }

    @Test func connectionFailureIsANetworkErrorNamingTheURL() throws {
        let client = try HTTPClient()
        // Port 1 on loopback: nothing listens there.
        let url = "http://user:secret@127.0.0.1:1/v1/chat?sig=SIGNATURE"
        do {
            _ = try client.send(HTTPRequest(url: url, timeout: 5, connectTimeout: 2))
            Issue.record("expected a connection error")
        } catch let error as VLMError {
            #expect(error.kind == .network)
            #expect(error.description.contains("127.0.0.1:1/v1/chat"))
            #expect(!error.description.contains("secret"), "credentials never appear in errors")
            #expect(!error.description.contains("SIGNATURE"), "query strings (presigned URLs) never appear in errors")
        }
    }

    @Test func timeoutsAbortSlowAnswers() throws {
        let client = try HTTPClient()
        let start = Date()
        #expect(throws: VLMError.self) {
            _ = try client.send(HTTPRequest(url: server.baseURL + "/slow?seconds=3", timeout: 0.5))
        }
        #expect(Date().timeIntervalSince(start) < 2.5)
        // The same handle works afterwards.
        #expect(try client.send(HTTPRequest(url: server.baseURL + "/bytes/8")).body == pattern(8))
    }

    @Test func stallTimeoutAbortsATricklingDownload() throws {
        let client = try HTTPClient()
        do {
            _ = try client.send(HTTPRequest(url: server.baseURL + "/drip?bytes=10&delay=3", timeout: 0, stallTimeout: 1))
            Issue.record("expected a stall error")
        } catch let error as VLMError {
            #expect(error.kind == .network)
        }
    }

    @Test func downloadStreamsToAFileAndKeepsErrorBodiesOut() throws {
        let dir = try TestPaths.temporaryDirectory("download")
        defer { try? FileManager.default.removeItem(at: dir) }
        let client = try HTTPClient()
        let path = dir.appendingPathComponent("blob.bin").path
        var hasher = StreamingSHA256()
        let response = try AtomicFile.withWriter(to: path) { writer in
            try client.download(HTTPRequest(url: server.baseURL + "/bytes/3000000", timeout: 0, stallTimeout: 10),
                                to: writer) { hasher.update(Array($0)) }
        }
        #expect(response.status == 200)
        #expect(response.body.isEmpty)
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(written == pattern(3_000_000))
        #expect(hasher.finalize() == Hashing.sha256(written))

        let missingPath = dir.appendingPathComponent("missing.bin").path
        let writer = try FileWriter(path: missingPath)
        let missing = try client.download(HTTPRequest(url: server.baseURL + "/nowhere"), to: writer)
        try writer.close()
        #expect(missing.status == 404)
        #expect(missing.text.contains("no route"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: missingPath)).isEmpty)
    }

    @Test func anErrorThrownByTheSinkAbortsTheTransfer() throws {
        struct Enough: Error {}
        let client = try HTTPClient()
        var seen = 0
        #expect(throws: Enough.self) {
            _ = try client.perform(HTTPRequest(url: server.baseURL + "/bytes/2000000")) { chunk, _ in
                seen += chunk.count
                if seen > 1000 { throw Enough() }
            }
        }
        #expect(seen < 2_000_000)
    }

    @Test func oneClientPerThreadWorksConcurrently() throws {
        let url = server.baseURL
        let failures = LockedCounter()
        let threads = 4
        let group = DispatchGroup()
        for t in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let client = try HTTPClient()
                    for i in 0..<25 {
                        let n = 100 + t * 25 + i
                        let response = try client.send(HTTPRequest(url: url + "/bytes/\(n)"))
                        if response.body != pattern(n) { failures.increment() }
                    }
                } catch {
                    failures.increment()
                }
            }
        }
        group.wait()
        #expect(failures.value == 0)
    }

    @Test func redactionKeepsHostAndPath() {
        #expect(HTTPClient.redacted("https://u:p@bucket.example.com/a/b.tar?X-Amz-Signature=abc")
                == "https://bucket.example.com/a/b.tar?…")
        #expect(HTTPClient.redacted("http://127.0.0.1:8080/v1/chat/completions")
                == "http://127.0.0.1:8080/v1/chat/completions")
    }
}

@Suite struct SecretRedactorTests {
    let key = "sk-proj-AbC123xyz_789"

    @Test func theKeyBearerTokensAndAuthorizationValuesAreMasked() {
        let redactor = SecretRedactor(secret: key)
        #expect(redactor.redact("HTTP 429: limit (request had Authorization: Bearer \(key))")
                == "HTTP 429: limit (request had Authorization: [redacted])")
        #expect(redactor.redact("the sign reads \(key).") == "the sign reads [redacted].")
        #expect(redactor.redact(#"{"headers": {"authorization": "Bearer other-token-1"}}"#)
                == #"{"headers": {"authorization": "[redacted]"}}"#)
        #expect(redactor.redact("sent bearer abc.def-123, then retried") == "sent [redacted], then retried")
        #expect(redactor.redact("Authorization=Basic dXNlcjpwYXNz") == "Authorization=[redacted]")
        #expect(redactor.redact("no secrets here") == "no secrets here")
        let once = redactor.redact("Authorization: Bearer \(key) and Bearer \(key)")
        #expect(redactor.redact(once) == once, "redacting twice changes nothing")
        #expect(!once.contains(key) && !once.contains("sk-"))
        #expect(redactor.appears(in: "x\(key)y") && !redactor.appears(in: "sk-proj-AbC123"))
    }

    @Test func aShortKeyIsMatchedOnlyAsAWholeWord() {
        let redactor = SecretRedactor(secret: "abc")
        #expect(redactor.redact("key abc, not abcd or xabc") == "key [redacted], not abcd or xabc")
        #expect(redactor.appears(in: "key: abc") && !redactor.appears(in: "abcdef"))
        #expect(SecretRedactor(secret: nil).redact("Bearer t0ken") == "[redacted]")
        #expect(!SecretRedactor(secret: "").appears(in: "anything"))
    }
}

final class LockedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.lock(); count += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return count }
}
