import CArchive
import Foundation
import VLMCore

/// Reads a text file line by line, gzip- (or bzip2-, xz-, zstd-) compressed or not, through libarchive's raw
/// format: memory stays at one block plus the longest line, however long the file.
///
/// ```swift
/// let reader = try LineFileReader(path: "cc3m.tsv.gz")
/// while let (bytes, number) = try reader.next() { print(number, bytes.count) }
/// ```
public final class LineFileReader {
    public let path: String
    /// A line longer than this is an error naming its number (a binary file read as text, or no newlines).
    public var maxLineBytes = 1 << 20
    private let handle: OpaquePointer?

    public init(path: String) throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else {
            throw VLMError(.notFound, file: path, "list file does not exist")
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        if size == 0 {
            handle = nil   // libarchive's raw format refuses an empty file; it simply has no lines
            return
        }
        guard let a = archive_read_new() else { throw VLMError.io(file: path, "archive_read_new failed") }
        archive_read_support_filter_all(a)
        archive_read_support_format_raw(a)
        guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK else {
            let message = archive_error_string(a).map { String(cString: $0) } ?? "unknown libarchive error"
            archive_read_free(a)
            throw VLMError(.badInput, file: path, "cannot open: \(message)")
        }
        var entry: OpaquePointer?
        guard archive_read_next_header(a, &entry) == ARCHIVE_OK else {
            let message = archive_error_string(a).map { String(cString: $0) } ?? "unknown libarchive error"
            archive_read_free(a)
            throw VLMError(.badInput, file: path, "cannot read: \(message)")
        }
        handle = a
    }

    deinit { if let handle { archive_read_free(handle) } }

    private var block = [UInt8](repeating: 0, count: 1 << 16)
    private var blockCount = 0
    private var blockStart = 0
    private var atEnd = false
    /// Lines returned so far.
    public private(set) var lineNumber = 0

    /// The next line's bytes (without "\n" or "\r\n") and its 1-based number; nil at the end. A last line
    /// without a newline counts.
    public func next() throws -> (bytes: [UInt8], number: Int)? {
        guard let handle else { return nil }
        var line: [UInt8] = []
        while true {
            if blockStart < blockCount {
                let found = block[blockStart..<blockCount].firstIndex(of: 0x0A)
                let end = found ?? blockCount
                line.append(contentsOf: block[blockStart..<end])
                blockStart = found.map { $0 + 1 } ?? blockCount
                if found != nil { break }
                if line.count > maxLineBytes {
                    throw VLMError(.badInput, file: path, record: "line \(lineNumber + 1)",
                                   "longer than \(maxLineBytes) bytes without a newline: not a text list")
                }
                continue
            }
            if atEnd { break }
            let n = block.withUnsafeMutableBytes { archive_read_data(handle, $0.baseAddress, $0.count) }
            if n < 0 {
                let message = archive_error_string(handle).map { String(cString: $0) } ?? "unknown libarchive error"
                throw VLMError(.corrupt, file: path, record: "after line \(lineNumber)", "read failed: \(message)")
            }
            blockStart = 0
            blockCount = n
            if n == 0 {
                atEnd = true
                if line.isEmpty { return nil }
                break
            }
        }
        lineNumber += 1
        if line.last == 0x0D { line.removeLast() }
        return (line, lineNumber)
    }
}
