import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `ingest urls` as a stage value: URL lists (image URL + caption) fetched into the workspace as images and captions.
public struct IngestURLsStep: Stage, LineageStage {
    public static let name = "ingest urls"
    /// All ingest stages write the same tables: one lock.
    static let writerLock: String? = "ingest"
    public static let summary = "fetch image-text pairs from URL lists (csv, tsv, jsonl; gzip or not) as images and captions"
    static let reads: [String] = []
    /// The lists and the servers may change: the stage always runs; records with a result are not fetched again.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var files: [String]
        public var format: String?
        public var urlCol = "url"
        public var captionCol = "caption"
        public var keyCol: String?
        public var split = "urls"
        public var concurrency = 64
        public var perHost = 16
        /// Whole-transfer deadline: "20s", "500ms", "2m" or seconds.
        public var timeout = "20s"
        /// Less than 1 byte/s for this long stops a transfer as stalled.
        public var stall = "10s"
        public var retries = 2
        public var maxBytes = "20MB"
        public var maxRedirects = 5
        public var respectOptOut = true
        /// fsync every image file and its folder before its row is committed (false: scratch workspaces only).
        public var fsync = true
        /// Also fetch records that failed: "all", or comma-separated statuses (http_error,timeout).
        public var retryFailed: String?
        public var part: String?

        public init(files: [String]) { self.files = files }

        enum CodingKeys: String, CodingKey, CaseIterable {
            case files, format, split, concurrency, timeout, stall, retries, part
            case urlCol = "url_col", captionCol = "caption_col", keyCol = "key_col", perHost = "per_host"
            case maxBytes = "max_bytes", maxRedirects = "max_redirects", respectOptOut = "respect_opt_out"
            case retryFailed = "retry_failed", fsync
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let one = try? c.decode(String.self, forKey: .files) {
                self.init(files: [one])
            } else {
                self.init(files: try c.decode([String].self, forKey: .files))
            }
            format = try c.decodeIfPresent(String.self, forKey: .format)
            urlCol = try c.value(.urlCol, default: urlCol)
            captionCol = try c.value(.captionCol, default: captionCol)
            keyCol = try c.decodeIfPresent(String.self, forKey: .keyCol)
            split = try c.value(.split, default: split)
            concurrency = try c.value(.concurrency, default: concurrency)
            perHost = try c.value(.perHost, default: perHost)
            timeout = try c.value(.timeout, default: timeout)
            stall = try c.value(.stall, default: stall)
            retries = try c.value(.retries, default: retries)
            maxBytes = try c.value(.maxBytes, default: maxBytes)
            maxRedirects = try c.value(.maxRedirects, default: maxRedirects)
            respectOptOut = try c.value(.respectOptOut, default: respectOptOut)
            fsync = try c.value(.fsync, default: fsync)
            retryFailed = try c.decodeIfPresent(String.self, forKey: .retryFailed)
            part = try c.decodeIfPresent(String.self, forKey: .part)
        }
    }

    public let config: Config
    let options: IngestURLs.Options

    public init(config: Config) throws {
        guard !config.files.isEmpty else { throw invalid("files", "give at least one URL list") }
        var o = IngestURLs.Options(files: config.files, split: config.split)
        if let format = config.format {
            guard let f = URLListFormat(rawValue: format) else { throw invalid("format", "must be csv, tsv, jsonl or parquet, not '\(format)'") }
            o.format = f
        }
        o.urlColumn = config.urlCol
        o.captionColumn = config.captionCol
        o.keyColumn = config.keyCol
        guard (1...1024).contains(config.concurrency) else { throw invalid("concurrency", "must be within 1...1024") }
        guard config.perHost >= 0 else { throw invalid("per_host", "must be 0 (no cap) or more") }
        o.concurrency = config.concurrency
        o.perHost = config.perHost
        guard let timeout = Self.seconds(config.timeout), timeout > 0 else { throw invalid("timeout", "must be a duration like 20s, 500ms or 2m") }
        guard let stall = Self.seconds(config.stall), stall >= 0 else { throw invalid("stall", "must be a duration like 10s (0 = off)") }
        o.timeout = timeout
        o.stall = stall
        guard (0...10).contains(config.retries) else { throw invalid("retries", "must be within 0...10") }
        o.retries = config.retries
        guard let maxBytes = ByteSize.parse(config.maxBytes) else { throw invalid("max_bytes", "must be a size like 20MB") }
        o.maxBytes = Int64(maxBytes)
        guard (0...50).contains(config.maxRedirects) else { throw invalid("max_redirects", "must be within 0...50") }
        o.maxRedirects = config.maxRedirects
        o.respectOptOut = config.respectOptOut
        o.fsync = config.fsync
        if let retry = config.retryFailed {
            if retry == "all" || retry.isEmpty {
                o.retryFailed = []
            } else {
                let statuses = retry.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                for status in statuses where !IngestURLs.statuses.contains(status) || status == "ok" {
                    throw invalid("retry_failed", "'\(status)' is not a failure status (\(IngestURLs.statuses.dropFirst().joined(separator: ", ")))")
                }
                o.retryFailed = statuses
            }
        }
        if let part = config.part {
            guard let spec = PartSpec(parsing: part) else { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
            o.part = spec
        }
        self.config = config
        options = o
    }

    /// "20s", "500ms", "2m", "1h" or plain seconds.
    static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where t.hasSuffix(suffix) {
            return Double(t.dropLast(suffix.count)).map { $0 * factor }
        }
        return Double(t)
    }

    public func run(_ context: StageContext) throws -> StageReport { try runWithLineage(context) }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        LineageIdentity(name: "urls:\(config.split)", config: config)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        var options = self.options
        options.part = options.part ?? context.part
        return try IngestURLs(options: options).run(catalog: catalog, progress: context.progress, cancellation: context.cancellation)
    }
}
