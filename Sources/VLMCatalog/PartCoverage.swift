import Foundation
import GRDB
import VLMCore

/// Which parts of a `--part I/N` split one workspace holds, from what its runs recorded.
///
/// Every stage that runs with `--part` records `"part": "I/N"` in its run parameters. A workspace holds the parts
/// that every partitioned stage of it ran (a stage run whole covers every part); a workspace where no stage ran
/// with `--part` holds the whole run.
///
/// ```swift
/// let coverage = try PartCoverage.of([try Catalog(workspace: Workspace(root: "p0")), ...])
/// let summary = try PartCoverage.check(coverage, allowPartial: false)   // throws on a missing or doubled part
/// ```
public struct PartCoverage: Sendable, Hashable, CustomStringConvertible {
    public var workspace: String
    /// N of the split, nil for a whole (unpartitioned) workspace.
    public var count: Int?
    /// The part indices it holds (empty for a whole workspace).
    public var parts: [Int]
    /// Stage → the parts its runs recorded, for the error messages.
    public var stages: [String: [String]]

    public var description: String {
        guard let count else { return "\(workspace): the whole run (no stage ran with --part)" }
        let list = parts.map { "\($0)/\(count)" }.joined(separator: ", ")
        return "\(workspace): part\(parts.count == 1 ? "" : "s") \(list.isEmpty ? "none" : list)"
    }

    /// The coverage of each workspace, read from its finished runs.
    public static func of(_ catalogs: [Catalog]) throws -> [PartCoverage] {
        try catalogs.map { catalog in
            let rows = try catalog.read { db in
                try Row.fetchAll(db, sql: "SELECT stage, params FROM runs WHERE status = 'done' ORDER BY id")
            }
            var byStage: [String: Set<PartSpec>] = [:]
            for row in rows {
                let stage: String = row["stage"]
                guard let text: String = row["params"],
                      let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                      let value = object["part"] else { continue }
                let part: PartSpec?
                switch value {
                case let label as String: part = PartSpec(parsing: label)
                case let dict as [String: Any]:
                    part = (dict["index"] as? Int).flatMap { i in (dict["count"] as? Int).map { PartSpec(index: i, count: $0) } }
                default: part = nil
                }
                guard let part else {
                    throw VLMError(.corrupt, file: catalog.workspace.catalogPath, record: "runs (\(stage))", "recorded part '\(value)' is not I/N")
                }
                byStage[stage, default: []].insert(part)
            }
            let stages = byStage.mapValues { $0.map(\.description).sorted() }
            let counts = Set(byStage.values.flatMap { $0.map(\.count) })
            guard counts.count <= 1 else {
                throw VLMError(.conflict, file: catalog.workspace.root,
                               "its stages ran parts of different splits: \(describe(stages)); one workspace holds parts of one N")
            }
            guard let n = counts.first else {
                return PartCoverage(workspace: catalog.workspace.root, count: nil, parts: [], stages: [:])
            }
            // A part is held when every partitioned stage ran it.
            let held = byStage.values.map { Set($0.map(\.index)) }.reduce(Set(0..<n)) { $0.intersection($1) }
            if held.isEmpty {
                throw VLMError(.conflict, file: catalog.workspace.root,
                               "its stages ran different parts (\(describe(stages))), so it holds no whole part; rerun the stages with one --part")
            }
            return PartCoverage(workspace: catalog.workspace.root, count: n, parts: held.sorted(), stages: stages)
        }
    }

    static func describe(_ stages: [String: [String]]) -> String {
        stages.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.joined(separator: ","))" }.joined(separator: "; ")
    }

    public struct Summary: Sendable, Hashable {
        /// N (1 for whole workspaces).
        public var count: Int
        public var present: [Int]
        public var missing: [Int]
    }

    /// Refuses inputs of different splits, a part held twice, a whole workspace beside parts, and (unless
    /// `allowPartial`) a missing part; each error names the workspaces.
    public static func check(_ coverage: [PartCoverage], allowPartial: Bool) throws -> Summary {
        let whole = coverage.filter { $0.count == nil }
        let split = coverage.filter { $0.count != nil }
        if !whole.isEmpty {
            guard split.isEmpty, whole.count == 1 else {
                throw VLMError(.conflict, "\(whole.map(\.workspace).joined(separator: ", ")) hold\(whole.count == 1 ? "s" : "") a whole (unpartitioned) run; "
                               + (split.isEmpty ? "two whole runs overlap completely" : "it cannot be merged with parts of a split run (\(split.map(\.description).joined(separator: "; ")))"))
            }
            return Summary(count: 1, present: [0], missing: [])
        }
        let ns = Set(split.compactMap(\.count))
        guard ns.count == 1, let n = ns.first else {
            throw VLMError(.conflict, "the workspaces come from different splits: \(split.map(\.description).joined(separator: "; "))")
        }
        var holder: [Int: String] = [:]
        for c in split {
            for i in c.parts {
                if let other = holder[i] {
                    throw VLMError(.conflict, file: c.workspace, "part \(i)/\(n) is also in \(other) (overlapping parts); a merge needs each part once")
                }
                holder[i] = c.workspace
            }
        }
        let missing = (0..<n).filter { holder[$0] == nil }
        if !missing.isEmpty && !allowPartial {
            throw VLMError(.notFound, "parts \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")) are missing "
                           + "(\(split.map(\.description).joined(separator: "; "))); give every part's workspace, or --partial if a partial merge is intended")
        }
        return Summary(count: n, present: holder.keys.sorted(), missing: missing)
    }
}
