import Foundation
import VLMCore

/// One member found while reading a tar: its full name (pax `path` / GNU long name applied), where its first
/// header block starts, where its content starts, its size, and its ustar type flag.
public struct TarEntry: Hashable, Sendable {
    public var name: String
    public var headerOffset: Int
    public var contentOffset: Int
    public var size: Int
    /// The ustar type flag: `0` (or NUL) regular file, `5` directory, `2` symlink, ...
    public var type: UInt8

    public var isRegularFile: Bool { type == UInt8(ascii: "0") || type == 0 || type == UInt8(ascii: "7") }
    public var contentEnd: Int { contentOffset + size }
    /// Offset of the next member's header (content padded to a whole 512-byte block).
    public var nextHeaderOffset: Int { contentEnd + TarHeader.padding(size) }
}

/// Reads a tar file: sequential iteration over its members, and random access to any byte range with `pread`.
///
/// Understands ustar (with `prefix`), pax extended headers (`path`, `size`) and GNU long names (`L`).
/// Reads are positional, so one reader may be shared by several threads.
///
/// ```swift
/// let tar = try TarReader(path: "shards/train-000000.tar")
/// for entry in try tar.entries() where entry.isRegularFile {
///     let bytes = try tar.read(entry)                     // or, from an index:
///     let same = try tar.read(at: entry.contentOffset, count: entry.size)
/// }
/// ```
public final class TarReader: @unchecked Sendable {
    public let path: String
    /// Size of the whole file in bytes.
    public let fileSize: Int
    private let fd: Int32
    private let memory: [UInt8]?

    /// Opens `path` for reading.
    public init(path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            throw VLMError(errno == ENOENT ? .notFound : .io, file: path, "cannot open tar: \(reason)")
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            Foundation.close(fd)
            throw VLMError.io(file: path, "cannot stat tar: \(reason)")
        }
        fileSize = Int(info.st_size)
        memory = nil
    }

    /// Reads a tar held in memory (`name` is used in error messages).
    public init(bytes: [UInt8], name: String = "<memory>") {
        path = name
        fd = -1
        fileSize = bytes.count
        memory = bytes
    }

    deinit {
        if fd >= 0 { Foundation.close(fd) }
    }

    /// Exactly `count` bytes at `offset`; throws `corrupt` if the file ends first.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            try read(at: offset, into: UnsafeMutableRawBufferPointer(buffer))
            initialized = count
        }
    }

    /// Fills `buffer` with the bytes at `offset`; throws `corrupt` if the file ends first.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        let count = buffer.count
        guard offset >= 0, offset + count <= fileSize else {
            throw VLMError(.corrupt, file: path, record: "bytes \(offset)..<\(offset + count)",
                           "range is beyond the end of the file (\(fileSize) bytes)")
        }
        if let memory {
            memory.withUnsafeBytes { raw in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset ..< offset + count]))
            }
            return
        }
        var done = 0
        while done < count {
            let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw VLMError.io(file: path, "read at \(offset + done) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 {
                throw VLMError(.corrupt, file: path, record: "offset \(offset + done)", "file ends early")
            }
            done += n
        }
    }

    /// The content of `entry`.
    public func read(_ entry: TarEntry) throws -> [UInt8] {
        try read(at: entry.contentOffset, count: entry.size)
    }

    /// Every member in file order (directories and links included; filter with `isRegularFile`).
    public func entries() throws -> [TarEntry] {
        var iterator = makeIterator()
        var out: [TarEntry] = []
        while let entry = try iterator.next() { out.append(entry) }
        return out
    }

    /// A sequential iterator starting at `offset` (a header boundary, 0 for the whole file).
    public func makeIterator(from offset: Int = 0) -> Iterator {
        Iterator(reader: self, offset: offset)
    }

    /// Walks the headers one member at a time; `next()` returns nil at the end-of-archive block or end of file.
    public struct Iterator {
        let reader: TarReader
        /// Offset of the next header to read.
        public private(set) var offset: Int
        private var ended = false

        init(reader: TarReader, offset: Int) {
            self.reader = reader
            self.offset = offset
        }

        public mutating func next() throws -> TarEntry? {
            if ended { return nil }
            var longName: String?
            var paxSize: Int?
            var firstHeader: Int?
            while true {
                if offset + TarHeader.blockSize > reader.fileSize {
                    if offset == reader.fileSize, firstHeader == nil {
                        ended = true
                        return nil
                    }
                    throw VLMError(.corrupt, file: reader.path, record: "offset \(offset)",
                                   "tar ends inside a header (no end-of-archive blocks)")
                }
                let block = try reader.read(at: offset, count: TarHeader.blockSize)
                if block.allSatisfy({ $0 == 0 }) {
                    guard firstHeader == nil else {
                        throw VLMError(.corrupt, file: reader.path, record: "offset \(offset)",
                                       "end-of-archive block right after an extended header")
                    }
                    ended = true
                    return nil
                }
                let header = try TarHeader.parse(block, file: reader.path, offset: offset)
                if firstHeader == nil { firstHeader = offset }
                let size = paxSize ?? header.size
                let contentOffset = offset + TarHeader.blockSize
                guard contentOffset + size <= reader.fileSize else {
                    throw VLMError(.corrupt, file: reader.path, record: longName ?? header.name,
                                   "member content (\(size) bytes at \(contentOffset)) runs past the end of the file")
                }
                let next = contentOffset + size + TarHeader.padding(size)
                switch header.type {
                case UInt8(ascii: "x"):
                    let records = try TarHeader.parsePax(reader.read(at: contentOffset, count: size),
                                                         file: reader.path, offset: offset)
                    if let path = records["path"] { longName = path }
                    if let text = records["size"] {
                        guard let value = Int(text), value >= 0 else {
                            throw VLMError(.corrupt, file: reader.path, record: "offset \(offset)", "bad pax size '\(text)'")
                        }
                        paxSize = value
                    }
                    offset = next
                case UInt8(ascii: "g"), UInt8(ascii: "K"):
                    offset = next
                case UInt8(ascii: "L"):
                    let bytes = try reader.read(at: contentOffset, count: size)
                    longName = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    offset = next
                default:
                    offset = next
                    return TarEntry(name: longName ?? header.name, headerOffset: firstHeader!,
                                    contentOffset: contentOffset, size: size, type: header.type)
                }
            }
        }
    }
}

extension TarHeader {
    package struct Parsed {
        package var name: String
        package var size: Int
        package var type: UInt8
    }

    /// Parses one non-zero header block, checking its checksum.
    package static func parse(_ h: [UInt8], file: String, offset: Int) throws -> Parsed {
        func bad(_ message: String) -> VLMError {
            VLMError(.corrupt, file: file, record: "header at offset \(offset)", message)
        }
        guard let stored = octal(h[148 ..< 156]) else { throw bad("checksum field is not a number") }
        var unsigned = 0, signed = 0
        for (i, b) in h.enumerated() {
            let v = (148 ..< 156).contains(i) ? 0x20 : b
            unsigned += Int(v)
            signed += Int(Int8(bitPattern: v))
        }
        guard stored == unsigned || stored == signed else {
            throw bad("checksum mismatch (stored \(stored), computed \(unsigned)); not a tar header")
        }
        func string(_ range: Range<Int>) -> String {
            String(decoding: h[range].prefix { $0 != 0 }, as: UTF8.self)
        }
        var name = string(0 ..< 100)
        if h[257 ..< 262].elementsEqual("ustar".utf8) {
            let prefix = string(345 ..< 500)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        let size: Int
        if h[124] & 0x80 != 0 {
            // GNU base-256: big-endian two's complement in the remaining bytes.
            var v = 0
            for b in h[125 ..< 136] { v = (v << 8) | Int(b) }
            size = v
        } else {
            guard let v = octal(h[124 ..< 136]) else { throw bad("size field is not a number") }
            size = v
        }
        return Parsed(name: name, size: size, type: h[156])
    }

    /// An octal field: optional leading spaces, digits, then NUL or space padding. Empty means 0.
    package static func octal(_ field: ArraySlice<UInt8>) -> Int? {
        var value = 0
        var seenDigit = false
        var done = false
        for b in field {
            if done { continue }
            switch b {
            case UInt8(ascii: "0") ... UInt8(ascii: "7"):
                value = value * 8 + Int(b - UInt8(ascii: "0"))
                seenDigit = true
            case 0x20 where !seenDigit:
                continue
            case 0, 0x20:
                done = true
            default:
                return nil
            }
        }
        return value
    }

    /// pax records `"%d key=value\n"` into a dictionary; later records win.
    package static func parsePax(_ bytes: [UInt8], file: String, offset: Int) throws -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0 { break }
            var j = i
            var length = 0
            while j < bytes.count, bytes[j] >= UInt8(ascii: "0"), bytes[j] <= UInt8(ascii: "9") {
                length = length * 10 + Int(bytes[j] - UInt8(ascii: "0"))
                j += 1
            }
            guard j < bytes.count, bytes[j] == 0x20, length > j - i + 1, i + length <= bytes.count,
                  bytes[i + length - 1] == 0x0A
            else {
                throw VLMError(.corrupt, file: file, record: "pax header at offset \(offset)", "malformed pax record")
            }
            let record = bytes[(j + 1) ..< (i + length - 1)]
            guard let eq = record.firstIndex(of: UInt8(ascii: "=")) else {
                throw VLMError(.corrupt, file: file, record: "pax header at offset \(offset)", "pax record without '='")
            }
            let key = String(decoding: record[record.startIndex ..< eq], as: UTF8.self)
            let value = String(decoding: record[(eq + 1)...], as: UTF8.self)
            out[key] = value
            i += length
        }
        return out
    }
}
