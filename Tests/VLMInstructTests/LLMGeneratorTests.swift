import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMInstruct

/// The LLM generator against `Tests/support/llm_server.py`: one test per fault, the cache, budgets, the key.
@Suite(.serialized) struct LLMGeneratorTests {
    let coco = CocoMini.shared

    struct Setup {
        let server: TestServer
        let dir: URL
        let catalog: Catalog
    }

    func setup(_ name: String, serverArguments: [String] = ["--latency", "0.02"]) throws -> Setup {
        let dir = try TestPaths.temporaryDirectory(name)
        return Setup(server: try TestServer(serverArguments), dir: dir, catalog: try coco.catalog(in: dir))
    }

    func options(_ s: Setup, images: Int = 4, concurrency: Int = 1, kinds: [LLMKind] = LLMKind.allCases) -> LLMOptions {
        LLMOptions(baseURL: s.server.baseURL + "/v1", model: "test-model", kinds: kinds, seed: 1,
                   concurrency: concurrency, timeout: 5, maxRetries: 4, backoffBase: 0.01, backoffCap: 2, limit: images)
    }

    func fault(_ s: Setup, _ rule: [String: Any]) throws {
        let body = try JSONSerialization.data(withJSONObject: rule)
        let response = try HTTPClient().send(HTTPRequest(method: "POST", url: s.server.baseURL + "/admin/faults", body: Array(body)))
        #expect(response.status == 200)
    }

    func stats(_ s: Setup) throws -> [String: Any] {
        let response = try HTTPClient().send(HTTPRequest(url: s.server.baseURL + "/admin/stats"))
        return try JSONSerialization.jsonObject(with: Data(response.body)) as! [String: Any]
    }

    func calls(_ s: Setup) throws -> [Row] {
        try s.catalog.read { db in try Row.fetchAll(db, sql: "SELECT * FROM llm_calls ORDER BY request_hash") }
    }

    @Test func allRepliesBecomeInstructionsAndARerunSendsNothing() throws {
        let s = try setup("llm-happy")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        let (counts, stop) = try LLMGenerator(options: options(s, images: 5, concurrency: 4), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(stop == nil)
        #expect(counts.planned == 15 && counts.ok == 15 && counts.requestsSent == 15 && counts.instructions == 15)
        let rows = try storedInstructions(s.catalog, generator: "llm")
        #expect(rows.count == 15)
        for row in rows {
            try Conversation(id: row.key, image: "x.jpg", conversations: row.turns).validate()
            #expect(row.turns[0].value.hasPrefix("<image>\n"))
            switch row.kind {
            case "conversation": #expect(row.turns.count == 6, "three pairs, as the few-shot examples")
            case "complex": #expect(row.turns.count == 2)
            default:
                #expect(row.turns.count == 2)
                #expect(Phrasings.detail.contains(String(row.turns[0].value.dropFirst(8))))
            }
        }
        // The reply is built from the prompt: the image's first caption comes back.
        let first = rows.first { $0.kind == "conversation" }!
        let image = coco.images.first { CocoMini.key($0) == first.imageKey }!
        let caption = coco.captions.filter { $0.imageID == image.id }.sorted { $0.id < $1.id }[0].text
        #expect(first.turns[1].value.hasPrefix(English.clean(caption).trimmingCharacters(in: CharacterSet(charactersIn: "."))))

        let (again, _) = try LLMGenerator(options: options(s, images: 5, concurrency: 4), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(again.requestsSent == 0 && again.cached == 15)
        let seen = try stats(s)
        #expect(seen["total"] as? Int == 15)
        #expect((seen["by_prompt"] as! [String: Int]).values.allSatisfy { $0 == 1 })
        #expect(try calls(s).allSatisfy { ($0["request"] as String).contains("\"model\":\"test-model\"") })
    }

    @Test func jsonModeRepliesAreParsed() throws {
        let s = try setup("llm-json")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 2)
        o.jsonMode = true
        let (counts, _) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(counts.ok == 6 && counts.instructions == 6)
        let request = try calls(s)[0]["request"] as String
        #expect(request.contains("\"response_format\":{\"type\":\"json_object\"}"))
    }

    @Test func rateLimitsAreRetriedHonouringRetryAfter() throws {
        let s = try setup("llm-429")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "429", "count": 2, "retry_after": 1, "retry_after_ms": 300])
        let start = Date()
        let (counts, stop) = try LLMGenerator(options: options(s, images: 1, kinds: [.conversation]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        let elapsed = Date().timeIntervalSince(start)
        #expect(stop == nil)
        #expect(counts.ok == 1 && counts.requestsSent == 3 && counts.retries == 2)
        #expect(elapsed >= 0.6, "two waits of retry-after-ms 300 (not the 0.01 s backoff)")
        #expect(elapsed < 2.0, "retry-after-ms wins over Retry-After: 1")
        #expect(try calls(s)[0]["attempts"] as Int == 3)
    }

    @Test(arguments: ["500", "stall", "malformed", "empty_choice", "disconnect"])
    func transientFaultsAreRetried(kind: String) throws {
        let s = try setup("llm-\(kind)")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": kind, "count": 1, "stall": 3])
        var o = options(s, images: 1, kinds: [.complex])
        o.timeout = 1
        let (counts, stop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(stop == nil)
        #expect(counts.ok == 1 && counts.failed == 0 && counts.requestsSent == 2, "\(kind): \(counts)")
        #expect(try storedInstructions(s.catalog, generator: "llm").count == 1)
    }

    @Test func insufficientQuotaIsNeverRetriedAndStopsTheRun() throws {
        let s = try setup("llm-quota")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "insufficient_quota", "count": 1])
        let (counts, stop) = try LLMGenerator(options: options(s, images: 3), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(counts.requestsSent == 1 && counts.failed == 1 && counts.ok == 0)
        guard case .fatal(let message)? = stop else { Issue.record("expected a fatal stop, got \(String(describing: stop))"); return }
        #expect(message.contains("insufficient_quota"))
        #expect(try stats(s)["total"] as? Int == 1)
        let row = try calls(s)[0]
        #expect(row["status"] as String == "failed" && row["http_status"] as Int == 429)
    }

    @Test func badRequestsFailWithoutRetryAndTheRunGoesOn() throws {
        let s = try setup("llm-400")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "400", "count": 1])
        let (counts, stop) = try LLMGenerator(options: options(s, images: 2, kinds: [.detail]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(stop == nil)
        #expect(counts.requestsSent == 2 && counts.failed == 1 && counts.ok == 1)
        // A rerun retries the failed request only.
        let (again, _) = try LLMGenerator(options: options(s, images: 2, kinds: [.detail]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(again.requestsSent == 1 && again.ok == 1 && again.cached == 1)
    }

    @Test func theKeyIsSentButNeverStored() throws {
        let key = "sk-test-SECRET-0123456789"
        let s = try setup("llm-key", serverArguments: ["--require-key", key])
        defer { try? FileManager.default.removeItem(at: s.dir) }
        // Wrong key: 401 stops the run at once, without retries.
        let (bad, stop) = try LLMGenerator(options: options(s, images: 2), apiKey: "sk-wrong-key-999")
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(bad.requestsSent == 1 && bad.failed == 1)
        guard case .fatal(let message)? = stop else { Issue.record("401 must stop the run"); return }
        #expect(message.contains("401") && !message.contains("sk-wrong-key-999"))
        let (good, _) = try LLMGenerator(options: options(s, images: 2), apiKey: key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(good.ok == 6)
        #expect(try stats(s)["auth_seen"] as? Int == 7)
        let dump = try s.catalog.read { db in
            try String.fetchAll(db, sql: "SELECT COALESCE(request, '') || COALESCE(response, '') || COALESCE(reason, '') FROM llm_calls")
                + String.fetchAll(db, sql: "SELECT params || COALESCE(error, '') FROM runs")
        }.joined()
        #expect(!dump.contains(key) && !dump.contains("sk-wrong-key-999"))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: s.catalog.workspace.catalogPath))
        #expect(bytes.range(of: Data(key.utf8)) == nil)
    }

    @Test func unusableRepliesAreStoredAsRejectedAndNotResent() throws {
        let s = try setup("llm-reject")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "refusal", "count": 1])
        try fault(s, ["kind": "truncated", "count": 1])
        let (counts, _) = try LLMGenerator(options: options(s, images: 2, kinds: [.conversation, .complex]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(counts.rejected == 2 && counts.ok == 2 && counts.instructions == 2)
        let reasons = try calls(s).compactMap { $0["reason"] as String? }.sorted()
        #expect(reasons.count == 2)
        #expect(reasons.contains { $0.contains("neither \"Question:\"") || $0.contains("sorry") }, "the refusal")
        #expect(reasons.contains { $0.contains("truncated") })
        let (again, _) = try LLMGenerator(options: options(s, images: 2, kinds: [.conversation, .complex]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(again.requestsSent == 0 && again.cached == 4)
    }

    @Test func budgetsStopCleanlyAndARerunFinishes() throws {
        let s = try setup("llm-budget")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 4, concurrency: 2)
        o.maxRequests = 5
        let (first, stop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(first.requestsSent == 5 && first.ok == 5 && first.skipped == 7)
        guard case .budget? = stop else { Issue.record("expected a budget stop"); return }
        o.maxRequests = nil
        // Room for one request at its worst and half of another: a few go (each uses far less than its worst).
        let generator = LLMGenerator(options: o, apiKey: Self.key)
        let worst = try ImageFactsReader.read(s.catalog, limit: 4).flatMap { image in
            LLMKind.allCases.map { generator.request(for: image, kind: $0).worstCaseTokens }
        }.max()!
        o.maxTokens = worst * 3 / 2
        let (tokens, tokenStop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(tokens.cached == 5 && tokens.ok >= 1 && tokens.ok < 7, "\(tokens)")
        #expect(tokens.promptTokens + tokens.completionTokens <= o.maxTokens!)
        guard case .budget? = tokenStop else { Issue.record("expected a token budget stop"); return }
        o.maxTokens = nil
        let (rest, restStop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(restStop == nil)
        #expect(rest.cached + rest.ok == 12)
        #expect((try stats(s)["by_prompt"] as! [String: Int]).values.allSatisfy { $0 == 1 })
        #expect(try storedInstructions(s.catalog, generator: "llm").count == 12)
    }

    @Test func aTokenBudgetBelowOneRequestStopsBeforeSending() throws {
        let s = try setup("llm-budget-small")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 2)
        o.maxTokens = 1000
        do {
            _ = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
            Issue.record("a budget below the smallest request must not start")
        } catch let error as VLMError {
            #expect(error.kind == .invalidArgument)
            #expect(error.message.contains("--max-tokens 1000") && error.message.contains("cannot cover any request"))
        }
        #expect(try stats(s)["total"] as? Int == 0)
    }

    @Test func noAuthSendsNoAuthorizationHeader() throws {
        let s = try setup("llm-no-auth")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 1)
        o.noAuth = true
        let (counts, stop) = try LLMGenerator(options: o, apiKey: nil).run(catalog: s.catalog, progress: SilentProgress())
        #expect(stop == nil && counts.ok == 3)
        // A key that happens to be set is not sent either.
        o.kinds = [.detail]
        o.model = "another-model"
        let (again, _) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(again.ok == 1)
        #expect(try stats(s)["auth_seen"] as? Int == 0)
    }

    @Test func aDeadEndpointStopsAfterTheFirstFailuresWithTheirCauses() throws {
        let s = try setup("llm-dead")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "status:503", "count": 100000])
        var o = options(s, images: 20, concurrency: 2)
        o.maxRetries = 0
        let (counts, stop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        guard case .fatal(let message)? = stop else { Issue.record("expected a fatal stop, got \(String(describing: stop))"); return }
        #expect(counts.ok == 0 && counts.failed >= 8 && counts.failed <= 10, "\(counts)")
        #expect(counts.failedBy == ["http_503": counts.failed])
        #expect(message.contains("requests failed (HTTP 503)"), "\(message)")
        #expect(counts.skipped == 60 - counts.failed)
    }

    @Test func theRateLimiterHoldsRequestsPerMinute() throws {
        let limiter = RateLimiter(requestsPerMinute: 600, tokensPerMinute: nil)
        let start = Date()
        for _ in 0..<15 { #expect(limiter.acquire(tokens: 1, cancelled: { false })) }
        // 10 per second, one second's worth (10) in the bucket at the start: then 5 waits of 0.1 s.
        #expect(Date().timeIntervalSince(start) >= 0.45)
        #expect(!limiter.acquire(tokens: 1, cancelled: { true }))
    }

    @Test func retryPolicyFollowsTheOpenAIRules() {
        func response(_ status: Int, _ body: String = "{}", _ headers: [(name: String, value: String)] = []) -> HTTPResponse {
            HTTPResponse(status: status, headers: headers, body: Array(body.utf8))
        }
        for status in [408, 409, 429, 500, 502, 503] {
            guard case .retry = ChatPolicy.classify(response(status)) else { Issue.record("\(status) must be retried"); continue }
        }
        for status in [400, 422] {
            #expect(ChatPolicy.classify(response(status)) == .fail(reason: "HTTP \(status)", fatal: false))
        }
        for status in [401, 403, 404] {
            guard case .fail(_, true) = ChatPolicy.classify(response(status)) else { Issue.record("\(status) is fatal"); continue }
        }
        let quota = response(429, #"{"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "no"}}"#)
        guard case .fail(_, true) = ChatPolicy.classify(quota) else { Issue.record("insufficient_quota is fatal"); return }
        #expect(ChatPolicy.classify(response(429, "{}", [("retry-after-ms", "250")])) == .retry(reason: "HTTP 429", after: 0.25))
        for attempt in 1...8 {
            let d = ChatPolicy.delay(attempt: attempt, retryAfter: nil, base: 0.5, cap: 8)
            let full = min(8, 0.5 * pow(2, Double(attempt - 1)))
            #expect(d >= full * 0.5 && d <= full)
        }
        #expect(ChatPolicy.delay(attempt: 1, retryAfter: 3, base: 0.5, cap: 60) >= 3)
    }

    @Test func replyParsingIsAllOrNothing() throws {
        let good = "Question:\nWhat is it?\n===\nAnswer:\nA dog.\n===\nQuestion:\nWhere?\n===\nAnswer:\nOn grass."
        #expect(try LLMReply.parse(good, kind: .conversation, json: false).count == 2)
        #expect(throws: LLMReply.Rejection.self) { try LLMReply.parse("Question:\nWhat?\n===\nAnswer:\nA.\n===\nQuestion:\nDangling?", kind: .conversation, json: false) }
        #expect(throws: LLMReply.Rejection.self) { try LLMReply.parse(good, kind: .complex, json: false) }
        #expect(throws: LLMReply.Rejection.self) { try LLMReply.parse("Question:\nWhere is it?\n===\nAnswer:\nAt [0.12, 0.40, 0.5, 0.9].", kind: .conversation, json: false) }
        #expect(throws: LLMReply.Rejection.self) { try LLMReply.parse("{\"qa\": [{\"question\": 1}]}", kind: .conversation, json: true) }
        #expect(try LLMReply.parse("{\"description\": \"A long enough description of a scene.\"}", kind: .detail, json: true).count == 1)
    }

    @Test func aReplyMustHaveTheShapeOfItsKind() throws {
        func code(_ text: String, _ kind: LLMKind, json: Bool = false) -> LLMReply.Rejection.Code? {
            do { _ = try LLMReply.parse(text, kind: kind, json: json); return nil } catch let rejection as LLMReply.Rejection {
                return rejection.code
            } catch { return nil }
        }
        let pair = "Question:\nWhat is on the table?\n===\nAnswer:\nA bowl of fruit and two cups."
        let paragraph = "A kitchen table holds a bowl of fruit and two cups next to a window."
        #expect(code(paragraph, .detail) == nil)
        #expect(code(pair, .detail) == .wrongKind)
        #expect(code("A table with fruit.\nQuestion: what else?\nAnswer: cups.", .detail) == .wrongKind)
        #expect(code("{\"description\": \"Question:\\nWhat?\\n===\\nAnswer:\\nA bowl of fruit.\"}", .detail, json: true) == .wrongKind)
        #expect(code("{\"qa\": []}", .detail, json: true) == .wrongKind)
        #expect(code(pair, .complex) == nil)
        #expect(code(paragraph, .complex) == .wrongKind)
        #expect(code(pair + "\n===\n" + pair, .complex) == .wrongKind)
        #expect(code(pair, .conversation) == nil)
        #expect(code(paragraph, .conversation) == .wrongKind)
        #expect(code("Question:\nWhat is it?\n===\nAnswer:\nA bowl.\nQuestion:\nAnd?\nAnswer:\nCups.", .conversation) == .format)
        #expect(code("I'm sorry, but I can't help with that.", .conversation) == .refusal)
        #expect(code("   ", .detail) == .empty)
    }
}
