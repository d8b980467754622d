/// Receives progress from long-running work. The CLI shows a bar on a TTY and a summary line otherwise.
public protocol ProgressSink: Sendable {
    /// Starts a phase with a label and, when known, the total number of items.
    func start(_ label: String, total: Int?)
    /// Reports `count` more items done.
    func advance(by count: Int)
    /// Ends the phase with a one-line summary.
    func finish(_ summary: String)
}

/// Progress that goes nowhere (library use, tests).
public struct SilentProgress: ProgressSink {
    public init() {}
    public func start(_ label: String, total: Int?) {}
    public func advance(by count: Int) {}
    public func finish(_ summary: String) {}
}
