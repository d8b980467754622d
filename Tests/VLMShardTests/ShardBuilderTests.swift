import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
import VLMIO
@testable import VLMFixtures
@testable import VLMShard

func makeCatalog(_ label: String = #function, count: Int = 60, configure: (inout SyntheticShardInputs) -> Void = { _ in }) throws -> Catalog {
    let catalog = try Catalog(workspace: Workspace(root: try temporaryDirectory(label)))
    var inputs = SyntheticShardInputs(count: count, seed: 7)
    inputs.tokens = 40
    inputs.patches = 16
    inputs.patchDim = 48
    configure(&inputs)
    try inputs.fill(catalog)
    return catalog
}

/// Each shard's integrity hash as indexed: the XXH3-128 recorded at write time.
func shardHashes(_ catalog: Catalog) throws -> [String: String] {
    try catalog.read { db in
        Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT name, xxh3_128 FROM shards").map {
            ($0["name"] as String, $0["xxh3_128"] as String)
        })
    }
}

/// Each shard's recorded sha256 (nil unless written with `sha256`).
func shardSHA256s(_ catalog: Catalog) throws -> [String: String?] {
    try catalog.read { db in
        Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT name, sha256 FROM shards").map {
            ($0["name"] as String, $0["sha256"] as String?)
        })
    }
}

func smallShards() -> ShardOptions {
    var options = ShardOptions()
    options.targetBytes = 20_000
    return options
}

@Suite struct ShardBuilderTests {
    @Test func writesIndexedReproducibleShards() throws {
        let a = try makeCatalog("a")
        let b = try makeCatalog("b")
        let reportA = try ShardBuilder(catalog: a, options: smallShards()).run()
        let reportB = try ShardBuilder(catalog: b, options: smallShards()).run()
        #expect(reportA.counts["samples"] == 60)
        #expect((reportA.counts["shards"] ?? 0) > 3)
        let hashesA = try shardHashes(a)
        #expect(hashesA == (try shardHashes(b)))
        for (name, xxh3) in hashesA {
            #expect(try XXH3.hash128(file: a.workspace.shardsDirectory + "/" + name) == xxh3)
            #expect(try readFile(a.workspace.shardsDirectory + "/" + name) == readFile(b.workspace.shardsDirectory + "/" + name))
        }
        #expect(reportB.counts == reportA.counts)
        // A second run finds everything done.
        let again = try ShardBuilder(catalog: a, options: smallShards()).run()
        #expect(again.skipped)
        #expect(try shardHashes(a) == hashesA)
        // No sha256 unless asked for; --deep computes it from bytes that matched their XXH3-128 (and records it).
        #expect(try shardSHA256s(a).values.allSatisfy { $0 == nil })
        let summary = try ShardVerifier(catalog: a).verify(deep: true)
        #expect(summary.problems == [])
        #expect(summary.samples == 60)
        #expect(summary.sha256Checked == 0)
        #expect(summary.sha256Computed.count == hashesA.count)
        for (name, sha) in summary.sha256Computed {
            #expect(try Hashing.sha256(file: a.workspace.shardsDirectory + "/" + name) == sha)
        }
    }

    /// `sha256`: the same shard bytes, each shard's sha256 recorded; asked for after the shards were written, the
    /// rerun records it for them without rewriting anything.
    @Test func sha256OnDemand() throws {
        let plain = try makeCatalog("plain")
        let hashed = try makeCatalog("hashed")
        var options = smallShards()
        _ = try ShardBuilder(catalog: plain, options: options).run()
        options.sha256 = true
        let report = try ShardBuilder(catalog: hashed, options: options).run()
        #expect(report.counts["sha256_added"] == 0)
        #expect(try shardHashes(plain) == shardHashes(hashed))
        let recorded = try shardSHA256s(hashed)
        #expect(recorded.count > 3)
        for (name, sha) in recorded {
            #expect(sha != nil)
            #expect(try Hashing.sha256(file: hashed.workspace.shardsDirectory + "/" + name) == sha)
        }
        let summary = try ShardVerifier(catalog: hashed).verify(deep: true)
        #expect(summary.problems == [] && summary.sha256Checked == recorded.count && summary.sha256Computed.isEmpty)
        // Asked for later: recorded for the shards already written; the files stay as they are.
        let again = try ShardBuilder(catalog: plain, options: options).run()
        #expect(again.skipped)
        #expect(again.counts["sha256_added"] == recorded.count)
        #expect(try shardSHA256s(plain) == recorded)
    }

    /// `verify --deep` records the sha256 it computes (one transaction), so the next `--deep` checks it; a shard
    /// whose bytes no longer match their XXH3-128 gets none recorded. Pixel shards likewise.
    @Test func deepVerifyRecordsTheSHA256ItComputes() throws {
        let catalog = try makeCatalog()
        _ = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        let names = try shardHashes(catalog).keys.sorted()
        #expect(names.count > 3)
        // One shard damaged before the first --deep: its sha256 must not be recorded.
        let damaged = names[1]
        let path = catalog.workspace.shardsDirectory + "/" + damaged
        var bytes = try readFile(path)
        bytes[bytes.count / 2] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let first = try ShardVerifier(catalog: catalog).verify(deep: true)
        #expect(first.problems.contains { $0.hasPrefix("\(damaged): xxh3-128 is ") })
        #expect(first.sha256Checked == 0 && Set(first.sha256Computed.keys) == Set(names).subtracting([damaged]))
        let recorded = try shardSHA256s(catalog)
        for name in names where name != damaged {
            #expect(recorded[name] == .some(try Hashing.sha256(file: catalog.workspace.shardsDirectory + "/" + name)), "\(name)")
        }
        #expect(recorded[damaged] == .some(nil))
        let pixelShards = try catalog.pixelShardRecords()
        #expect(!pixelShards.isEmpty && first.pixelSHA256Computed.count == pixelShards.count)
        for shard in pixelShards {
            #expect(shard.sha256 == (try Hashing.sha256(file: catalog.workspace.pixelShardsDirectory + "/" + shard.name)))
        }
        // The next --deep checks what was recorded: a changed byte in a good shard is now a sha256 mismatch too.
        let second = try ShardVerifier(catalog: catalog).verify(deep: true)
        #expect(second.sha256Checked == names.count - 1 && second.sha256Computed.isEmpty)
        #expect(second.pixelSHA256Checked == pixelShards.count && second.pixelSHA256Computed.isEmpty)
        let good = catalog.workspace.shardsDirectory + "/" + names[0]
        var goodBytes = try readFile(good)
        goodBytes[goodBytes.count / 2] ^= 0x01
        try Data(goodBytes).write(to: URL(fileURLWithPath: good))
        let third = try ShardVerifier(catalog: catalog).verify(deep: true)
        #expect(third.problems.contains { $0.hasPrefix("\(names[0]): sha256 is ") })
        #expect(third.sha256Computed.isEmpty)
    }

    /// Pixel shards carry the XXH3-128 computed as they were written (no sha256 unless asked for); the shard
    /// plan's fingerprint names them by it, and by their sha256 where a workspace from before v15 has no XXH3-128,
    /// so such a workspace keeps its plan and its shards.
    @Test func pixelShardsAreNamedByTheirXXH3() throws {
        let catalog = try makeCatalog(count: 12)
        let shards = try catalog.pixelShardRecords()
        #expect(!shards.isEmpty)
        for shard in shards {
            #expect(shard.sha256 == nil)
            #expect(shard.xxh3_128 == (try XXH3.hash128(file: catalog.workspace.pixelShardsDirectory + "/" + shard.name)))
        }
        let builder = ShardBuilder(catalog: catalog, options: smallShards())
        let withXXH3 = try builder.makePlan().fingerprint
        // As a pre-v15 row: sha256 recorded, no XXH3-128. The fingerprint follows the sha256.
        let sha = try Hashing.sha256(file: catalog.workspace.pixelShardsDirectory + "/" + shards[0].name)
        try catalog.write { db in try db.execute(sql: "UPDATE pixel_shards SET xxh3_128 = NULL, sha256 = ?", arguments: [sha]) }
        let old = try builder.makePlan().fingerprint
        #expect(old != withXXH3)
        try catalog.write { db in try db.execute(sql: "UPDATE pixel_shards SET sha256 = ?", arguments: [String(repeating: "0", count: 64)]) }
        #expect(try builder.makePlan().fingerprint != old)
        try catalog.write { db in try db.execute(sql: "UPDATE pixel_shards SET sha256 = ?", arguments: [sha]) }
        #expect(try builder.makePlan().fingerprint == old)
        // Such a workspace shards and verifies as before: the recorded sha256 is checked, nothing is computed.
        _ = try builder.run()
        #expect(try builder.run().skipped)
        let summary = try ShardVerifier(catalog: catalog).verify(deep: true)
        #expect(summary.problems == [])
        #expect(summary.pixelSHA256Checked == shards.count && summary.pixelSHA256Computed.isEmpty)
        #expect(try catalog.pixelShardRecords().allSatisfy { $0.xxh3_128 == nil })
    }

    /// Pixel shards are checked like sample shards: a flipped byte in a pixel member stops `shard` with an error
    /// naming the pixel shard, the member and its offset (it would otherwise be copied into a training shard under
    /// a fresh, matching checksum), and `verify` reports it.
    @Test func flippedByteInAPixelShardIsCaught() throws {
        let catalog = try makeCatalog(count: 8)
        let (shard, member, offset, size): (String, String, Int, Int) = try catalog.read { db in
            let row = try #require(try Row.fetchOne(db, sql: """
                SELECT ps.name, p.sha256, p.offset, p.size FROM pixels p JOIN pixel_shards ps ON ps.id = p.pixel_shard_id
                ORDER BY p.sha256 LIMIT 1 OFFSET 1
                """))
            return (row[0], row[1], row[2], row[3])
        }
        #expect(try ShardVerifier(catalog: catalog).verify(deep: false).problems == [])
        let path = catalog.workspace.pixelShardsDirectory + "/" + shard
        var bytes = try readFile(path)
        bytes[offset + size - 3] ^= 0x01   // in the pixel data, past the npy header
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let error = #expect(throws: VLMError.self) { try ShardBuilder(catalog: catalog, options: smallShards()).run() }
        #expect(error?.kind == .corrupt)
        #expect(error?.description.contains(shard) == true)
        #expect(error?.description.contains("\(member).npy") == true)
        #expect(error?.description.contains("offset \(offset)") == true)
        // The whole file against its XXH3-128, and the member against its XXH3-64.
        let problems = try ShardVerifier(catalog: catalog).verify(deep: false).problems
        #expect(problems.count == 2)
        #expect(problems.contains { $0.hasPrefix("\(shard): pixel shard xxh3-128 is ") })
        #expect(problems.contains { $0.contains(shard) && $0.contains("\(member).npy") && $0.contains("xxh3") })
    }

    @Test func samplesHoldTheCatalogRows() throws {
        let catalog = try makeCatalog()
        _ = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        let index = ShardIndex(catalog: catalog)
        // Image sample: arrays equal the tokenized blobs, pixels equal the pixel shard's npy content.
        let key = SyntheticShardInputs.key(2)
        let sample = try index.sample(key: key)
        let row = try catalog.read { db in
            try Row.fetchOne(db, sql: """
                SELECT t.input_ids, t.labels, p.offset, p.size, ps.name FROM instructions i
                JOIN tokenized t ON t.instruction_id = i.id JOIN images img ON img.id = i.image_id
                JOIN pixels p ON p.sha256 = img.sha256 JOIN pixel_shards ps ON ps.id = p.pixel_shard_id WHERE i.key = ?
                """, arguments: [key])!
        }
        let ids = Array(row["input_ids"] as Data)
        #expect(try sample.inputIDs().withUnsafeBytes { Array($0) } == ids)
        #expect(try sample.labels().withUnsafeBytes { Array($0) } == Array(row["labels"] as Data))
        let pixelShard = try TarReader(path: catalog.workspace.pixelShardsDirectory + "/" + (row["name"] as String))
        #expect(sample.members["pixels.npy"] == (try pixelShard.read(at: row["offset"], count: row["size"])))
        #expect(try sample.pixels()?.shape == [1, 16, 48])
        let meta = try sample.metadata()
        #expect(meta.key == key)
        #expect(meta.image == "synthetic_img_1")
        #expect(meta.conversations.first?["value"]?.hasPrefix("<image>") == true)
        #expect(meta.length == 40 + 2)
        #expect(meta.pixelsShape == [1, 16, 48])
        #expect(meta.tokenizedConfig == "tok-synthetic")
        // Text-only sample: no pixels member, nothing claims an image.
        let text = try index.sample(key: SyntheticShardInputs.key(9))
        #expect(text.members["pixels.npy"] == nil)
        #expect(Set(text.members.keys) == ["json", "input_ids.npy", "labels.npy"])
        #expect(try text.metadata().pixelsShape == nil)
        #expect(try !text.inputIDs().contains(-200))
        #expect(throws: VLMError.self) { try index.sample(key: "no_such_key") }
    }

    @Test func randomAccessByKeyEqualsSequentialScan() throws {
        let catalog = try makeCatalog(count: 300)
        _ = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        var scanned: [String: StoredSample] = [:]
        var order: [String] = []
        for name in try shardHashes(catalog).keys.sorted() {
            for sample in try ShardIndex.scan(path: catalog.workspace.shardsDirectory + "/" + name) {
                scanned[sample.key] = sample
                order.append(sample.key)
            }
        }
        #expect(order == (0 ..< 300).map { SyntheticShardInputs.key($0) })
        let index = ShardIndex(catalog: catalog)
        var rng = SystemRandomNumberGenerator()
        for key in order.shuffled(using: &rng).prefix(100) {
            let byKey = try index.sample(key: key)
            #expect(byKey.members == scanned[key]?.members, "\(key)")
        }
    }

    @Test func resumesAfterLosingShardsInProgress() throws {
        let clean = try makeCatalog("clean", count: 120)
        _ = try ShardBuilder(catalog: clean, options: smallShards()).run()
        let crashed = try makeCatalog("crashed", count: 120)
        _ = try ShardBuilder(catalog: crashed, options: smallShards()).run()
        // As after a kill: the last two shards never committed, one renamed file left, one temporary file left.
        let names = try shardHashes(crashed).keys.sorted()
        try crashed.write { db in
            for name in names.suffix(2) {
                try db.execute(sql: "DELETE FROM sample_parts WHERE sample_id IN (SELECT s.id FROM samples s JOIN shards h ON h.id = s.shard_id WHERE h.name = ?)", arguments: [name])
                try db.execute(sql: "DELETE FROM samples WHERE shard_id = (SELECT id FROM shards WHERE name = ?)", arguments: [name])
                try db.execute(sql: "DELETE FROM shards WHERE name = ?", arguments: [name])
            }
            try db.execute(sql: "DELETE FROM runs")
        }
        let dir = crashed.workspace.shardsDirectory
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/" + names.last!))
        try Data([4, 5]).write(to: URL(fileURLWithPath: dir + "/.\(names.last!).tmp-99999"))
        let report = try ShardBuilder(catalog: crashed, options: smallShards()).run()
        #expect(report.counts["resumed_shards"] == names.count - 2)
        #expect(try shardHashes(crashed) == shardHashes(clean))
        #expect(!FileManager.default.fileExists(atPath: dir + "/.\(names.last!).tmp-99999"))
        #expect(try ShardVerifier(catalog: crashed).verify(deep: true).problems == [])
    }

    /// A bad pixel record fails its shard; with shards written in parallel the ones before it still commit, none
    /// after it does, no temporary file is left, and a rerun after the fix gives the clean hashes.
    @Test(arguments: [1, 2, 3])
    func aBadPixelRecordKeepsTheShardsBeforeIt(jobs: Int) throws {
        var options = smallShards()
        options.jobs = jobs
        let clean = try makeCatalog("clean-\(jobs)", count: 120)
        _ = try ShardBuilder(catalog: clean, options: options).run()
        // The first sample (in key order) that uses the image of the 70th sample is where writing must fail.
        let (badKey, badShard) = try clean.read { db in
            let row = try Row.fetchOne(db, sql: """
                WITH chosen AS (SELECT img.sha256 FROM samples s JOIN instructions i ON i.id = s.instruction_id
                                JOIN images img ON img.id = i.image_id WHERE s.has_image = 1 ORDER BY s.key LIMIT 1 OFFSET 70)
                SELECT s.key, h.name FROM samples s JOIN shards h ON h.id = s.shard_id JOIN instructions i ON i.id = s.instruction_id
                JOIN images img ON img.id = i.image_id WHERE img.sha256 = (SELECT sha256 FROM chosen) ORDER BY s.key LIMIT 1
                """)!
            return (row["key"] as String, row["name"] as String)
        }
        let broken = try makeCatalog("broken-\(jobs)", count: 120)
        let moveImage = { (delta: Int) in
            try broken.write { db in
                try db.execute(sql: """
                    UPDATE pixels SET offset = offset + ? WHERE sha256 =
                        (SELECT img.sha256 FROM instructions i JOIN images img ON img.id = i.image_id WHERE i.key = ?)
                    """, arguments: [delta, badKey])
            }
        }
        try moveImage(3)
        #expect {
            try ShardBuilder(catalog: broken, options: options).run()
        } throws: { error in
            "\(error)".contains("no pixel npy where the catalog points") && "\(error)".contains(badKey)
        }
        let committed = try shardHashes(broken)
        let cleanHashes = try shardHashes(clean)
        #expect(!committed.isEmpty)
        #expect(committed.keys.allSatisfy { $0 < badShard }, "\(committed.keys.sorted()) vs \(badShard)")
        #expect(committed.count == cleanHashes.keys.filter { $0 < badShard }.count)
        for (name, sha) in committed { #expect(cleanHashes[name] == sha) }
        let files = try FileManager.default.contentsOfDirectory(atPath: broken.workspace.shardsDirectory).filter { $0.hasSuffix(".tar") || $0.contains(".tmp-") }
        #expect(Set(files) == Set(committed.keys), "no temporary or uncommitted shard file is left")
        try moveImage(-3)
        _ = try ShardBuilder(catalog: broken, options: options).run()
        #expect(try shardHashes(broken) == cleanHashes)
    }

    /// Pixel shards are read through a mapping: one cut short must be a clear error, never a fault past its end.
    @Test func aTruncatedPixelShardIsAnError() throws {
        let catalog = try makeCatalog(count: 40)
        let dir = catalog.workspace.pixelShardsDirectory
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasSuffix(".tar") })
        let size = try #require(try FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as? Int)
        #expect(truncate(dir + "/" + name, off_t(size / 2)) == 0)
        #expect {
            try ShardBuilder(catalog: catalog, options: smallShards()).run()
        } throws: { error in
            "\(error)".contains(name) && "\(error)".contains("pixel shard ends before the indexed npy")
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: catalog.workspace.shardsDirectory).filter { $0.contains(".tmp-") }
        #expect(left.isEmpty)
    }

    @Test func changedParametersReplaceTheShards() throws {
        let catalog = try makeCatalog()
        _ = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        var options = smallShards()
        options.maxSamplesPerShard = 7
        options.targetBytes = 1 << 30
        let report = try ShardBuilder(catalog: catalog, options: options).run()
        #expect(report.counts["shards"] == 9)
        #expect((report.counts["replaced_shards"] ?? 0) > 0)
        let files = try FileManager.default.contentsOfDirectory(atPath: catalog.workspace.shardsDirectory).filter { $0.hasSuffix(".tar") }
        #expect(files.count == 9)
        #expect(try ShardVerifier(catalog: catalog).verify(deep: true).problems == [])
    }

    /// Sample keys are unique in the index: a second shard set (another --name) of the same samples is refused,
    /// naming a key and the shard that holds it; with --limit the clash is counted among the samples kept.
    @Test func aSecondShardSetOfTheSameSamplesIsRefused() throws {
        let catalog = try makeCatalog()
        _ = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        let firstKey = try catalog.read { db in try String.fetchOne(db, sql: "SELECT key FROM samples ORDER BY key LIMIT 1")! }
        let firstShard = try catalog.read { db in
            try String.fetchOne(db, sql: "SELECT h.name FROM samples s JOIN shards h ON h.id = s.shard_id WHERE s.key = ?",
                                arguments: [firstKey])!
        }
        var other = smallShards()
        other.name = "other"
        do {
            _ = try ShardBuilder(catalog: catalog, options: other).run()
            Issue.record("a second set of the same samples was written")
        } catch let error as VLMError {
            #expect(error.message.contains("60 samples are already indexed in other shards"), "\(error.message)")
            #expect(error.message.contains("\(firstKey) (in \(firstShard))"), "\(error.message)")
        }
        other.limit = 5
        do {
            _ = try ShardBuilder(catalog: catalog, options: other).run()
            Issue.record("a second set of the same samples was written")
        } catch let error as VLMError {
            #expect(error.message.contains("5 samples are already indexed in other shards"), "\(error.message)")
        }
        #expect(try catalog.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM shards WHERE name LIKE 'other-%'") } == 0)
    }

    @Test func ambiguousConfigsNeedAFlag() throws {
        let catalog = try makeCatalog()
        try catalog.write { db in
            try db.execute(sql: """
                INSERT INTO tokenized (instruction_id, config_hash, tokenizer_sha256, template, status, input_ids, labels, n_tokens, n_image_tokens, n_supervised)
                SELECT instruction_id, 'tok-other', tokenizer_sha256, template, status, input_ids, labels, n_tokens, n_image_tokens, n_supervised FROM tokenized LIMIT 5
                """)
        }
        #expect {
            try ShardBuilder(catalog: catalog, options: smallShards()).run()
        } throws: { error in
            let text = "\(error)"
            return text.contains("--tokenized") && text.contains("tok-other (5 rows)") && text.contains("tok-synthetic (60 rows)")
        }
        var options = smallShards()
        options.tokenizedConfig = "tok-other"
        #expect(try ShardBuilder(catalog: catalog, options: options).run().counts["samples"] == 5)
        options.tokenizedConfig = "nope"
        #expect { try ShardBuilder(catalog: catalog, options: options).run() } throws: { "\($0)".contains("no tokenization with config nope") }
    }

    @Test func keysWithDotsAreRefused() throws {
        let catalog = try makeCatalog()
        try catalog.write { db in try db.execute(sql: "UPDATE instructions SET key = 'bad.key' WHERE id = 3") }
        #expect {
            try ShardBuilder(catalog: catalog, options: smallShards()).run()
        } throws: { "\($0)".contains("'bad.key'") && "\($0)".contains("first dot") }
    }

    @Test func imagesWithoutPixelsAreSkippedAndCounted() throws {
        let catalog = try makeCatalog()
        try catalog.write { db in
            try db.execute(sql: "UPDATE pixels SET status = 'error', error = 'decode failed', pixel_shard_id = NULL, offset = NULL, size = NULL WHERE id = 1")
        }
        let report = try ShardBuilder(catalog: catalog, options: smallShards()).run()
        // Image 0 serves instructions 0 and 1.
        #expect(report.counts["skipped_no_pixels"] == 2)
        #expect(report.counts["samples"] == 58)
    }

    @Test func includesOriginalImageBytes() throws {
        let catalog = try makeCatalog()
        var options = smallShards()
        options.includeImageBytes = true
        _ = try ShardBuilder(catalog: catalog, options: options).run()
        let sample = try ShardIndex(catalog: catalog).sample(key: SyntheticShardInputs.key(4))
        #expect(sample.members["jpg"] == (try readFile(catalog.workspace.root + "/synthetic-images/img_2.jpg")))
        #expect(try sample.metadata().imageMember == "jpg")
        #expect(try ShardVerifier(catalog: catalog).verify(deep: true).problems == [])
    }

    @Test func includesImageBytesFromAnArchive() throws {
        let catalog = try makeCatalog()
        // Move the original images into a tar and point the catalog at its members.
        let archive = catalog.workspace.root + "/images.tar"
        let dir = catalog.workspace.root + "/synthetic-images"
        try AtomicFile.withWriter(to: archive) { file in
            let tar = TarWriter(file)
            for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted() {
                try tar.add(name: "val/" + name, bytes: readFile(dir + "/" + name))
            }
            try tar.finish()
        }
        let expected = try readFile(dir + "/img_7.jpg")
        try FileManager.default.removeItem(atPath: dir)
        try catalog.write { db in
            try db.execute(sql: "UPDATE images SET location = ?, member = 'val/' || file_name", arguments: [archive])
        }
        var options = smallShards()
        options.includeImageBytes = true
        _ = try ShardBuilder(catalog: catalog, options: options).run()
        let sample = try ShardIndex(catalog: catalog).sample(key: SyntheticShardInputs.key(15))
        #expect(sample.members["jpg"] == expected)
        #expect(try ShardVerifier(catalog: catalog).verify(deep: true).problems == [])
    }

    @Test func partsSplitTheSamplesDisjointly() throws {
        var all: [String] = []
        for i in 0 ..< 3 {
            let catalog = try makeCatalog("part\(i)")
            var options = smallShards()
            options.part = PartSpec(index: i, count: 3)
            _ = try ShardBuilder(catalog: catalog, options: options).run()
            let names = try shardHashes(catalog).keys
            #expect(names.allSatisfy { $0.hasPrefix("train-part\(i)of3-") })
            all += try catalog.read { db in try String.fetchAll(db, sql: "SELECT key FROM samples") }
        }
        #expect(all.count == 60)
        #expect(Set(all) == Set((0 ..< 60).map { SyntheticShardInputs.key($0) }))
    }
}

@Suite struct ShardVerifierTests {
    func built(_ label: String = #function, sha256: Bool = false) throws -> (Catalog, String) {
        let catalog = try makeCatalog(label)
        var options = smallShards()
        options.sha256 = sha256
        _ = try ShardBuilder(catalog: catalog, options: options).run()
        let name = try shardHashes(catalog).keys.sorted()[1]
        return (catalog, catalog.workspace.shardsDirectory + "/" + name)
    }

    @Test(arguments: [false, true]) func flippedByteIsAHashMismatch(sha256: Bool) throws {
        let (catalog, path) = try built("flipped-\(sha256)", sha256: sha256)
        var bytes = try readFile(path)
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        // The quick check is the XXH3-128 recorded at write time (and each member's XXH3), with or without a
        // sha256; --deep adds the sha256 check where one was recorded.
        let problems = try ShardVerifier(catalog: catalog).verify(deep: false).problems
        #expect(problems.count >= 1)
        #expect(problems.contains { $0.contains("xxh3-128 is") })
        #expect(!problems.contains { $0.contains("sha256 is") })
        #expect(try ShardVerifier(catalog: catalog).verify(deep: true).problems.contains { $0.contains("sha256 is") } == sha256)
    }

    @Test func truncatedShardIsReported() throws {
        let (catalog, path) = try built()
        let bytes = try readFile(path)
        try Data(bytes.prefix(bytes.count / 2 + 7)).write(to: URL(fileURLWithPath: path))
        let problems = try ShardVerifier(catalog: catalog).verify(deep: true).problems
        #expect(problems.contains { $0.contains("tar structure") })
        #expect(problems.contains { $0.contains("bytes, the catalog says") })
        #expect(problems.contains { $0.contains("is not in the tar") })
    }

    @Test func wrongIndexOffsetsAreReported() throws {
        let (catalog, _) = try built()
        try catalog.write { db in
            try db.execute(sql: "UPDATE sample_parts SET offset = offset + 512 WHERE name = 'labels.npy' AND sample_id = (SELECT MIN(id) FROM samples)")
        }
        let problems = try ShardVerifier(catalog: catalog).verify(deep: false).problems
        #expect(problems.count == 1)
        #expect(problems.first?.contains("labels.npy") == true)
    }

    @Test func unindexedAndTemporaryFilesAreReported() throws {
        let (catalog, path) = try built()
        let dir = catalog.workspace.shardsDirectory
        try FileManager.default.copyItem(atPath: path, toPath: dir + "/train-999999.tar")
        try Data([1]).write(to: URL(fileURLWithPath: dir + "/.train-000042.tar.tmp-123"))
        let problems = try ShardVerifier(catalog: catalog).verify(deep: false).problems
        #expect(problems.count == 2)
        #expect(problems.contains { $0.hasPrefix("train-999999.tar: shard file that the catalog does not index") })
        #expect(problems.contains { $0.contains("interrupted") })
    }

    @Test func missingFileAndShapeMismatchAreReported() throws {
        let (catalog, path) = try built()
        unlink(path)
        // Rewrite another shard whose json claims a different pixel shape (hash updated so only --deep sees it).
        let other = try shardHashes(catalog).keys.sorted()[0]
        let otherPath = catalog.workspace.shardsDirectory + "/" + other
        var bytes = try readFile(otherPath)
        let from = Array("\"pixels_shape\":[1,16,48]".utf8), to = Array("\"pixels_shape\":[1,16,49]".utf8)
        var replaced = 0
        var i = 0
        while i + from.count <= bytes.count {
            if Array(bytes[i ..< i + from.count]) == from { bytes.replaceSubrange(i ..< i + from.count, with: to); replaced += 1 }
            i += 1
        }
        #expect(replaced > 0)
        try Data(bytes).write(to: URL(fileURLWithPath: otherPath))
        try catalog.write { db in
            // As an index written before checksums were recorded: verify falls back to the sha256, updated here.
            try db.execute(sql: "UPDATE shards SET sha256 = ?, xxh3_128 = NULL WHERE name = ?", arguments: [Hashing.sha256(bytes), other])
            try db.execute(sql: """
                UPDATE sample_parts SET xxh3 = NULL
                WHERE sample_id IN (SELECT s.id FROM samples s JOIN shards h ON h.id = s.shard_id WHERE h.name = ?)
                """, arguments: [other])
        }
        #expect(try ShardVerifier(catalog: catalog).verify(deep: false).problems.count == 1)
        let deep = try ShardVerifier(catalog: catalog).verify(deep: true).problems
        #expect(deep.contains { $0.contains("is missing") })
        #expect(deep.filter { $0.contains("pixels.npy has shape [1, 16, 48], the json says [1, 16, 49]") }.count == replaced)
    }
}
