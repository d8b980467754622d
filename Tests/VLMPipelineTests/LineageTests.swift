import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
@testable import VLMPipeline

/// Lineage: unchanged config and inputs skip a stage; a changed config reruns it and the stages that read it.
struct LineageTests {
    /// A workspace with 8 synthetic shape images ingested and captioned, and a tokenizer trained on them.
    static func workspace() throws -> (context: StageContext, tokenizer: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lineage-\(UUID().uuidString)").path
        let context = StageContext(workspace: dir + "/ws")
        var synth = SynthShapesStep.Config(count: 8, seed: 5, out: dir + "/shapes")
        synth.size = 32
        _ = try SynthShapesStep(config: synth).run(context)
        _ = try IngestCOCOStep(config: .init(captions: dir + "/shapes/annotations/captions_train.json",
                                             images: dir + "/shapes/train", split: "shapes")).run(context)
        var gen = GenInstructionsStep.Config()
        gen.kinds = "caption,count"
        _ = try GenInstructionsStep(config: gen).run(context)
        var train = TokenizerTrainStep.Config(vocabSize: 300, out: dir + "/bpe/tokenizer.json")
        train.fromCatalog = true
        _ = try TokenizerTrainStep(config: train).run(context)
        return (context, dir + "/bpe/tokenizer.json")
    }

    static func tokenize(_ template: String, _ tokenizer: String) throws -> TokenizeStep {
        var config = TokenizeStep.Config(tokenizer: tokenizer, template: template)
        config.imageTokens = 4
        return try TokenizeStep(config: config)
    }

    static func patchify() throws -> PatchifyStep {
        var config = PatchifyStep.Config()
        (config.imageSize, config.patchSize, config.mode, config.jobs) = (32, 16, "pad", 1)
        return try PatchifyStep(config: config)
    }

    static func shard() throws -> ShardStep {
        var config = ShardStep.Config()
        config.targetSize = "1MB"
        return try ShardStep(config: config)
    }

    static func runs(_ context: StageContext) throws -> [Row] {
        try Catalog(workspace: Workspace(root: context.workspace)).read { db in
            try Row.fetchAll(db, sql: "SELECT id, stage, name, inputs, status FROM runs WHERE config_hash IS NOT NULL ORDER BY id")
        }
    }

    @Test func unchangedIsSkippedChangedRerunsItsDependents() throws {
        let (context, tokenizer) = try Self.workspace()
        let first = try Self.tokenize("vicuna_v1", tokenizer).run(context)
        #expect(!first.skipped)
        #expect(first.run?.name == "vicuna_v1@bpe")
        #expect((first.counts["tokenized"] ?? 0) > 0)
        _ = try Self.patchify().run(context)
        let shard1 = try Self.shard().run(context)
        #expect(!shard1.skipped)
        #expect(shard1.run?.name == "train@vicuna_v1@bpe+pad-32/16")
        let before = try Self.runs(context).count

        // Same configs, same inputs: every stage skipped, no run row added.
        #expect(try Self.tokenize("vicuna_v1", tokenizer).run(context).skipped)
        #expect(try Self.patchify().run(context).skipped)
        let again = try Self.shard().run(context)
        #expect(again.skipped)
        #expect(again.run?.id == shard1.run?.id)
        #expect(try Self.runs(context).count == before)

        // sha256 on demand (pipeline key `sha256`): the same run, since the bytes do not change; each shard
        // written without one gets its sha256 recorded.
        let hashed = try JSONDecoder().decode(ShardStep.Config.self, from: Data(#"{"target_size": "1MB", "sha256": true}"#.utf8))
        #expect(hashed.sha256 == true)
        let withSHA = try ShardStep(config: hashed).run(context)
        #expect(withSHA.skipped && withSHA.run?.id == shard1.run?.id)
        #expect(withSHA.counts["sha256_added"] == shard1.counts["shards"])
        let missing = try Catalog(workspace: Workspace(root: context.workspace)).shardRecords().filter { $0.sha256 == nil }
        #expect(missing.isEmpty)
        #expect(try Self.runs(context).count == before)

        // Another template: tokenize runs, and shard (which reads it) runs again; patchify stays skipped.
        let plain = try Self.tokenize("plain", tokenizer).run(context)
        #expect(!plain.skipped)
        #expect(plain.run?.output != first.run?.output)
        #expect(try Self.patchify().run(context).skipped)
        let shard2 = try Self.shard().run(context)
        #expect(!shard2.skipped)
        #expect(shard2.run?.name == "train@plain@bpe+pad-32/16")
        #expect(shard2.run?.id != shard1.run?.id)

        // The shard run records what it read; every derived row records the run that made it.
        let catalog = try Catalog(workspace: Workspace(root: context.workspace))
        let shardRun = try catalog.read { db in
            try String.fetchOne(db, sql: "SELECT inputs FROM runs WHERE id = ?", arguments: [shard2.run!.id])
        }
        let patchifyRun = try Self.patchify().run(context).run!.id
        #expect(shardRun == "[\(min(plain.run!.id, patchifyRun)),\(max(plain.run!.id, patchifyRun))]")
        let unstamped = try catalog.read { db in
            try ["instructions", "tokenized", "pixels", "shards", "samples"].map {
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \($0) WHERE run_id IS NULL")!
            }
        }
        #expect(unstamped == [0, 0, 0, 0, 0])
        let samplesRun = try catalog.read { db in
            try Int64.fetchAll(db, sql: "SELECT DISTINCT run_id FROM samples")
        }
        #expect(samplesRun == [shard2.run!.id])

        // Going back to the first template reuses its run (no new tokenize run) and reruns shard on it.
        let back = try Self.tokenize("vicuna_v1", tokenizer).run(context)
        #expect(back.skipped)
        #expect(back.run?.id == first.run?.id)
        let shard3 = try Self.shard().run(context)
        #expect(shard3.run?.name == "train@vicuna_v1@bpe+pad-32/16")
    }

    @Test func aFailedStageIsOneStageFailureAndItsRunIsMarkedFailed() throws {
        let (context, _) = try Self.workspace()
        var config = TokenizeStep.Config(tokenizer: "/nonexistent/tokenizer.json", template: "vicuna_v1")
        config.imageTokens = 4
        #expect(throws: StageFailure.self) { try TokenizeStep(config: config).run(context) }
        // The shard stage with nothing tokenized fails with a sentence, not a crash.
        do {
            _ = try Self.shard().run(context)
            Issue.record("shard ran with nothing tokenized")
        } catch let failure as StageFailure {
            #expect(failure.stage == "shard")
            #expect(failure.error.message.contains("nothing is tokenized yet"))
        }
        let failed = try Self.runs(context).filter { ($0["status"] as String) == "failed" }.map { $0["stage"] as String }
        #expect(failed == ["shard"])
    }
}
