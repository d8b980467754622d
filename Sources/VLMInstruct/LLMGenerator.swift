import Foundation
import GRDB
import VLMCatalog
import VLMCore
import VLMIO

/// Parameters of `--generator llm`. The content-relevant ones form the request bodies (and so the cache keys);
/// budgets, concurrency and limits only decide how much is sent now.
public struct LLMOptions: Codable, Sendable {
    /// e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`; `/chat/completions` is appended.
    public var baseURL: String
    public var model: String
    public var kinds: [LLMKind]
    public var seed: UInt64
    public var concurrency: Int
    public var requestsPerMinute: Int?
    public var tokensPerMinute: Int?
    /// HTTP requests this run may send (retries included).
    public var maxRequests: Int?
    /// Tokens (prompt + completion, as the server reports them) this run may use.
    public var maxTokens: Int?
    /// `max_tokens` of each request.
    public var replyMaxTokens: Int
    public var temperature: Double
    /// Per-request timeout, seconds.
    public var timeout: Double
    public var jsonMode: Bool
    public var maxRetries: Int
    public var backoffBase: Double
    public var backoffCap: Double
    /// Only the first N images (key order).
    public var limit: Int?
    /// Only the images whose key falls in this part (`PartSpec.owns`); `limit` counts within it.
    public var part: PartSpec?

    public init(baseURL: String, model: String, kinds: [LLMKind] = LLMKind.allCases, seed: UInt64 = 0,
                concurrency: Int = 4, requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil,
                maxRequests: Int? = nil, maxTokens: Int? = nil, replyMaxTokens: Int = 1024, temperature: Double = 0,
                timeout: Double = 120, jsonMode: Bool = false, maxRetries: Int = 5, backoffBase: Double = 0.5,
                backoffCap: Double = 60, limit: Int? = nil) {
        self.baseURL = baseURL
        self.model = model
        self.kinds = kinds
        self.seed = seed
        self.concurrency = concurrency
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maxRequests = maxRequests
        self.maxTokens = maxTokens
        self.replyMaxTokens = replyMaxTokens
        self.temperature = temperature
        self.timeout = timeout
        self.jsonMode = jsonMode
        self.maxRetries = maxRetries
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.limit = limit
    }

    public var endpoint: String {
        (baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL) + "/chat/completions"
    }
}

/// What a run of the LLM generator did.
public struct LLMRunCounts: Sendable, Codable, Equatable {
    /// Requests to do (images × kinds).
    public var planned = 0
    /// Answered from the `llm_calls` cache, nothing sent.
    public var cached = 0
    /// HTTP requests sent, retries included.
    public var requestsSent = 0
    public var retries = 0
    public var ok = 0
    public var rejected = 0
    public var failed = 0
    /// Not attempted because a budget ran out or the run was stopped.
    public var skipped = 0
    public var instructions = 0
    public var promptTokens = 0
    public var completionTokens = 0

    public var dictionary: [String: Int] {
        ["planned": planned, "cached": cached, "requests_sent": requestsSent, "retries": retries, "ok": ok,
         "rejected": rejected, "failed": failed, "skipped": skipped, "instructions": instructions,
         "prompt_tokens": promptTokens, "completion_tokens": completionTokens]
    }
}

/// LLaVA-Instruct's generator: one chat request per (image, kind) to an OpenAI-compatible endpoint, replies parsed
/// into conversations. Every request is cached by the sha256 of its canonical body in `llm_calls`, written in the
/// same transaction as its instruction, so a rerun (also after a kill) sends only what has no reply yet.
///
/// ```swift
/// let generator = LLMGenerator(options: LLMOptions(baseURL: "http://127.0.0.1:8000/v1", model: "gpt-4o-mini"),
///                              apiKey: ProcessInfo.processInfo.environment["OPENAI_API_KEY"])
/// let (counts, stop) = try generator.run(catalog: catalog, progress: SilentProgress())
/// ```
public struct LLMGenerator: Sendable {
    public let options: LLMOptions
    private let apiKey: String?

    public init(options: LLMOptions, apiKey: String?) {
        self.options = options
        self.apiKey = apiKey.flatMap { $0.isEmpty ? nil : $0 }
    }

    struct WorkItem: Sendable {
        var image: ImageFacts
        var kind: LLMKind
        var request: ChatRequest
        var hash: String
    }

    /// The request for one image and kind (public so tests and tools can compute cache keys).
    public func request(for image: ImageFacts, kind: LLMKind) -> ChatRequest {
        ChatRequest(model: options.model, messages: LLMPrompts.messages(kind, image: image, json: options.jsonMode),
                    maxTokens: options.replyMaxTokens, temperature: options.temperature, json: options.jsonMode)
    }

    /// Runs every pending request. Returns the counts and, when the run stopped early, why (a budget, or a fatal
    /// error such as a bad key; fatal ones are also thrown by the stage).
    public func run(catalog: Catalog, progress: any ProgressSink) throws -> (LLMRunCounts, LLMStop?) {
        let images = try ImageFactsReader.read(catalog, limit: options.limit, part: options.part).filter { !$0.captions.isEmpty }
        var items: [WorkItem] = []
        for image in images {
            for kind in LLMKind.allCases where options.kinds.contains(kind) {
                let request = request(for: image, kind: kind)
                items.append(WorkItem(image: image, kind: kind, request: request, hash: request.hash))
            }
        }
        let state = RunState(total: items.count)
        // Cached replies: ok or rejected are final; failed ones are tried again.
        let done: Set<String> = try catalog.read { db in
            Set(try String.fetchAll(db, sql: "SELECT request_hash FROM llm_calls WHERE status IN ('ok', 'rejected')"))
        }
        var pending: [WorkItem] = []
        for item in items {
            if done.contains(item.hash) {
                state.counts.cached += 1
            } else {
                pending.append(item)
            }
        }
        state.counts.planned = items.count
        // Instructions of cached ok replies that are missing (deleted by hand, say) are rebuilt without a request.
        state.counts.instructions += try rebuildMissing(items.filter { done.contains($0.hash) }, catalog: catalog)

        progress.start("LLM requests", total: pending.count)
        let limiter = RateLimiter(requestsPerMinute: options.requestsPerMinute, tokensPerMinute: options.tokensPerMinute)
        let workers = max(1, min(options.concurrency, pending.count))
        let group = DispatchGroup()
        let queue = WorkQueue(pending)
        for _ in 0..<workers {
            group.enter()
            let generator = self
            Thread.detachNewThread {
                defer { group.leave() }
                generator.worker(queue: queue, state: state, limiter: limiter, catalog: catalog, progress: progress)
            }
        }
        group.wait()
        state.lock.lock()
        defer { state.lock.unlock() }
        state.counts.skipped += queue.remaining
        progress.finish("\(state.counts.ok) ok, \(state.counts.rejected) rejected, \(state.counts.failed) failed, " +
                        "\(state.counts.cached) cached, \(state.counts.requestsSent) requests")
        return (state.counts, state.stop)
    }

    // MARK: - Workers

    final class WorkQueue: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [WorkItem]
        private var next = 0
        init(_ items: [WorkItem]) { self.items = items }
        func take() -> WorkItem? {
            lock.lock()
            defer { lock.unlock() }
            guard next < items.count else { return nil }
            next += 1
            return items[next - 1]
        }
        /// Puts nothing back; `remaining` counts what was never taken.
        var remaining: Int { lock.lock(); defer { lock.unlock() }; return items.count - next }
    }

    final class RunState: @unchecked Sendable {
        let lock = NSLock()
        var counts = LLMRunCounts()
        var stop: LLMStop?
        init(total: Int) {}

        var stopped: Bool { lock.lock(); defer { lock.unlock() }; return stop != nil }

        func update(_ body: (RunState) -> Void) {
            lock.lock()
            body(self)
            lock.unlock()
        }

        func halt(_ reason: LLMStop) {
            lock.lock()
            if stop == nil { stop = reason }
            lock.unlock()
        }
    }

    private func worker(queue: WorkQueue, state: RunState, limiter: RateLimiter, catalog: Catalog,
                        progress: any ProgressSink) {
        let client: HTTPClient
        do { client = try HTTPClient() } catch {
            state.halt(.fatal("cannot create an HTTP client: \(error)"))
            return
        }
        while !state.stopped, let item = queue.take() {
            let outcome = call(item, client: client, state: state, limiter: limiter)
            do {
                try store(item, outcome: outcome, catalog: catalog, state: state)
            } catch {
                state.halt(.fatal("cannot write to the catalog: \(error)"))
            }
            progress.advance(by: 1)
        }
    }

    enum Outcome {
        case reply(ChatReply, raw: String, status: Int, attempts: Int)
        case failed(reason: String, status: Int?, attempts: Int)
        /// Not sent (a budget ran out or the run stopped before this request): nothing is stored.
        case notSent
    }

    private func call(_ item: WorkItem, client: HTTPClient, state: RunState, limiter: RateLimiter) -> Outcome {
        var headers: [(name: String, value: String)] = [("Content-Type", "application/json"), ("Accept", "application/json")]
        if let apiKey { headers.append(("Authorization", "Bearer \(apiKey)")) }
        let body = item.request.canonicalBody
        var attempts = 0
        var lastReason = "not sent"
        var lastStatus: Int?
        while true {
            guard limiter.acquire(tokens: item.request.estimatedTokens, cancelled: { state.stopped }) else {
                return attempts == 0 ? .notSent : .failed(reason: "\(lastReason); run stopped", status: lastStatus, attempts: attempts)
            }
            // Budgets are checked before every attempt, retries included; checking and counting the request is one
            // step, so concurrent workers never overshoot --max-requests.
            var refused: LLMStop?
            state.update { s in
                if let max = options.maxRequests, s.counts.requestsSent >= max {
                    refused = .budget("request budget of \(max) reached")
                } else if let max = options.maxTokens, s.counts.promptTokens + s.counts.completionTokens >= max {
                    refused = .budget("token budget of \(max) reached")
                } else {
                    s.counts.requestsSent += 1
                    if attempts > 0 { s.counts.retries += 1 }
                }
            }
            if let refused {
                state.halt(refused)
                return attempts == 0 ? .notSent : .failed(reason: "\(lastReason); stopped: \(refused.message)", status: lastStatus, attempts: attempts)
            }
            attempts += 1
            let attempt: ChatAttempt
            var status: Int?
            var raw = ""
            do {
                let response = try client.send(HTTPRequest(method: "POST", url: options.endpoint, headers: headers,
                                                           body: body, timeout: options.timeout))
                status = response.status
                raw = redact(response.text)
                attempt = ChatPolicy.classify(response)
            } catch let error as VLMError {
                attempt = .retry(reason: redact(error.description), after: nil)
            } catch {
                attempt = .retry(reason: redact("\(error)"), after: nil)
            }
            switch attempt {
            case .reply(let reply):
                return .reply(reply, raw: raw, status: status ?? 200, attempts: attempts)
            case .fail(let reason, let fatal):
                if fatal { state.halt(.fatal("\(options.endpoint): \(redact(reason))")) }
                return .failed(reason: redact(reason), status: status, attempts: attempts)
            case .retry(let reason, let after):
                lastReason = reason
                lastStatus = status
                if attempts > options.maxRetries {
                    return .failed(reason: "\(reason) (gave up after \(attempts) attempts)", status: status, attempts: attempts)
                }
                let wait = ChatPolicy.delay(attempt: attempts, retryAfter: after, base: options.backoffBase,
                                            cap: options.backoffCap)
                // Sleep in slices so a stop (budget, fatal error) is seen promptly.
                let until = Date().addingTimeInterval(wait)
                while Date() < until && !state.stopped {
                    Thread.sleep(forTimeInterval: min(0.05, max(0, until.timeIntervalSinceNow)))
                }
            }
        }
    }

    /// The API key never leaves this process: any echo of it in a reply or error is masked.
    private func redact(_ text: String) -> String {
        guard let apiKey, apiKey.count >= 4 else { return text }
        return text.replacingOccurrences(of: apiKey, with: "***")
    }

    private func store(_ item: WorkItem, outcome: Outcome, catalog: Catalog, state: RunState) throws {
        let requestText = String(decoding: item.request.canonicalBody, as: UTF8.self)
        let now = Catalog.now()
        switch outcome {
        case .notSent:
            state.update { $0.counts.skipped += 1 }
        case .failed(let reason, let status, let attempts):
            try catalog.write { db in
                try upsertCall(db, item: item, request: requestText, status: "failed", response: nil, reason: reason,
                               http: status, attempts: attempts, usage: (nil, nil), now: now)
            }
            state.update { $0.counts.failed += 1 }
        case .reply(let reply, let raw, let status, let attempts):
            var rejection: String?
            var instruction: GeneratedInstruction?
            if reply.finishReason == "length" {
                rejection = "reply truncated (finish_reason \"length\")"
            } else {
                do {
                    instruction = try makeInstruction(item, content: reply.content)
                } catch let error as LLMReply.Rejection {
                    rejection = error.reason
                }
            }
            var added = 0
            try catalog.write { db in
                try upsertCall(db, item: item, request: requestText, status: rejection == nil ? "ok" : "rejected",
                               response: raw, reason: rejection, http: status, attempts: attempts,
                               usage: (reply.promptTokens, reply.completionTokens), now: now)
                if let instruction {
                    added = try InstructionStore.insert([instruction], paramsHash: item.hash, now: now, db: db)
                }
            }
            state.update { s in
                if rejection == nil { s.counts.ok += 1 } else { s.counts.rejected += 1 }
                s.counts.instructions += added
                s.counts.promptTokens += reply.promptTokens ?? 0
                s.counts.completionTokens += reply.completionTokens ?? 0
            }
        }
    }

    private func upsertCall(_ db: Database, item: WorkItem, request: String, status: String, response: String?,
                            reason: String?, http: Int?, attempts: Int, usage: (Int?, Int?), now: String) throws {
        try db.execute(sql: """
            INSERT INTO llm_calls (request_hash, image_id, kind, model, request, status, response, reason, http_status,
                                   attempts, prompt_tokens, completion_tokens, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (request_hash) DO UPDATE SET
                status = excluded.status, response = excluded.response, reason = excluded.reason,
                http_status = excluded.http_status, attempts = llm_calls.attempts + excluded.attempts,
                prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
                created_at = excluded.created_at
            """, arguments: [item.hash, item.image.id, item.kind.rawValue, options.model, request, status, response,
                             reason, http, attempts, usage.0, usage.1, now])
    }

    /// The instruction a valid reply becomes; throws `LLMReply.Rejection` for an unusable one.
    func makeInstruction(_ item: WorkItem, content: String) throws -> GeneratedInstruction {
        let pairs = try LLMReply.parse(content, kind: item.kind, json: options.jsonMode)
        var rng = InstructRandom(seed: options.seed, key: item.image.key, kind: "llm-\(item.kind.rawValue)")
        var turns: [Turn] = []
        for (index, pair) in pairs.enumerated() {
            let question = item.kind == .detail ? rng.pick(Phrasings.detail) : pair.question
            turns.append(Turn(from: .human, value: index == 0 ? "\(Conversation.imagePlaceholder)\n\(question)" : question))
            turns.append(Turn(from: .gpt, value: pair.answer))
        }
        let conversation = Conversation(id: item.image.key, image: item.image.fileName, conversations: turns)
        do { try conversation.validate() } catch let error as VLMError {
            throw LLMReply.Rejection(reason: error.message)
        }
        return GeneratedInstruction(
            key: "\(item.image.key)-llm-\(item.kind.rawValue)-0", imageID: item.image.id, sourceID: item.image.sourceID,
            generator: "llm", kind: item.kind.rawValue, groupID: nil, turns: turns,
            meta: ["type": .string(item.kind.rawValue), "request_hash": .string(item.hash),
                   "model": .string(options.model), "pairs": .int(pairs.count)])
    }

    private func rebuildMissing(_ cached: [WorkItem], catalog: Catalog) throws -> Int {
        guard !cached.isEmpty else { return 0 }
        let present: Set<String> = try catalog.read { db in
            Set(try String.fetchAll(db, sql: "SELECT key FROM instructions WHERE generator = 'llm'"))
        }
        let missing = cached.filter { !present.contains("\($0.image.key)-llm-\($0.kind.rawValue)-0") }
        guard !missing.isEmpty else { return 0 }
        let replies: [String: String] = try catalog.read { db in
            var map: [String: String] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT request_hash, response FROM llm_calls WHERE status = 'ok'") {
                map[row[0]] = row[1]
            }
            return map
        }
        var rows: [GeneratedInstruction] = []
        for item in missing {
            guard let raw = replies[item.hash],
                  case .reply(let reply) = ChatPolicy.classify(HTTPResponse(status: 200, headers: [], body: Array(raw.utf8))),
                  let instruction = try? makeInstruction(item, content: reply.content) else { continue }
            rows.append(instruction)
        }
        return try InstructionStore.insert(rows, paramsHash: nil, into: catalog)
    }
}

/// Why a run stopped before its end.
public enum LLMStop: Sendable, Equatable {
    /// `--max-requests` or `--max-tokens` ran out: a clean stop, rerun to continue.
    case budget(String)
    /// The endpoint refused us for good (key, model, URL, quota) or the catalog failed.
    case fatal(String)

    public var message: String {
        switch self {
        case .budget(let m), .fatal(let m): return m
        }
    }
}
