import Foundation
import Testing
import VLMCore
@testable import VLMPipeline

/// Pipeline files are checked whole before anything runs; variables fill `{NAME}`.
struct PipelineFileTests {
    static func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func everyProblemIsReportedWithItsLine() throws {
        let path = try Self.write("""
        workspace: /tmp/x
        colour: blue
        stages:
          - stage: tokenize
            tokenizer: t.json
          - stage: tokenize
            tokenizer: t.json
            template: vicuna_v1
            max_length: long
          - stage: shard
            target_size: lots
          - stage: patchify
            mode: stretch
          - stage: gen-instructions
            kinds: caption,poem
          - stage: ingest coco
            captions: "{data}/c.json"
          - tokenize: oops
        """)
        do {
            _ = try PipelineFile(path: path)
            Issue.record("an invalid file was accepted")
        } catch let invalid as PipelineFile.Invalid {
            #expect(invalid.problems == [
                "\(path):2: unknown key 'colour'; allowed: workspace, variables, stages",
                "\(path):4: stage 1 (tokenize): missing required key 'template'",
                "\(path):9: stage 2 (tokenize): 'max_length' must be an integer",
                "\(path):11: stage 3 (shard): 'target_size' must be a size such as 256MB, 1GiB or 500000, not 'lots'",
                "\(path):13: stage 4 (patchify): 'mode' must be one of crop, pad, squash, anyres, not 'stretch'",
                "\(path):15: stage 5 (gen-instructions): 'kinds' names an unknown kind 'poem' for generator templates; choose from caption, detail, grounding, count, yesno, mcq, multiturn",
                "\(path):17: stage 6 (ingest coco): unknown variable {data}; variables: workspace",
                "\(path):18: stage 7: each stage needs 'stage: NAME' (one of: \(StageRegistry.names.joined(separator: ", ")))",
            ])
        }
    }

    /// `catalog merge` is a stage value like the others: a pipeline file can name it, and its config is checked.
    @Test func catalogMergeIsAStageOfPipelineFiles() throws {
        let path = try Self.write("""
        workspace: /tmp/merged
        stages:
          - stage: catalog merge
            parts: [/tmp/p0, /tmp/p1]
            partial: true
        """)
        let merge = try #require(try PipelineFile(path: path).steps.first?.stage as? CatalogMergeStep)
        #expect(merge.config == CatalogMergeStep.Config(parts: ["/tmp/p0", "/tmp/p1"], reference: false, partial: true))

        let empty = try Self.write("""
        workspace: /tmp/merged
        stages:
          - stage: catalog merge
            reference: true
        """)
        do {
            _ = try PipelineFile(path: empty)
            Issue.record("a merge of no parts was accepted")
        } catch let invalid as PipelineFile.Invalid {
            #expect(invalid.problems.count == 1)
            #expect(invalid.problems.first?.contains("(catalog merge)") == true)
            #expect(invalid.problems.first?.contains("parts") == true)
        }
    }

    @Test func variablesHaveDefaultsAndCanBeSet() throws {
        let path = try Self.write("""
        # Shapes at any size.
        variables:
          n: 12
          out: shapes
        workspace: /tmp/ws-{out}
        stages:
          - stage: synth shapes
            count: "{n}"
            out: "{workspace}/{out}"
        """)
        let file = try PipelineFile(path: path)
        #expect(file.summary == "Shapes at any size.")
        #expect(file.workspace == "/tmp/ws-shapes")
        let synth = try #require(file.steps.first?.stage as? SynthShapesStep)
        #expect(synth.config.count == 12)
        #expect(synth.config.out == "/tmp/ws-shapes/shapes")

        let set = try PipelineFile(path: path, set: ["n": "30"])
        #expect((set.steps.first?.stage as? SynthShapesStep)?.config.count == 30)

        #expect(throws: PipelineFile.Invalid.self) { try PipelineFile(path: path, set: ["size": "64"]) }
    }

    @Test func theRecipesInPipelinesAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("Pipelines").path
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        #expect(names.contains("demo.yaml"))
        for name in names {
            let file = try PipelineFile(path: dir + "/" + name, workspaceOverride: "/tmp/recipe-check")
            #expect(!file.steps.isEmpty)
            #expect(!file.summary.isEmpty, "\(name) has no description line")
        }
    }
}
