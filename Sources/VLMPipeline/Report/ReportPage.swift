import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMShard
import VLMText

/// `vlmdata view`: a static report of a workspace, `DIR/index.html` with the sample images as PNG files beside it.
/// No server, no network, no script: the page opens from disk.
///
/// ```swift
/// let summary = try ReportPage.write(workspace: Workspace(root: "vlmdata-work/demo"), options: .init(out: "report"))
/// print(summary.page)   // report/index.html
/// ```
///
/// The page holds the counts per catalog table and per problem kind, histograms of the samples' lengths, the
/// loss curve when `train-smoke` ran in (or above) the workspace, and `samples` cards drawn with a seeded
/// SplitMix64 from the sample index. Each card shows the pixels as the model sees them (unpatchified from the
/// stored patches: pad borders, anyres tiles side by side), the boxes its conversation names (in the frame of the
/// pixels, `box_frame`), the conversation, and the tokens coloured supervised / masked / image.
public enum ReportPage {
    public struct Options: Sendable {
        public var out: String
        public var samples: Int
        public var seed: UInt64
        /// The tokenizer whose token strings the cards show; nil: `tokenizer.json` in the workspace (as the demo
        /// trains it) when its sha256 matches the samples'. Without one the cards show ids.
        public var tokenizer: String?

        public init(out: String, samples: Int = 12, seed: UInt64 = 0, tokenizer: String? = nil) {
            (self.out, self.samples, self.seed, self.tokenizer) = (out, samples, seed, tokenizer)
        }
    }

    public struct Summary: Codable, Sendable {
        public var page: String
        public var samples_total: Int
        public var samples_shown: Int
        public var images_written: Int
        public var loss_curve: String?
        public var tokenizer: String?
        /// For each tokenizer the samples need and no file was found for: which file (path + sha256) to pass.
        public var tokenizer_needed: [String] = []
    }

    public static func write(workspace: Workspace, options: Options, progress: any ProgressSink = SilentProgress()) throws -> Summary {
        guard FileManager.default.fileExists(atPath: workspace.catalogPath) else {
            throw VLMError(.notFound, file: workspace.catalogPath, "no catalog here (run a pipeline into this workspace first)")
        }
        let catalog = try Catalog(workspace: workspace)
        let figures = try catalog.reportFigures()
        let keys = try catalog.sampleKeys()
        var rng = SplitMix64(seed: options.seed)
        var order = Array(keys.indices)
        rng.shuffle(&order)
        let chosen = order.prefix(options.samples).sorted().map { keys[$0] }

        let imagesDir = options.out + "/images"
        try FileManager.default.createDirectory(atPath: imagesDir, withIntermediateDirectories: true)
        let index = ShardIndex(catalog: catalog)
        var tokenizers = TokenizerLookup(explicit: options.tokenizer, workspace: workspace,
                                         recorded: try TokenizerLookup.recorded(catalog))
        var cards: [String] = []
        var written = 0
        progress.start("view", total: chosen.count)
        for key in chosen {
            let sample = try index.sample(key: key, verify: true)
            let metadata = try sample.metadata()
            var image: SampleCard.Image?
            if let pixels = try sample.pixels() {
                let strip = try Unpatchify.strip(pixels.values, shape: pixels.shape)
                let file = "images/\(key).png"
                try AtomicFile.write(ImageEncode.png(rgb: strip.rgb, width: strip.width, height: strip.height), to: options.out + "/" + file)
                written += 1
                image = .init(file: file, width: strip.width, height: strip.height, tileSide: strip.height, tiles: pixels.shape[0])
            }
            let card = SampleCard(metadata: metadata, inputIDs: try sample.inputIDs(), labels: try sample.labels(), image: image,
                                  tokenizer: tokenizers.tokenizer(sha256: metadata.tokenizerSHA256))
            cards.append(card.html())
            progress.advance(by: 1)
        }
        progress.finish("\(chosen.count) sample cards, \(written) images")

        let loss = lossCurve(near: workspace.root)
        var html = head(title: "vlmdata view: \(workspace.root)")
        html += "<h1>vlmdata view</h1>\n<p class=\"where\">workspace <code>\(HTML.escape(workspace.root))</code> · \(keys.count) samples, \(chosen.count) shown (seed \(options.seed))</p>\n"
        html += "<h2>Summary</h2>\n<div class=\"tables\">\n" + countTable("table", "rows", figures.tables.map { ($0.name, $0.rows) }, id: "tables")
        html += countTable("problem", "count", figures.problems.map { ($0.kind, $0.count) }, id: "problems") + "</div>\n"
        html += "<h2>Distributions</h2>\n<div class=\"charts\">\n"
        html += SVGChart.histogram(figures.tokensPerSample, title: "tokens per sample", xLabel: "tokens (text + image positions)")
        html += SVGChart.histogram(figures.supervisedPerSample, title: "supervised tokens", xLabel: "tokens with a label")
        html += SVGChart.histogram(figures.imageTokensPerSample, title: "image tokens", xLabel: "image positions per sample")
        html += SVGChart.histogram(figures.instructionsPerImage, title: "instructions per image", xLabel: "instructions")
        html += SVGChart.histogram(figures.imagesPerShard, title: "images per shard", xLabel: "distinct images")
        html += "</div>\n"
        if let loss {
            html += "<h2>Training loss (train-smoke)</h2>\n<div class=\"charts\" id=\"loss\">\n"
            html += SVGChart.line(loss.points, title: "loss", xLabel: "step", yLabel: "loss")
            html += "</div>\n<p class=\"where\">from <code>\(HTML.escape(loss.path))</code></p>\n"
        }
        html += "<h2>Samples</h2>\n<p class=\"legend\"><span class=\"tok s\">supervised</span> <span class=\"tok m\">masked (label -100)</span> <span class=\"tok i\">image placeholder</span> · hover a token for its string and id"
        html += (tokenizers.used.map { " (strings from <code>\(HTML.escape($0))</code>)" } ?? " (no tokenizer found: ids shown as #id; give --tokenizer)") + "</p>\n"
        for needed in tokenizers.needed { html += "<p class=\"where\">\(HTML.escape(needed))</p>\n" }
        html += cards.joined() + "</body>\n</html>\n"
        let page = options.out + "/index.html"
        try AtomicFile.write(Array(html.utf8), to: page)
        return Summary(page: page, samples_total: keys.count, samples_shown: chosen.count, images_written: written,
                       loss_curve: loss?.path, tokenizer: tokenizers.used, tokenizer_needed: tokenizers.needed)
    }

    /// `loss-curve.csv` (`step,loss,...`) of train-smoke: in the workspace, in its `train-smoke/` folder (as
    /// `make demo` runs it), or in its parent (train-smoke's own folder holds `train/`).
    static func lossCurve(near root: String) -> (path: String, points: [(x: Double, y: Double)])? {
        let parent = (root as NSString).deletingLastPathComponent
        for path in [root + "/loss-curve.csv", root + "/train-smoke/loss-curve.csv", (parent.isEmpty ? "." : parent) + "/loss-curve.csv"] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let points = text.split(separator: "\n").dropFirst().compactMap { line -> (x: Double, y: Double)? in
                let fields = line.split(separator: ",")
                guard fields.count >= 2, let x = Double(fields[0]), let y = Double(fields[1]) else { return nil }
                return (x, y)
            }
            if !points.isEmpty { return (path, points) }
        }
        return nil
    }

    static func countTable(_ what: String, _ unit: String, _ rows: [(String, Int)], id: String) -> String {
        var s = "<table id=\"\(id)\"><thead><tr><th>\(what)</th><th>\(unit)</th></tr></thead><tbody>\n"
        for (name, n) in rows {
            s += "<tr\(id == "problems" && n > 0 ? " class=\"bad\"" : "")><td>\(HTML.escape(name))</td><td class=\"n\">\(n)</td></tr>\n"
        }
        return s + "</tbody></table>\n"
    }

    static func head(title: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>\(HTML.escape(title))</title>
        <style>
        body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
        code { background: #f3f3f3; padding: 0 3px; }
        .where, .legend, .meta { color: #555; font-size: 0.9em; }
        .tables { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
        table { border-collapse: collapse; font-size: 0.9em; }
        th, td { border-bottom: 1px solid #ddd; padding: 2px 10px; text-align: left; }
        td.n { text-align: right; font-variant-numeric: tabular-nums; }
        tr.bad td { color: #b00; font-weight: bold; }
        .charts { display: flex; flex-wrap: wrap; gap: 12px; }
        .sample { border: 1px solid #ccc; border-radius: 6px; padding: 10px 14px; margin: 14px 0; display: grid;
                  grid-template-columns: minmax(0, max-content) minmax(300px, 1fr); gap: 14px; }
        .sample h3 { grid-column: 1 / -1; margin: 0; font-size: 1em; font-family: monospace; }
        .sample .meta { grid-column: 1 / -1; margin: 0; }
        .pic { position: relative; max-width: 100%; line-height: 0; background: #eee; }
        .pic img { width: 100%; height: auto; image-rendering: pixelated; }
        .pic svg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
        .conv p { margin: 4px 0; white-space: pre-wrap; }
        .conv .from { font-weight: bold; margin-right: 6px; }
        .tokens { grid-column: 1 / -1; display: flex; flex-wrap: wrap; row-gap: 3px; font-family: monospace; font-size: 12px; line-height: 1.6; }
        .tok { padding: 1px 2px; margin: 0 1px; border-radius: 3px; white-space: pre; }
        .tok.s { background: #cdeccd; }
        .tok.m { background: #e6e6e6; color: #666; }
        .tok.i { background: #f6d28b; }
        </style>
        </head>
        <body>

        """
    }
}

/// The tokenizer whose strings label the tokens: the one given (used whatever its sha256), else the workspace's
/// `tokenizer.json` or `tokenizer.model`, else the file a tokenize run recorded reading (its lineage params'
/// `recorded.tokenizer_path`), each only when its sha256 equals the samples'. When none is, `needed` says which file
/// (path + sha256) to pass with `--tokenizer`.
struct TokenizerLookup {
    let candidates: [String]
    let explicit: Bool
    /// tokenizer sha256 → the paths tokenize runs read it from, latest first.
    let recorded: [String: [String]]
    private var loaded: [String: (any TextTokenizer)?] = [:]
    private(set) var used: String?
    private(set) var needed: [String] = []

    init(explicit path: String?, workspace: Workspace, recorded: [String: [String]] = [:]) {
        explicit = path != nil
        candidates = path.map { [$0] } ?? [workspace.root + "/tokenizer.json", workspace.root + "/tokenizer.model"]
        self.recorded = recorded
    }

    /// The tokenizer files the catalog's tokenize runs recorded, by the sha256 their config names.
    static func recorded(_ catalog: Catalog) throws -> [String: [String]] {
        var out: [String: [String]] = [:]
        for run in try catalog.lineageRunParams(stage: TokenizeStep.name) {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(run.params.utf8))) as? [String: Any],
                  let sha256 = object["tokenizer_sha256"] as? String,
                  let path = (object["recorded"] as? [String: Any])?["tokenizer_path"] as? String else { continue }
            if !(out[sha256]?.contains(path) ?? false) { out[sha256, default: []].append(path) }
        }
        return out
    }

    mutating func tokenizer(sha256: String) -> (any TextTokenizer)? {
        if let hit = loaded[sha256] { return hit }
        var found: (any TextTokenizer)?
        let paths = explicit ? candidates : candidates + (recorded[sha256] ?? [])
        var changed: [(path: String, now: String)] = []
        for path in paths where FileManager.default.fileExists(atPath: path) {
            guard let t = try? loadTokenizer(path) else { continue }
            if explicit || t.sha256 == sha256 {
                found = t
                used = path
                break
            }
            if recorded[sha256]?.contains(path) ?? false { changed.append((path, t.sha256)) }
        }
        loaded[sha256] = found
        if found == nil && !explicit {
            let wanted = "give --tokenizer the file whose sha256 is \(sha256)"
            if let path = recorded[sha256]?.first {
                if let now = changed.first(where: { $0.path == path }) {
                    needed.append("the samples were tokenized with \(path) (sha256 \(sha256)), which has changed since "
                                  + "(sha256 now \(now.now)); \(wanted)")
                } else {
                    needed.append("the samples were tokenized with \(path) (sha256 \(sha256)), which is no longer there; "
                                  + "\(wanted) (that file, or a copy of it)")
                }
            } else {
                needed.append("no tokenizer file with the samples' sha256 \(sha256) is recorded or in the workspace; \(wanted)")
            }
        }
        return found
    }
}
