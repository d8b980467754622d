import Foundation
import VLMCore
import Yams

/// A pipeline file (`Pipelines/*.yaml`): a workspace and the stages to run in order, each with its parameters.
///
/// ```yaml
/// workspace: vlmdata-work/demo
/// stages:
///   - stage: synth shapes
///     count: 200
///     out: "{workspace}/shapes"
///   - stage: ingest coco
///     captions: "{workspace}/shapes/annotations/captions_train.json"
///     images: "{workspace}/shapes/train"
/// ```
///
/// Each stage becomes the command line `vlmdata <stage> --<key> <value> ...` (underscores in keys become dashes,
/// `true` becomes a bare flag, a list repeats the option, `args` adds positional arguments), so a pipeline file
/// and the CLI always agree. `{workspace}` in any value is replaced by the workspace path.
public struct PipelineFile: Sendable {
    public struct Step: Sendable {
        public var stage: String
        public var arguments: [String]
    }

    public var workspace: String
    public var steps: [Step]

    public init(path: String, workspaceOverride: String? = nil) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "pipeline file does not exist")
        }
        let text = String(decoding: data, as: UTF8.self)
        let node: Any?
        do { node = try Yams.load(yaml: text) } catch {
            throw VLMError.badInput(file: path, "not valid YAML: \(error)")
        }
        guard let root = node as? [String: Any] else {
            throw VLMError.badInput(file: path, "expected a mapping with 'workspace' and 'stages'")
        }
        let workspace = workspaceOverride ?? (root["workspace"] as? String) ?? "./vlmdata-work"
        guard let stages = root["stages"] as? [Any], !stages.isEmpty else {
            throw VLMError.badInput(file: path, "'stages' must be a non-empty list")
        }
        self.workspace = workspace
        steps = try stages.enumerated().map { index, item in
            guard let map = item as? [String: Any], let stage = map["stage"] as? String else {
                throw VLMError.badInput(file: path, record: "stages[\(index)]", "each stage needs 'stage: <command>'")
            }
            var args: [String] = stage.split(separator: " ").map(String.init)
            func render(_ value: Any) -> String {
                String(describing: value).replacingOccurrences(of: "{workspace}", with: workspace)
            }
            for key in map.keys.sorted() where key != "stage" && key != "args" {
                let option = "--" + key.replacingOccurrences(of: "_", with: "-")
                switch map[key] {
                case let flag as Bool:
                    if flag { args.append(option) }
                case let list as [Any]:
                    for v in list { args += [option, render(v)] }
                case let value?:
                    args += [option, render(value)]
                case nil:
                    break
                }
            }
            if let positional = map["args"] as? [Any] { args += positional.map(render) }
            return Step(stage: stage, arguments: args)
        }
    }
}
