import Foundation
import VLMCore
import VLMIO

/// Where one member landed in a tar file: its header, its content, and the content size (all in bytes).
///
/// `headerOffset` is the first header block of the member (a pax extended header when the name is long), so
/// `headerOffset ..< contentOffset + size` covers the whole member and `contentOffset ..< contentOffset + size`
/// is exactly its bytes, readable with one `pread`.
public struct TarMember: Hashable, Sendable {
    public var name: String
    public var headerOffset: Int
    public var contentOffset: Int
    public var size: Int

    public init(name: String, headerOffset: Int, contentOffset: Int, size: Int) {
        self.name = name
        self.headerOffset = headerOffset
        self.contentOffset = contentOffset
        self.size = size
    }

    /// End of the content, before the padding to the next 512-byte block.
    public var contentEnd: Int { contentOffset + size }
}

/// A reproducible POSIX tar (ustar) writer that streams members into a `FileWriter`.
///
/// Every header carries the same mtime, mode, uid/gid and uname/gname, so the same members in the same order
/// give byte-identical archives. Names longer than 100 bytes (and sizes of 8 GiB or more) go in a pax extended
/// header (`path`, `size` records) before the ustar header, which GNU tar, bsdtar and Python's `tarfile` read.
/// Offsets are absolute positions in the writer's file (`FileWriter.offset`), so write the tar from offset 0.
///
/// ```swift
/// try AtomicFile.withWriter(to: "shards/train-000000.tar") { file in
///     let tar = TarWriter(file)
///     let member = try tar.add(name: "k0001.json", bytes: Array(#"{"id": 1}"#.utf8))
///     try tar.finish()           // end-of-archive blocks; required
///     print(member.contentOffset, member.size)
/// }
/// ```
public final class TarWriter {
    /// Seconds since the epoch written as every member's mtime (2020-01-01T00:00:00Z).
    public static let fixedMTime = 1_577_836_800
    public static let fixedMode = 0o644
    public static let fixedOwner = (uid: 0, gid: 0, uname: "root", gname: "root")
    /// GNU tar and Python's `tarfile` pad the archive to a multiple of 20 blocks; so do we.
    public static let recordSize = 10_240

    /// Where the archive goes: a `FileWriter`, or any other `TarOutput`.
    public let file: any TarOutput
    private var finished = false

    public init(_ file: FileWriter) {
        self.file = file
    }

    public init(output: any TarOutput) {
        self.file = output
    }

    /// Appends one regular-file member with `bytes` as its content.
    @discardableResult
    public func add(name: String, bytes: UnsafeRawBufferPointer) throws -> TarMember {
        try add(name: name, size: bytes.count) { file in try file.write(bytes) }
    }

    /// Appends one regular-file member with `bytes` as its content.
    @discardableResult
    public func add(name: String, bytes: [UInt8]) throws -> TarMember {
        try bytes.withUnsafeBytes { raw in try add(name: name, bytes: raw) }
    }

    /// Appends one regular-file member of exactly `size` bytes that `body` writes into the file (for content
    /// copied in pieces, e.g. from another shard). Throws if `body` writes a different number of bytes.
    @discardableResult
    public func add(name: String, size: Int, content body: (any TarOutput) throws -> Void) throws -> TarMember {
        guard !finished else { throw VLMError(.invalidArgument, file: file.path, record: name, "tar already finished") }
        guard size >= 0 else { throw VLMError(.invalidArgument, file: file.path, record: name, "negative member size") }
        let nameBytes = Array(name.utf8)
        guard !nameBytes.isEmpty, !nameBytes.contains(0) else {
            throw VLMError(.invalidArgument, file: file.path, record: name, "tar member name is empty or contains NUL")
        }
        let headerOffset = file.offset
        let sizeFits = size < TarHeader.maxOctalSize
        if let pax = Self.paxHeader(name: name, size: size) {
            try TarHeader.write(name: Array("././@PaxHeader".utf8), size: pax.count, type: UInt8(ascii: "x"), to: file)
            try file.write(pax)
            try file.write(zeros: TarHeader.padding(pax.count))
        }
        try TarHeader.write(name: nameBytes.prefix(100), size: sizeFits ? size : 0, type: UInt8(ascii: "0"), to: file)
        let contentOffset = file.offset
        try body(file)
        let written = file.offset - contentOffset
        guard written == size else {
            throw VLMError(.io, file: file.path, record: name, "member content is \(written) bytes, header says \(size)")
        }
        try file.write(zeros: TarHeader.padding(size))
        return TarMember(name: name, headerOffset: headerOffset, contentOffset: contentOffset, size: size)
    }

    /// The bytes `add(name:size:)` appends for a member: its header blocks and its padded content. Lets a caller
    /// decide where shards close before writing them.
    public static func footprint(name: String, size: Int) -> Int {
        var bytes = TarHeader.blockSize + size + TarHeader.padding(size)
        if let pax = paxHeader(name: name, size: size) { bytes += TarHeader.blockSize + pax.count + TarHeader.padding(pax.count) }
        return bytes
    }

    /// The pax extended-header records a member needs (a name over 100 bytes, a size over the octal field), or nil.
    static func paxHeader(name: String, size: Int) -> [UInt8]? {
        var records: [(String, String)] = []
        if name.utf8.count > 100 { records.append(("path", name)) }
        if size >= TarHeader.maxOctalSize { records.append(("size", String(size))) }
        return records.isEmpty ? nil : TarHeader.paxRecords(records)
    }

    /// Writes the two zero end-of-archive blocks and pads to a whole record. Call once, after the last member.
    public func finish() throws {
        guard !finished else { return }
        finished = true
        try file.write(zeros: 1024)
        let rest = file.offset % Self.recordSize
        if rest != 0 { try file.write(zeros: Self.recordSize - rest) }
    }
}

/// An append-only byte sink a `TarWriter` writes to; `offset` counts every byte written so far.
public protocol TarOutput: AnyObject {
    var path: String { get }
    var offset: Int { get }
    func write(_ bytes: UnsafeRawBufferPointer) throws
    func write(_ bytes: [UInt8]) throws
    func write(zeros count: Int) throws
}

extension FileWriter: TarOutput {}

/// ustar header blocks: building (for `TarWriter`) and parsing (for `TarReader`).
package enum TarHeader {
    package static let blockSize = 512
    /// Sizes from here on do not fit the 11 octal digits of the ustar size field.
    package static let maxOctalSize = 1 << 33

    package static func padding(_ size: Int) -> Int { (blockSize - size % blockSize) % blockSize }

    /// One 512-byte ustar header with the fixed metadata of `TarWriter`.
    package static func block(name: [UInt8], size: Int, type: UInt8) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: blockSize) { buffer, count in
            fill(UnsafeMutableRawBufferPointer(buffer), name: name[...], size: size, type: type)
            count = blockSize
        }
    }

    /// Appends the header `block(name:size:type:)` gives to `output`, built on the stack: a shard writes three to
    /// five per sample, and building each as an array of digit strings was 6% of a shard run's CPU.
    package static func write(name: ArraySlice<UInt8>, size: Int, type: UInt8, to output: any TarOutput) throws {
        try withUnsafeTemporaryAllocation(byteCount: blockSize, alignment: 16) { header in
            fill(header, name: name, size: size, type: type)
            try output.write(UnsafeRawBufferPointer(header))
        }
    }

    package static func write(name: [UInt8], size: Int, type: UInt8, to output: any TarOutput) throws {
        try write(name: name[...], size: size, type: type, to: output)
    }

    /// The fixed fields of every header (name, size and type empty; the checksum field as 8 spaces), and the sum
    /// of its bytes.
    private static let template: (bytes: [UInt8], sum: Int) = {
        let bytes = referenceBlock(name: [], size: 0, type: 0)
        var blank = bytes
        for i in 148 ..< 156 { blank[i] = 0x20 }
        for i in 124 ..< 135 { blank[i] = 0 }   // the size digits are written per header
        return (blank, blank.reduce(0) { $0 + Int($1) })
    }()

    /// Writes the header for `name` (at most 100 bytes), `size` (below `maxOctalSize`) and `type` into `header`
    /// (512 bytes): the template's bytes, then the three fields and the checksum, as `referenceBlock` lays them out.
    private static func fill(_ header: UnsafeMutableRawBufferPointer, name: ArraySlice<UInt8>, size: Int, type: UInt8) {
        precondition(header.count == blockSize && name.count <= 100 && size >= 0 && size < maxOctalSize)
        template.bytes.withUnsafeBytes { header.copyMemory(from: $0) }
        var sum = template.sum
        var offset = 0
        for byte in name {
            header[offset] = byte
            sum += Int(byte)
            offset += 1
        }
        // 11 octal digits and the NUL the template holds.
        var value = size
        for i in stride(from: 134, through: 124, by: -1) {
            let digit = UInt8(truncatingIfNeeded: 0x30 + (value & 7))
            header[i] = digit
            sum += Int(digit)
            value >>= 3
        }
        header[156] = type
        sum += Int(type)
        // The checksum: 6 octal digits, NUL, space (the template's spaces counted in `sum` stay as the last byte).
        var checksum = sum
        for i in stride(from: 153, through: 148, by: -1) {
            header[i] = UInt8(truncatingIfNeeded: 0x30 + (checksum & 7))
            checksum >>= 3
        }
        header[154] = 0
        header[155] = 0x20
    }

    /// The header built field by field: what `block` and `write` must equal byte for byte (a test checks them).
    package static func referenceBlock(name: [UInt8], size: Int, type: UInt8) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: blockSize)
        func put(_ bytes: [UInt8], at offset: Int) {
            for (i, b) in bytes.enumerated() { h[offset + i] = b }
        }
        func octal(_ value: Int, width: Int) -> [UInt8] {
            let digits = String(value, radix: 8)
            return Array((String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits).utf8) + [0]
        }
        put(name, at: 0)
        put(octal(TarWriter.fixedMode, width: 8), at: 100)
        put(octal(TarWriter.fixedOwner.uid, width: 8), at: 108)
        put(octal(TarWriter.fixedOwner.gid, width: 8), at: 116)
        put(octal(size, width: 12), at: 124)
        put(octal(TarWriter.fixedMTime, width: 12), at: 136)
        put([UInt8](repeating: 0x20, count: 8), at: 148)
        h[156] = type
        put(Array("ustar".utf8) + [0], at: 257)
        put(Array("00".utf8), at: 263)
        put(Array(TarWriter.fixedOwner.uname.utf8), at: 265)
        put(Array(TarWriter.fixedOwner.gname.utf8), at: 297)
        put(octal(0, width: 8), at: 329)
        put(octal(0, width: 8), at: 337)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7) + [0x20], at: 148)
        return h
    }

    /// pax records `"%d %s=%s\n"`, where the leading length counts the whole record including itself.
    package static func paxRecords(_ records: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (key, value) in records {
            let body = " \(key)=\(value)\n"
            let bodyLength = body.utf8.count
            var length = bodyLength + String(bodyLength).count
            while String(length).count + bodyLength != length { length = String(length).count + bodyLength }
            out += Array("\(length)\(body)".utf8)
        }
        return out
    }
}
