import Foundation
import VLMCore

/// Progress on stderr. On a terminal: one bar per phase, redrawn in place, with count, percent, rate and ETA (the
/// filled part coloured unless `NO_COLOR` is set, https://no-color.org). Otherwise (a log file, a pipe, CI): a plain
/// line with the same numbers every `interval` seconds (`VLMDATA_PROGRESS_INTERVAL`, default 10), no escape codes.
/// Each phase ends with one summary line. `quiet` prints nothing.
///
/// ```swift
/// let progress = TerminalProgress(quiet: false)
/// progress.start("patchify", total: 80)
/// progress.advance(by: 1)
/// progress.finish("80 images")   // "patchify: 80 images (3s)"
/// ```
public final class TerminalProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    private let isTTY: Bool
    private let quiet: Bool
    private let colour: Bool
    private let interval: Double
    private var label = ""
    private var total: Int?
    private var done = 0
    private var started = Date()
    private var lastDraw = Date.distantPast

    /// `quiet` suppresses everything but errors (for `--json` output on stdout there is nothing to suppress:
    /// progress always goes to stderr).
    public convenience init(quiet: Bool = false) {
        let env = ProcessInfo.processInfo.environment
        self.init(quiet: quiet, isTTY: isatty(STDERR_FILENO) == 1, environment: env)
    }

    /// For tests: the terminal test and the environment given.
    package init(quiet: Bool, isTTY: Bool, environment: [String: String]) {
        self.quiet = quiet
        self.isTTY = isTTY
        self.colour = isTTY && (environment["NO_COLOR"] ?? "").isEmpty && environment["TERM"] != "dumb"
        self.interval = environment["VLMDATA_PROGRESS_INTERVAL"].flatMap(Double.init).map { max($0, 0) } ?? 10
    }

    public func start(_ label: String, total: Int?) {
        lock.withLock {
            self.label = label
            self.total = total
            self.done = 0
            self.started = Date()
            // Plain lines start one interval in: a phase shorter than that prints only its summary.
            self.lastDraw = isTTY ? .distantPast : self.started
        }
    }

    /// Changes the running phase's label (live counts such as "3 ok, 1 failed") without restarting its count or rate.
    public func relabel(_ label: String) {
        lock.withLock { self.label = label }
    }

    public func advance(by count: Int) {
        lock.withLock {
            done += count
            guard !quiet else { return }
            let now = Date()
            if isTTY {
                if now.timeIntervalSince(lastDraw) < 0.1, done != total { return }
                lastDraw = now
                FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line(now: now, bar: true)).utf8))
            } else {
                guard now.timeIntervalSince(lastDraw) >= interval else { return }
                lastDraw = now
                FileHandle.standardError.write(Data((line(now: now, bar: false) + "\n").utf8))
            }
        }
    }

    /// `label [#####.....] done/total pct% rate/s ETA t` (the bar only on a terminal), or `label done rate/s t`
    /// when the total is unknown.
    func line(now: Date, bar: Bool) -> String {
        let elapsed = max(now.timeIntervalSince(started), 1e-6)
        let rate = Double(done) / elapsed
        var line = "\(label) "
        if let total, total > 0 {
            let fraction = min(Double(done) / Double(total), 1)
            if bar {
                let width = 30
                let filled = Int(fraction * Double(width))
                let hashes = String(repeating: "#", count: filled)
                line += "[" + (colour ? "\u{1B}[32m\(hashes)\u{1B}[0m" : hashes) + String(repeating: ".", count: width - filled) + "] "
            }
            line += "\(done)/\(total) \(Int(fraction * 100))%"
            let remaining = rate > 0 ? Double(total - done) / rate : .infinity
            line += String(format: " %.0f/s ETA %@", rate, Self.duration(remaining))
        } else {
            line += String(format: "%d %.0f/s %@", done, rate, Self.duration(elapsed))
        }
        return line
    }

    public func finish(_ summary: String) {
        lock.withLock {
            guard !quiet else { return }
            let elapsed = Date().timeIntervalSince(started)
            let prefix = isTTY ? "\r\u{1B}[2K" : ""
            FileHandle.standardError.write(Data("\(prefix)\(label): \(summary) (\(Self.duration(elapsed)))\n".utf8))
        }
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
        return "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
    }
}
