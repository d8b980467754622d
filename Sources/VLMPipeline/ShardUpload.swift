import Foundation
import VLMCatalog
import VLMCore
import VLMIO

/// Uploads a workspace's training shards to S3 and publishes its index: what a remote trainer reads with only
/// the index URL (docs/s3.md).
///
/// Layout: shard `shards/train-000000.tar` of the workspace goes to `s3://bucket/prefix/shards/train-000000.tar`,
/// and `publish` puts the index at `s3://bucket/prefix/index.sqlite`, so shard paths resolve relative to it.
///
/// ```swift
/// let report = try ShardUpload.upload(workspace: ws, to: try S3Location("s3://bucket/ds"), config: try S3Config.fromEnvironment())
/// try ShardUpload.publish(workspace: ws, to: try S3Location("s3://bucket/ds/index.sqlite"), config: config)
/// ```
public enum ShardUpload {
    public struct Report: Sendable, Codable, Equatable {
        public var uploaded = 0
        /// Already there with the same size and ETag (a rerun).
        public var present = 0
        public var bytesUploaded = 0
        /// Unfinished multipart uploads of a killed run, aborted before uploading again.
        public var abortedStale = 0
        public var requests = 0
    }

    /// Uploads every indexed shard not already at its destination (HEAD: same size and ETag), multipart above
    /// `partSize`, and records each shard's URL in the catalog. A shard file that no longer matches its indexed
    /// size is refused (re-run `vlmdata shard` or `verify`).
    public static func upload(workspace: Workspace, to prefix: S3Location, config: S3Config, partSize: Int = 64 << 20,
                              progress: ((String) -> Void)? = nil) throws -> Report {
        let catalog = try Catalog(workspace: workspace)
        let shards = try catalog.shardFiles()
        guard !shards.isEmpty else {
            throw VLMError(.notFound, file: workspace.catalogPath, "no training shards in the catalog; run `vlmdata shard` first")
        }
        let client = try S3Client(config: config)
        var report = Report()
        for shard in shards {
            let local = workspace.resolve(shard.path)
            var info = stat()
            guard stat(local, &info) == 0 else {
                throw VLMError(.notFound, file: local, record: shard.name, "the indexed shard file is missing; nothing was uploaded for it")
            }
            guard Int(info.st_size) == shard.bytes else {
                throw VLMError(.corrupt, file: local, record: shard.name,
                               "the file has \(info.st_size) bytes but the index says \(shard.bytes); re-run `vlmdata shard` (or `vlmdata verify`)")
            }
            let relative = shard.path.hasPrefix("/") ? "shards/" + shard.name : shard.path
            let target = prefix.appending(relative)
            let etag = try S3Client.expectedETag(file: local, partSize: partSize)
            if let existing = try client.head(target), existing.bytes == shard.bytes, existing.etag == etag {
                report.present += 1
            } else {
                report.abortedStale += try client.abortUnfinishedUploads(target)
                let got = try client.upload(file: local, to: target, partSize: partSize)
                if !got.isEmpty && got != etag {
                    throw VLMError(.corrupt, file: target.description, record: shard.name,
                                   "S3 answered ETag \(got) but the local file's is \(etag); the upload was damaged in transit")
                }
                report.uploaded += 1
                report.bytesUploaded += shard.bytes
                progress?("uploaded \(shard.name) to \(target)")
            }
            if shard.url != target.description { try catalog.setShardURL(name: shard.name, url: target.description) }
        }
        report.requests = client.requests
        return report
    }

    /// Where `publish` puts the index for `destination`: itself when it names a `.sqlite` key, else
    /// `destination/index.sqlite`.
    public static func indexLocation(_ destination: S3Location) -> S3Location {
        if destination.key.isEmpty || destination.key.hasSuffix("/") || !destination.key.hasSuffix(".sqlite") {
            return destination.appending("index.sqlite")
        }
        return destination
    }

    /// Uploads a consistent snapshot of the workspace's catalog (`VACUUM INTO`) to `destination` (a key ending in
    /// `/` or naming no `.sqlite` file gets `index.sqlite` appended). Returns the index URL and its size.
    public static func publish(workspace: Workspace, to destination: S3Location, config: S3Config) throws -> (url: String, bytes: Int) {
        let target = indexLocation(destination)
        let catalog = try Catalog(workspace: workspace)
        guard !(try catalog.shardFiles()).isEmpty else {
            throw VLMError(.notFound, file: workspace.catalogPath, "no training shards in the catalog; run `vlmdata shard` first")
        }
        let snapshot = workspace.root + "/.publish-\(getpid()).sqlite"
        unlink(snapshot)
        defer { unlink(snapshot) }
        try catalog.snapshot(to: snapshot)
        var info = stat()
        _ = stat(snapshot, &info)
        let client = try S3Client(config: config)
        try client.upload(file: snapshot, to: target)
        return (target.description, Int(info.st_size))
    }
}
