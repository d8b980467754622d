import Foundation
import VLMCore

/// A progress bar with count, rate and ETA on a TTY (stderr); one summary line per phase otherwise.
public final class TerminalProgress: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    private let isTTY: Bool
    private let quiet: Bool
    private var label = ""
    private var total: Int?
    private var done = 0
    private var started = Date()
    private var lastDraw = Date.distantPast

    /// `quiet` suppresses everything but errors (for `--json` output on stdout there is nothing to suppress:
    /// progress always goes to stderr).
    public init(quiet: Bool = false) {
        self.quiet = quiet
        self.isTTY = isatty(STDERR_FILENO) == 1
    }

    public func start(_ label: String, total: Int?) {
        lock.withLock {
            self.label = label
            self.total = total
            self.done = 0
            self.started = Date()
            self.lastDraw = .distantPast
        }
    }

    /// Changes the running phase's label (live counts such as "3 ok, 1 failed") without restarting its count or rate.
    public func relabel(_ label: String) {
        lock.withLock { self.label = label }
    }

    public func advance(by count: Int) {
        lock.withLock {
            done += count
            guard isTTY, !quiet else { return }
            let now = Date()
            if now.timeIntervalSince(lastDraw) < 0.1, done != total { return }
            lastDraw = now
            draw(now: now)
        }
    }

    private func draw(now: Date) {
        let elapsed = max(now.timeIntervalSince(started), 1e-6)
        let rate = Double(done) / elapsed
        var line = "\r\u{1B}[2K\(label) "
        if let total, total > 0 {
            let fraction = min(Double(done) / Double(total), 1)
            let width = 30
            let filled = Int(fraction * Double(width))
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            line += "\(done)/\(total) \(Int(fraction * 100))%"
            let remaining = rate > 0 ? Double(total - done) / rate : 0
            line += String(format: " %.0f/s ETA %@", rate, Self.duration(remaining))
        } else {
            line += String(format: "%d %.0f/s %@", done, rate, Self.duration(elapsed))
        }
        FileHandle.standardError.write(Data(line.utf8))
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
