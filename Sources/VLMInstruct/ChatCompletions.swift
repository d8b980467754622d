import Foundation
import VLMCore
import VLMIO

/// The body of `POST {base}/chat/completions`. Its canonical JSON (sorted keys) is both what is sent and what is
/// hashed into the cache key; it never holds the API key.
public struct ChatRequest: Codable, Sendable, Equatable {
    public struct ResponseFormat: Codable, Sendable, Equatable {
        public var type: String
    }

    public var model: String
    public var messages: [ChatMessage]
    public var max_tokens: Int
    public var temperature: Double
    public var response_format: ResponseFormat?

    public init(model: String, messages: [ChatMessage], maxTokens: Int, temperature: Double, json: Bool) {
        self.model = model
        self.messages = messages
        self.max_tokens = maxTokens
        self.temperature = temperature
        self.response_format = json ? ResponseFormat(type: "json_object") : nil
    }

    public var canonicalBody: [UInt8] { Hashing.canonicalJSON(self) }
    /// The cache key: sha256 of the canonical body.
    public var hash: String { Hashing.sha256(canonicalBody) }

    /// A rough token count for the limiter: 4 characters per token for the prompt, plus the reply limit.
    public var estimatedTokens: Int {
        messages.reduce(0) { $0 + $1.content.utf8.count } / 4 + max_tokens
    }

    /// The most tokens this request can use, for the token budget: every UTF-8 byte of the messages a token
    /// (byte-level BPE and byte-fallback tokenizers never make more tokens than bytes), 4 tokens of chat framing
    /// per message and 3 priming the reply (OpenAI's accounting), plus the whole reply limit.
    public var worstCaseTokens: Int {
        messages.reduce(3) { $0 + $1.role.utf8.count + $1.content.utf8.count + 4 } + max_tokens
    }
}

/// A parsed successful reply.
public struct ChatReply: Sendable, Equatable {
    public var content: String
    public var finishReason: String?
    public var promptTokens: Int?
    public var completionTokens: Int?
}

/// What to do after one HTTP attempt.
public enum ChatAttempt: Sendable, Equatable {
    case reply(ChatReply)
    /// Try again after `after` seconds when the server said so (Retry-After), else after the backoff.
    case retry(reason: String, after: Double?)
    /// Give up on this request. `fatal` stops the whole run (bad key, unknown model or URL, no quota).
    case fail(reason: String, fatal: Bool)
}

/// The retry rules of an OpenAI-compatible endpoint, as the official clients apply them.
public enum ChatPolicy {
    /// Classifies one HTTP response.
    public static func classify(_ response: HTTPResponse) -> ChatAttempt {
        let status = response.status
        let (errorType, errorCode, errorMessage) = errorFields(response.body)
        let detail = errorMessage.map { ": \($0)" } ?? ""
        switch status {
        case 200..<300:
            guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
                return .retry(reason: "HTTP \(status) with a body that is not JSON", after: nil)
            }
            guard let choices = object["choices"] as? [[String: Any]], let first = choices.first else {
                return .retry(reason: "HTTP \(status) with no choices", after: nil)
            }
            guard let message = first["message"] as? [String: Any], let content = message["content"] as? String else {
                return .retry(reason: "HTTP \(status): choices[0].message.content is missing", after: nil)
            }
            let usage = object["usage"] as? [String: Any]
            return .reply(ChatReply(content: content, finishReason: first["finish_reason"] as? String,
                                    promptTokens: usage?["prompt_tokens"] as? Int,
                                    completionTokens: usage?["completion_tokens"] as? Int))
        case 429 where errorType == "insufficient_quota" || errorCode == "insufficient_quota":
            return .fail(reason: "HTTP 429 insufficient_quota\(detail)", fatal: true)
        case 408, 409, 429, 500...599:
            return .retry(reason: "HTTP \(status)\(detail)", after: response.retryAfter)
        case 401, 403, 404:
            return .fail(reason: "HTTP \(status)\(detail)", fatal: true)
        default:
            return .fail(reason: "HTTP \(status)\(detail)", fatal: false)
        }
    }

    /// `error.type`, `error.code`, `error.message` of an OpenAI error body, when present.
    static func errorFields(_ body: [UInt8]) -> (String?, String?, String?) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let error = object["error"] as? [String: Any] else { return (nil, nil, nil) }
        return (error["type"] as? String, error["code"] as? String, error["message"] as? String)
    }

    /// Exponential backoff with jitter: `base * 2^(attempt-1)` capped at `cap`, scaled by a random factor in
    /// [0.5, 1]; a server's `Retry-After` is honoured as given (capped at `cap`) plus up to 10% jitter.
    public static func delay(attempt: Int, retryAfter: Double?, base: Double, cap: Double) -> Double {
        var generator = SystemRandomNumberGenerator()
        let jitter = Double.random(in: 0...1, using: &generator)
        if let retryAfter {
            let wait = min(retryAfter, cap)
            return wait + wait * 0.1 * jitter
        }
        let exponential = min(cap, base * pow(2, Double(max(0, attempt - 1))))
        return exponential * (0.5 + 0.5 * jitter)
    }
}

/// Requests-per-minute and tokens-per-minute token buckets shared by all workers. Each bucket refills smoothly
/// and holds at most one second's worth, so the limits are never exceeded by a burst.
public final class RateLimiter: @unchecked Sendable {
    private let lock = NSLock()
    private let requestRate: Double?
    private let tokenRate: Double?
    private var requests: Double
    private var tokens: Double
    private var last = Date()

    public init(requestsPerMinute: Int?, tokensPerMinute: Int?) {
        requestRate = requestsPerMinute.map { Double($0) / 60 }
        tokenRate = tokensPerMinute.map { Double($0) / 60 }
        requests = requestRate.map { max(1, $0) } ?? 0
        tokens = tokenRate.map { max(1, $0) } ?? 0
    }

    /// Blocks until a request of `cost` tokens may go, or `cancelled()` turns true (then returns false).
    public func acquire(tokens cost: Int, cancelled: () -> Bool) -> Bool {
        while true {
            if cancelled() { return false }
            lock.lock()
            let now = Date()
            let elapsed = now.timeIntervalSince(last)
            last = now
            if let rate = requestRate { requests = min(max(1, rate), requests + elapsed * rate) }
            if let rate = tokenRate { tokens = min(max(1, rate), tokens + elapsed * rate) }
            let tokenCapacity = tokenRate.map { max(1, $0) } ?? 0
            let requestOK = requestRate == nil || requests >= 1
            // A request bigger than a full bucket goes when the bucket is full (and drives it negative).
            let tokensOK = tokenRate == nil || tokens >= min(Double(cost), tokenCapacity)
            if requestOK && tokensOK {
                if requestRate != nil { requests -= 1 }
                if tokenRate != nil { tokens -= Double(cost) }
                lock.unlock()
                return true
            }
            var wait = 0.0
            if let rate = requestRate, !requestOK { wait = max(wait, (1 - requests) / rate) }
            if let rate = tokenRate, !tokensOK { wait = max(wait, (min(Double(cost), tokenCapacity) - tokens) / rate) }
            lock.unlock()
            Thread.sleep(forTimeInterval: min(max(wait, 0.001), 0.1))
        }
    }
}
