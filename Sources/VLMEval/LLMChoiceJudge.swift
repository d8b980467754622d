import Foundation
import VLMCatalog
import VLMCore
import VLMInstruct
import VLMIO

/// The MMBench fallback judge: asks an OpenAI-compatible model which option a free-text answer means, through
/// the project's chat request, retry policy and `llm_calls` cache (a repeated question costs no request).
///
/// ```swift
/// let judge = LLMChoiceJudge(catalog: catalog, baseURL: "http://127.0.0.1:8000/v1", model: "gpt-4o-mini",
///                            apiKey: nil, maxRequests: 100)
/// let letter = try judge.choose(question: "Which ...?", options: ["A": "dog", ...], answer: "a small puppy")
/// ```
public final class LLMChoiceJudge: ChoiceJudge {
    public let catalog: Catalog
    public let baseURL: String
    public let model: String
    private let apiKey: String?
    /// Requests that may still be sent (nil: no budget).
    private var remaining: Int?
    public private(set) var requestsSent = 0
    public private(set) var cacheHits = 0
    private var client: HTTPClient?
    let maxAttempts = 4

    public init(catalog: Catalog, baseURL: String, model: String, apiKey: String?, maxRequests: Int?) {
        self.catalog = catalog
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.model = model
        self.apiKey = apiKey.flatMap { $0.isEmpty ? nil : $0 }
        self.remaining = maxRequests
    }

    /// The request for one answer (public so tests can compute its cache key).
    public func request(question: String, options: [String: String], answer: String) -> ChatRequest {
        let listed = options.keys.sorted().map { "\($0). \(options[$0]!)" }.joined(separator: "\n")
        let prompt = """
            A model answered a multiple-choice question in free text. Decide which option its answer means. \
            Reply with that option's letter only, or with Z when the answer means none of the options.

            Question: \(question)
            Options:
            \(listed)
            Answer: \(answer)
            Letter:
            """
        return ChatRequest(model: model, messages: [ChatMessage(role: "user", content: prompt)], maxTokens: 4,
                           temperature: 0, json: false)
    }

    public func choose(question: String, options: [String: String], answer: String) throws -> String? {
        let request = request(question: question, options: options, answer: answer)
        let hash = request.hash
        let letters = options.keys.sorted() + ["Z"]
        if let cached = try catalog.cachedLLMResponse(requestHash: hash),
           case .reply(let reply) = ChatPolicy.classify(HTTPResponse(status: 200, headers: [], body: Array(cached.utf8))) {
            cacheHits += 1
            return AnswerParsing.choiceLetter(reply.content, letters: letters)
        }
        if let left = remaining {
            guard left > 0 else { return nil }
            remaining = left - 1
        }
        if client == nil { client = try HTTPClient() }
        var headers = [(name: "Content-Type", value: "application/json")]
        if let apiKey { headers.append((name: "Authorization", value: "Bearer \(apiKey)")) }
        let body = request.canonicalBody
        let requestText = String(decoding: body, as: UTF8.self)
        var lastReason = ""
        for attempt in 1...maxAttempts {
            requestsSent += 1
            let response: HTTPResponse
            do {
                response = try client!.send(HTTPRequest(method: "POST", url: baseURL + "/chat/completions",
                                                        headers: headers, body: body, timeout: 60))
            } catch {
                lastReason = "\(error)"
                Thread.sleep(forTimeInterval: ChatPolicy.delay(attempt: attempt, retryAfter: nil, base: 0.5, cap: 8))
                continue
            }
            switch ChatPolicy.classify(response) {
            case .reply(let reply):
                try catalog.storeLLMCall(requestHash: hash, kind: "eval_judge", model: model, request: requestText,
                                         status: "ok", response: String(decoding: response.body, as: UTF8.self),
                                         reason: nil, httpStatus: response.status, attempts: attempt,
                                         promptTokens: reply.promptTokens, completionTokens: reply.completionTokens)
                return AnswerParsing.choiceLetter(reply.content, letters: letters)
            case .retry(let reason, let after):
                lastReason = reason
                Thread.sleep(forTimeInterval: ChatPolicy.delay(attempt: attempt, retryAfter: after, base: 0.5, cap: 8))
            case .fail(let reason, let fatal):
                try catalog.storeLLMCall(requestHash: hash, kind: "eval_judge", model: model, request: requestText,
                                         status: "failed", response: nil, reason: reason, httpStatus: response.status,
                                         attempts: attempt, promptTokens: nil, completionTokens: nil)
                if fatal { throw VLMError(.network, file: HTTPClient.redacted(baseURL), "the judge endpoint refused: \(reason)") }
                return nil
            }
        }
        try catalog.storeLLMCall(requestHash: hash, kind: "eval_judge", model: model, request: requestText,
                                 status: "failed", response: nil, reason: lastReason, httpStatus: nil,
                                 attempts: maxAttempts, promptTokens: nil, completionTokens: nil)
        return nil
    }
}
