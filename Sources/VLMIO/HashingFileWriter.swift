import Dispatch
import Foundation
import VLMCore

/// An append-only writer for large files that must be hashed (shards): the caller fills aligned chunks while a
/// background thread computes the file's XXH3-128 (and SHA-256 when asked) and another writes the chunks with
/// `O_DIRECT`.
///
/// Why: writing a shard through the page cache and then reading it back to hash it costs more CPU than building
/// it. Here every byte is hashed from the chunk it was assembled in, and direct I/O skips the page-cache copy, so
/// assembling, hashing and writing overlap and each touches the data once. Filesystems that refuse `O_DIRECT`
/// (or an unaligned device) fall back to ordinary writes of the same chunks; the bytes and hash are the same.
///
/// ```swift
/// let out = try HashingFileWriter(path: tmp, sha256: true)
/// try out.write(header)
/// try out.write(record)                     // copied into the current chunk
/// let (sha256, bytes) = try out.finish()    // drain, fsync, close; out.xxh3_128 is set too
/// ```
/// Not thread-safe: one thread appends; `finish()` may be called from another thread once appending is over.
public final class HashingFileWriter: @unchecked Sendable {
    public let path: String
    /// Bytes appended so far.
    public private(set) var offset = 0
    /// XXH3_128bits of the file (32 hex digits, as `xxhsum -H2` prints it), set by `finish()`.
    public private(set) var xxh3_128: String?

    /// Direct I/O wants buffers, offsets and lengths aligned to the device's logical block; 4 KiB covers them all here.
    static let alignment = 4096
    static let hugePage = 2 << 20
    /// Linux's `O_DIRECT` (hidden from Swift's Glibc module behind `_GNU_SOURCE`); the value is per architecture.
    #if arch(arm64)
    static let directFlag: Int32 = 0o200000
    #else
    static let directFlag: Int32 = 0o40000
    #endif
    private let chunkSize: Int
    private var fd: Int32
    private let buffers: [UnsafeMutableRawPointer]
    private let state = PipelineState()
    private let hashQueue = DispatchQueue(label: "vlmdata.hashing-writer.hash")
    private let ioQueue = DispatchQueue(label: "vlmdata.hashing-writer.io")
    private let inFlight = DispatchGroup()
    private let freeSlots: DispatchSemaphore
    /// nil unless asked for: SHA-256 runs at about 2 GB/s per core, XXH3 at memory speed.
    private var hasher: StreamingSHA256?   // touched only on hashQueue until the pipeline drains
    private let checksum = StreamingXXH3_128()   // likewise
    private var current: Int?   // index of the chunk being filled
    private var filled = 0
    private var chunkStart = 0
    private var finished = false

    /// Everything the background queues share with the appending thread, under one lock.
    private final class PipelineState: @unchecked Sendable {
        let lock = NSLock()
        var free: [Int] = []   // indices into `buffers`
        var failure: VLMError?
        var direct = false
    }

    /// Creates (truncates) `path`. `chunkSize` is rounded up to the alignment; `chunks` buffers are in flight at most.
    /// `directIO: false` writes through the page cache (what a filesystem without `O_DIRECT` gets anyway).
    /// `sha256: false` computes only the XXH3-128; `finish()` then returns a nil sha256.
    public init(path: String, chunkSize: Int = 4 << 20, chunks: Int = 4, directIO: Bool = true, sha256: Bool = true) throws {
        self.path = path
        hasher = sha256 ? StreamingSHA256() : nil
        self.chunkSize = max(1, (chunkSize + Self.alignment - 1) / Self.alignment) * Self.alignment
        var descriptor: Int32 = -1
        if directIO { descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | Self.directFlag, 0o644) }
        let direct = descriptor >= 0
        if !direct { descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard descriptor >= 0 else {
            throw VLMError.io(file: path, "cannot open for writing: \(String(cString: strerror(errno)))")
        }
        fd = descriptor
        var buffers: [UnsafeMutableRawPointer] = []
        let size = self.chunkSize
        for _ in 0 ..< max(2, chunks) {
            guard let memory = Self.spareBuffers.take(size: size) else {
                buffers.forEach { Self.spareBuffers.give($0, size: size) }
                Foundation.close(descriptor)
                throw VLMError.io(file: path, "cannot allocate \(size)-byte write buffers")
            }
            buffers.append(memory)
        }
        self.buffers = buffers
        freeSlots = DispatchSemaphore(value: buffers.count)
        state.free = Array(buffers.indices)
        state.direct = direct
    }

    deinit {
        // libdispatch traps when a semaphore is freed below its initial value: give back the chunk still held.
        if current != nil { freeSlots.signal() }
        if fd >= 0 { Foundation.close(fd) }
        buffers.forEach { Self.spareBuffers.give($0, size: chunkSize) }
    }

    /// Chunk buffers outlive their writer (a shard run opens one writer per shard): fresh buffers must be faulted
    /// in and zeroed by the kernel, which cost 5% of a shard run's CPU before they were reused.
    private static let spareBuffers = BufferPool(keep: 32)

    /// Puts `count` buffers for writers of `chunkSize` bytes into the spare pool, each touched once per page so the
    /// kernel has faulted it in (and zeroed it) before a writer needs it. Call it on an idle thread before the
    /// writers start: first touches of fresh memory were still 4% of a shard run's CPU, on the writers' threads.
    public static func prepareBuffers(chunkSize: Int, count: Int) {
        let size = max(1, (chunkSize + alignment - 1) / alignment) * alignment
        var ready: [UnsafeMutableRawPointer] = []
        for _ in 0 ..< count {
            guard let memory = spareBuffers.take(size: size) else { break }
            for page in stride(from: 0, to: size, by: alignment) { memory.storeBytes(of: 0, toByteOffset: page, as: UInt8.self) }
            ready.append(memory)
        }
        ready.forEach { spareBuffers.give($0, size: size) }
    }

    private final class BufferPool: @unchecked Sendable {
        private let lock = NSLock()
        private var spare: [Int: [UnsafeMutableRawPointer]] = [:]
        private let keep: Int

        init(keep: Int) { self.keep = keep }

        /// A spare buffer of `size` bytes, or a new one: 2 MiB-aligned and on huge pages where the kernel allows
        /// them, since a direct write pins its buffer page by page and 4 MiB in 4 KiB pages is a thousand pins.
        func take(size: Int) -> UnsafeMutableRawPointer? {
            if let reused = lock.withLock({ spare[size]?.popLast() }) { return reused }
            var memory: UnsafeMutableRawPointer?
            guard posix_memalign(&memory, HashingFileWriter.hugePage, size) == 0, let memory else { return nil }
            _ = madvise(memory, size, MADV_HUGEPAGE)
            return memory
        }

        func give(_ buffer: UnsafeMutableRawPointer, size: Int) {
            let kept = lock.withLock {
                guard spare.values.reduce(0, { $0 + $1.count }) < keep else { return false }
                spare[size, default: []].append(buffer)
                return true
            }
            if !kept { free(buffer) }
        }
    }

    /// Whether the file is being written with `O_DIRECT` (false after a fallback to ordinary writes).
    public var usesDirectIO: Bool { state.lock.withLock { state.direct } }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let chunk = try currentChunk()
            let n = min(bytes.count - done, chunkSize - filled)
            (chunk + filled).copyMemory(from: bytes.baseAddress! + done, byteCount: n)
            try advance(by: n)
            done += n
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in try write(raw) }
    }

    public func write(zeros count: Int) throws {
        var left = count
        while left > 0 {
            let chunk = try currentChunk()
            let n = min(left, chunkSize - filled)
            (chunk + filled).initializeMemory(as: UInt8.self, repeating: 0, count: n)
            try advance(by: n)
            left -= n
        }
    }

    /// Writes what is left, waits for the hash and the writes, fsyncs (`durable`) and closes the file.
    /// Returns the SHA-256 (lower-case hex; nil unless asked for) and size of everything appended.
    public func finish(durable: Bool = true) throws -> (sha256: String?, bytes: Int) {
        guard !finished else { throw VLMError(.invalidArgument, file: path, "finish called twice") }
        finished = true
        if filled > 0 { submit() }
        inFlight.wait()
        defer { Foundation.close(fd); fd = -1 }
        if let failure = state.lock.withLock({ state.failure }) { throw failure }
        // Direct writes of the last chunk were padded to the alignment; cut the file back to what was appended.
        guard ftruncate(fd, off_t(offset)) == 0 else {
            throw VLMError.io(file: path, "truncate to \(offset) bytes failed: \(String(cString: strerror(errno)))")
        }
        if durable, fsync(fd) != 0 {
            throw VLMError.io(file: path, "fsync failed: \(String(cString: strerror(errno)))")
        }
        xxh3_128 = checksum.finalize()
        return (hasher?.finalize(), offset)
    }

    /// Stops appending and closes the file without finishing it (the caller removes it).
    public func abandon() {
        guard !finished else { return }
        finished = true
        inFlight.wait()
        Foundation.close(fd)
        fd = -1
    }

    private func currentChunk() throws -> UnsafeMutableRawPointer {
        if let current { return buffers[current] }
        guard !finished else { throw VLMError(.invalidArgument, file: path, "write after finish") }
        freeSlots.wait()
        let (chunk, failure) = state.lock.withLock { (state.free.removeLast(), state.failure) }
        current = chunk
        if let failure {
            // A background write failed: stop here rather than assemble more of a file that cannot be completed.
            throw failure
        }
        return buffers[chunk]
    }

    private func advance(by n: Int) throws {
        filled += n
        offset += n
        if filled == chunkSize { submit() }
    }

    /// Hands the current chunk to the hash queue, which passes it on to the I/O queue; the buffer comes back free.
    private func submit() {
        guard let chunk = current else { return }
        let length = filled, fileOffset = chunkStart
        current = nil
        filled = 0
        chunkStart += length
        hashQueue.async(group: inFlight) { [self] in
            hasher?.update(UnsafeRawBufferPointer(start: buffers[chunk], count: length))
            checksum.update(UnsafeRawBufferPointer(start: buffers[chunk], count: length))
            ioQueue.async(group: inFlight) { [self] in
                writeChunk(buffers[chunk], length: length, at: fileOffset)
                state.lock.withLock { state.free.append(chunk) }
                freeSlots.signal()
            }
        }
    }

    /// Writes one chunk at its offset (I/O queue). A direct write is padded with zeros to the alignment; `finish`
    /// truncates the padding. EINVAL from a direct write turns direct I/O off for the rest of the file.
    private func writeChunk(_ chunk: UnsafeMutableRawPointer, length: Int, at fileOffset: Int) {
        if state.lock.withLock({ state.failure != nil }) { return }
        var direct = state.lock.withLock { state.direct }
        var total = length
        if direct {
            total = (length + Self.alignment - 1) / Self.alignment * Self.alignment
            (chunk + length).initializeMemory(as: UInt8.self, repeating: 0, count: total - length)
        }
        var done = 0
        while done < total {
            let n = pwrite(fd, chunk + done, total - done, off_t(fileOffset + done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL && direct {
                    let flags = fcntl(fd, F_GETFL)
                    if flags >= 0, fcntl(fd, F_SETFL, flags & ~Self.directFlag) == 0 {
                        direct = false
                        total = length
                        state.lock.withLock { state.direct = false }
                        continue
                    }
                }
                let message = "write of \(total - done) bytes at \(fileOffset + done) failed: \(String(cString: strerror(errno)))"
                state.lock.withLock { state.failure = state.failure ?? VLMError.io(file: path, message) }
                return
            }
            done += n
        }
    }
}
