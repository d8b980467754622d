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

    /// One member, valid only inside the `forEachEntry` callback.
    public struct Entry {
        public let name: String
        public let size: Int
        public let isRegularFile: Bool
        fileprivate let reader: ArchiveReader

        /// False for absolute names and names with a `..` component.
        public var isSafe: Bool { ArchiveReader.isSafeMemberName(name) }

        /// Reads the member's bytes (at most `limit`; more is an error naming the member).
        public func readAll(limit: Int = 1 << 31) throws -> [UInt8] {
            try reader.readData(member: name, expected: size, limit: limit)
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
            let isFile = archive_entry_filetype(entryPointer) == 0o100000
            last = name
            switch try body(Entry(name: name, size: size, isRegularFile: isFile, reader: self)) {
            case .stop: return
            case .continue, .skip: continue
            }
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
