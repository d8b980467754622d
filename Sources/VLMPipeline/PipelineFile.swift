import Foundation
import VLMCore
import Yams

/// A pipeline file (`Pipelines/*.yaml`): a workspace, variables with defaults, and the stages to run in order.
///
/// ```yaml
/// # One line saying what the recipe builds (shown by `vlmdata run --list`).
/// variables:
///   data: ../shared/data/coco-mini
/// workspace: vlmdata-work/coco
/// stages:
///   - stage: ingest coco
///     captions: "{data}/annotations/captions_train2017.json"
///     images: "{data}/train2017"
///   - stage: tokenize
///     tokenizer: tokenizer.json
///     template: vicuna_v1
/// ```
///
/// Each entry names a stage of `StageRegistry` and gives its config: the keys are the stage's CLI flags with
/// underscores. `{NAME}` in any value is the variable NAME (`vlmdata run FILE --set NAME=VALUE` overrides its
/// default); `{workspace}` is the workspace path. The whole file is checked before anything runs: an unknown
/// stage, an unknown key, a value of the wrong type or out of range, an unknown variable are each reported with
/// the file, the line and what is allowed.
public struct PipelineFile: Sendable {
    public struct Step: Sendable {
        public var stage: any Stage
        public var name: String
        /// Line of the entry in the file.
        public var line: Int
        /// The entry's keys and values as written (after variables), for the plan.
        public var parameters: [(key: String, value: String)]
    }

    /// Every problem found in a pipeline file, each naming the file and line.
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public var problems: [String]
        public var description: String { problems.joined(separator: "\n") }
    }

    public var path: String
    public var workspace: String
    public var variables: [String: String]
    public var steps: [Step]
    /// The file's first comment line.
    public var summary: String

    static let topLevelKeys = ["workspace", "variables", "stages"]

    public init(path: String, workspaceOverride: String? = nil, set overrides: [String: String] = [:]) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "pipeline file does not exist")
        }
        let text = String(decoding: data, as: UTF8.self)
        self.path = path
        summary = Self.summary(of: text)
        var problems: [String] = []
        func problem(_ line: Int?, _ message: String) { problems.append("\(path)\(line.map { ":\($0)" } ?? ""): \(message)") }

        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else { throw VLMError.badInput(file: path, "the file is empty") }
            root = node
        } catch let error as VLMError { throw error } catch {
            throw VLMError.badInput(file: path, "not valid YAML: \(error)")
        }
        guard let top = root.mapping else {
            throw VLMError.badInput(file: path, "expected a mapping with 'workspace', 'variables' and 'stages'")
        }
        for (key, _) in top where !Self.topLevelKeys.contains(key.string ?? "") {
            problem(key.mark?.line, "unknown key '\(key.string ?? "?")'; allowed: \(Self.topLevelKeys.joined(separator: ", "))")
        }

        // Variables: defaults from the file, then --set.
        var variables: [String: String] = [:]
        if let node = top["variables"] {
            if let map = node.mapping {
                for (key, value) in map {
                    guard let name = key.string, Self.isVariableName(name), let v = value.scalar?.string else {
                        problem(key.mark?.line, "a variable needs a name (letters, digits, _) and a scalar default")
                        continue
                    }
                    variables[name] = v
                }
            } else {
                problem(node.mark?.line, "'variables' must be a mapping of NAME: default")
            }
        }
        for (name, value) in overrides {
            if variables[name] == nil {
                let known = variables.keys.sorted()
                problem(nil, "--set \(name): the file declares no variable '\(name)'; it declares: \(known.isEmpty ? "none" : known.joined(separator: ", "))")
            }
            variables[name] = value
        }
        let workspaceText = workspaceOverride ?? top["workspace"]?.string ?? "./vlmdata-work"
        let workspace = Self.substitute(workspaceText, variables) { name in
            problem(top["workspace"]?.mark?.line, "unknown variable {\(name)} in workspace")
        }
        self.workspace = workspace
        self.variables = variables
        var all = variables
        all["workspace"] = workspace

        guard let stagesNode = top["stages"], let entries = stagesNode.sequence, !entries.isEmpty else {
            problem(top["stages"]?.mark?.line, "'stages' must be a non-empty list")
            throw Invalid(problems: problems)
        }
        var steps: [Step] = []
        for (index, entry) in entries.enumerated() {
            let line = entry.mark?.line
            let label = "stage \(index + 1)"
            guard let map = entry.mapping, let stageName = map["stage"]?.string else {
                problem(line, "\(label): each stage needs 'stage: NAME' (one of: \(StageRegistry.names.joined(separator: ", ")))")
                continue
            }
            guard let type = StageRegistry.stage(named: stageName) else {
                problem(map["stage"]?.mark?.line ?? line,
                        "\(label): unknown stage '\(stageName)'; stages: \(StageRegistry.names.joined(separator: ", "))")
                continue
            }
            let allowed = StageRegistry.keys(type)
            var keyLines: [String: Int] = [:]
            var unknown = false
            for (key, _) in map {
                let name = key.string ?? "?"
                keyLines[name] = key.mark?.line
                if name != "stage" && !allowed.contains(name) {
                    problem(key.mark?.line ?? line, "\(label) (\(stageName)): unknown key '\(name)'; allowed keys: \(allowed.joined(separator: ", "))")
                    unknown = true
                }
            }
            let resolved = Self.resolve(entry, all) { name, at in
                problem(at ?? line, "\(label) (\(stageName)): unknown variable {\(name)}; variables: \(all.keys.sorted().joined(separator: ", "))")
                unknown = true
            }
            if unknown { continue }
            do {
                let stage = try StageRegistry.make(type, from: resolved)
                let parameters = (resolved.mapping ?? [:]).compactMap { key, value -> (key: String, value: String)? in
                    guard let k = key.string, k != "stage" else { return nil }
                    return (k, value.scalar?.string ?? (value.sequence.map { $0.compactMap(\.string).joined(separator: ",") } ?? "?"))
                }
                steps.append(Step(stage: stage, name: stageName, line: line ?? 0, parameters: parameters))
            } catch let error as DecodingError {
                let (key, message) = Self.explain(error)
                problem(key.flatMap { keyLines[$0] } ?? line, "\(label) (\(stageName)): \(message)")
            } catch let error as VLMError {
                let key = error.record
                problem(key.flatMap { keyLines[$0] } ?? line, "\(label) (\(stageName)): \(key.map { "'\($0)' " } ?? "")\(error.message)")
            } catch {
                problem(line, "\(label) (\(stageName)): \(error)")
            }
        }
        if !problems.isEmpty { throw Invalid(problems: problems) }
        self.steps = steps
    }

    static func isVariableName(_ name: String) -> Bool {
        !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    /// Replaces each `{NAME}` by its variable; calls `unknown` for a name with no variable.
    static func substitute(_ text: String, _ variables: [String: String], unknown: (String) -> Void) -> String {
        guard text.contains("{") else { return text }
        var out = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "{") {
            out += rest[..<open]
            let after = rest[rest.index(after: open)...]
            guard let close = after.firstIndex(of: "}"), isVariableName(String(after[..<close])) else {
                out += "{"
                rest = after
                continue
            }
            let name = String(after[..<close])
            if let value = variables[name] {
                // A variable's value may itself name {workspace}.
                out += value.replacingOccurrences(of: "{workspace}", with: variables["workspace"] ?? "{workspace}")
            } else {
                unknown(name)
                out += "{\(name)}"
            }
            rest = after[after.index(after: close)...]
        }
        return out + rest
    }

    /// The node with variables substituted in every scalar (marks kept, so errors still name the line).
    static func resolve(_ node: Node, _ variables: [String: String], unknown: (String, Int?) -> Void) -> Node {
        switch node {
        case .scalar(var scalar):
            let line = scalar.mark?.line
            let text = substitute(scalar.string, variables) { unknown($0, line) }
            if text != scalar.string {
                // A value made from variables is typed by what it reads ("{n}" set to 30 is the integer 30).
                scalar = Node.Scalar(text, .implicit, .plain, scalar.mark)
            }
            return .scalar(scalar)
        case .mapping(let map):
            return .mapping(Node.Mapping(map.map { ($0.key, resolve($0.value, variables, unknown: unknown)) }, map.tag, map.style, map.mark))
        case .sequence(let seq):
            return .sequence(Node.Sequence(seq.map { resolve($0, variables, unknown: unknown) }, seq.tag, seq.style, seq.mark))
        default:
            return node
        }
    }

    /// The key a decoding error is about and a sentence for it.
    static func explain(_ error: DecodingError) -> (String?, String) {
        switch error {
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            let key = context.codingPath.first?.stringValue
            return (key, "'\(key ?? "?")' must be \(describe(type))")
        case .keyNotFound(let key, _):
            return (key.stringValue, "missing required key '\(key.stringValue)'")
        case .dataCorrupted(let context):
            let key = context.codingPath.first?.stringValue
            return (key, "'\(key ?? "?")' \(context.debugDescription)")
        @unknown default:
            return (nil, "\(error)")
        }
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is UInt64.Type, is UInt.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        case is [String].Type: return "a list of strings"
        default: return "a \(type)"
        }
    }

    /// The first comment line of a pipeline file (its one-line description).
    static func summary(of text: String) -> String {
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("#") { return trimmed.drop { $0 == "#" || $0 == " " }.description }
            if !trimmed.isEmpty { break }
        }
        return ""
    }
}
