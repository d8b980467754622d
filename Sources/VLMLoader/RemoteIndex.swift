import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// A dataset known only by the URL of its published index (`vlmdata catalog publish`): `https://…/index.sqlite`
/// or `s3://bucket/prefix/index.sqlite`. The index is downloaded into the cache folder and opened from that
/// private copy; each shard is read from the URL `shard --upload` recorded, else from its path relative to the
/// index's folder. The copy is opened read-only: no migration runs on it, and an index of another schema than
/// this build reads is refused naming the version it has and the one needed.
///
/// ```swift
/// let remote = try RemoteIndex.open("s3://bucket/ds/index.sqlite", cacheDirectory: "/tmp/cache/rank-0")
/// let source = try HTTPShardSource(urls: remote.shardURLs, cacheDirectory: "/tmp/cache/rank-0", cacheCapacity: 1 << 30)
/// ```
public struct RemoteIndex {
    public let url: String
    public let catalog: Catalog
    public let index: DatasetIndex
    /// Shard file name → the URL to read it from.
    public let shardURLs: [String: String]

    /// True for the URL forms an index may be given as.
    public static func isURL(_ text: String) -> Bool {
        text.hasPrefix("s3://") || text.hasPrefix("http://") || text.hasPrefix("https://")
    }

    /// The default cache folder for a remote index: one per index URL and rank, under the temporary folder.
    public static func defaultCacheDirectory(for url: String, rank: Int) -> String {
        let base = ProcessInfo.processInfo.environment["VLMDATA_CACHE"] ?? NSTemporaryDirectory() + "vlmdata-cache"
        return "\(base)/\(Hashing.sha256(url).prefix(16))/rank-\(rank)"
    }

    /// Downloads the index at `url` (fresh each time: it is small, and a republished index must win) into
    /// `cacheDirectory/.index/catalog.sqlite` and opens it. Throws `.notFound` naming the URL when it is absent.
    public static func open(_ url: String, cacheDirectory: String, s3: S3Config? = nil) throws -> RemoteIndex {
        let folder = cacheDirectory + "/.index"
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            throw VLMError.io(file: folder, "cannot create the index cache folder: \(error.localizedDescription)")
        }
        let part = folder + "/.catalog.sqlite.part"
        unlink(part)
        if S3Location.isS3(url) {
            let client = try S3Client(config: s3 ?? S3Config.fromEnvironment())
            _ = try client.download(try S3Location(url), to: part)
        } else {
            do { _ = try LoaderHTTP.download(url, to: part) } catch let error as VLMError where error.kind == .notFound {
                throw VLMError(.notFound, file: HTTPClient.redacted(url), "no index at this URL (publish one with `vlmdata catalog publish`)")
            }
        }
        let target = folder + "/catalog.sqlite"
        for suffix in ["", "-wal", "-shm"] { unlink(target + suffix) }
        guard rename(part, target) == 0 else {
            throw VLMError.io(file: target, "rename from \(part) failed: \(String(cString: strerror(errno)))")
        }
        let catalog: Catalog
        // Read-only: the copy is the published index as it is; no migration runs on it and nothing is written.
        do { catalog = try Catalog(readOnly: Workspace(root: folder)) } catch let error as VLMError where error.kind == .unsupported {
            throw VLMError(.unsupported, file: HTTPClient.redacted(url), "cannot read this index: \(error.message)")
        } catch let error as VLMError {
            throw VLMError(.corrupt, file: HTTPClient.redacted(url), "the downloaded index does not open as a catalog: \(error.message)")
        }
        let index = try DatasetIndex.load(catalog: catalog)
        let base = url.split(separator: "?", maxSplits: 1)[0]
        let folderURL = base.lastIndex(of: "/").map { String(base[..<$0]) } ?? String(base)
        var urls: [String: String] = [:]
        for shard in try catalog.shardFiles() {
            urls[shard.name] = shard.url ?? (shard.path.hasPrefix("/") ? "file://" + shard.path : folderURL + "/" + shard.path)
        }
        return RemoteIndex(url: url, catalog: catalog, index: index, shardURLs: urls)
    }

    /// A source reading this index's shards through a capped cache in `cacheDirectory`.
    public func source(cacheDirectory: String, cacheCapacity: Int, s3: S3Config? = nil) throws -> HTTPShardSource {
        try HTTPShardSource(urls: shardURLs, cacheDirectory: cacheDirectory, cacheCapacity: cacheCapacity, s3: s3)
    }
}
