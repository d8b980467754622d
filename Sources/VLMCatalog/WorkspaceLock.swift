import Foundation
import VLMCore

/// One writer per stage per workspace: an advisory `flock` on `WORKSPACE/locks/STAGE.lock`, held for the stage's
/// run. Readers (`show`, `stream`, `verify`, the loader) never take it and never block.
///
/// The kernel drops a `flock` when its holder exits, however it exits (SIGKILL included), so a lock left by a dead
/// process is taken over at once; the file only says who holds it: pid, host, command and start time, written
/// after the lock is taken. A second writer gets an error naming the holder, or with `wait` waits its turn.
///
/// ```swift
/// let lock = try WorkspaceLock.acquire(catalog.workspace, stage: "shard")
/// defer { lock.release() }
/// ```
public final class WorkspaceLock: @unchecked Sendable {
    public let path: String
    public let stage: String
    private var fd: Int32

    /// What the CLI's `--wait` sets for the process: writing stages wait for a holder instead of failing.
    public static var waitByDefault: Bool {
        get { defaults.withLock { $0 } }
        set { defaults.withLock { $0 = newValue } }
    }
    private static let defaults = LockedValue(false)
    /// Lock files this process holds: taking one again (a stage run under lineage takes its lock, then the stage's
    /// own code takes it too) returns a nested value that releases nothing. `flock` would block on its own holder.
    private static let held = LockedValue(Set<String>())

    /// Who holds a lock, as its file records it.
    public struct Holder: Codable, Sendable, CustomStringConvertible {
        public var pid: Int32
        public var host: String
        public var stage: String
        public var command: String
        public var since: String

        public var description: String { "pid \(pid) on \(host) (`\(command)`, since \(since))" }
    }

    private init(path: String, stage: String, fd: Int32) {
        self.path = path
        self.stage = stage
        self.fd = fd
    }

    deinit { release() }

    /// Takes the lock of `stage` in `workspace`. Without `wait`, a held lock is a `conflict` error naming the holder;
    /// with it, waits (saying once on stderr whom it waits for) until the holder is done.
    public static func acquire(_ workspace: Workspace, stage: String, wait: Bool = WorkspaceLock.waitByDefault) throws -> WorkspaceLock {
        let dir = workspace.root + "/locks"
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw VLMError.io(file: dir, "cannot create the lock folder: \(error.localizedDescription)")
        }
        let path = dir + "/" + stage + ".lock"
        if held.withLock({ $0.contains(path) }) { return WorkspaceLock(path: path, stage: stage, fd: -1) }
        // Never O_TRUNC: the file may hold the current holder's record.
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open the lock file: \(String(cString: strerror(errno)))") }
        if !tryLock(fd) {
            let holder = readHolder(path)
            let who = holder.map { "\($0)" } ?? "another process"
            guard wait else {
                close(fd)
                throw VLMError(.conflict, file: workspace.root, record: "stage \(stage)",
                               "another \(stage) is writing this workspace: \(who) holds \(path). "
                               + "Wait for it with --wait, or write into another workspace")
            }
            FileHandle.standardError.write(Data("waiting for \(who) to finish \(stage) in \(workspace.root)\n".utf8))
            while flock(fd, LOCK_EX) != 0 {
                guard errno == EINTR else {
                    let reason = String(cString: strerror(errno))
                    close(fd)
                    throw VLMError.io(file: path, "cannot take the lock: \(reason)")
                }
            }
        }
        let lock = WorkspaceLock(path: path, stage: stage, fd: fd)
        lock.record()
        held.withLock { _ = $0.insert(path) }
        return lock
    }

    /// Releases the lock (also done when the value is freed or the process ends). The file stays, holding nothing.
    public func release() {
        guard fd >= 0 else { return }
        WorkspaceLock.held.withLock { _ = $0.remove(path) }
        _ = ftruncate(fd, 0)
        flock(fd, LOCK_UN)
        close(fd)
        fd = -1
    }

    /// The holder recorded in a lock file, if any (a released or never-held lock has none).
    public static func readHolder(_ path: String) -> Holder? {
        // The holder writes its record just after taking the lock: give it a moment.
        for attempt in 0 ..< 20 {
            if let data = FileManager.default.contents(atPath: path), !data.isEmpty,
               let holder = try? JSONDecoder().decode(Holder.self, from: data) {
                return holder
            }
            if attempt < 19 { usleep(10_000) }
        }
        return nil
    }

    private static func tryLock(_ fd: Int32) -> Bool {
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno != EINTR { return false }
        }
        return true
    }

    private func record() {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let name = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let holder = Holder(pid: getpid(), host: name, stage: stage,
                            command: CommandLine.arguments.joined(separator: " "),
                            since: ISO8601DateFormatter().string(from: Date()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(holder) else { return }
        _ = ftruncate(fd, 0)
        _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }
}

/// A value behind a lock (for the process-wide lock default).
final class LockedValue<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
