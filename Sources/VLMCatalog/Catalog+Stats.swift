import GRDB
import VLMCore

/// Counts per table, as `vlmdata stats --json` prints them.
public struct CatalogStats: Codable, Sendable, Equatable {
    public struct Images: Codable, Sendable, Equatable {
        public var total = 0, ok = 0, missing = 0, corrupt = 0, size_mismatch = 0, too_large = 0
    }

    public struct Lengths: Codable, Sendable, Equatable {
        public var min = 0, median = 0, p95 = 0, max = 0
    }

    public struct LLMCalls: Codable, Sendable, Equatable {
        /// Requests answered and stored (each is a cache entry later runs reuse).
        public var ok = 0
        public var rejected = 0
        public var failed = 0
        public var prompt_tokens = 0
        public var completion_tokens = 0
    }

    public var images = Images()
    public var captions = 0
    public var objects = 0
    public var categories = 0
    public var instructions = 0
    public var instructions_by_kind: [String: Int] = [:]
    public var tokenized = 0
    public var pixels = 0
    public var pixel_errors = 0
    public var shards = 0
    public var samples = 0
    /// Text tokens per sample (the image placeholder not counted).
    public var tokens_without_image: Lengths?
    /// Tokens per sample as the model sees them: text plus the image's positions.
    public var tokens_with_image: Lengths?
    public var llm_calls = LLMCalls()
    /// `ingest urls` results: `{"total": N, "ok": N, "failed": {STATUS: N}}`.
    public var urls = Catalog.URLStats()
}

extension Catalog {
    public func stats() throws -> CatalogStats {
        try read { db in
            var s = CatalogStats()
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM images GROUP BY status") {
                let status: String = row[0]
                let n: Int = row[1]
                s.images.total += n
                switch ImageStatus(rawValue: status) {
                case .ok: s.images.ok = n
                case .missing: s.images.missing = n
                case .corrupt: s.images.corrupt = n
                case .sizeMismatch: s.images.size_mismatch = n
                case .tooLarge: s.images.too_large = n
                case nil: break
                }
            }
            func count(_ sql: String) throws -> Int { try Int.fetchOne(db, sql: sql) ?? 0 }
            s.captions = try count("SELECT COUNT(*) FROM captions")
            s.objects = try count("SELECT COUNT(*) FROM objects")
            s.categories = try count("SELECT COUNT(*) FROM categories")
            s.instructions = try count("SELECT COUNT(*) FROM instructions")
            for row in try Row.fetchAll(db, sql: "SELECT kind, COUNT(*) FROM instructions GROUP BY kind") {
                s.instructions_by_kind[row[0]] = row[1]
            }
            s.tokenized = try count("SELECT COUNT(*) FROM tokenized WHERE status IN ('ok', 'truncated')")
            s.pixels = try count("SELECT COUNT(*) FROM pixels WHERE status = 'ok'")
            s.pixel_errors = try count("SELECT COUNT(*) FROM pixels WHERE status = 'error'")
            s.shards = try count("SELECT COUNT(*) FROM shards")
            s.samples = try count("SELECT COUNT(*) FROM samples")
            if s.samples > 0 {
                let text = try Int.fetchAll(db, sql: "SELECT tokens - has_image AS n FROM samples ORDER BY n")
                let full = try Int.fetchAll(db, sql: "SELECT tokens - has_image + image_tokens AS n FROM samples ORDER BY n")
                s.tokens_without_image = Self.lengths(sorted: text)
                s.tokens_with_image = Self.lengths(sorted: full)
            }
            for row in try Row.fetchAll(db, sql: """
                SELECT status, COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0)
                FROM llm_calls GROUP BY status
                """) {
                let status: String = row[0]
                let n: Int = row[1]
                switch status {
                case "ok": s.llm_calls.ok = n
                case "rejected": s.llm_calls.rejected = n
                default: s.llm_calls.failed = n
                }
                s.llm_calls.prompt_tokens += row[2] as Int
                s.llm_calls.completion_tokens += row[3] as Int
            }
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) FROM urls GROUP BY status") {
                let status: String = row[0]
                let n: Int = row[1]
                s.urls.total += n
                if status == "ok" { s.urls.ok = n } else { s.urls.failed[status] = n }
            }
            return s
        }
    }

    static func lengths(sorted values: [Int]) -> CatalogStats.Lengths {
        guard !values.isEmpty else { return .init() }
        func at(_ q: Double) -> Int { values[min(values.count - 1, Int((Double(values.count - 1) * q).rounded()))] }
        return .init(min: values.first!, median: at(0.5), p95: at(0.95), max: values.last!)
    }
}
