import Foundation

/// One row of a score table: a category (POPE: a sampling; MME: a subtask) or the overall row.
public struct EvalRow: Codable, Sendable, Equatable {
    public var name: String
    /// Questions (MME: images; MMBench: circular groups).
    public var n: Int
    public var metrics: [String: Double]
}

/// What `vlmdata eval score` reports: a table per category and overall, and every answer it could not use.
public struct EvalReport: Codable, Sendable, Equatable {
    public var kind: EvalKind
    public var set: String
    public var questions: Int
    public var answered: Int
    /// Questions with no answer line: counted wrong.
    public var missing: Int
    public var missing_ids: [String]
    /// Answers no rule could read (MMBench: no option; grounding: no box): counted wrong.
    public var unparsed: Int
    /// MMBench: answers whose option came from the LLM judge.
    public var judged: Int
    /// Answer lines for questions the set does not have (ignored).
    public var extra: Int
    /// The metric columns, in table order.
    public var columns: [String]
    public var categories: [EvalRow]
    public var overall: EvalRow
    /// Answer-file lines that were skipped, each naming the line and what is wrong.
    public var problems: [String]

    /// The human-readable table.
    public func table() -> String {
        let header = ["category", EvalScorer.countLabel(kind)] + columns
        var rows: [[String]] = [header]
        for row in categories + [overall] {
            rows.append([row.name, String(row.n)] + columns.map { column in
                guard let value = row.metrics[column] else { return "-" }
                return EvalScorer.integerMetrics.contains(column) ? String(Int(value)) : String(format: "%.4f", value)
            })
        }
        let widths = header.indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { i, cell in
                i == 0 ? cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  ")
        }
        lines.insert(String(repeating: "-", count: lines[0].count), at: 1)
        lines.insert(String(repeating: "-", count: lines[0].count), at: lines.count - 1)
        var out = "\(kind.rawValue) set \(set): \(questions) questions, \(answered) answered, \(missing) missing, \(unparsed) unparsed"
        if judged > 0 { out += ", \(judged) judged by the LLM" }
        if extra > 0 { out += ", \(extra) answers for unknown questions ignored" }
        out += "\n" + lines.joined(separator: "\n")
        if !missing_ids.isEmpty {
            out += "\nmissing question ids: \(missing_ids.joined(separator: ", "))\(missing > missing_ids.count ? ", ..." : "")"
        }
        for problem in problems.prefix(20) { out += "\nproblem: \(problem)" }
        if problems.count > 20 { out += "\n... and \(problems.count - 20) more problems" }
        return out
    }
}
