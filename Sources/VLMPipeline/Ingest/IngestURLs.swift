import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// `vlmdata ingest urls`: image-text pairs from URL lists (CSV, TSV, JSON Lines; gzip or not), fetched with
/// libcurl's multi interface on one thread, checked with ingest coco's image probe, stored once per distinct image
/// in the workspace's content-addressed blob store, and recorded as images and captions like COCO's.
///
/// Incremental: a record is fetched only when it has no `urls` row yet (or, with `retryFailed`, a failed one). The
/// list is streamed and results are committed in small batches, so memory does not grow with the list and a kill
/// loses only the transfers in flight.
///
/// ```swift
/// let report = try IngestURLs(options: .init(files: ["cc3m.tsv.gz"], split: "cc3m")).run(catalog: catalog, progress: SilentProgress())
/// ```
public struct IngestURLs {
    public struct Options: Codable, Sendable {
        public var files: [String]
        public var format: URLListFormat?
        public var urlColumn = "url"
        public var captionColumn = "caption"
        public var keyColumn: String?
        public var split = "urls"
        public var concurrency = 64
        public var perHost = 16
        public var timeout = 20.0
        public var stall = 10.0
        public var retries = 2
        public var maxBytes: Int64 = 20 << 20
        public var maxRedirects = 5
        public var respectOptOut = true
        /// fsync every image file (and its folder) before its row is committed, so a power loss cannot leave a
        /// row naming a file that is empty or gone. Off only for scratch workspaces.
        public var fsync = true
        /// nil: fetch only records without a result; []: also every failed one; else the failed ones of these statuses.
        public var retryFailed: [String]?
        public var part: PartSpec?

        public init(files: [String], split: String = "urls") {
            self.files = files
            self.split = split
        }
    }

    /// The statuses a record can end with; all but `ok` are failures `--retry-failed` may name.
    public static let statuses = ["ok", "http_error", "timeout", "stalled", "too_large", "not_image", "decode_error",
                                  "dns_error", "connect_error", "redirect_loop", "opted_out", "duplicate", "refused"]

    public var options: Options

    public init(options: Options) { self.options = options }

    public func run(catalog: Catalog, progress: any ProgressSink, cancellation: StageCancellation = StageCancellation()) throws -> StageReport {
        let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "ingest")
        defer { lock.release() }
        guard SampleKey.sanitize(options.split) == options.split, !options.split.isEmpty else {
            throw VLMError(.invalidArgument, "--split '\(options.split)' may contain only letters, digits, '_' and '-'")
        }
        guard !options.files.isEmpty else { throw VLMError(.invalidArgument, "give at least one URL list file") }
        var readers: [URLListReader] = []
        for file in options.files {
            readers.append(try URLListReader(path: file, format: options.format, urlColumn: options.urlColumn,
                                             captionColumn: options.captionColumn, keyColumn: options.keyColumn))
        }
        let fingerprint = try options.files.map { try Hashing.sha256(file: $0) }.joined(separator: "+")
        let sourceID = try catalog.urlSource(split: options.split, uri: options.files.joined(separator: ","), fingerprint: fingerprint)
        let store = try BlobStore(root: catalog.workspace.root + "/blobs", sync: options.fsync)

        var problems: [String] = []
        var problemCount = 0
        /// Problem lines kept for the report: the first `StageReport.problemLimit` (a list of millions may have many
        /// bad lines; memory must not grow with them); `problemCount` covers all.
        func problem(_ error: VLMError) {
            problemCount += 1
            if problems.count < StageReport.problemLimit { problems.append(error.description) }
        }
        var counts: [String: Int] = [:]
        var recordNumber = 0
        var readerIndex = 0
        var queue: [PendingURL] = []
        var queueStart = 0
        var inFlightURLs: [String: String] = [:]   // url → key of its first record, until committed
        var pendingCommit: [Catalog.URLResult] = []
        var lastCommit = URLFetcher.clock()
        var listed = 0, skipped = 0, fetched = 0
        var seenKeys = Set<String>()

        func flush() throws {
            try catalog.commitURLResults(pendingCommit, sourceID: sourceID)
            for r in pendingCommit {
                counts[r.status, default: 0] += 1
                if inFlightURLs[r.url] == r.key { inFlightURLs[r.url] = nil }
            }
            if let terminal = progress as? TerminalProgress {
                let ok = counts["ok"] ?? 0
                terminal.relabel("fetching URLs: \(ok) ok, \(counts.values.reduce(0, +) - ok) failed")
            }
            progress.advance(by: pendingCommit.count)
            pendingCommit.removeAll(keepingCapacity: true)
            lastCommit = URLFetcher.clock()
        }

        /// Reads the next block of records, records refusals and duplicates at once, and queues the rest.
        func refill() throws {
            var block: [(URLListRecord, String, String)] = []
            while block.count < 512, readerIndex < readers.count {
                let reader = readers[readerIndex]
                guard let item = try reader.next() else { readerIndex += 1; continue }
                recordNumber += 1
                switch item {
                case .problem(let line, let message):
                    problem(VLMError.badInput(file: reader.path, record: "line \(line)", message))
                case .record(let record):
                    let key = record.key.map { "\(options.split)_\(SampleKey.sanitize($0))" }
                        ?? "\(options.split)_" + String(format: "%09d", recordNumber - 1)
                    // Record numbers are unique by construction; keys from a column are checked here.
                    guard options.keyColumn == nil || seenKeys.insert(key).inserted else {
                        problem(VLMError.badInput(file: reader.path, record: "line \(record.line)",
                                                  "key '\(key)' is already used by an earlier line: skipped"))
                        continue
                    }
                    guard options.part?.owns(imageKey: key, sampleKey: key) ?? true else { continue }
                    listed += 1
                    block.append((record, key, reader.path))
                }
            }
            let statuses = try catalog.urlStatuses(keys: block.map(\.1))
            var wanted: [(URLListRecord, String, String)] = []
            for (record, key, file) in block {
                if let status = statuses[key] {
                    let retry = status != "ok" && status != "refused" && status != "duplicate"
                        && (options.retryFailed.map { $0.isEmpty || $0.contains(status) } ?? false)
                    if !retry { skipped += 1; continue }
                }
                wanted.append((record, key, file))
            }
            let firstKeys = try catalog.urlFirstKeys(urls: wanted.map(\.0.url), sourceID: sourceID)
            for (record, key, file) in wanted {
                var result = Catalog.URLResult(key: key, url: record.url, caption: record.caption, line: record.line,
                                               status: "refused", attempts: 0)
                if !Self.isHTTP(record.url) {
                    result.error = "only http and https URLs are fetched"
                    problem(VLMError.badInput(file: file, record: "line \(record.line)",
                                              "'\(record.url.prefix(80))' is not an http(s) URL: refused"))
                    pendingCommit.append(result)
                    continue
                }
                if let first = inFlightURLs[record.url] ?? firstKeys[record.url], first != key {
                    result.status = "duplicate"
                    result.error = "same URL as \(first)"
                    pendingCommit.append(result)
                    continue
                }
                inFlightURLs[record.url] = key
                queue.append(PendingURL(record: record, key: key))
            }
            if !pendingCommit.isEmpty { try flush() }
        }

        var fetcherOptions = URLFetcher.Options(concurrency: options.concurrency, perHost: options.perHost,
                                                timeout: options.timeout, stall: options.stall, maxBytes: options.maxBytes,
                                                maxRedirects: options.maxRedirects, retries: options.retries)
        if !options.respectOptOut { fetcherOptions.honourOptOut = false }
        let fetcher = try URLFetcher(options: fetcherOptions)
        let syncer = BlobSyncer(store: store, threads: min(64, max(2, options.concurrency)), fsync: options.fsync,
                                wake: { [fetcher] in fetcher.wakeup() })
        defer { syncer.stop() }
        /// Records whose file is not in place yet, at most: beyond it no new transfer starts (memory stays bounded
        /// when the disk is slower than the network).
        let backlogLimit = max(256, 4 * options.concurrency)
        // Bodies are hashed, probed and, when good, made durable (fsync, rename, fsync of the folder) on a few
        // threads of their own; a 2xx record waits in `stored` until that is done, then goes to `pendingCommit`.
        var stored: [Int: JudgedLater] = [:]
        func takeStored() throws {
            for finished in syncer.takeFinished() {
                guard var later = stored.removeValue(forKey: finished.id) else { continue }
                if let error = finished.error { throw error }
                Self.judge(&later.row, probe: finished.probe, location: finished.location,
                           looksLikeImage: later.looksLikeImage, contentType: later.contentType)
                pendingCommit.append(later.row)
            }
            if !pendingCommit.isEmpty, pendingCommit.count >= 256 || URLFetcher.clock() - lastCommit > 0.5 { try flush() }
        }

        var sinks: [Int: BlobSink] = [:]
        var jobs: [Int: PendingURL] = [:]
        var nextJobID = 0
        progress.start("fetching URLs", total: nil)
        try fetcher.run(next: {
            while syncer.backlog >= backlogLimit {
                syncer.waitForFinished()
                try takeStored()
            }
            if queueStart >= queue.count {
                queue.removeAll(keepingCapacity: true)
                queueStart = 0
                while queue.isEmpty, readerIndex < readers.count { try refill() }
                if queue.isEmpty { return nil }
            }
            let pending = queue[queueStart]
            queueStart += 1
            nextJobID += 1
            jobs[nextJobID] = pending
            return URLFetcher.Job(id: nextJobID, url: pending.record.url)
        }, open: { job in
            let sink = BlobSink(store: store)
            sinks[job.id] = sink
            return sink
        }, done: { outcome in
            let pending = jobs.removeValue(forKey: outcome.job.id)!
            let sink = sinks.removeValue(forKey: outcome.job.id)
            fetched += 1
            if let error = sink?.writeError { throw error }
            let result = Self.result(of: outcome, pending: pending, hasBody: sink != nil)
            if result.status == "ok", let sink {
                sink.handOver()
                stored[outcome.job.id] = JudgedLater(row: result, looksLikeImage: sink.looksLikeImage,
                                                     contentType: outcome.contentType)
                syncer.submit(.init(id: outcome.job.id, temporary: sink.temporaryPath, name: pending.record.url))
            } else {
                pendingCommit.append(result)
            }
            if !pendingCommit.isEmpty, pendingCommit.count >= 256 || URLFetcher.clock() - lastCommit > 0.5 { try flush() }
        }, round: takeStored, shouldStop: { cancellation.isCancelled })
        while syncer.backlog > 0 {
            syncer.waitForFinished()
            try takeStored()
        }
        try flush()
        let failed = counts.filter { $0.key != "ok" }.values.reduce(0, +)
        (progress as? TerminalProgress)?.relabel("fetching URLs")
        progress.finish("\(counts["ok"] ?? 0) ok, \(failed) failed, \(skipped) already done")
        try cancellation.check("ingest urls")

        // Invariants before success: every ok row has its image row, and every image file is where its row says.
        let orphans = try catalog.urlOrphans(sourceID: sourceID)
        guard orphans == 0 else {
            throw VLMError(.corrupt, file: catalog.workspace.catalogPath, "\(orphans) ok URL rows have no ok image row")
        }
        let totals = try catalog.urlStats(sourceID: sourceID)
        var report = StageReport(stage: "ingest urls", counts: [
            "listed": listed, "fetched": fetched, "already_done": skipped, "ok": counts["ok"] ?? 0,
            "failed": failed, "problems": problemCount, "total_ok": totals.ok, "total": totals.total,
        ], problems: problems, problemCount: problemCount)
        for (status, n) in counts where status != "ok" { report.counts["failed_\(status)"] = n }
        return report
    }

    static func isHTTP(_ url: String) -> Bool {
        let lower = url.prefix(8).lowercased()
        return (lower.hasPrefix("http://") || lower.hasPrefix("https://")) && url.count > (lower.hasPrefix("https") ? 8 : 7)
    }

    /// The catalog row for one finished transfer. A 2xx reply with a body comes back `ok`, to be judged by `judge`
    /// once the sync threads have probed (and, when good, stored) its file.
    static func result(of outcome: URLFetcher.Result, pending: PendingURL, hasBody: Bool) -> Catalog.URLResult {
        var r = Catalog.URLResult(key: pending.key, url: pending.record.url, caption: pending.record.caption,
                                  line: pending.record.line, status: "ok", attempts: outcome.attempts)
        r.httpStatus = outcome.httpStatus
        r.finalURL = outcome.finalURL
        r.bytes = outcome.bytes
        r.error = outcome.error
        switch outcome.outcome {
        case .timeout: r.status = "timeout"
        case .stalled: r.status = "stalled"
        case .tooLarge: r.status = "too_large"
        case .dnsError: r.status = "dns_error"
        case .connectError: r.status = "connect_error"
        case .redirectLoop: r.status = "redirect_loop"
        case .refusedScheme: r.status = "refused"
        case .optedOut: r.status = "opted_out"
        case .aborted: r.status = "connect_error"
        case .answered:
            guard let status = outcome.httpStatus, (200..<300).contains(status) else {
                r.status = "http_error"
                r.error = "HTTP \(outcome.httpStatus.map(String.init) ?? "?")"
                break
            }
            if !hasBody { r.status = "connect_error"; r.error = "no body" }
        }
        return r
    }

    /// Settles a 2xx record from its body's probe: `ok` with its stored file, or why not.
    static func judge(_ r: inout Catalog.URLResult, probe: ImageProbe, location: String?, looksLikeImage: Bool,
                      contentType: String?) {
        r.sha256 = probe.sha256
        r.width = probe.width
        r.height = probe.height
        r.format = probe.format
        switch probe.status {
        case .ok:
            guard BlobSyncer.keeps(probe), let location else {
                r.status = "not_image"
                r.error = "\(probe.format ?? "unknown") image: only JPEG and PNG are kept"
                break
            }
            r.location = location
        case .tooLarge:
            r.status = "too_large"
            r.error = probe.error
        default:
            r.status = looksLikeImage ? "decode_error" : "not_image"
            r.error = looksLikeImage ? probe.error
                : "body is not a JPEG or PNG (\(contentType.map { "served as \($0)" } ?? "no Content-Type"))"
        }
        if r.status != "ok" {
            r.sha256 = r.status == "decode_error" ? r.sha256 : nil
            r.width = nil
            r.height = nil
        }
    }
}

/// A 2xx record whose body the sync threads are probing and storing.
struct JudgedLater {
    var row: Catalog.URLResult
    var looksLikeImage: Bool
    var contentType: String?
}

/// A list record waiting for its fetch.
struct PendingURL {
    var record: URLListRecord
    var key: String
}
