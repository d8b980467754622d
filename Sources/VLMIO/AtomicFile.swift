import Foundation
import VLMCore

/// Write-to-temp-then-rename: a reader sees the old file or the complete new one, never a partial one.
///
/// ```swift
/// try AtomicFile.write(data, to: "/ws/shards/train-000000.tar")
/// ```
public enum AtomicFile {
    /// The temporary name used for `path` while it is being written (same folder, so rename is atomic).
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
    }

    /// Writes `bytes` to a temporary file, fsyncs it, and renames it over `path`.
    ///
    /// `durable: false` skips the two fsyncs: readers still never see a partial file (the rename is atomic), but
    /// after a power loss the file may be missing. For outputs that are cheap to regenerate (synthetic data).
    public static func write(_ bytes: some Collection<UInt8>, to path: String, durable: Bool = true) throws {
        try withWriter(to: path, durable: durable) { writer in try writer.write(Array(bytes)) }
    }

    /// Opens a temporary file beside `path`, calls `body` with a writer, then fsyncs and renames it into place.
    /// On any error the partial file is removed and `path` is untouched.
    public static func withWriter<T>(to path: String, durable: Bool = true, _ body: (FileWriter) throws -> T) throws -> T {
        let tmp = temporaryPath(for: path)
        let writer = try FileWriter(path: tmp)
        do {
            let result = try body(writer)
            if durable { try writer.sync() }
            try writer.close()
            guard rename(tmp, path) == 0 else {
                throw VLMError.io(file: path, "rename from \(tmp) failed: \(String(cString: strerror(errno)))")
            }
            if durable { syncDirectory(of: path) }
            return result
        } catch {
            try? writer.close()
            unlink(tmp)
            throw error
        }
    }

    /// fsync the folder so the rename itself survives a crash.
    public static func syncDirectory(of path: String) {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let fd = open(dir, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}

/// A buffered, append-only file writer over a POSIX descriptor.
/// Not thread-safe: hand it to one thread at a time.
public final class FileWriter: @unchecked Sendable {
    public let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let bufferLimit = 1 << 20
    /// Bytes written so far, including buffered ones.
    public private(set) var offset: Int = 0

    public init(path: String, append: Bool = false) throws {
        self.path = path
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else {
            throw VLMError.io(file: path, "cannot open for writing: \(String(cString: strerror(errno)))")
        }
        if append { offset = Int(lseek(fd, 0, SEEK_END)) }
        buffer.reserveCapacity(bufferLimit)
    }

    deinit {
        if fd >= 0 { _ = try? flush(); Foundation.close(fd) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > bufferLimit { try flush() }
        if bytes.count >= bufferLimit {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        offset += bytes.count
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in try write(raw) }
    }

    public func write(zeros count: Int) throws {
        if count > 0 { try write([UInt8](repeating: 0, count: count)) }
    }

    public func flush() throws {
        guard !buffer.isEmpty else { return }
        let pending = buffer
        buffer.removeAll(keepingCapacity: true)
        try pending.withUnsafeBytes { raw in try writeAll(raw) }
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw VLMError.io(file: path, "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    public func sync() throws {
        try flush()
        guard fsync(fd) == 0 else { throw VLMError.io(file: path, "fsync failed: \(String(cString: strerror(errno)))") }
    }

    public func close() throws {
        guard fd >= 0 else { return }
        try flush()
        Foundation.close(fd)
        fd = -1
    }
}
