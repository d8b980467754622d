import Foundation
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
    /// Tokens (prompt + completion, as the server reports them) this run may use. Each request reserves its worst
    /// case (`ChatRequest.worstCaseTokens`) before it is sent and gives back what the reply did not use, so the
    /// budget holds however many requests are in flight.
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
    /// Send requests without an `Authorization` header (an endpoint that needs no key). Without it, a run with no
    /// key refuses to start.
    public var noAuth: Bool

    public init(baseURL: String, model: String, kinds: [LLMKind] = LLMKind.allCases, seed: UInt64 = 0,
                concurrency: Int = 4, requestsPerMinute: Int? = nil, tokensPerMinute: Int? = nil,
                maxRequests: Int? = nil, maxTokens: Int? = nil, replyMaxTokens: Int = 1024, temperature: Double = 0,
                timeout: Double = 120, jsonMode: Bool = false, maxRetries: Int = 5, backoffBase: Double = 0.5,
                backoffCap: Double = 60, limit: Int? = nil, noAuth: Bool = false) {
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
        self.noAuth = noAuth
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
    /// Rejected replies per `LLMReply.Rejection.Code` raw value.
    public var rejectedBy: [String: Int] = [:]
    /// Failed requests per cause: `http_<status>` or `network` (no HTTP answer: refused, reset, timed out).
    public var failedBy: [String: Int] = [:]
    /// The first rejection or failure of each kind: `<image key> <kind>: <reason>` (redacted like every reason).
    public var examples: [String: String] = [:]

    public init() {}

    public var dictionary: [String: Int] {
        var out = ["planned": planned, "cached": cached, "requests_sent": requestsSent, "retries": retries, "ok": ok,
                   "rejected": rejected, "failed": failed, "skipped": skipped, "instructions": instructions,
                   "prompt_tokens": promptTokens, "completion_tokens": completionTokens]
        for (code, n) in rejectedBy { out["rejected_\(code)"] = n }
        for (cause, n) in failedBy { out["failed_\(cause)"] = n }
        return out
    }

    /// One line per kind of rejection and failure, most frequent first, each with its first example.
    public var problems: [String] {
        func lines(_ tally: [String: Int], prefix: String, _ describe: (String, Int) -> String) -> [String] {
            tally.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { key, n in
                describe(key, n) + (examples[prefix + key].map { ", e.g. \($0)" } ?? "")
            }
        }
        return lines(rejectedBy, prefix: "rejected_") { code, n in "\(n) replies rejected (\(code))" }
            + lines(failedBy, prefix: "failed_") { cause, n in
                "\(n) requests failed (\(cause.hasPrefix("http_") ? "HTTP " + cause.dropFirst(5) : "network error"))"
            }
    }

    mutating func reject(_ rejection: LLMReply.Rejection, example: String) {
        rejected += 1
        rejectedBy[rejection.code.rawValue, default: 0] += 1
        if examples["rejected_\(rejection.code.rawValue)"] == nil {
            examples["rejected_\(rejection.code.rawValue)"] = "\(example): \(rejection.reason)"
        }
    }

    mutating func fail(status: Int?, reason: String, example: String) {
        let cause = status.map { "http_\($0)" } ?? "network"
        failed += 1
        failedBy[cause, default: 0] += 1
        if examples["failed_\(cause)"] == nil { examples["failed_\(cause)"] = "\(example): \(reason)" }
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
    /// The key sent as `Authorization: Bearer …`; nil with `noAuth` (or when none was given).
    private let apiKey: String?
    /// The one redaction every string from the HTTP exchange passes before it is stored, logged or thrown.
    private let redactor: SecretRedactor

    public init(options: LLMOptions, apiKey: String?) {
        self.options = options
        self.apiKey = options.noAuth ? nil : apiKey.flatMap { $0.isEmpty ? nil : $0 }
        // With --no-auth a key that happens to be set is still masked wherever it shows up.
        self.redactor = SecretRedactor(secret: apiKey.flatMap { $0.isEmpty ? nil : $0 })
    }

    /// Throws unless requests will carry a key or the options say the endpoint needs none: a missing
    /// `OPENAI_API_KEY` is a mistake to report before anything is sent, not a run of 401s or unauthenticated calls.
    public func checkCredentials() throws {
        guard apiKey == nil && !options.noAuth else { return }
        throw VLMError(.invalidArgument, file: HTTPClient.redacted(options.baseURL), """
            OPENAI_API_KEY is not set, so requests to \(HTTPClient.redacted(options.baseURL)) would go out without \
            an Authorization header; set OPENAI_API_KEY, or pass --no-auth for an endpoint that needs no key
            """)
    }

    struct WorkItem: Sendable {
        var image: ImageFacts
        var kind: LLMKind
        var request: ChatRequest
        var hash: String
        /// `<image key> <kind>`, how reports name the call.
        var label: String { "\(image.key) \(kind.rawValue)" }
    }

    /// The request for one image and kind (public so tests and tools can compute cache keys).
    public func request(for image: ImageFacts, kind: LLMKind) -> ChatRequest {
        ChatRequest(model: options.model, messages: LLMPrompts.messages(kind, image: image, json: options.jsonMode),
                    maxTokens: options.replyMaxTokens, temperature: options.temperature, json: options.jsonMode)
    }

    /// Runs every pending request. Returns the counts and, when the run stopped early, why (a budget, or a fatal
    /// error such as a bad key; fatal ones are also thrown by the stage). Throws before sending anything when there
    /// is no key and `noAuth` is off, or when the token budget cannot cover even the smallest request.
    public func run(catalog: Catalog, progress: any ProgressSink) throws -> (LLMRunCounts, LLMStop?) {
        try checkCredentials()
        let images = try ImageFactsReader.read(catalog, limit: options.limit, part: options.part).filter { !$0.captions.isEmpty }
        var items: [WorkItem] = []
        for image in images {
            for kind in LLMKind.allCases where options.kinds.contains(kind) {
                let request = request(for: image, kind: kind)
                items.append(WorkItem(image: image, kind: kind, request: request, hash: request.hash))
            }
        }
        let state = RunState()
        // Cached replies: ok or rejected are final; failed ones are tried again.
        let done: Set<String> = try catalog.finalLLMCallHashes()
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

        if let max = options.maxTokens, let smallest = pending.min(by: { $0.request.worstCaseTokens < $1.request.worstCaseTokens }),
           smallest.request.worstCaseTokens > max {
            let worst = smallest.request.worstCaseTokens
            throw VLMError(.invalidArgument, """
                the token budget (--max-tokens \(max)) cannot cover any request: the smallest, \(smallest.label), may \
                use \(worst) tokens (a prompt of at most \(worst - smallest.request.max_tokens) and a reply of \
                \(smallest.request.max_tokens)); raise --max-tokens or lower --reply-max-tokens
                """)
        }
        progress.start("LLM requests", total: pending.count)
        let limiter = RateLimiter(requestsPerMinute: options.requestsPerMinute, tokensPerMinute: options.tokensPerMinute)
        let committer = LLMCommitter(catalog: catalog)
        let workers = max(1, min(options.concurrency, pending.count))
        let group = DispatchGroup()
        let queue = WorkQueue(pending)
        for _ in 0..<workers {
            group.enter()
            let generator = self
            Thread.detachNewThread {
                defer { group.leave() }
                generator.worker(queue: queue, state: state, limiter: limiter, committer: committer, progress: progress)
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

    /// Counts, the stop reason and the token budget's ledger, shared by the workers behind one lock that is
    /// never held across a request.
    final class RunState: @unchecked Sendable {
        let lock = NSLock()
        var counts = LLMRunCounts()
        var stop: LLMStop?
        /// Tokens charged to the budget: what the server reported, or a request's whole reservation when its
        /// reply did not say.
        var tokensUsed = 0
        /// Worst cases of the requests in flight.
        var tokensReserved = 0

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

    private func worker(queue: WorkQueue, state: RunState, limiter: RateLimiter, committer: LLMCommitter,
                        progress: any ProgressSink) {
        let client: HTTPClient
        do { client = try HTTPClient() } catch {
            state.halt(.fatal("cannot create an HTTP client: \(redactor.redact("\(error)"))"))
            return
        }
        while !state.stopped, let item = queue.take() {
            let outcome = call(item, client: client, state: state, limiter: limiter)
            do {
                try store(item, outcome: outcome, committer: committer, state: state)
            } catch {
                state.halt(.fatal("cannot write to the catalog: \(error)"))
            }
            progress.advance(by: 1)
        }
    }

    enum Outcome {
        /// `raw` is the redacted body; `quotesKey` says the body held the API key before redaction.
        case reply(ChatReply, raw: String, status: Int, attempts: Int, quotesKey: Bool)
        case failed(reason: String, status: Int?, attempts: Int)
        /// Not sent (a budget ran out or the run stopped before this request): nothing is stored.
        case notSent
    }

    /// Checks the request and token budgets for one attempt and, when it may go, counts it and reserves its worst
    /// case; returns why not otherwise. One step under the lock, so concurrent workers never overshoot.
    private func admit(_ item: WorkItem, retry: Bool, state: RunState) -> LLMStop? {
        let worst = item.request.worstCaseTokens
        var refused: LLMStop?
        state.update { s in
            if let max = options.maxRequests, s.counts.requestsSent >= max {
                refused = .budget("request budget of \(max) reached")
            } else if let max = options.maxTokens, s.tokensUsed + s.tokensReserved + worst > max {
                refused = .budget("token budget of \(max) reached (\(s.tokensUsed) used, the next request may use \(worst))")
            } else {
                s.counts.requestsSent += 1
                if retry { s.counts.retries += 1 }
                s.tokensReserved += worst
            }
        }
        return refused
    }

    /// Gives back an attempt's reservation and charges what it used: the server's usage when a reply reports it,
    /// the whole reservation when a reply does not, nothing when there was no reply.
    private func settle(_ item: WorkItem, reply: ChatReply?, state: RunState) {
        let worst = item.request.worstCaseTokens
        state.update { s in
            s.tokensReserved -= worst
            guard let reply else { return }
            if reply.promptTokens == nil && reply.completionTokens == nil {
                s.tokensUsed += worst
            } else {
                s.tokensUsed += (reply.promptTokens ?? 0) + (reply.completionTokens ?? 0)
            }
            s.counts.promptTokens += reply.promptTokens ?? 0
            s.counts.completionTokens += reply.completionTokens ?? 0
        }
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
            // Budgets are checked before every attempt, retries included.
            if let refused = admit(item, retry: attempts > 0, state: state) {
                state.halt(refused)
                return attempts == 0 ? .notSent : .failed(reason: "\(lastReason); stopped: \(refused.message)", status: lastStatus, attempts: attempts)
            }
            attempts += 1
            let attempt: ChatAttempt
            var status: Int?
            var raw = ""
            var quotesKey = false
            // Everything from here on is redacted before it is kept: the body (stored replies, error messages
            // parsed from it) and transport errors.
            do {
                let response = try client.send(HTTPRequest(method: "POST", url: options.endpoint, headers: headers,
                                                           body: body, timeout: options.timeout))
                let text = response.text
                quotesKey = redactor.appears(in: text)
                raw = redactor.redact(text)
                status = response.status
                attempt = ChatPolicy.classify(HTTPResponse(status: response.status, headers: response.headers,
                                                           body: Array(raw.utf8)))
            } catch {
                attempt = .retry(reason: redactor.redact("network error: \(error)"), after: nil)
            }
            if case .reply(let reply) = attempt {
                settle(item, reply: reply, state: state)
                return .reply(reply, raw: raw, status: status ?? 200, attempts: attempts, quotesKey: quotesKey)
            }
            settle(item, reply: nil, state: state)
            switch attempt {
            case .reply:
                preconditionFailure("handled above")
            case .fail(let reason, let fatal):
                if fatal { state.halt(.fatal("\(HTTPClient.redacted(options.endpoint)): \(reason)")) }
                return .failed(reason: reason, status: status, attempts: attempts)
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

    /// Failures before the first usable reply after which the run stops: a wrong URL, a dead server or a request
    /// every call gets wrong should not be retried once per image.
    var failureLimit: Int { max(8, 2 * options.concurrency) }

    private func store(_ item: WorkItem, outcome: Outcome, committer: LLMCommitter, state: RunState) throws {
        let requestText = String(decoding: item.request.canonicalBody, as: UTF8.self)
        switch outcome {
        case .notSent:
            state.update { $0.counts.skipped += 1 }
        case .failed(let reason, let status, let attempts):
            _ = try committer.commit { tx, now in
                try upsertCall(tx, item: item, request: requestText, status: "failed", response: nil, reason: reason,
                               http: status, attempts: attempts, usage: (nil, nil), now: now)
                return 0
            }
            var giveUp: String?
            state.update { s in
                s.counts.fail(status: status, reason: reason, example: item.label)
                if s.counts.ok + s.counts.rejected == 0 && s.counts.failed >= failureLimit {
                    giveUp = "the first \(s.counts.failed) requests all failed (" +
                        s.counts.problems.joined(separator: "; ") + "); check --base-url and the server"
                }
            }
            if let giveUp { state.halt(.fatal(giveUp)) }
        case .reply(let reply, let raw, let status, let attempts, let quotesKey):
            var rejection: LLMReply.Rejection?
            var instruction: GeneratedInstruction?
            if quotesKey {
                rejection = LLMReply.Rejection(.secret, "the reply quotes the API key (stored redacted, not used)")
            } else if reply.finishReason == "length" {
                rejection = LLMReply.Rejection(.truncated, "reply truncated (finish_reason \"length\")")
            } else {
                do {
                    instruction = try makeInstruction(item, content: reply.content)
                } catch let error as LLMReply.Rejection {
                    rejection = error
                }
            }
            let added = try committer.commit { tx, now in
                try upsertCall(tx, item: item, request: requestText, status: rejection == nil ? "ok" : "rejected",
                               response: raw, reason: rejection?.description, http: status, attempts: attempts,
                               usage: (reply.promptTokens, reply.completionTokens), now: now)
                guard let instruction else { return 0 }
                return try InstructionStore.insert([instruction], paramsHash: item.hash, now: now, tx: tx)
            }
            state.update { s in
                if let rejection { s.counts.reject(rejection, example: item.label) } else { s.counts.ok += 1 }
                s.counts.instructions += added
            }
        }
    }

    private func upsertCall(_ tx: CatalogTransaction, item: WorkItem, request: String, status: String, response: String?,
                            reason: String?, http: Int?, attempts: Int, usage: (Int?, Int?), now: String) throws {
        try tx.upsertLLMCall(LLMCallRecord(
            requestHash: item.hash, imageID: item.image.id, kind: item.kind.rawValue, model: options.model,
            request: request, status: status, response: response, reason: reason, httpStatus: http,
            attempts: attempts, promptTokens: usage.0, completionTokens: usage.1), now: now)
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
            throw LLMReply.Rejection(.invalid, error.message)
        }
        return GeneratedInstruction(
            key: "\(item.image.key)-llm-\(item.kind.rawValue)-0", imageID: item.image.id, sourceID: item.image.sourceID,
            generator: "llm", kind: item.kind.rawValue, groupID: nil, turns: turns,
            meta: ["type": .string(item.kind.rawValue), "request_hash": .string(item.hash),
                   "model": .string(options.model), "pairs": .int(pairs.count)])
    }

    private func rebuildMissing(_ cached: [WorkItem], catalog: Catalog) throws -> Int {
        guard !cached.isEmpty else { return 0 }
        let present: Set<String> = try catalog.instructionKeys(generator: "llm")
        let missing = cached.filter { !present.contains("\($0.image.key)-llm-\($0.kind.rawValue)-0") }
        guard !missing.isEmpty else { return 0 }
        let replies: [String: String] = try catalog.okLLMResponses()
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
