import Foundation
import VLMCore
import VLMShard

/// One decoded training sample, as the loader delivers it.
public struct LoadedSample: Sendable {
    public var key: String
    /// Which dataset of a mixture (0 for a single dataset).
    public var dataset: Int
    /// True for a sample repeated to pad the end of an epoch (`RemainderPolicy.pad`).
    public var isPad: Bool
    /// int32 ids; LLaVA's `-200` marks where the image goes.
    public var inputIds: [Int32]
    /// int32 labels; `-100` where not supervised.
    public var labels: [Int32]
    /// uint8 patches `[tiles, patches, patch*patch*3]`, unnormalized; empty for a text-only sample.
    public var pixels: [UInt8]
    public var pixelShape: [Int]
    /// Positions the image takes in the model (0 if text-only).
    public var imageTokens: Int
    /// The raw `KEY.json` metadata.
    public var meta: [UInt8]

    /// Positions in the model: text ids with each `-200` replaced by the image's tokens.
    public var modelLength: Int {
        let placeholders = inputIds.reduce(0) { $0 + ($1 == imageTokenId ? 1 : 0) }
        return inputIds.count - placeholders + (placeholders > 0 ? imageTokens : 0)
    }

    /// Bytes held (for memory accounting).
    public var byteCount: Int { inputIds.count * 4 + labels.count * 4 + pixels.count + meta.count + key.utf8.count }
}

/// LLaVA's `IMAGE_TOKEN_INDEX`.
public let imageTokenId: Int32 = -200
/// LLaVA's `IGNORE_INDEX`.
public let ignoreIndex: Int32 = -100

/// Reads bytes of shards: from local files, or through an HTTP cache.
public protocol ShardSource: Sendable {
    /// Fills `buffer` with the bytes at `offset` of `shard`.
    func read(_ shard: ShardInfo, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws
    /// The shard of every sample this process will read, with its rank-local position (a cache uses it to choose
    /// what to evict and when to wait instead).
    func plan(_ reads: [(position: Int, shard: String)])
    /// True when `plan` is worth computing (a cache of remote shards).
    var wantsPlan: Bool { get }
}

extension ShardSource {
    public func plan(_ reads: [(position: Int, shard: String)]) {}
    public var wantsPlan: Bool { false }
}

/// The rank-local position of the sample the current thread is reading (set by the stream around each read), so
/// a cache knows which planned read a `read` call is.
enum ShardReadHint {
    private static let key = "vlmdata.loader.position"

    static var position: Int? {
        get { Thread.current.threadDictionary[key] as? Int }
        set { Thread.current.threadDictionary[key] = newValue }
    }
}

/// Shards as files under a workspace (or any folder): one `pread` per sample on a descriptor kept open.
///
/// ```swift
/// let source = LocalShardSource(root: "/ws")
/// ```
public final class LocalShardSource: ShardSource, @unchecked Sendable {
    public let root: String
    private let lock = NSLock()
    private var descriptors: [String: Int32] = [:]

    public init(root: String) {
        self.root = root
    }

    deinit {
        for fd in descriptors.values { close(fd) }
    }

    func path(of shard: ShardInfo) -> String {
        shard.path.hasPrefix("/") ? shard.path : root + "/" + shard.path
    }

    public func read(_ shard: ShardInfo, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        let path = path(of: shard)
        let fd = try descriptor(path)
        try preadFully(fd, buffer, offset: offset, file: path)
    }

    private func descriptor(_ path: String) throws -> Int32 {
        lock.lock()
        defer { lock.unlock() }
        if let fd = descriptors[path] { return fd }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw VLMError(errno == ENOENT ? .notFound : .io, file: path, "cannot open shard: \(String(cString: strerror(errno)))")
        }
        descriptors[path] = fd
        return fd
    }
}

/// `pread` until `buffer` is full; a short file is `corrupt`.
func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int, file: String) throws {
    var done = 0
    while done < buffer.count {
        let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            throw VLMError.io(file: file, "read at \(offset + done) failed: \(String(cString: strerror(errno)))")
        }
        if n == 0 { throw VLMError(.corrupt, file: file, record: "offset \(offset + done)", "the shard ends early") }
        done += n
    }
}

/// Where the members of one sample lie in its bytes (byte ranges; see `SampleDecoder.layout`).
struct SampleLayout {
    var ids: Range<Int> = 0..<0
    /// nil when the sample stores no labels (all `-100`).
    var labels: Range<Int>?
    var pixels: Range<Int> = 0..<0
    var pixelShape: [Int] = []
    var meta: Range<Int> = 0..<0
}

/// A sample whose bytes cannot be served as written: its shard was cut short (`truncated`), or a member's bytes
/// differ from their recorded checksum or do not decode. `error` names the shard, the member and its offset.
struct DamagedSample: Error {
    var error: VLMError
    var truncated: Bool
}

/// Decodes a sample from the bytes of its tar members (one read of `SampleInfo.offset ..< offset + size`).
enum SampleDecoder {
    /// Reads and decodes one sample; with `verify`, each member is first checked against its recorded XXH3.
    /// Throws `DamagedSample` for a truncated shard, a checksum mismatch or an undecodable member.
    static func read(_ info: SampleInfo, shard: ShardInfo, source: ShardSource, dataset: Int, isPad: Bool,
                     verify: Bool = true) throws -> LoadedSample {
        var bytes = [UInt8](unsafeUninitializedCapacity: info.size) { buffer, initialized in
            initialized = info.size
        }
        try bytes.withUnsafeMutableBytes { raw in try fetch(info, shard: shard, source: source, verify: verify, into: raw) }
        return try bytes.withUnsafeBytes { raw in
            try damage { try decode(raw, info: info, shard: shard, dataset: dataset, isPad: isPad) }
        }
    }

    /// Reads a sample's `info.size` bytes into `raw` and, with `verify`, checks each member against its recorded
    /// XXH3. Throws `DamagedSample` for a truncated shard or a checksum mismatch.
    static func fetch(_ info: SampleInfo, shard: ShardInfo, source: ShardSource, verify: Bool,
                      into raw: UnsafeMutableRawBufferPointer) throws {
        do {
            try source.read(shard, at: info.offset, into: raw)
        } catch let error as VLMError where error.kind == .corrupt {
            throw DamagedSample(error: VLMError(.corrupt, file: shard.path, record: "\(info.key) (\(info.size) bytes at offset \(info.offset))",
                                                "the shard ends before this sample does: it was truncated or emptied after it was written "
                                                + "(\(error.record ?? ""): \(error.message))"),
                                truncated: true)
        }
        guard verify else { return }
        try damage {
            for part in info.parts where part.offset >= 0 && part.offset + part.size <= raw.count {
                try MemberChecksum.check(UnsafeRawBufferPointer(rebasing: raw[part.offset ..< part.offset + part.size]),
                                         expected: part.xxh3, shard: shard.path, key: info.key, member: part.name,
                                         offset: info.offset + part.offset)
            }
        }
    }

    /// Runs `body`, turning a `corrupt` error into `DamagedSample`.
    static func damage<R>(_ body: () throws -> R) throws -> R {
        do { return try body() } catch let error as VLMError where error.kind == .corrupt {
            throw DamagedSample(error: error, truncated: false)
        }
    }

    static func decode(_ raw: UnsafeRawBufferPointer, info: SampleInfo, shard: ShardInfo, dataset: Int,
                       isPad: Bool) throws -> LoadedSample {
        let layout = try self.layout(raw, info: info, shard: shard)
        func values<T>(_ range: Range<Int>, as: T.Type) -> [T] {
            [T](unsafeUninitializedCapacity: range.count / MemoryLayout<T>.stride) { buffer, initialized in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[range]))
                initialized = range.count / MemoryLayout<T>.stride
            }
        }
        let ids = values(layout.ids, as: Int32.self)
        return LoadedSample(key: info.key, dataset: dataset, isPad: isPad, inputIds: ids,
                            labels: layout.labels.map { values($0, as: Int32.self) }
                                ?? [Int32](repeating: ignoreIndex, count: ids.count),
                            pixels: values(layout.pixels, as: UInt8.self), pixelShape: layout.pixelShape,
                            imageTokens: info.imageTokens, meta: values(layout.meta, as: UInt8.self))
    }

    /// Where a sample's members lie in its bytes, checked: ids present and int32, labels (when stored) int32 and as
    /// many, pixels uint8 whose patch grid makes the index's image tokens. Nothing is copied.
    static func layout(_ raw: UnsafeRawBufferPointer, info: SampleInfo, shard: ShardInfo) throws -> SampleLayout {
        var layout = SampleLayout()
        var haveIds = false
        for part in info.parts {
            guard part.offset >= 0, part.offset + part.size <= raw.count else {
                throw VLMError(.corrupt, file: shard.name, record: "\(info.key).\(part.name)",
                               "the index puts this member outside the sample's bytes")
            }
            let bytes = UnsafeRawBufferPointer(rebasing: raw[part.offset ..< part.offset + part.size])
            let name = "\(shard.name): \(info.key).\(part.name)"
            switch part.name {
            case "input_ids.npy":
                layout.ids = try payload(bytes, in: raw, name: name, as: Int32.self).range
                haveIds = true
            case "labels.npy":
                let range = try payload(bytes, in: raw, name: name, as: Int32.self).range
                layout.labels = range.isEmpty ? nil : range  // none stored: all -100, as before
            case "pixels.npy":
                (layout.pixelShape, layout.pixels) = try payload(bytes, in: raw, name: name, as: UInt8.self)
            case "json":
                layout.meta = part.offset ..< part.offset + part.size
            default:
                continue
            }
        }
        guard haveIds else {
            throw VLMError(.corrupt, file: shard.name, record: info.key, "the sample has no input_ids.npy member")
        }
        // The image takes the positions its stored pixels make (PatchGrid); the index's count must agree, since
        // packing and lengths use it.
        if !layout.pixels.isEmpty {
            let grid: PatchGrid
            do { grid = try PatchGrid(shape: layout.pixelShape) } catch let error as VLMError {
                throw VLMError(.corrupt, file: shard.name, record: "\(info.key).pixels.npy", error.message)
            }
            guard grid.imageTokens == info.imageTokens else {
                throw VLMError(.corrupt, file: shard.name, record: info.key,
                               "the index gives \(info.imageTokens) image tokens, the stored pixels \(layout.pixelShape) make \(grid.imageTokens)")
            }
        }
        if let labels = layout.labels, labels.count != layout.ids.count {
            throw VLMError(.corrupt, file: shard.name, record: info.key,
                           "labels hold \(labels.count / 4) values but input_ids \(layout.ids.count / 4)")
        }
        return layout
    }

    /// The shape and byte range (in `raw`) of the data of the `.npy` member `bytes`, which must hold `T`.
    static func payload<T: NpyElement>(_ bytes: UnsafeRawBufferPointer, in raw: UnsafeRawBufferPointer, name: String,
                                       as: T.Type) throws -> (shape: [Int], range: Range<Int>) {
        try Npy.withData(bytes, name: name) { header, data in
            guard header.dtype == T.npyDType else {
                throw VLMError(.corrupt, record: name, "holds \(header.dtype), expected \(T.npyDType)")
            }
            guard data.count > 0, let base = raw.baseAddress, let at = data.baseAddress else { return (header.shape, 0..<0) }
            let start = base.distance(to: at)
            return (header.shape, start ..< start + data.count)
        }
    }
}
