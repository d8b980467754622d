import Foundation
import VLMCore
import VLMIO

/// The formats `ingest urls` reads: CSV (RFC 4180 quoting) and TSV with a header line, and JSON Lines.
/// Parquet is named so that its error can say how to convert it.
public enum URLListFormat: String, Codable, Sendable, CaseIterable {
    case csv, tsv, jsonl, parquet

    /// The format a file name implies (".gz", ".bz2", ".xz", ".zst" looked through), or nil.
    public static func guess(_ path: String) -> URLListFormat? {
        var name = (path as NSString).lastPathComponent.lowercased()
        for suffix in [".gz", ".bz2", ".xz", ".zst"] where name.hasSuffix(suffix) { name.removeLast(suffix.count) }
        switch (name as NSString).pathExtension {
        case "csv": return .csv
        case "tsv", "txt": return .tsv
        case "jsonl", "json", "ndjson": return .jsonl
        case "parquet": return .parquet
        default: return nil
        }
    }

    /// What to do with a Parquet file: no Parquet library this project may use is packaged for this machine.
    public static let parquetAdvice = """
        Parquet is not read directly (no Parquet C library is packaged for Debian); convert it once with pyarrow: \
        python -c "import pyarrow.parquet as pq, pyarrow.csv as pc, sys; pc.write_csv(pq.read_table(sys.argv[1]), sys.argv[2])" \
        LIST.parquet LIST.csv (see docs/urls.md)
        """
}

/// One usable line of a URL list.
struct URLListRecord {
    var url: String
    var caption: String?
    var key: String?
    /// 1-based line number in its file.
    var line: Int
}

/// Streams the records of one list file: each call to `next()` gives a record or a problem naming file and line.
final class URLListReader {
    enum Item {
        case record(URLListRecord)
        /// A malformed line, reported and skipped (it still takes its record number, so keys stay stable).
        case problem(line: Int, String)
    }

    let path: String
    let format: URLListFormat
    let urlColumn: String
    let captionColumn: String
    let keyColumn: String?
    private let lines: LineFileReader
    private var columns: [String: Int] = [:]

    init(path: String, format: URLListFormat?, urlColumn: String, captionColumn: String, keyColumn: String?) throws {
        guard let format = format ?? URLListFormat.guess(path) else {
            throw VLMError(.invalidArgument, file: path, "cannot tell the list's format from its name: give --format csv, tsv or jsonl")
        }
        if format == .parquet { throw VLMError(.unsupported, file: path, URLListFormat.parquetAdvice) }
        self.path = path
        self.format = format
        self.urlColumn = urlColumn
        self.captionColumn = captionColumn
        self.keyColumn = keyColumn
        lines = try LineFileReader(path: path)
        if format != .jsonl { try readHeader() }
    }

    private func readHeader() throws {
        guard let first = try lines.next() else { return }
        let number = first.number
        guard let text = String(validating: first.bytes, as: UTF8.self) else {
            throw VLMError(.badInput, file: path, record: "line \(number)", "header line is not valid UTF-8")
        }
        let names: [String]
        do { names = try split(text) } catch let error as FieldError {
            throw VLMError(.badInput, file: path, record: "line \(number)", "header line: \(error.message)")
        }
        for (i, name) in names.enumerated() where columns[name] == nil {
            columns[name.trimmingCharacters(in: .whitespaces)] = i
        }
        guard columns[urlColumn] != nil else {
            throw VLMError(.badInput, file: path, record: "line \(number)",
                           "no '\(urlColumn)' column in the header (\(names.joined(separator: ", "))): give --url-col")
        }
        if let keyColumn, columns[keyColumn] == nil {
            throw VLMError(.badInput, file: path, record: "line \(number)", "no '\(keyColumn)' column (--key-col) in the header")
        }
    }

    struct FieldError: Error { var message: String }

    /// The fields of one CSV or TSV line.
    func split(_ line: String) throws -> [String] {
        if format == .tsv { return line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        var fields: [String] = []
        var field = ""
        var chars = Array(line.unicodeScalars)[...]
        while true {
            field = ""
            if chars.first == "\"" {
                chars = chars.dropFirst()
                var closed = false
                while let c = chars.first {
                    chars = chars.dropFirst()
                    if c == "\"" {
                        if chars.first == "\"" { field.unicodeScalars.append("\""); chars = chars.dropFirst(); continue }
                        closed = true
                        break
                    }
                    field.unicodeScalars.append(c)
                }
                guard closed else { throw FieldError(message: "unterminated quoted field \(fields.count + 1)") }
                guard chars.isEmpty || chars.first == "," else {
                    throw FieldError(message: "text after the closing quote of field \(fields.count + 1)")
                }
            } else {
                while let c = chars.first, c != "," {
                    if c == "\"" { throw FieldError(message: "a quote inside unquoted field \(fields.count + 1)") }
                    field.unicodeScalars.append(c)
                    chars = chars.dropFirst()
                }
            }
            fields.append(field)
            if chars.first == "," { chars = chars.dropFirst() } else { break }
        }
        return fields
    }

    /// The next record or problem; nil at the end of the file. Blank lines are skipped silently.
    func next() throws -> Item? {
        while let next = try lines.next() {
            let number = next.number
            if next.bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            guard let text = String(validating: next.bytes, as: UTF8.self) else {
                return .problem(line: number, "not valid UTF-8: skipped")
            }
            do {
                return .record(try parse(text, line: number))
            } catch let error as FieldError {
                return .problem(line: number, "\(error.message): skipped")
            }
        }
        return nil
    }

    private func parse(_ text: String, line: Int) throws -> URLListRecord {
        var url: String?
        var caption: String?
        var key: String?
        if format == .jsonl {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
                throw FieldError(message: "not a JSON object")
            }
            func scalar(_ name: String) throws -> String? {
                switch object[name] {
                case nil, is NSNull: return nil
                case let s as String: return s
                case let n as NSNumber: return n.stringValue
                default: throw FieldError(message: "'\(name)' is not a string or number")
                }
            }
            url = try scalar(urlColumn)
            caption = try scalar(captionColumn)
            key = try keyColumn.flatMap { try scalar($0) }
        } else {
            let fields = try split(text)
            func field(_ name: String) -> String? {
                columns[name].flatMap { $0 < fields.count ? fields[$0] : nil }
            }
            url = field(urlColumn)
            caption = field(captionColumn)
            key = keyColumn.flatMap { field($0) }
        }
        guard let url = url?.trimmingCharacters(in: .whitespaces), !url.isEmpty else {
            throw FieldError(message: "no URL in '\(urlColumn)'")
        }
        if keyColumn != nil, key?.isEmpty ?? true { throw FieldError(message: "no key in '\(keyColumn!)'") }
        return URLListRecord(url: url, caption: caption, key: key, line: line)
    }
}
