import Foundation
import Testing

/// A fresh scratch folder for one test.
func scratchDirectory(_ label: String) -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vlm-\(label)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs the CLI and requires exit 0.
@discardableResult
func runOK(_ arguments: [String]) throws -> CLIResult {
    let result = try runCLI(arguments)
    #expect(result.status == 0, "vlmdata \(arguments.joined(separator: " ")): \(result.stderr)")
    return result
}

/// Finding 6: `run --dry-run` accepted an unknown stage (`tokenise`) and unknown keys (`colour:`) with exit 0.
@Test func dryRunRejectsUnknownStagesKeysAndTypes() throws {
    let dir = scratchDirectory("dry")
    let file = dir + "/bad.yaml"
    try """
    workspace: \(dir)/ws
    stages:
      - stage: synth shapes
        count: many
        out: "{workspace}/shapes"
      - stage: tokenise
        tokenizer: t.json
      - stage: patchify
        image_size: 64
        colour: red
    """.write(toFile: file, atomically: true, encoding: .utf8)
    let result = try runCLI(["run", file, "--dry-run"])
    #expect(result.status == 1)
    #expect(result.stderr.contains("\(file):4: stage 1 (synth shapes): 'count' must be an integer"), "\(result.stderr)")
    #expect(result.stderr.contains("\(file):6: stage 2: unknown stage 'tokenise'; stages: synth shapes, ingest coco"), "\(result.stderr)")
    #expect(result.stderr.contains("\(file):10: stage 3 (patchify): unknown key 'colour'; allowed keys: mode, resample"), "\(result.stderr)")
    #expect(result.stdout.isEmpty, "nothing may be planned or run: \(result.stdout)")
    #expect(!FileManager.default.fileExists(atPath: dir + "/ws"))
}

/// The demo pipeline is valid; its plan lists every stage with its parameters.
@Test func dryRunPrintsTheDemoPlan() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let result = try runOK(["run", root.appendingPathComponent("Pipelines/demo.yaml").path, "--dry-run", "--workspace", "/tmp/demo-plan"])
    let lines = result.stdout.split(separator: "\n").map(String.init)
    #expect(lines.first == "workspace: /tmp/demo-plan")
    #expect(lines.count == 9)
    #expect(lines.contains { $0.hasPrefix("[5/8] patchify  ") && $0.contains("mode=pad") })
    #expect(lines.contains { $0.hasPrefix("[6/8] tokenize  ") && $0.contains("image_tokens=pixels") && $0.contains("template=vicuna_v1") && $0.contains("tokenizer=/tmp/demo-plan/tokenizer.json") })
}

/// Finding 7a: `--json` reports counted problems but dropped their messages.
@Test func jsonReportsCarryProblemMessages() throws {
    let dir = scratchDirectory("json-problems")
    let captions = dir + "/captions.json"
    try """
    {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
                {"id": 2, "file_name": "b.jpg", "width": 10, "height": 10}],
     "annotations": [{"id": 1, "image_id": 1, "caption": "a cat"},
                     {"id": 2, "image_id": "two", "caption": "a dog"},
                     {"id": 3, "image_id": 2, "caption": "a bird"}]}
    """.write(toFile: captions, atomically: true, encoding: .utf8)
    let result = try runOK(["ingest", "coco", "--workspace", dir + "/ws", "--captions", captions, "--json", "--quiet"])
    let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] ?? [:]
    let counts = report["counts"] as? [String: Int] ?? [:]
    let problems = report["problems"] as? [String] ?? []
    // Two problems: the bad record, and one summary line for the images (no --images was given).
    #expect(counts["captions"] == 2)
    #expect(counts["problems"] == 2)
    #expect(report["problem_count"] as? Int == 2)
    #expect(problems == ["2 images recorded as missing: no --images given",
                         captions + ": annotations[1]: field 'image_id' is a string, expected an integer"], "\(problems)")
}

/// Finding 3: a second tokenization config made `shard` stop with two bare hashes, and `tokenize` never said its
/// hash. Now tokenize names its run, shard reads the latest run and names it, and `--tokenized` takes the name.
@Test func shardFollowsTheLatestTokenizationAndAcceptsItsName() throws {
    let dir = scratchDirectory("lineage")
    let ws = dir + "/ws"
    try runOK(["synth", "shapes", "--count", "8", "--seed", "3", "--size", "32", "--out", dir + "/shapes", "--quiet"])
    try runOK(["ingest", "coco", "--workspace", ws, "--quiet", "--split", "shapes",
               "--captions", dir + "/shapes/annotations/captions_train.json", "--images", dir + "/shapes/train"])
    try runOK(["gen-instructions", "--workspace", ws, "--quiet", "--kinds", "caption", "--seed", "1"])
    try runOK(["tokenizer", "train", "--workspace", ws, "--from-catalog", "--vocab-size", "300", "--out", dir + "/shapes-bpe/tokenizer.json"])
    let tokenizer = dir + "/shapes-bpe/tokenizer.json"
    let vicuna = try runOK(["tokenize", "--workspace", ws, "--quiet", "--tokenizer", tokenizer, "--template", "vicuna_v1", "--image-tokens", "4"])
    #expect(vicuna.stdout.contains("run #") && vicuna.stdout.contains("vicuna_v1@shapes-bpe (output config "), "\(vicuna.stdout)")
    try runOK(["tokenize", "--workspace", ws, "--quiet", "--tokenizer", tokenizer, "--template", "plain", "--image-tokens", "4"])
    try runOK(["patchify", "--workspace", ws, "--quiet", "--image-size", "32", "--patch-size", "16", "--mode", "pad", "--jobs", "1"])

    let latest = try runOK(["shard", "--workspace", ws, "--quiet", "--target-size", "1MB", "--json"])
    let report = try JSONSerialization.jsonObject(with: Data(latest.stdout.utf8)) as? [String: Any] ?? [:]
    #expect((report["run"] as? [String: Any])?["name"] as? String == "train@plain@shapes-bpe+pad-32/16", "\(latest.stdout)")

    let named = try runOK(["shard", "--workspace", ws, "--quiet", "--target-size", "1MB", "--tokenized", "vicuna_v1@shapes-bpe"])
    #expect(named.stdout.contains("train@vicuna_v1@shapes-bpe+pad-32/16"), "\(named.stdout)")

    let unknown = try runCLI(["shard", "--workspace", ws, "--quiet", "--tokenized", "vicuna_v1"])
    #expect(unknown.status == 1)
    #expect(unknown.stderr.contains("no tokenization config is named 'vicuna_v1'"), "\(unknown.stderr)")
    #expect(unknown.stderr.contains("vicuna_v1@shapes-bpe (config ") && unknown.stderr.contains("plain@shapes-bpe (config "), "\(unknown.stderr)")
    #expect(unknown.stderr.contains("template=vicuna_v1") && unknown.stderr.contains("image_tokens=4"), "\(unknown.stderr)")
    try runOK(["verify", "--workspace", ws, "--deep"])
}

/// Issue 17: `run --list` shows each recipe with its description and variables; `--set` fills a variable.
@Test func recipesAreListedAndVariablesSet() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let pipelines = root.appendingPathComponent("Pipelines").path
    let list = try runOK(["run", "--list", "--dir", pipelines])
    let line = list.stdout.split(separator: "\n").first { $0.hasPrefix(pipelines + "/coco-mini.yaml: COCO-mini (80 real images)") }
    #expect(line?.hasSuffix("[data=../shared/data image_size=336 template=vicuna_v1]") == true, "\(list.stdout)")
    #expect(!list.stdout.contains("INVALID"), "\(list.stdout)")

    let plan = try runOK(["run", pipelines + "/coco-mini.yaml", "--dry-run", "--set", "template=llama_2", "--set", "data=/d"])
    #expect(plan.stdout.contains("[4/6] tokenize  tokenizer=/d/tokenizers/mistral-v1/tokenizer.json template=llama_2 image_tokens=pixels max_length=2048"), "\(plan.stdout)")
    let bad = try runCLI(["run", pipelines + "/coco-mini.yaml", "--dry-run", "--set", "templat=llama_2", "--set", "template=nope"])
    #expect(bad.status == 1)
    #expect(bad.stderr.contains("--set templat: the file declares no variable 'templat'; it declares: data, image_size, template"), "\(bad.stderr)")
    #expect(bad.stderr.contains("coco-mini.yaml:25: stage 4 (tokenize): 'template' must be one of vicuna_v1"), "\(bad.stderr)")
}
