import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMShard

/// `shard` as a stage value: tokenized instructions and their pixels into WebDataset shards, indexed in the catalog.
///
/// It reads one tokenize run and one patchify run: by default the latest of each; `tokenized`/`pixels` pick
/// another by readable name (`vicuna_v1@mistral-v1`) or by a prefix of its config hash.
public struct ShardStep: Stage, LineageStage {
    public static let name = "shard"
    public static let summary = "write WebDataset training shards (tar) and index every sample in the catalog"
    static let reads = [TokenizeStep.name, PatchifyStep.name]
    static let derived: [Catalog.DerivedTable] = [.shards, .samples]
    /// Shard files live outside the catalog: the stage always runs; the shard writer does nothing when its
    /// shards are complete and rewrites them when they are not.
    var skipsUnchanged: Bool { false }

    public struct Config: StageConfig, Equatable {
        public var targetSize = "256MB"
        public var maxSamples: Int?
        public var limit: Int?
        public var name = "train"
        public var includeJpeg = false
        /// A tokenize run's readable name or a prefix of its tokenization config hash.
        public var tokenized: String?
        /// A patchify run's readable name or a prefix of its pixel config hash.
        public var pixels: String?
        public var part: String?
        public var jobs: Int?
        /// Put images of evaluation sets into training shards too (default: they are left out).
        public var allowEvalImages = false
        /// After writing, upload every shard not already there to `s3://bucket/prefix/shards/NAME.tar` and record
        /// its URL in the index (docs/s3.md). Credentials from the AWS_* variables or ~/.aws/credentials.
        public var upload: String?
        /// Shards larger than this go up in parts of this size (multipart; at least 5MiB).
        public var partSize = "64MiB"
        /// Also record each shard's sha256 (nil: no; omitted from the identity unless set, so earlier hashes hold).
        public var sha256: Bool?

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case limit, name, tokenized, pixels, part, jobs, upload
            case targetSize = "target_size", maxSamples = "max_samples", includeJpeg = "include_jpeg"
            case allowEvalImages = "allow_eval_images", partSize = "part_size"
            case sha256
        }
        public static var keys: [String] { CodingKeys.allCases.map(\.rawValue) }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init()
            targetSize = try c.value(.targetSize, default: targetSize)
            maxSamples = try c.decodeIfPresent(Int.self, forKey: .maxSamples)
            limit = try c.decodeIfPresent(Int.self, forKey: .limit)
            name = try c.value(.name, default: name)
            includeJpeg = try c.value(.includeJpeg, default: includeJpeg)
            tokenized = try c.decodeIfPresent(String.self, forKey: .tokenized)
            pixels = try c.decodeIfPresent(String.self, forKey: .pixels)
            part = try c.decodeIfPresent(String.self, forKey: .part)
            jobs = try c.decodeIfPresent(Int.self, forKey: .jobs)
            allowEvalImages = try c.value(.allowEvalImages, default: allowEvalImages)
            upload = try c.decodeIfPresent(String.self, forKey: .upload)
            partSize = try c.value(.partSize, default: partSize)
            sha256 = try c.decodeIfPresent(Bool.self, forKey: .sha256)
        }
    }

    public let config: Config
    let targetBytes: Int
    /// Where `upload` puts the shards, and the multipart part size.
    let uploadTarget: S3Location?
    let partBytes: Int

    public init(config: Config) throws {
        guard let bytes = ByteSize.parse(config.targetSize) else {
            throw invalid("target_size", "must be a size such as 256MB, 1GiB or 500000, not '\(config.targetSize)'")
        }
        if let n = config.maxSamples, n < 1 { throw invalid("max_samples", "must be at least 1") }
        if let n = config.limit, n < 0 { throw invalid("limit", "must not be negative") }
        if let part = config.part, PartSpec(parsing: part) == nil { throw invalid("part", "must look like 0/4 (index/count, index < count)") }
        if let n = config.jobs, n < 1 { throw invalid("jobs", "must be at least 1") }
        guard let parts = ByteSize.parse(config.partSize), parts >= 5 << 20 else {
            throw invalid("part_size", "must be a size of at least 5MiB (S3's smallest part), not '\(config.partSize)'")
        }
        do { uploadTarget = try config.upload.map { try S3Location($0) } } catch {
            throw invalid("upload", "must be an s3://bucket/prefix URL, not '\(config.upload ?? "")'")
        }
        self.config = config
        targetBytes = bytes
        partBytes = parts
    }

    public func run(_ context: StageContext) throws -> StageReport {
        try requireCatalog(context, stage: Self.name, hint: "run ingest, tokenize and patchify first")
        var report = try runWithLineage(context)
        if let uploadTarget { report.counts.merge(try upload(to: uploadTarget, context, shardReport: report)) { _, new in new } }
        return report
    }

    /// The upload after the shards are written and indexed: outside the shard run's lineage (where the shards go
    /// does not change what they are), its figures added to the report as `uploaded`, `already_present`,
    /// `bytes_uploaded`, `aborted_stale_uploads` and `upload_requests`.
    func upload(to target: S3Location, _ context: StageContext, shardReport: StageReport) throws -> [String: Int] {
        do {
            context.progress.start("upload \(target)", total: nil)
            let uploaded = try ShardUpload.upload(workspace: Workspace(root: context.workspace), to: target,
                                                  config: try S3Config.fromEnvironment(), partSize: partBytes) { _ in
                context.progress.advance(by: 1)
            }
            context.progress.finish("\(uploaded.uploaded) shards uploaded, \(uploaded.present) already there")
            return ["uploaded": uploaded.uploaded, "already_present": uploaded.present, "bytes_uploaded": uploaded.bytesUploaded,
                    "aborted_stale_uploads": uploaded.abortedStale, "upload_requests": uploaded.requests]
        } catch {
            throw StageFailure(stage: Self.name, error: Self.vlmError(error), report: shardReport)
        }
    }

    /// The tokenize and patchify configs this run reads: a run when lineage knows one, else a bare config hash.
    struct Choice {
        var run: Catalog.LineageRun?
        var hash: String
        var name: String
    }

    func choices(_ catalog: Catalog) throws -> (tokenized: Choice?, pixels: Choice?) {
        let tokenized = try LineageChoice.choose(catalog, stage: TokenizeStep.name, table: .tokenized, requested: config.tokenized,
                                                 flag: "--tokenized", what: "tokenization")
        let pixels = try LineageChoice.choose(catalog, stage: PatchifyStep.name, table: .pixels, requested: config.pixels,
                                              flag: "--pixels", what: "pixel")
        return (tokenized.map { Choice(run: $0.run, hash: $0.hash, name: $0.name) },
                pixels.map { Choice(run: $0.run, hash: $0.hash, name: $0.name) })
    }

    func inputs(_ catalog: Catalog) throws -> [Catalog.LineageRun] {
        let (tokenized, pixels) = try choices(catalog)
        return [tokenized?.run, pixels?.run].compactMap { $0 }
    }

    func options(_ catalog: Catalog, _ context: StageContext) throws -> ShardOptions {
        let (tokenized, pixels) = try choices(catalog)
        var options = ShardOptions()
        options.name = config.name
        options.targetBytes = targetBytes
        options.maxSamplesPerShard = config.maxSamples
        options.limit = config.limit
        options.includeImageBytes = config.includeJpeg
        options.tokenizedConfig = tokenized?.hash
        options.pixelsConfig = pixels?.hash
        options.part = config.part.flatMap(PartSpec.init(parsing:)) ?? context.part
        options.jobs = config.jobs
        options.allowEvalImages = config.allowEvalImages
        options.sha256 = config.sha256 ?? false
        return options
    }

    func identity(_ catalog: Catalog, inputs: [Catalog.LineageRun]) throws -> LineageIdentity {
        let (tokenized, pixels) = try choices(catalog)
        var identity = config
        identity.jobs = nil
        // Where the shards are uploaded does not change them.
        (identity.upload, identity.partSize) = (nil, Config().partSize)
        identity.sha256 = nil   // the same shard bytes either way
        identity.targetSize = String(targetBytes)
        (identity.tokenized, identity.pixels) = (tokenized?.hash, pixels?.hash)
        let name = "\(config.name)@\(tokenized?.name ?? "-")+\(pixels?.name ?? "text-only")"
        return LineageIdentity(name: name, config: identity)
    }

    func perform(_ catalog: Catalog, _ context: StageContext, inputs: [Catalog.LineageRun]) throws -> StageReport {
        try ShardStage.run(workspace: catalog.workspace, options: try options(catalog, context), progress: context.progress)
    }
}

/// Picks the config of a derived table the next stage reads: by default the latest run's; by readable name or hash
/// prefix when asked. An ambiguous or unknown choice is an error listing every candidate by name and parameters.
enum LineageChoice {
    struct Candidate {
        var run: Catalog.LineageRun?
        var hash: String
        var name: String
        var rows: Int
        var parameters: String

        var line: String {
            run == nil ? "\(hash) (\(rows) rows; \(parameters))" : "\(name) (config \(hash.prefix(12)), \(rows) rows; \(parameters))"
        }
    }

    static func candidates(_ catalog: Catalog, stage: String, table: Catalog.DerivedTable) throws -> [Candidate] {
        let counts = try catalog.configCounts(table: table)
        let rowsByHash = Dictionary(counts.map { ($0.configHash, $0.rows) }, uniquingKeysWith: { a, _ in a })
        var seen = Set<String>()
        var out: [Candidate] = []
        for run in try catalog.currentLineageRuns(stages: [stage]) {
            guard let hash = run.output, let rows = rowsByHash[hash], !seen.contains(hash) else { continue }
            seen.insert(hash)
            out.append(Candidate(run: run, hash: hash, name: run.name, rows: rows, parameters: parameters(run.config)))
        }
        // Configs made before lineage was recorded (or merged in from part catalogs): named by their hash.
        for entry in counts where !seen.contains(entry.configHash) {
            out.append(Candidate(run: nil, hash: entry.configHash, name: entry.configHash, rows: entry.rows,
                                 parameters: entry.detail))
        }
        return out
    }

    /// A JSON value as a config holds it (JSONSerialization on Linux cannot tell `true` from `1`).
    indirect enum Value: Decodable {
        case bool(Bool), int(Int), double(Double), string(String), null, list([Value]), object([String: Value])

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let v = try? c.decode(Bool.self) { self = .bool(v) }
            else if let v = try? c.decode(Int.self) { self = .int(v) }
            else if let v = try? c.decode(Double.self) { self = .double(v) }
            else if let v = try? c.decode(String.self) { self = .string(v) }
            else if let v = try? c.decode([Value].self) { self = .list(v) }
            else { self = .object(try c.decode([String: Value].self)) }
        }

        var text: String {
            switch self {
            case .bool(let v): return "\(v)"
            case .int(let v): return "\(v)"
            case .double(let v): return "\(v)"
            case .string(let v): return v.count == 64 && v.allSatisfy(\.isHexDigit) ? String(v.prefix(12)) : v
            case .null: return "null"
            case .list(let v): return "[" + v.map(\.text).joined(separator: ",") + "]"
            case .object(let v): return v.keys.sorted().map { "\($0)=\(v[$0]!.text)" }.joined(separator: " ")
            }
        }
    }

    /// `key=value` pairs of a canonical config JSON, long hashes shortened.
    static func parameters(_ json: String) -> String {
        (try? JSONDecoder().decode(Value.self, from: Data(json.utf8)))?.text ?? json
    }

    static func choose(_ catalog: Catalog, stage: String, table: Catalog.DerivedTable, requested: String?, flag: String,
                       what: String) throws -> Candidate? {
        let all = try candidates(catalog, stage: stage, table: table)
        func listing(_ list: [Candidate]) -> String { "\n  " + list.map(\.line).joined(separator: "\n  ") }
        if let requested {
            let byName = all.filter { $0.name == requested }
            let matches = byName.isEmpty ? all.filter { $0.hash.hasPrefix(requested.lowercased()) } : byName
            if matches.count == 1 { return matches[0] }
            if matches.isEmpty {
                throw VLMError(.notFound, record: flag, "no \(what) config is named '\(requested)' or has a hash starting so; "
                               + "the catalog holds: \(all.isEmpty ? "none" : listing(all))")
            }
            throw VLMError(.invalidArgument, record: flag, "\(matches.count) \(what) configs match '\(requested)'; "
                           + "give a longer hash: \(listing(matches))")
        }
        if let latest = all.first(where: { $0.run != nil }) { return latest }
        if all.count > 1 {
            throw VLMError(.invalidArgument, record: flag, "the catalog holds \(all.count) \(what) configs and no run says which "
                           + "is current; choose one with \(flag) NAME or HASH: \(listing(all))")
        }
        return all.first
    }
}
