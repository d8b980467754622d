import Foundation

/// Runs `body(index, worker)` for every index in 0..<count on `jobs` threads (GCD worker threads, not Swift's
/// cooperative pool: decoding blocks). Each worker takes the next index from a shared counter, so slow images
/// do not stall a fixed partition. `worker` is 0..<jobs, for per-thread state such as a decoder.
public enum ImageWorkers {
    public static func run(count: Int, jobs: Int, _ body: @Sendable (_ index: Int, _ worker: Int) -> Void) {
        guard count > 0 else { return }
        let jobs = max(1, min(jobs, count))
        let counter = Counter()
        DispatchQueue.concurrentPerform(iterations: jobs) { worker in
            while true {
                let index = counter.next()
                if index >= count { break }
                body(index, worker)
            }
        }
    }

    /// The number of cores (the default for `--jobs`).
    public static var defaultJobs: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    public final class Counter: @unchecked Sendable {
        public init() {}
        public var peek: Int { lock.withLock { value } }
        private let lock = NSLock()
        private var value = 0
        public func next() -> Int { lock.withLock { defer { value += 1 }; return value } }
    }
}
