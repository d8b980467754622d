import Foundation
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMLoader

/// A real nginx on loopback serving a folder (Tests/support/nginx_loopback.sh).
final class LoopbackNginx {
    let work: String
    let port: Int
    static let script = packageRoot + "/Tests/support/nginx_loopback.sh"

    init(serving root: String) throws {
        work = temporaryFolder("nginx")
        let output = try LoopbackNginx.run([LoopbackNginx.script, "start", root, work])
        guard let port = Int(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw VLMError(.io, "nginx did not start: \(output)")
        }
        self.port = port
    }

    deinit { _ = try? LoopbackNginx.run([LoopbackNginx.script, "stop", work]) }

    var base: String { "http://127.0.0.1:\(port)" }

    /// Runs the script through `/bin/sh` with its output in a file (Foundation's `Process.waitUntilExit` can hang
    /// under the test runner on Linux, and the daemon must not hold a pipe open).
    static func run(_ arguments: [String]) throws -> String {
        let out = NSTemporaryDirectory() + "nginx-script-\(UUID().uuidString.prefix(8)).out"
        defer { unlink(out) }
        let quoted = arguments.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let status = system("/bin/sh \(quoted) > '\(out)' 2>&1 </dev/null")
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else { throw VLMError(.io, "nginx script failed (\(status)): \(text)") }
        return text
    }

    static var available: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") ||
            (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
                FileManager.default.isExecutableFile(atPath: "\($0)/nginx")
            }
    }
}

@Suite(.serialized) struct HTTPTests {
    @Test func braceExpansionAndShardLists() throws {
        #expect(try ShardURLs.expand("https://h/p/train-{000000..000002}.tar") ==
            ["https://h/p/train-000000.tar", "https://h/p/train-000001.tar", "https://h/p/train-000002.tar"])
        #expect(try ShardURLs.expand("a-{x,y}-{8..10}") == ["a-x-8", "a-x-9", "a-x-10", "a-y-8", "a-y-9", "a-y-10"])
        #expect(throws: VLMError.self) { try ShardURLs.expand("a-{3..1}") }
        #expect(throws: VLMError.self) { try ShardURLs.expand("a-{1..2") }
        #expect(ShardURLs.fileName("https://h/p/train-000001.tar?sig=abc") == "train-000001.tar")
        let list = temporaryFolder("list") + "/shards.txt"
        try Array("# shards\nhttp://h/a-{0..1}.tar\n\nhttp://h/b.tar\n".utf8).withUnsafeBytes { raw in
            _ = FileManager.default.createFile(atPath: list, contents: Data(raw))
        }
        #expect(try ShardURLs.read(listFile: list) == ["http://h/a-0.tar", "http://h/a-1.tar", "http://h/b.tar"])
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed (the Makefile's deps install nginx-light)"))
    func streamsThroughASmallCacheWithTheSameKeysAndBytes() throws {
        let ws = temporaryFolder("http-ws")
        let (catalog, _) = try makeWorkspace(ws, shards: 6, perShard: 15, patches: 16, patchDim: 48)
        let index = try DatasetIndex.load(catalog: catalog)
        let server = try LoopbackNginx(serving: ws + "/shards")
        let total = index.shards.reduce(0) { $0 + $1.bytes }
        let largest = index.shards.map(\.bytes).max()!
        let urls = try ShardURLs.expand(server.base + "/train-{000000..000005}.tar")
        let byName = Dictionary(uniqueKeysWithValues: urls.map { (ShardURLs.fileName($0), $0) })
        let options = LoaderOptions(order: OrderSpec(seed: 5, blockSize: 8, partitions: 2), workers: 3, prefetch: 2)

        let local = try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: ws))], options: options)
        var expected: [(String, [Int32], [Int32], [UInt8])] = []
        let localStream = try local.samples(epoch: 0)
        while let s = try localStream.next() { expected.append((s.key, s.inputIds, s.labels, s.pixels)) }

        let cacheDir = temporaryFolder("cache")
        let capacity = 3 * largest + 1
        #expect(capacity < total)
        let source = try HTTPShardSource(urls: byName, cacheDirectory: cacheDir, cacheCapacity: capacity)
        let remote = try Loader(datasets: [LoaderDataset(index: index, source: source)], options: options)
        let stream = try remote.samples(epoch: 0)
        var got: [(String, [Int32], [Int32], [UInt8])] = []
        while let s = try stream.next() { got.append((s.key, s.inputIds, s.labels, s.pixels)) }
        #expect(got.count == expected.count)
        #expect(got.map(\.0) == expected.map(\.0))
        #expect(zip(got, expected).allSatisfy { $0.1 == $1.1 && $0.2 == $1.2 && $0.3 == $1.3 })
        let stats = source.cache.statistics
        #expect(stats.peakBytes <= capacity)
        #expect(stats.downloads >= 6)
        #expect(stats.evictions > 0)
        #expect(source.cache.bytesUsed <= capacity)
        let cachedBytes = (try FileManager.default.contentsOfDirectory(atPath: cacheDir)).reduce(0) { acc, name in
            acc + ((try? FileManager.default.attributesOfItem(atPath: cacheDir + "/" + name)[.size] as? Int) ?? 0)
        }
        #expect(cachedBytes <= capacity)

        // A second process may not share the folder.
        #expect(throws: VLMError.self) { _ = try HTTPShardSource(urls: byName, cacheDirectory: cacheDir, cacheCapacity: capacity) }
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed"))
    func crashLeftoversAreResumedOrRejected() throws {
        let ws = temporaryFolder("http-crash")
        let (catalog, _) = try makeWorkspace(ws, shards: 3, perShard: 10, patches: 16, patchDim: 48)
        let index = try DatasetIndex.load(catalog: catalog)
        let server = try LoopbackNginx(serving: ws + "/shards")
        let urls = Dictionary(uniqueKeysWithValues: index.shards.map { ($0.name, server.base + "/" + $0.name) })
        let cacheDir = temporaryFolder("cache-crash")
        // A crash left half of shard 0 as a partial download, and a damaged "complete" shard 1.
        let shard0 = try Array(Data(contentsOf: URL(fileURLWithPath: ws + "/shards/train-000000.tar")))
        FileManager.default.createFile(atPath: cacheDir + "/.train-000000.tar.part", contents: Data(shard0.prefix(shard0.count / 2)))
        var shard1 = try Array(Data(contentsOf: URL(fileURLWithPath: ws + "/shards/train-000001.tar")))
        shard1[700] ^= 0xFF
        FileManager.default.createFile(atPath: cacheDir + "/train-000001.tar", contents: Data(shard1))

        let source = try HTTPShardSource(urls: urls, cacheDirectory: cacheDir, cacheCapacity: 1 << 30)
        let loader = try Loader(datasets: [LoaderDataset(index: index, source: source)],
                                options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2))
        let local = try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: ws))],
                               options: LoaderOptions(order: OrderSpec(seed: 1), workers: 0))
        var remoteIds: [[Int32]] = []
        let stream = try loader.samples(epoch: 0)
        while let s = try stream.next() { remoteIds.append(s.inputIds) }
        var localIds: [[Int32]] = []
        let localStream = try local.samples(epoch: 0)
        while let s = try localStream.next() { localIds.append(s.inputIds) }
        #expect(remoteIds == localIds)
        let stats = source.cache.statistics
        #expect(stats.resumedDownloads == 1)
        #expect(stats.checksumFailures == 1)
        #expect(try Hashing.sha256(file: cacheDir + "/train-000001.tar") == index.shards[1].sha256)
        #expect(!FileManager.default.fileExists(atPath: cacheDir + "/.train-000000.tar.part"))
    }

    @Test(.enabled(if: LoopbackNginx.available, "nginx is not installed"))
    func changedAndMissingShardsOnTheServer() throws {
        let ws = temporaryFolder("http-bad")
        let (catalog, made) = try makeWorkspace(ws, shards: 4, perShard: 10)
        let index = try DatasetIndex.load(catalog: catalog)
        let served = temporaryFolder("served")
        for shard in index.shards {
            try FileManager.default.copyItem(atPath: ws + "/" + shard.path, toPath: served + "/" + shard.name)
        }
        let server = try LoopbackNginx(serving: served)
        let urls = Dictionary(uniqueKeysWithValues: index.shards.map { ($0.name, server.base + "/" + $0.name) })

        // Shard 2's bytes change on the server (same size): the checksum catches it.
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: served + "/train-000002.tar")))
        bytes[600] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: served + "/train-000002.tar"))
        let changed = try Loader(datasets: [LoaderDataset(index: index, source: HTTPShardSource(urls: urls, cacheDirectory: temporaryFolder("c1"), cacheCapacity: 1 << 30))],
                                 options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2))
        #expect {
            _ = try keys(changed.samples(epoch: 0))
        } throws: { error in
            let text = "\(error)"
            return text.contains("train-000002.tar") && text.contains("sha256") && text.contains("changed on the server")
        }

        // Shard 3 disappears from the server: a clear error, or skipped and reported.
        try FileManager.default.copyItem(atPath: ws + "/shards/train-000002.tar", toPath: served + "/restored.tar")
        try FileManager.default.removeItem(atPath: served + "/train-000002.tar")
        try FileManager.default.moveItem(atPath: served + "/restored.tar", toPath: served + "/train-000002.tar")
        try FileManager.default.removeItem(atPath: served + "/train-000003.tar")
        let erroring = try Loader(datasets: [LoaderDataset(index: index, source: HTTPShardSource(urls: urls, cacheDirectory: temporaryFolder("c2"), cacheCapacity: 1 << 30))],
                                  options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2))
        #expect {
            _ = try keys(erroring.samples(epoch: 0))
        } throws: { error in
            let text = "\(error)"
            return text.contains("train-000003.tar") && text.contains("404")
        }
        let skipping = try Loader(datasets: [LoaderDataset(index: index, source: HTTPShardSource(urls: urls, cacheDirectory: temporaryFolder("c3"), cacheCapacity: 1 << 30))],
                                  options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2, onMissing: .skip))
        let stream = try skipping.samples(epoch: 0)
        let got = try keys(stream)
        #expect(Set(got) == Set(made.map(\.key).filter { !$0.hasPrefix("s3_") }))
        #expect(stream.report.skipped == 10)
        #expect(stream.report.missingShards == ["train-000003.tar"])
    }
}
