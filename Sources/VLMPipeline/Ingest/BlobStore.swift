import Foundation
import VLMCore
import VLMIO

/// The workspace's content-addressed image files: `blobs/ab/abcdef….jpg`, written to a temporary name and
/// renamed, one file per distinct sha256.
///
/// ```swift
/// let store = try BlobStore(root: workspace.root + "/blobs")
/// let sink = BlobSink(store: store)          // receives one body
/// syncer.submit(.init(id: 1, temporary: sink.temporaryPath, target: store.path(sha256: sha, format: "jpeg")))
/// ```
final class BlobStore: @unchecked Sendable {
    let root: String
    let temporary: String
    /// Temporary names: this process's id and a counter (the ingest lock keeps other runs out of `tmp`).
    private let process = getpid()
    private var counter = 0

    /// `sync`: fsync `root` when folders were made in it (off with `--no-fsync`).
    init(root: String, sync: Bool = true) throws {
        self.root = root
        temporary = root + "/tmp"
        // Left-over partial downloads of a killed run (the ingest lock is held, so no other run is writing).
        try? FileManager.default.removeItem(atPath: temporary)
        do { try FileManager.default.createDirectory(atPath: temporary, withIntermediateDirectories: true) } catch {
            throw VLMError.io(file: temporary, "cannot create folder: \(error.localizedDescription)")
        }
        // The 256 folders `ab/` up front, their entries synced once: the sync threads then never create one, so no
        // image is committed inside a folder whose own entry another thread has not synced yet.
        var created = false
        for i in 0..<256 {
            let folder = root + "/" + String(format: "%02x", i)
            if mkdir(folder, 0o755) == 0 {
                created = true
            } else if errno != EEXIST {
                throw VLMError.io(file: folder, "cannot create folder: \(String(cString: strerror(errno)))")
            }
        }
        if created && sync { try BlobSyncer.sync(path: root, directory: true) }
    }

    /// A fresh temporary file name (fetch thread only).
    func temporaryName() -> String {
        counter += 1
        return "\(temporary)/\(process)-\(counter).part"
    }

    func path(sha256: String, format: String) -> String {
        "\(root)/\(sha256.prefix(2))/\(sha256).\(format == "jpeg" ? "jpg" : format)"
    }
}

/// One attempt's body, written to a temporary file (hashed and probed later by a `BlobSyncer` thread). Each chunk
/// goes straight to the file (curl hands over up to 64 KiB at a time, so there is nothing to gain from buffering
/// it again).
final class BlobSink: URLFetchSink {
    let store: BlobStore
    let temporaryPath: String
    private var fd: Int32 = -1
    private var first: [UInt8] = []
    /// Set when the body could not be written to disk: the workspace, not the URL, is at fault.
    private(set) var writeError: VLMError?
    /// Once the file is handed to a `BlobSyncer` it is that one's to move; until then it is removed with the sink.
    private var handedOver = false
    var abortReason: String? { writeError?.description }

    init(store: BlobStore) {
        self.store = store
        temporaryPath = store.temporaryName()
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !handedOver { unlink(temporaryPath) }
    }

    func receive(_ chunk: UnsafeRawBufferPointer) -> Bool {
        if fd < 0 {
            fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                writeError = VLMError.io(file: temporaryPath, "cannot open for writing: \(String(cString: strerror(errno)))")
                return false
            }
        }
        var done = 0
        while done < chunk.count {
            let n = write(fd, chunk.baseAddress! + done, chunk.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                writeError = VLMError.io(file: temporaryPath, "write failed: \(String(cString: strerror(errno)))")
                return false
            }
            done += n
        }
        if first.count < 8 { first.append(contentsOf: chunk.prefix(8 - first.count)) }
        return true
    }

    /// True when the body starts like a JPEG or PNG (a bad one is a decode error, anything else is not an image).
    var looksLikeImage: Bool {
        first.starts(with: [0xFF, 0xD8, 0xFF]) || first.starts(with: [0x89, 0x50, 0x4E, 0x47])
    }

    /// Closes the file; from here on a `BlobSyncer` owns it.
    func handOver() {
        if fd >= 0 { close(fd) }
        fd = -1
        handedOver = true
    }
}

/// Judges and stores bodies off the fetch thread. Each handed-over body file is read back (from the page cache),
/// hashed and probed with ingest coco's checks; a good JPEG or PNG is fsynced, renamed to its content-addressed
/// name (or dropped when that name exists, which is then fsynced itself) and its folder fsynced; anything else is
/// removed. One of a few threads does it, so a catalog row is committed only for an image that survives a power
/// loss, while hashing and the disk's flush latency overlap the downloads instead of stalling the one fetch
/// thread. Concurrent fsyncs also share the file system's journal commits.
///
/// ```swift
/// let syncer = BlobSyncer(store: store, threads: 16, fsync: true, wake: { fetcher.wakeup() })
/// syncer.submit(.init(id: 7, temporary: sink.temporaryPath, name: url))
/// for done in syncer.takeFinished() { ... }     // each body's probe and, when kept, where it is now
/// ```
final class BlobSyncer: @unchecked Sendable {
    struct Item: Sendable {
        var id: Int
        var temporary: String
        /// Names the body in probe messages (its URL).
        var name: String
    }

    struct Finished: Sendable {
        var id: Int
        var probe: ImageProbe
        /// Where the body is stored; nil when it is not kept.
        var location: String?
        /// Writing the workspace failed: the run must stop.
        var error: VLMError?
    }

    /// The bodies that are kept: decodable-looking JPEG and PNG.
    static func keeps(_ probe: ImageProbe) -> Bool {
        probe.status == .ok && (probe.format == "jpeg" || probe.format == "png")
    }

    let store: BlobStore
    let fsync: Bool
    private let wake: @Sendable () -> Void
    /// Guards `queue`, `queueStart` and `stopping`; the threads wait on it for work.
    private let work = NSCondition()
    private var queue: [Item] = []
    private var queueStart = 0
    private var stopping = false
    /// Guards `finished`, `outstanding` and `running`; the fetch thread waits on it for results (two conditions,
    /// so a finished item wakes the one thread that wants it, not every idle worker).
    private let results = NSCondition()
    private var finished: [Finished] = []
    /// Items submitted and not yet taken back by `takeFinished`'s caller.
    private var outstanding = 0
    private var running = 0

    init(store: BlobStore, threads: Int, fsync: Bool, wake: @escaping @Sendable () -> Void) {
        self.store = store
        self.fsync = fsync
        self.wake = wake
        running = max(1, threads)
        for i in 0..<running {
            let thread = Thread { [self] in serve() }
            thread.name = "vlmdata-blob-sync-\(i)"
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    /// Items handed over whose result has not been taken yet.
    var backlog: Int {
        results.lock()
        defer { results.unlock() }
        return outstanding
    }

    func submit(_ item: Item) {
        results.lock()
        outstanding += 1
        results.unlock()
        work.lock()
        queue.append(item)
        work.signal()
        work.unlock()
    }

    /// The items finished since the last call (any order).
    func takeFinished() -> [Finished] {
        results.lock()
        defer { results.unlock() }
        let done = finished
        finished.removeAll(keepingCapacity: true)
        outstanding -= done.count
        return done
    }

    /// Blocks until some item finishes that has not been taken yet (returns at once if one has, or if none is out).
    func waitForFinished() {
        results.lock()
        while finished.isEmpty && outstanding > 0 { results.wait() }
        results.unlock()
    }

    /// Stops the threads after the item each is on; items still queued are dropped (their files stay in
    /// `blobs/tmp`, which the next run clears). Returns when every thread has ended.
    func stop() {
        work.lock()
        stopping = true
        queue.removeAll()
        queueStart = 0
        work.broadcast()
        work.unlock()
        results.lock()
        while running > 0 { results.wait() }
        results.unlock()
    }

    private func serve() {
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            work.lock()
            while queueStart >= queue.count && !stopping { work.wait() }
            if stopping {
                work.unlock()
                results.lock()
                running -= 1
                results.broadcast()
                results.unlock()
                return
            }
            let item = queue[queueStart]
            queueStart += 1
            if queueStart >= 1024, queueStart * 2 >= queue.count {
                queue.removeFirst(queueStart)
                queueStart = 0
            }
            work.unlock()

            var outcome = Finished(id: item.id, probe: ImageProbe(status: .missing))
            do {
                outcome.probe = try Self.probe(file: item.temporary, name: item.name, buffer: &buffer)
                if Self.keeps(outcome.probe) {
                    let target = store.path(sha256: outcome.probe.sha256!, format: outcome.probe.format!)
                    try place(temporary: item.temporary, target: target)
                    outcome.location = target
                } else {
                    unlink(item.temporary)
                }
            } catch let error as VLMError { outcome.error = error } catch {
                outcome.error = VLMError.io(file: item.temporary, "\(error)")
            }
            results.lock()
            // One wake-up per batch: while earlier results wait untaken, the fetch thread has one coming already.
            let first = finished.isEmpty
            finished.append(outcome)
            results.signal()
            results.unlock()
            if first { wake() }
        }
    }

    /// Hashes and probes a body file (an empty body has none: judged as zero bytes).
    static func probe(file: String, name: String, buffer: inout [UInt8]) throws -> ImageProbe {
        var stream = ImageProbe.Stream()
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return stream.finish(name: name, expected: nil) }
            throw VLMError.io(file: file, "cannot read: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw VLMError.io(file: file, "cannot read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { stream.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return stream.finish(name: name, expected: nil)
    }

    /// fsync the body, rename it into place (or keep the copy already there, synced), fsync the folder.
    private func place(temporary: String, target: String) throws {
        let item = (temporary: temporary, target: target)
        let folder = (item.target as NSString).deletingLastPathComponent   // made by BlobStore.init
        if access(item.target, F_OK) == 0 {
            // The same image through another URL, or from a run killed before its row was committed.
            unlink(item.temporary)
            if fsync { try Self.sync(path: item.target, directory: false) }
        } else {
            if fsync { try Self.sync(path: item.temporary, directory: false) }
            guard rename(item.temporary, item.target) == 0 else {
                throw VLMError.io(file: item.target, "cannot rename \(item.temporary) to it: \(String(cString: strerror(errno)))")
            }
        }
        if fsync { try Self.sync(path: folder, directory: true) }
    }

    static func sync(path: String, directory: Bool) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0))
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open to fsync: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Foundation.fsync(fd) == 0 else {
            throw VLMError.io(file: path, "fsync failed: \(String(cString: strerror(errno)))")
        }
    }
}
