/// Columns aligned for a terminal: text left, numbers right, two spaces between, a header row.
///
/// ```swift
/// print(TextTable(["split", "images"], [["train2017", "80"]]).render())
/// ```
struct TextTable {
    var header: [String]
    var rows: [[String]]

    init(_ header: [String], _ rows: [[String]]) { (self.header, self.rows) = (header, rows) }

    func render(indent: String = "") -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        let numeric = header.indices.map { c in !rows.isEmpty && rows.allSatisfy { c >= $0.count || Int($0[c]) != nil } }
        return all.map { row in
            let cells = header.indices.map { c -> String in
                let text = c < row.count ? row[c] : ""
                let pad = String(repeating: " ", count: widths[c] - text.count)
                return numeric[c] ? pad + text : text + pad
            }
            var line = indent + cells.joined(separator: "  ")
            while line.last == " " { line.removeLast() }
            return line
        }.joined(separator: "\n")
    }
}
