import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// One training sample read back from a shard: its metadata and arrays.
public struct StoredSample: Sendable {
    public var key: String
    public var shard: String
    public var indexInShard: Int
    /// The raw bytes of every member, by suffix (`json`, `input_ids.npy`, `labels.npy`, `pixels.npy`, `jpg`).
    public var members: [String: [UInt8]]

    public func metadata() throws -> SampleMetadata {
        guard let json = members["json"] else { throw VLMError(.notFound, record: key, "sample has no json member") }
        do { return try JSONDecoder().decode(SampleMetadata.self, from: Data(json)) } catch {
            throw VLMError(.corrupt, file: shard, record: key + ".json", "cannot decode sample metadata: \(error)")
        }
    }

    public func inputIDs() throws -> [Int32] { try array("input_ids.npy") }
    public func labels() throws -> [Int32] { try array("labels.npy") }

    /// `KEY.pixels.npy` as shape and bytes (`[tiles, patches, patch_dim]` uint8), nil for text-only samples.
    public func pixels() throws -> (shape: [Int], values: [UInt8])? {
        guard let bytes = members["pixels.npy"] else { return nil }
        return try Npy.decode(bytes, name: "\(shard): \(key).pixels.npy")
    }

    func array(_ suffix: String) throws -> [Int32] {
        guard let bytes = members[suffix] else { throw VLMError(.notFound, file: shard, record: key, "sample has no \(suffix) member") }
        return try Npy.decode(bytes, name: "\(shard): \(key).\(suffix)")
    }
}

/// Random access to training samples through the catalog index: one `pread` per member.
///
/// ```swift
/// let index = ShardIndex(catalog: catalog)
/// let sample = try index.sample(key: "coco_val2017_000000397133_caption_0")
/// let ids = try sample.inputIDs()
/// ```
public final class ShardIndex {
    public let catalog: Catalog
    private var readers: [String: TarReader] = [:]

    public init(catalog: Catalog) {
        self.catalog = catalog
    }

    func reader(for path: String) throws -> TarReader {
        if let open = readers[path] { return open }
        let reader = try TarReader(path: catalog.workspace.resolve(path))
        readers[path] = reader
        return reader
    }

    /// The sample stored under `key`; `notFound` if the index has no such key. Each member is checked against the
    /// XXH3 recorded when it was written (`verify: false` skips that); a changed or missing byte is `corrupt`,
    /// naming the shard, the member and its offset.
    public func sample(key: String, verify: Bool = true) throws -> StoredSample {
        let found = try catalog.indexedSample(key: key)
        guard let found else {
            throw VLMError(.notFound, file: catalog.workspace.catalogPath, record: key, "no sample with this key in the shard index")
        }
        let reader = try reader(for: found.path)
        var members: [String: [UInt8]] = [:]
        for part in found.parts {
            guard part.offset >= 0, part.offset + part.size <= reader.fileSize else {
                throw MemberChecksum.truncated(shard: found.path, fileSize: reader.fileSize, key: key, member: part.name,
                                               offset: part.offset, size: part.size)
            }
            let bytes = try reader.read(at: part.offset, count: part.size)
            if verify {
                try bytes.withUnsafeBytes { raw in
                    try MemberChecksum.check(raw, expected: part.xxh3, shard: found.path, key: key, member: part.name,
                                             offset: part.offset)
                }
            }
            members[part.name] = bytes
        }
        return StoredSample(key: key, shard: found.shard, indexInShard: found.index, members: members)
    }

    /// Every sample of one shard file in file order, by a sequential scan of the tar (no index used).
    /// Members are grouped by key as WebDataset does: the name up to the first dot is the key.
    public static func scan(path: String, name: String? = nil) throws -> [StoredSample] {
        let reader = try TarReader(path: path)
        var out: [StoredSample] = []
        for entry in try reader.entries() where entry.isRegularFile {
            let file = entry.name.split(separator: "/").last.map(String.init) ?? entry.name
            guard let dot = file.firstIndex(of: ".") else { continue }
            let key = String(file[..<dot]), suffix = String(file[file.index(after: dot)...])
            if out.last?.key != key {
                out.append(StoredSample(key: key, shard: name ?? path, indexInShard: out.count, members: [:]))
            }
            out[out.count - 1].members[suffix] = try reader.read(entry)
        }
        return out
    }
}
