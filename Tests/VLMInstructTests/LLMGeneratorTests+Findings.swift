import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMInstruct

/// Regression tests for the reported LLM findings: replies of the wrong kind, the key leaking into the catalog, the
/// key being optional, and the token budget being overshot.
extension LLMGeneratorTests {
    static let key = "sk-test-FINDINGS-7f3a9c2e41b8"

    /// Every text column of the catalog and its raw bytes (database and WAL), for "the key is nowhere" checks.
    func catalogText(_ s: Setup) throws -> (text: String, bytes: Data) {
        let text = try s.catalog.read { db in
            try String.fetchAll(db, sql: """
                SELECT COALESCE(request, '') || COALESCE(response, '') || COALESCE(reason, '') FROM llm_calls
                """)
                + String.fetchAll(db, sql: "SELECT conversations || meta FROM instructions")
                + String.fetchAll(db, sql: "SELECT params || COALESCE(error, '') FROM runs")
        }.joined(separator: "\n")
        var bytes = Data()
        for suffix in ["", "-wal"] {
            let path = s.catalog.workspace.catalogPath + suffix
            if FileManager.default.fileExists(atPath: path) { bytes += try Data(contentsOf: URL(fileURLWithPath: path)) }
        }
        return (text, bytes)
    }

    // Issue 12, case 9: a detail reply made of Question:/Answer: blocks was stored as a description.
    @Test func repliesOfTheWrongShapeAreRejectedForEveryKind() throws {
        let s = try setup("llm-wrong-kind")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "wrong_kind", "count": 3])
        let (counts, stop) = try LLMGenerator(options: options(s, images: 1), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(stop == nil)
        #expect(counts.rejected == 3 && counts.ok == 0 && counts.instructions == 0, "\(counts)")
        #expect(try storedInstructions(s.catalog, generator: "llm").isEmpty)
        let reasons = Dictionary(uniqueKeysWithValues: try calls(s).map { ($0["kind"] as String, $0["reason"] as String?) })
        #expect(reasons["detail"]??.contains("Question:") == true, "\(reasons)")
        #expect(reasons["conversation"]??.isEmpty == false && reasons["complex"]??.isEmpty == false)
        #expect(try calls(s).allSatisfy { ($0["status"] as String) == "rejected" })
    }

    // Issue 12, case 9: without OPENAI_API_KEY requests went out with no Authorization header and no warning.
    @Test func noKeyMeansNoRequestUnlessAsked() throws {
        let s = try setup("llm-no-key")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        let o = options(s, images: 1)
        do {
            _ = try LLMGenerator(options: o, apiKey: nil).run(catalog: s.catalog, progress: SilentProgress())
            Issue.record("a run without a key must not start")
        } catch let error as VLMError {
            #expect(error.description.contains("OPENAI_API_KEY"))
            #expect(error.description.contains(o.baseURL))
        }
        #expect(try stats(s)["total"] as? Int == 0)
        #expect(try calls(s).isEmpty)
    }

    // Issue 12, case 9: --max-tokens 3000 ended at 4,104 tokens: in-flight requests overshot the budget.
    @Test func theTokenBudgetIsNeverExceeded() throws {
        let s = try setup("llm-token-budget")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        var o = options(s, images: 6, concurrency: 4)
        o.replyMaxTokens = 300
        let generator = LLMGenerator(options: o, apiKey: Self.key)
        let image = try ImageFactsReader.read(s.catalog, limit: 1)[0]
        // Room for two requests at their worst (every body byte a token, plus the whole reply), not three.
        let worst = generator.request(for: image, kind: .conversation).canonicalBody.count + o.replyMaxTokens
        o.maxTokens = worst * 5 / 2
        let (counts, stop) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        guard case .budget? = stop else { Issue.record("expected a token budget stop, got \(String(describing: stop))"); return }
        #expect(counts.promptTokens + counts.completionTokens <= o.maxTokens!, "\(counts)")
        #expect(counts.ok >= 2, "\(counts)")
        let stored = try s.catalog.read { db in
            try Int.fetchOne(db, sql: "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM llm_calls") ?? 0
        }
        #expect(stored <= o.maxTokens!)
    }

    // Issue 18, finding 2: a 429/500 body echoing the Authorization header reached llm_calls.reason after retries.
    @Test(arguments: ["429", "500"])
    func aKeyEchoedInRetriedErrorsNeverReachesTheCatalog(kind: String) throws {
        let s = try setup("llm-echo-\(kind)", serverArguments: ["--echo-auth"])
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": kind, "count": 100, "retry_after": 0, "retry_after_ms": 5])
        var o = options(s, images: 1, kinds: [.detail])
        o.maxRetries = 2
        let (counts, _) = try LLMGenerator(options: o, apiKey: Self.key).run(catalog: s.catalog, progress: SilentProgress())
        #expect(counts.failed == 1 && counts.requestsSent == 3, "\(counts)")
        let reason = try #require(try calls(s)[0]["reason"] as String?)
        #expect(reason.contains("HTTP \(kind)"), "\(reason)")
        #expect(!reason.contains(Self.key) && !reason.contains("Bearer"), "\(reason)")
        let dump = try catalogText(s)
        #expect(!dump.text.contains(Self.key) && !dump.text.contains("Bearer "))
        #expect(dump.bytes.range(of: Data(Self.key.utf8)) == nil)
    }

    // Issue 18, finding 2: a reply quoting the key was stored in an instruction.
    @Test func aReplyQuotingTheKeyIsRejectedAndNeverStored() throws {
        let s = try setup("llm-echo-reply")
        defer { try? FileManager.default.removeItem(at: s.dir) }
        try fault(s, ["kind": "echo_key", "count": 1])
        let (counts, _) = try LLMGenerator(options: options(s, images: 1, kinds: [.detail]), apiKey: Self.key)
            .run(catalog: s.catalog, progress: SilentProgress())
        #expect(counts.rejected == 1 && counts.ok == 0 && counts.instructions == 0, "\(counts)")
        let row = try calls(s)[0]
        #expect(row["status"] as String == "rejected")
        #expect((row["reason"] as String?)?.contains("API key") == true)
        let dump = try catalogText(s)
        #expect(!dump.text.contains(Self.key))
        #expect(dump.bytes.range(of: Data(Self.key.utf8)) == nil)
    }
}
