import Foundation
import VLMCore
import VLMIO

/// A local folder of downloaded shards with a hard size cap and least-recently-used eviction.
///
/// - A shard in use (between `withShard`'s start and end) is never evicted; a fetch that does not fit waits until
///   one is released.
/// - A download goes to `.NAME.part` and becomes `NAME` only after its SHA-256 matches the index, so a crash never
///   leaves a partial file that looks complete; a `.part` left by a crash is continued with a range request.
/// - Files found in the folder at start are checked against the index before their first use.
/// - One process owns the folder (an exclusive `flock` on `.lock`); give each rank its own folder.
/// - Given the epoch's reading order (`plan(_:)`), eviction removes first a shard no longer needed this epoch;
///   a fetch never evicts a shard still to be read before the fetched one, it waits for those reads instead.
///   So with room for two shards each shard is fetched once per epoch when the order reads shards one after
///   another (`--shuffle shard`), whatever the decode threads' lead. Without a plan it evicts the least
///   recently used.
///
/// ```swift
/// let cache = try ShardCache(directory: "/tmp/shards", capacity: 8 << 30) { shard, partPath in
///     try LoaderHTTP.download(urls[shard.name]!, to: partPath).requests
/// }
/// let bytes = try cache.withShard(shard) { path in try readSomething(path) }
/// ```
public final class ShardCache: @unchecked Sendable {
    public struct Stats: Sendable, Codable, Equatable {
        public var hits = 0
        public var downloads = 0
        /// HTTP requests the fetches sent (GETs, retries included).
        public var requests = 0
        public var resumedDownloads = 0
        public var bytesDownloaded = 0
        public var evictions = 0
        public var checksumFailures = 0
        /// Most bytes the folder ever held (never above the capacity).
        public var peakBytes = 0
    }

    private struct Entry {
        var bytes: Int
        var lastUse: Int
        var pins: Int
        var verified: Bool
    }

    public let directory: String
    public let capacity: Int
    private let fetch: @Sendable (ShardInfo, String) throws -> Int
    /// Per shard, the rank-local positions of its planned reads (ascending), those already started, and how far
    /// the prefix of started ones reaches; empty without a plan.
    private var upcoming: [String: [Int]] = [:]
    private var started: Set<Int> = []
    private var cursor: [String: Int] = [:]
    private let condition = NSCondition()
    private var entries: [String: Entry] = [:]
    private var partials: [String: Int] = [:]
    private var busy: Set<String> = []
    private var missing: [String: VLMError] = [:]
    private var used = 0
    private var tick = 0
    private var stats = Stats()
    private var lockFD: Int32 = -1

    /// - Parameter fetch: downloads a shard into the given `.part` path (continuing what it holds) and returns
    ///   the number of HTTP requests it sent.
    public init(directory: String, capacity: Int, fetch: @escaping @Sendable (ShardInfo, String) throws -> Int) throws {
        self.directory = directory
        self.capacity = capacity
        self.fetch = fetch
        guard capacity > 0 else { throw VLMError(.invalidArgument, "the cache size must be positive") }
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw VLMError.io(file: directory, "cannot create the cache folder: \(error.localizedDescription)")
        }
        lockFD = open(directory + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            if lockFD >= 0 { close(lockFD) }
            throw VLMError(.conflict, file: directory, "the cache folder is in use by another process; give each rank its own --cache-dir")
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names.sorted() where name != ".lock" {
            let path = directory + "/" + name
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let size = Int(info.st_size)
            if name.hasPrefix("."), name.hasSuffix(".part") {
                partials[String(name.dropFirst().dropLast(5))] = size
            } else if !name.hasPrefix(".") {
                entries[name] = Entry(bytes: size, lastUse: 0, pins: 0, verified: false)
            } else { continue }
            used += size
        }
        // Over the cap from an earlier run with a larger one: trim now.
        condition.lock()
        while used > capacity, evictOne() {}
        condition.unlock()
    }

    deinit {
        if lockFD >= 0 { flock(lockFD, LOCK_UN); close(lockFD) }
    }

    public var statistics: Stats {
        condition.lock()
        defer { condition.unlock() }
        return stats
    }

    /// Bytes in the folder now (complete shards and partial downloads).
    public var bytesUsed: Int {
        condition.lock()
        defer { condition.unlock() }
        return used
    }

    /// Tells the cache the order this rank will read shards in (one name per sample read, in order), so
    /// eviction keeps what is still to be read. Replaces an earlier plan.
    public func plan(_ reads: [(position: Int, shard: String)]) {
        condition.lock()
        defer { condition.unlock() }
        upcoming = [:]
        started = []
        cursor = [:]
        for read in reads { upcoming[read.shard, default: []].append(read.position) }
        for name in upcoming.keys { upcoming[name]!.sort() }
        condition.broadcast()
    }

    /// The position of `name`'s next read not yet started under the plan; nil when it is not read again (or
    /// there is no plan).
    private func nextUse(_ name: String) -> Int? {
        guard let positions = upcoming[name] else { return nil }
        var i = cursor[name] ?? 0
        while i < positions.count, started.contains(positions[i]) { i += 1 }
        cursor[name] = i
        return i < positions.count ? positions[i] : nil
    }

    func path(_ name: String) -> String { directory + "/" + name }
    func partPath(_ name: String) -> String { directory + "/." + name + ".part" }

    /// Calls `body` with the local path of `shard`, downloading and checking it first if needed. The shard stays
    /// pinned (not evictable) until `body` returns.
    public func withShard<T>(_ shard: ShardInfo, _ body: (String) throws -> T) throws -> T {
        try acquire(shard)
        defer { release(shard.name) }
        return try body(path(shard.name))
    }

    private func acquire(_ shard: ShardInfo) throws {
        let name = shard.name
        let hint = ShardReadHint.position
        condition.lock()
        let position = upcoming.isEmpty ? nil : hint
        if let position { started.insert(position) }
        var mustVerify = false
        while true {
            if let error = missing[name] { condition.unlock(); throw error }
            if busy.contains(name) { condition.wait(); continue }
            if var entry = entries[name] {
                tick += 1
                entry.lastUse = tick
                entry.pins += 1
                entries[name] = entry
                if entry.verified {
                    stats.hits += 1
                    condition.unlock()
                    return
                }
                busy.insert(name)
                mustVerify = true
                break
            }
            guard shard.bytes <= capacity else {
                condition.unlock()
                throw VLMError(.invalidArgument, file: name, "the shard (\(shard.bytes) bytes) is larger than the whole cache (\(capacity) bytes)")
            }
            let partial = partials[name] ?? 0
            if used - partial + shard.bytes > capacity {
                if evictOne(except: name, before: position) { continue }
                condition.wait()
                continue
            }
            used += shard.bytes - partial
            partials[name] = nil
            busy.insert(name)
            break
        }
        stats.peakBytes = max(stats.peakBytes, used)
        condition.unlock()

        if mustVerify {
            let good = (try? shard.fileMatches(path(name)))?.matches ?? false
            condition.lock()
            busy.remove(name)
            if good {
                entries[name]?.verified = true
                stats.hits += 1
                condition.broadcast()
                condition.unlock()
                return
            }
            // A stale or damaged file: drop it and download.
            stats.checksumFailures += 1
            if let entry = entries.removeValue(forKey: name) { used -= entry.bytes }
            unlink(path(name))
            condition.broadcast()
            condition.unlock()
            return try acquire(shard)
        }

        do {
            try download(shard)
        } catch {
            condition.lock()
            busy.remove(name)
            var info = stat()
            let left = stat(partPath(name), &info) == 0 ? Int(info.st_size) : 0
            used -= shard.bytes - left
            if left > 0 { partials[name] = left }
            if let error = error as? VLMError, error.kind == .notFound { missing[name] = error }
            condition.broadcast()
            condition.unlock()
            throw error
        }
        condition.lock()
        busy.remove(name)
        tick += 1
        entries[name] = Entry(bytes: shard.bytes, lastUse: tick, pins: 1, verified: true)
        condition.broadcast()
        condition.unlock()
    }

    /// Downloads into the `.part` file (continuing it), checks size and checksum (XXH3-128, else SHA-256 in older
    /// indexes), renames into place. A checksum
    /// mismatch after continuing a partial file is retried once from scratch.
    private func download(_ shard: ShardInfo) throws {
        let part = partPath(shard.name)
        for attempt in 0..<2 {
            var before = stat()
            let had = stat(part, &before) == 0 ? Int(before.st_size) : 0
            let requests = try fetch(shard, part)
            var info = stat()
            let size = stat(part, &info) == 0 ? Int(info.st_size) : 0
            let (matches, actual) = try shard.fileMatches(part)
            condition.lock()
            stats.downloads += 1
            stats.requests += requests
            if had > 0 { stats.resumedDownloads += 1 }
            stats.bytesDownloaded += max(0, size - had)
            condition.unlock()
            if size == shard.bytes && matches {
                guard rename(part, path(shard.name)) == 0 else {
                    throw VLMError.io(file: path(shard.name), "rename from \(part) failed: \(String(cString: strerror(errno)))")
                }
                AtomicFile.syncDirectory(of: path(shard.name))
                return
            }
            condition.lock()
            stats.checksumFailures += 1
            condition.unlock()
            unlink(part)
            if attempt == 1 || had == 0 {
                throw VLMError(.corrupt, file: shard.name,
                               "downloaded \(size) bytes with \(shard.checksumKind) \(actual.prefix(16))…, but the index says \(shard.bytes) bytes with \(shard.checksumKind) \(shard.checksum.prefix(16))…; the shard changed on the server (re-index it, or restore it)")
            }
        }
    }

    private func release(_ name: String) {
        condition.lock()
        entries[name]?.pins -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Removes the least recently used unpinned shard (or a partial download); false when everything is in use.
    /// Call with the lock held.
    /// `before`: the position of the read that needs room; a shard whose next read comes earlier is kept (the
    /// caller waits for that read).
    @discardableResult
    private func evictOne(except keep: String? = nil, before position: Int? = nil) -> Bool {
        if let (name, size) = partials.first(where: { $0.key != keep && !busy.contains($0.key) }) {
            unlink(partPath(name))
            partials[name] = nil
            used -= size
            return true
        }
        let free = entries.filter { $0.value.pins == 0 && !busy.contains($0.key) }
        let candidate: (key: String, value: Entry)?
        if upcoming.isEmpty {
            candidate = free.min { $0.value.lastUse != $1.value.lastUse ? $0.value.lastUse < $1.value.lastUse : $0.key < $1.key }
        } else {
            // Not needed again first (least recently used among them), else the one needed furthest ahead.
            let done = free.filter { nextUse($0.key) == nil }
            if !done.isEmpty {
                candidate = done.min { $0.value.lastUse != $1.value.lastUse ? $0.value.lastUse < $1.value.lastUse : $0.key < $1.key }
            } else {
                let furthest = free.max { (nextUse($0.key) ?? .max, $1.key) < (nextUse($1.key) ?? .max, $0.key) }
                if let position, let furthest, let next = nextUse(furthest.key), next < position {
                    candidate = nil
                } else {
                    candidate = furthest
                }
            }
        }
        guard let (name, entry) = candidate else { return false }
        unlink(path(name))
        entries[name] = nil
        used -= entry.bytes
        stats.evictions += 1
        return true
    }
}

/// Shards fetched over HTTP(S) or from S3 (`s3://bucket/key`, signed with the `AWS_*` credentials) into a
/// `ShardCache`, one `pread` per sample on the cached file.
///
/// ```swift
/// let urls = try ShardURLs.expand("http://127.0.0.1:8080/train-{000000..000004}.tar")
/// let source = try HTTPShardSource(urls: urls, cacheDirectory: "/tmp/cache", cacheCapacity: 1 << 30)
/// ```
public final class HTTPShardSource: ShardSource, @unchecked Sendable {
    public let cache: ShardCache
    public let urls: [String: String]

    /// - Parameter urls: shard file name → URL.
    /// - Parameter s3: how to reach S3 for `s3://` URLs (default: from the environment, read when first needed).
    public init(urls: [String: String], cacheDirectory: String, cacheCapacity: Int, s3: S3Config? = nil) throws {
        self.urls = urls
        let s3Config = try urls.values.contains(where: S3Location.isS3) ? (s3 ?? S3Config.fromEnvironment()) : s3
        cache = try ShardCache(directory: cacheDirectory, capacity: cacheCapacity) { shard, part in
            guard let url = urls[shard.name] else {
                throw VLMError(.notFound, file: shard.name, "no URL for this shard")
            }
            if let s3Config, S3Location.isS3(url) {
                // One client per fetch: fetches run on several loader threads and a client is single-threaded.
                let client = try S3Client(config: s3Config)
                _ = try client.download(try S3Location(url), to: part)
                return client.gets
            }
            return try LoaderHTTP.download(url, to: part).requests
        }
    }

    public func plan(_ reads: [(position: Int, shard: String)]) { cache.plan(reads) }
    public var wantsPlan: Bool { true }

    public func read(_ shard: ShardInfo, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        try cache.withShard(shard) { path in
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw VLMError.io(file: path, "cannot open cached shard: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            try preadFully(fd, buffer, offset: offset, file: path)
        }
    }
}

/// Shard URL lists: WebDataset brace patterns and shard-list files.
public enum ShardURLs {
    /// Expands `{000..123}` ranges (zero-padded to the first bound's width) and `{a,b,c}` lists, left to right.
    public static func expand(_ pattern: String) throws -> [String] {
        guard let open = pattern.firstIndex(of: "{") else { return [pattern] }
        guard let close = pattern[open...].firstIndex(of: "}") else {
            throw VLMError(.invalidArgument, record: pattern, "unbalanced '{' in the shard pattern")
        }
        let head = String(pattern[..<open])
        let body = String(pattern[pattern.index(after: open)..<close])
        let tail = try expand(String(pattern[pattern.index(after: close)...]))
        var choices: [String] = []
        if let range = body.range(of: "..") {
            let lo = String(body[..<range.lowerBound]), hi = String(body[range.upperBound...])
            guard let a = Int(lo), let b = Int(hi), a <= b else {
                throw VLMError(.invalidArgument, record: pattern, "'{\(body)}' is not a range like {000000..000123}")
            }
            guard b - a < 10_000_000 else { throw VLMError(.invalidArgument, record: pattern, "the range is too large") }
            let width = lo.count
            for i in a...b {
                let digits = String(i)
                choices.append(String(repeating: "0", count: max(0, width - digits.count)) + digits)
            }
        } else {
            choices = body.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        return choices.flatMap { c in tail.map { head + c + $0 } }
    }

    /// One URL (or brace pattern) per line; blank lines and `#` comments ignored.
    public static func read(listFile path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read the shard list")
        }
        var out: [String] = []
        for line in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty || text.hasPrefix("#") { continue }
            out += try expand(text)
        }
        return out
    }

    /// The file name a URL serves (its last path component, without a query string).
    public static func fileName(_ url: String) -> String {
        let noQuery = url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
        return noQuery.split(separator: "/").last.map(String.init) ?? noQuery
    }
}

extension DatasetIndex {
    /// The part of the index whose shards `names` lists (in the index's order); throws naming a listed shard the
    /// index does not know.
    public func restricted(to names: [String]) throws -> DatasetIndex {
        let known = Set(shards.map(\.name))
        if let unknown = names.first(where: { !known.contains($0) }) {
            throw VLMError(.notFound, record: unknown, "this shard is not in the workspace's index (index it with `vlmdata shard`, or list only indexed shards)")
        }
        let wanted = Set(names)
        var newShards: [ShardInfo] = []
        var newSamples: [SampleInfo] = []
        for shard in shards where wanted.contains(shard.name) {
            var s = shard
            s.firstSample = newSamples.count
            let newIndex = newShards.count
            for sample in samples[shard.firstSample..<(shard.firstSample + shard.sampleCount)] {
                var copy = sample
                copy.shard = newIndex
                newSamples.append(copy)
            }
            newShards.append(s)
        }
        return DatasetIndex(shards: newShards, samples: newSamples)
    }
}
