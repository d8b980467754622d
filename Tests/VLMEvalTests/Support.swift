import Foundation
import Testing
import VLMCatalog
import VLMCore
@testable import VLMEval
import VLMIO
import VLMPipeline

/// `../shared/data` beside the project.
let sharedData: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.deletingLastPathComponent().appendingPathComponent("shared/data").path
}()

func temporaryDirectory(_ label: String = #function) throws -> String {
    let clean = label.filter { $0.isLetter || $0.isNumber }
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("vlmeval-tests-\(getpid())/\(clean)-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// One workspace with coco-mini ingested (captions, instances, images) as split `mini`, shared by the tests.
let cocoMini: Result<Catalog, VLMError> = {
    do { return .success(try ingestCocoMini()) } catch {
        return .failure(error as? VLMError ?? VLMError(.io, "\(error)"))
    }
}()

func ingestCocoMini() throws -> Catalog {
    let root = try temporaryDirectory("coco-mini-workspace")
    let catalog = try Catalog(workspace: Workspace(root: root))
    let base = sharedData + "/coco-mini"
    _ = try IngestCOCO(options: .init(captions: base + "/annotations/captions_train2017.json",
                                      instances: base + "/annotations/instances_train2017.json",
                                      images: base + "/train2017", split: "mini"))
        .run(catalog: catalog, progress: SilentProgress())
    return catalog
}

/// Builds a set of `kind` from coco-mini into a fresh folder.
func buildSet(_ kind: EvalKind, count: Int? = nil, seed: UInt64 = 0, _ configure: (inout EvalBuildOptions) -> Void = { _ in },
              label: String = #function) throws -> (EvalBuildReport, String) {
    let out = try temporaryDirectory(label) + "/\(kind.rawValue)-\(UUID().uuidString.prefix(6))"
    var options = EvalBuildOptions(kind: kind, split: "mini", out: out)
    options.count = count
    options.seed = seed
    configure(&options)
    let report = try EvalSetBuilder(catalog: try cocoMini.get(), options: options).build()
    return (report, out)
}

func readKeys(_ dir: String) throws -> [EvalKey] {
    try EvalFiles.readJSONL(EvalKey.self, path: dir + "/" + EvalFiles.answerKey)
}

func readQuestions(_ dir: String) throws -> [EvalQuestion] {
    try EvalFiles.readJSONL(EvalQuestion.self, path: dir + "/" + EvalFiles.questions)
}

/// Writes a hand-made evaluation set folder (manifest, questions, key) for scoring tests.
func writeSet(_ kind: EvalKind, _ keys: [EvalKey], vocabulary: [String: [String]]? = nil,
              label: String = #function) throws -> String {
    let dir = try temporaryDirectory(label)
    var manifest = EvalSetManifest(name: "hand", kind: kind, split: "none", seed: 0, count: nil, sampling: nil, frame: nil,
                                   questions: keys.count, images: Set(keys.map(\.image_key)).count, ineligible_images: 0,
                                   files: [])
    manifest.vocabulary = vocabulary
    try AtomicFile.write(Array(try EvalFiles.encoder().encode(manifest)), to: dir + "/" + EvalFiles.manifest)
    try AtomicFile.write(try EvalFiles.jsonl(keys), to: dir + "/" + EvalFiles.answerKey)
    let questions = keys.map { EvalQuestion(question_id: $0.question_id, image: $0.image, text: "q\($0.question_id)", category: $0.category) }
    try AtomicFile.write(try EvalFiles.jsonl(questions), to: dir + "/" + EvalFiles.questions)
    return dir
}

/// Writes answer lines as given (raw, so tests can plant bad lines).
func writeAnswers(_ lines: [String], in dir: String) throws -> String {
    let path = dir + "/answers.jsonl"
    try AtomicFile.write(Array((lines.joined(separator: "\n") + "\n").utf8), to: path)
    return path
}

func answer(_ id: Int, _ text: String) -> String {
    let data = try! JSONSerialization.data(withJSONObject: ["question_id": id, "text": text], options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

func key(_ id: Int, _ category: String, image: String = "img", _ configure: (inout EvalKey) -> Void) -> EvalKey {
    var key = EvalKey(question_id: id, category: category, image: image + ".jpg", image_key: image)
    configure(&key)
    return key
}
