import ArgumentParser
import Foundation
import VLMCore
import VLMPipeline

extension IngestCommand {
    struct URLs: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "urls",
            abstract: "Fetch image-text pairs from URL lists (CSV, TSV, JSON Lines; gzip or not) as images and captions.",
            discussion: """
            Lists are streamed (bounded memory). Every URL is fetched with libcurl's multi interface on one thread \
            (keep-alive, HTTP/2 where offered, redirects up to --max-redirects, http and https only), each transfer \
            under an overall --timeout and a --stall detector, bodies stopped at --max-bytes. A body counts when it \
            is a JPEG or PNG whose header and end check out (ingest coco's probe); it is stored once per sha256 under \
            WORKSPACE/blobs/ and recorded as an image with its caption, so gen-instructions, tokenize, patchify and \
            shard work unchanged. Every record gets one row with its status: ok, http_error, timeout, stalled, \
            too_large, not_image, decode_error, dns_error, connect_error, redirect_loop, opted_out (X-Robots-Tag \
            noai/noimageai), duplicate (same URL as an earlier record) or refused (not http(s)). Running again \
            fetches only records without a result; --retry-failed also fetches the failed ones. Malformed lines are \
            reported by file and line and skipped. See docs/urls.md.
            """
        )
        @OptionGroup var common: WorkspaceOptions
        @Argument(help: "URL list files (.csv, .tsv, .jsonl; optionally .gz).") var files: [String]
        @Option(help: "List format: csv, tsv, jsonl (parquet: convert first, see docs/urls.md). Default: from the file name.") var format: String?
        @Option(help: "Column (JSON key) holding the image URL.") var urlCol = "url"
        @Option(help: "Column (JSON key) holding the caption.") var captionCol = "caption"
        @Option(help: "Column whose value names each record's key (default: its record number).") var keyCol: String?
        @Option(help: "Split name; prefixes image keys (letters, digits, _ and -).") var split = "urls"
        @Option(help: "Transfers at once.") var concurrency = 64
        @Option(help: "Connections to one host at once (0 = no cap).") var perHost = 16
        @Option(help: "Overall deadline of one transfer (20s, 500ms, 2m).") var timeout = "20s"
        @Option(help: "Stop a transfer receiving under 1 byte/s for this long (0 = off).") var stall = "10s"
        @Option(help: "Further attempts for timeouts, stalls, connection errors, 429 and 5xx.") var retries = 2
        @Option(help: "Largest body kept (20MB, 5MiB).") var maxBytes = "20MB"
        @Option(help: "Redirects followed before a record is a redirect_loop.") var maxRedirects = 5
        @Flag(inversion: .prefixedNo, help: "Honour X-Robots-Tag: noai / noimageai (as img2dataset does).") var respectOptOut = true
        @Flag(inversion: .prefixedNo, help: "fsync each image file and its folder before its row is committed (--no-fsync: for scratch workspaces; a power loss may then leave rows naming lost files).") var fsync = true
        @Flag(help: "Also fetch the records that failed before.") var retryFailed = false
        @Option(help: "With --retry-failed: only these failure statuses (comma-separated, e.g. http_error,timeout).") var retryStatus: String?
        @Option(help: PartHelp.text) var part: PartSpec?
        @Flag(help: "Exit non-zero when any line had a problem.") var strict = false
        @Flag(help: "Print the report as JSON.") var json = false

        var config: IngestURLsStep.Config {
            var c = IngestURLsStep.Config(files: files)
            c.format = format
            c.urlCol = urlCol
            c.captionCol = captionCol
            c.keyCol = keyCol
            c.split = split
            c.concurrency = concurrency
            c.perHost = perHost
            c.timeout = timeout
            c.stall = stall
            c.retries = retries
            c.maxBytes = maxBytes
            c.maxRedirects = maxRedirects
            c.respectOptOut = respectOptOut
            c.fsync = fsync
            if retryFailed || retryStatus != nil { c.retryFailed = retryStatus ?? "all" }
            c.part = part?.description
            return c
        }

        func validate() throws { _ = try makeStage(IngestURLsStep.self, config) }

        func run() throws {
            try runStage(try makeStage(IngestURLsStep.self, config), common.context(), json: json, strict: strict,
                         problemsOnStderr: true, failureHint: ingestFailureHint)
        }
    }
}
