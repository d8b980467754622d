import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// Checks training shards against the catalog index and lists every problem found.
///
/// Always: each shard file exists with the recorded size and XXH3-128 (sha256 where no XXH3 was recorded), its
/// tar structure reads to the end, the sample count matches, every indexed member (`sample_parts`) is exactly a
/// tar member named `KEY.SUFFIX` at that offset and size, with the sample's offset at its first header, and its
/// bytes match the member's recorded XXH3. With `deep`, also: the sha256 (checked where one was recorded, else
/// computed: `Summary.sha256Computed`), every json parses, every npy header
/// parses, and arrays agree with the json (lengths, pixel shape) and the index (token, supervised and image counts).
///
/// ```swift
/// let problems = try ShardVerifier(catalog: catalog).verify(deep: true)
/// if problems.isEmpty { print("all shards verified") }
/// ```
public struct ShardVerifier {
    public let catalog: Catalog

    public init(catalog: Catalog) {
        self.catalog = catalog
    }

    public struct Summary: Codable, Sendable {
        public var shards = 0
        public var samples = 0
        public var bytes = 0
        /// Pixel shards whose members were checked against their recorded XXH3-64.
        public var pixelShards = 0
        /// Shards whose recorded sha256 was checked (`deep`, or no XXH3-128 recorded).
        public var sha256Checked = 0
        /// With `deep`: the sha256 of each shard that had none recorded, by name, computed from bytes that matched
        /// their XXH3-128 and recorded in the catalog, so the next `deep` run checks it.
        public var sha256Computed: [String: String] = [:]
        /// Pixel shards whose recorded sha256 was checked (`deep`).
        public var pixelSHA256Checked = 0
        /// With `deep`: likewise for pixel shards (`patchify` records only their XXH3-128), by name.
        public var pixelSHA256Computed: [String: String] = [:]
        public var problems: [String] = []
    }

    struct IndexedSample {
        var key: String
        var index: Int
        var offset: Int
        var size: Int
        var tokens: Int
        var supervised: Int
        var imageTokens: Int
        var hasImage: Bool
        var parts: [(name: String, offset: Int, size: Int, xxh3: UInt64?)] = []
    }

    public func verify(deep: Bool, progress: any ProgressSink = SilentProgress()) throws -> Summary {
        var summary = Summary()
        var computedShards: [ComputedSHA256] = [], computedPixelShards: [ComputedSHA256] = []
        let shards = try catalog.shardRecords()
        progress.start("verify", total: shards.count)
        for shard in shards {
            let name = shard.name
            var problems: [String] = []
            func problem(_ text: String) { problems.append("\(name): \(text)") }
            defer {
                summary.problems += problems
                progress.advance(by: 1)
            }
            summary.shards += 1
            let samples = try indexedSamples(shardID: shard.id)
            summary.samples += samples.count
            if samples.count != shard.samples {
                problem("the shards row says \(shard.samples) samples, the index has \(samples.count)")
            }
            let path = catalog.workspace.resolve(shard.path)
            guard FileManager.default.fileExists(atPath: path) else {
                problem("file \(path) is missing")
                continue
            }
            let reader: TarReader
            do { reader = try TarReader(path: path) } catch {
                problem("\(error)")
                continue
            }
            summary.bytes += reader.fileSize
            if reader.fileSize != shard.bytes {
                problem("file is \(reader.fileSize) bytes, the catalog says \(shard.bytes)")
            }
            // XXH3-128 runs at memory speed; sha256 (a cryptographic digest, for tamper checks) only when asked:
            // checked where the catalog recorded one, else computed from bytes that matched their XXH3-128 and
            // recorded (below, in one transaction).
            switch try Self.checkWholeFile(path: path, xxh3_128: shard.xxh3_128, sha256: shard.sha256, deep: deep, problem: problem) {
            case .checked: summary.sha256Checked += 1
            case .computed(let computed):
                summary.sha256Computed[shard.name] = computed.sha256
                computedShards.append(ComputedSHA256(name: shard.name, xxh3_128: computed.xxh3_128, sha256: computed.sha256))
            case .none: break
            }
            var entries: [String: TarEntry] = [:]
            var order: [String] = []
            do {
                for entry in try reader.entries() {
                    guard entry.isRegularFile else { problem("member \(entry.name) is not a regular file"); continue }
                    if entries[entry.name] != nil { problem("member \(entry.name) appears twice") }
                    entries[entry.name] = entry
                    order.append(entry.name)
                }
            } catch {
                problem("tar structure: \(error)")
            }
            var claimed = Set<String>()
            for sample in samples {
                let label = "sample \(sample.key) (#\(sample.index))"
                var first: Int?
                var end = 0
                for part in sample.parts {
                    let member = sample.key + "." + part.name
                    claimed.insert(member)
                    guard let entry = entries[member] else { problem("\(label): member \(member) is not in the tar"); continue }
                    if entry.contentOffset != part.offset || entry.size != part.size {
                        problem("\(label): index says \(member) is \(part.size) bytes at \(part.offset), the tar has \(entry.size) at \(entry.contentOffset)")
                    } else if let expected = part.xxh3 {
                        do {
                            let bytes = try reader.read(at: part.offset, count: part.size)
                            try bytes.withUnsafeBytes { raw in
                                try MemberChecksum.check(raw, expected: expected, shard: name, key: sample.key, member: part.name,
                                                         offset: part.offset)
                            }
                        } catch let error as VLMError {
                            problem("\(label): \(error.record ?? member): \(error.message)")
                        }
                    }
                    first = min(first ?? entry.headerOffset, entry.headerOffset)
                    end = max(end, entry.contentEnd)
                }
                if sample.parts.isEmpty { problem("\(label): no members indexed") }
                if let first, first != sample.offset || end - first != sample.size {
                    problem("\(label): index says the sample spans \(sample.size) bytes at \(sample.offset), its members span \(end - first) at \(first)")
                }
                if deep { problems += deepCheck(sample, reader: reader, shard: name) }
            }
            for member in order where !claimed.contains(member) {
                problem("member \(member) belongs to no indexed sample")
            }
        }
        // Pixel shards: the whole file against the XXH3-128 patchify recorded (and the sha256 as for training
        // shards), each member against its XXH3-64 (shard copies pixels from them).
        let pixelMembers = Dictionary(grouping: try catalog.pixelMemberChecksums(), by: \.shard)
        for shard in try catalog.pixelShardRecords() {
            let name = shard.name, members = pixelMembers[name] ?? []
            let path = catalog.workspace.pixelShardsDirectory + "/" + name
            guard FileManager.default.fileExists(atPath: path) else {
                summary.problems.append("\(name): pixel shard \(path) is missing (\(members.count) members indexed)")
                continue
            }
            summary.pixelShards += 1
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? -1
            if size != shard.bytes { summary.problems.append("\(name): pixel shard file is \(size) bytes, the catalog says \(shard.bytes)") }
            let check = try Self.checkWholeFile(path: path, xxh3_128: shard.xxh3_128, sha256: shard.sha256, deep: deep,
                                                membersChecked: true) { summary.problems.append("\(name): pixel shard \($0)") }
            switch check {
            case .checked: summary.pixelSHA256Checked += 1
            case .computed(let computed):
                summary.pixelSHA256Computed[name] = computed.sha256
                computedPixelShards.append(ComputedSHA256(name: name, xxh3_128: computed.xxh3_128, sha256: computed.sha256))
            case .none: break
            }
            summary.problems += Self.checkPixelShard(path: path, name: name, members: members)
        }
        // Only sha256s of bytes that matched their XXH3-128 get here; the next `deep` run checks them.
        try catalog.recordComputedSHA256(shards: computedShards, pixelShards: computedPixelShards)
        // Files in shards/ that no row names: left by an interrupted run, or put there by hand.
        let indexed = Set(shards.map { URL(fileURLWithPath: catalog.workspace.resolve($0.path)).standardizedFileURL.path })
        let dir = catalog.workspace.shardsDirectory
        for file in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
            let path = URL(fileURLWithPath: dir + "/" + file).standardizedFileURL.path
            if file.hasPrefix("."), file.contains(".tar.tmp-") {
                summary.problems.append("\(file): temporary file of an interrupted shard run (run `vlmdata shard` again to finish)")
            } else if file.hasSuffix(".tar"), !indexed.contains(path) {
                summary.problems.append("\(file): shard file that the catalog does not index")
            }
        }
        progress.finish("\(summary.shards) shards, \(summary.samples) samples, \(summary.problems.count) problems")
        return summary
    }

    func indexedSamples(shardID: Int64) throws -> [IndexedSample] {
        try catalog.indexedSamples(shardID: shardID).map { row, parts in
            IndexedSample(key: row.key, index: row.indexInShard, offset: row.offset, size: row.size, tokens: row.tokens,
                          supervised: row.supervised, imageTokens: row.imageTokens, hasImage: row.hasImage,
                          parts: parts.map { ($0.name, $0.offset, $0.size, $0.xxh3) })
        }
    }

    func deepCheck(_ sample: IndexedSample, reader: TarReader, shard: String) -> [String] {
        var problems: [String] = []
        func problem(_ text: String) { problems.append("\(shard): sample \(sample.key): \(text)") }
        var members: [String: [UInt8]] = [:]
        for part in sample.parts {
            guard let bytes = try? reader.read(at: part.offset, count: part.size) else {
                problem("cannot read \(part.name) at \(part.offset)")
                return problems
            }
            members[part.name] = bytes
        }
        let stored = StoredSample(key: sample.key, shard: shard, indexInShard: sample.index, members: members)
        let meta: SampleMetadata
        do { meta = try stored.metadata() } catch { problem("\(error)"); return problems }
        if meta.key != sample.key { problem("json key is \(meta.key)") }
        var ids: [Int32] = [], labels: [Int32] = []
        do { ids = try stored.inputIDs() } catch { problem("input_ids.npy: \(error)") }
        do { labels = try stored.labels() } catch { problem("labels.npy: \(error)") }
        if ids.count != meta.length { problem("input_ids has \(ids.count) tokens, the json says \(meta.length)") }
        if labels.count != ids.count { problem("labels has \(labels.count) entries, input_ids \(ids.count)") }
        let supervised = labels.filter { $0 != -100 }.count
        if supervised != meta.supervised || supervised != sample.supervised {
            problem("labels supervise \(supervised) tokens, the json says \(meta.supervised), the index \(sample.supervised)")
        }
        if meta.tokens != sample.tokens { problem("the json says \(meta.tokens) tokens, the index \(sample.tokens)") }
        if meta.imageTokens != sample.imageTokens {
            problem("the json says \(meta.imageTokens) image tokens, the index \(sample.imageTokens)")
        }
        let placeholders = ids.filter { $0 == -200 }.count
        if members["pixels.npy"] != nil {
            do {
                if let pixels = try stored.pixels(), pixels.shape != meta.pixelsShape {
                    problem("pixels.npy has shape \(pixels.shape), the json says \(meta.pixelsShape.map { "\($0)" } ?? "none")")
                }
            } catch { problem("pixels.npy: \(error)") }
            if !sample.hasImage { problem("has a pixels member but the index says text-only") }
            if placeholders != 1 { problem("has pixels but \(placeholders) image placeholders (-200) in input_ids") }
        } else {
            if sample.hasImage || meta.pixelsShape != nil { problem("has no pixels member but is indexed/described as having an image") }
            if placeholders != 0 { problem("is text-only but input_ids has \(placeholders) image placeholders (-200)") }
        }
        if let suffix = meta.imageMember, members[suffix] == nil { problem("the json names an image member .\(suffix) the index lacks") }
        return problems
    }
}

extension ShardVerifier {
    /// What `checkWholeFile` did with the sha256.
    enum WholeFileCheck {
        case none
        /// A recorded sha256 was compared.
        case checked
        /// No sha256 was recorded: this one was computed from bytes that matched the recorded XXH3-128.
        case computed(ComputedSHA256)
    }

    /// A whole file against its recorded XXH3-128 (always) and sha256 (with `deep`, or when no XXH3-128 was
    /// recorded); a missing sha256 is computed with `deep` once the XXH3-128 matched. `membersChecked`: the file's
    /// members carry checksums of their own (pixel shards), so outside `deep` a file without an XXH3-128 is not
    /// read for its sha256, and one with neither recorded is not a problem.
    static func checkWholeFile(path: String, xxh3_128: String?, sha256: String?, deep: Bool, membersChecked: Bool = false,
                               problem: (String) -> Void) throws -> WholeFileCheck {
        var matched: String?
        if let recorded = xxh3_128 {
            let xxh3 = try XXH3.hash128(file: path)
            if xxh3 != recorded { problem("xxh3-128 is \(xxh3), the catalog says \(recorded)") } else { matched = xxh3 }
        }
        guard deep || (xxh3_128 == nil && !membersChecked) else { return .none }
        switch sha256 {
        case let recorded?:
            let sha = try Hashing.sha256(file: path)
            if sha != recorded { problem("sha256 is \(sha), the catalog says \(recorded)") }
            return .checked
        case nil where xxh3_128 == nil:
            if !membersChecked { problem("the catalog records neither an xxh3-128 nor a sha256 for this shard") }
            return .none
        case nil:
            guard let matched else { return .none }
            return .computed(ComputedSHA256(name: "", xxh3_128: matched, sha256: try Hashing.sha256(file: path)))
        }
    }

    /// Checks every indexed member of a pixel shard; returns one problem line per member that fails.
    static func checkPixelShard(path: String, name: String, members: [PixelMemberChecksum]) -> [String] {
        let reader: TarReader
        do { reader = try TarReader(path: path) } catch { return ["\(name): \(error)"] }
        var problems: [String] = []
        for member in members {
            let label = "\(member.sha256).npy"
            guard member.offset >= 0, member.size >= 0, member.offset + member.size <= reader.fileSize else {
                let error = MemberChecksum.truncated(shard: name, fileSize: reader.fileSize, key: member.sha256, member: "npy",
                                                     offset: member.offset, size: member.size)
                problems.append("\(name): \(error.record ?? label): \(error.message)")
                continue
            }
            guard let expected = member.xxh3 else { continue }
            do {
                let bytes = try reader.read(at: member.offset, count: member.size)
                let actual = bytes.withUnsafeBytes { XXH3.hash64($0) }
                if actual != expected {
                    let error = MemberChecksum.mismatch(actual: actual, expected: expected, shard: name, member: label,
                                                        size: member.size, offset: member.offset, fix: MemberChecksum.pixelFix)
                    problems.append("\(name): \(error.record ?? label): \(error.message)")
                }
            } catch {
                problems.append("\(name): \(label): \(error)")
            }
        }
        return problems
    }
}
