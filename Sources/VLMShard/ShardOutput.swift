import Foundation
import VLMCore

/// glibc's `copy_file_range` (not visible to Swift without _GNU_SOURCE), looked up once; nil if absent.
private typealias CopyFileRange = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int
private let kernelCopy: CopyFileRange? = dlsym(nil, "copy_file_range").map { unsafeBitCast($0, to: CopyFileRange.self) }

/// A buffered, append-only tar output that can also copy a byte range of another file in the kernel
/// (`copy_file_range`), so pixel content moves from the pixel shard to the training shard without passing
/// through user space. Not thread-safe; hand it to one thread at a time.
///
/// ```swift
/// let out = try ShardOutput(path: tmp)
/// let tar = TarWriter(output: out)
/// try tar.add(name: "k.pixels.npy", size: n) { _ in try out.copy(from: pixelFD, at: offset, count: n) }
/// ```
public final class ShardOutput: TarOutput, @unchecked Sendable {
    public let path: String
    public private(set) var offset = 0
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let bufferLimit = 1 << 20

    public init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw VLMError.io(file: path, "cannot open for writing: \(String(cString: strerror(errno)))") }
        buffer.reserveCapacity(bufferLimit)
    }

    deinit {
        if fd >= 0 { Foundation.close(fd) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > bufferLimit { try flush() }
        if bytes.count >= bufferLimit / 4 {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        offset += bytes.count
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    public func write(zeros count: Int) throws {
        if count > 0 { try write([UInt8](repeating: 0, count: count)) }
    }

    /// Appends `count` bytes of the file open as `source`, starting at `sourceOffset`.
    public func copy(from source: Int32, at sourceOffset: Int, count: Int) throws {
        try flush()
        var inOffset = Int64(sourceOffset)
        var left = count
        while left > 0 {
            guard let copyFileRange = kernelCopy else {
                try copyByReading(from: source, at: Int(inOffset), count: left)
                break
            }
            let n = copyFileRange(source, &inOffset, fd, nil, left, 0)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP {
                    try copyByReading(from: source, at: Int(inOffset), count: left)
                    break
                }
                throw VLMError.io(file: path, "copy_file_range failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw VLMError(.corrupt, file: path, "source file ended \(left) bytes early while copying") }
            left -= n
        }
        offset += count
    }

    private func copyByReading(from source: Int32, at start: Int, count: Int) throws {
        var chunk = [UInt8](repeating: 0, count: min(count, 1 << 20))
        var done = 0
        while done < count {
            let want = min(chunk.count, count - done)
            let n = chunk.withUnsafeMutableBytes { pread(source, $0.baseAddress!, want, off_t(start + done)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw VLMError.io(file: path, "reading the copy source failed at \(start + done)") }
            try chunk.withUnsafeBytes { try writeAll(UnsafeRawBufferPointer(rebasing: $0[0 ..< n])) }
            done += n
        }
    }

    public func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
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

    /// Flushes and fsyncs.
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
