import CArchive
import Foundation
import VLMCore

/// Reads members of a zip or tar (any format and compression libarchive knows) in one sequential pass,
/// without unpacking anything to disk. Member names are checked: absolute paths and `..` components are
/// reported as unsafe and never followed.
///
/// ```swift
/// let archive = try ArchiveReader(path: "train2017.zip")
/// try archive.forEachEntry { entry in
///     guard entry.isRegularFile, entry.isSafe else { return .skip }
///     let bytes = try entry.readAll()
///     return .continue
/// }
/// ```
public final class ArchiveReader {
    public let path: String
    private let handle: OpaquePointer

    public enum Step { case `continue`, stop, skip }

    /// What a member is. Links are reported with their target and never followed.
    public enum Kind: Equatable, Sendable {
        case file
        case directory
        case symbolicLink(target: String)
        case hardLink(target: String)
        case other
    }

    /// Caps on one member's decompressed bytes, so a small archive cannot expand into a huge read.
    public struct Limits: Sendable {
        /// Most decompressed bytes one member may have.
        public var maxBytes: Int
        /// Most decompressed bytes per compressed byte, once `ratioFloor` bytes have been read.
        public var maxRatio: Int
        public var ratioFloor: Int

        public init(maxBytes: Int = 256 << 20, maxRatio: Int = 100, ratioFloor: Int = 1 << 20) {
            self.maxBytes = maxBytes
            self.maxRatio = maxRatio
            self.ratioFloor = ratioFloor
        }
    }

    /// A member that passed a `Limits` cap; reading it stopped there.
    public struct LimitExceeded: Error, CustomStringConvertible, Sendable {
        public var member: String
        public var message: String
        public var description: String { message }
    }

    /// One member, valid only inside the `forEachEntry` callback.
    public struct Entry {
        public let name: String
        public let size: Int
        public let kind: Kind
        fileprivate let reader: ArchiveReader

        /// True for a regular file (not a link, folder or device).
        public var isRegularFile: Bool { kind == .file }

        /// False for absolute names and names with a `..` component.
        public var isSafe: Bool { ArchiveReader.isSafeMemberName(name) }

        /// Reads the member's bytes (at most `limit`; more is an error naming the member).
        public func readAll(limit: Int = 1 << 31) throws -> [UInt8] {
            try reader.readData(member: name, expected: size, limit: limit)
        }

        /// Streams the member's bytes to `body` in blocks of at most 64 KiB, holding no more than one block.
        /// Throws `LimitExceeded` when the member passes `limits` (a decompression bomb), having read no further.
        public func stream(limits: Limits = Limits(), _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
            try reader.streamData(member: name, declared: size, limits: limits, body)
        }
    }

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw VLMError(.notFound, file: path, "archive does not exist")
        }
        guard let a = archive_read_new() else { throw VLMError.io(file: path, "archive_read_new failed") }
        handle = a
        archive_read_support_filter_all(a)
        archive_read_support_format_all(a)
        guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK else {
            let message = ArchiveReader.errorString(a)
            archive_read_free(a)
            throw VLMError(.badInput, file: path, "cannot open archive: \(message)")
        }
    }

    deinit { archive_read_free(handle) }

    static func errorString(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unknown libarchive error"
    }

    /// Visits every member in archive order. A damaged archive stops with an error naming the archive and the
    /// last good member; members already visited stay visited.
    public func forEachEntry(_ body: (Entry) throws -> Step) throws {
        var entryPointer: OpaquePointer?
        var last = "(start)"
        while true {
            let rc = archive_read_next_header(handle, &entryPointer)
            if rc == ARCHIVE_EOF { return }
            guard rc == ARCHIVE_OK || rc == ARCHIVE_WARN, let entryPointer else {
                throw VLMError(.corrupt, file: path, record: "after member \(last)", "archive read failed: \(ArchiveReader.errorString(handle))")
            }
            let name = archive_entry_pathname(entryPointer).map { String(cString: $0) } ?? ""
            let size = Int(archive_entry_size(entryPointer))
            let kind: Kind
            if let target = archive_entry_hardlink(entryPointer) {
                kind = .hardLink(target: String(cString: target))
            } else {
                switch archive_entry_filetype(entryPointer) {
                case 0o100000: kind = .file
                case 0o040000: kind = .directory
                case 0o120000: kind = .symbolicLink(target: archive_entry_symlink(entryPointer).map { String(cString: $0) } ?? "")
                default: kind = .other
                }
            }
            last = name
            switch try body(Entry(name: name, size: size, kind: kind, reader: self)) {
            case .stop: return
            case .continue, .skip: continue
            }
        }
    }

    fileprivate func streamData(member: String, declared: Int, limits: Limits,
                                _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        if declared > limits.maxBytes {
            throw LimitExceeded(member: member, message: "member declares \(declared) bytes, over the \(limits.maxBytes)-byte cap on one image: not read")
        }
        let rawStart = archive_filter_bytes(handle, -1)
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { archive_read_data(handle, $0.baseAddress, $0.count) }
            if n == 0 { return }
            guard n > 0 else {
                throw VLMError(.corrupt, file: path, record: member, "cannot read member: \(ArchiveReader.errorString(handle))")
            }
            total += n
            if total > limits.maxBytes {
                throw LimitExceeded(member: member, message: "decompression bomb: member expands past the \(limits.maxBytes)-byte cap on one image (stopped there)")
            }
            if total > limits.ratioFloor {
                let compressed = max(Int(archive_filter_bytes(handle, -1) - rawStart), 1)
                if total / compressed > limits.maxRatio {
                    throw LimitExceeded(member: member, message: "decompression bomb: member expands more than \(limits.maxRatio)x (\(total) bytes from \(compressed) compressed, stopped there)")
                }
            }
            try chunk.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    fileprivate func readData(member: String, expected: Int, limit: Int) throws -> [UInt8] {
        guard expected <= limit else {
            throw VLMError(.badInput, file: path, record: member, "member is \(expected) bytes, over the \(limit)-byte limit")
        }
        var out = [UInt8]()
        out.reserveCapacity(max(expected, 0))
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { archive_read_data(handle, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else {
                throw VLMError(.corrupt, file: path, record: member, "cannot read member: \(ArchiveReader.errorString(handle))")
            }
            out.append(contentsOf: chunk[0..<n])
            guard out.count <= limit else {
                throw VLMError(.badInput, file: path, record: member, "member is over the \(limit)-byte limit")
            }
        }
        return out
    }

    /// True unless `name` is absolute, has a `..` component, or is empty.
    public static func isSafeMemberName(_ name: String) -> Bool {
        guard !name.isEmpty, !name.hasPrefix("/"), !name.hasPrefix("\\") else { return false }
        let parts = name.split(whereSeparator: { $0 == "/" || $0 == "\\" })
        return !parts.contains("..") && !(name.count >= 2 && name.dropFirst().first == ":")
    }

    /// True if the file at `path` looks like an archive libarchive can read (zip, tar, compressed tar).
    public static func isArchive(path: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { return false }
        let lower = path.lowercased()
        return [".zip", ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.xz", ".tar.bz2"].contains { lower.hasSuffix($0) }
    }
}
