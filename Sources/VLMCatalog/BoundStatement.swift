import GRDB
import GRDBSQLite

/// A prepared statement bound and stepped through SQLite's C API, for the per-row loops of ingest.
///
/// GRDB's `setUncheckedArguments` boxes every value into a `DatabaseValueConvertible` existential and builds a
/// `StatementArguments` array per row; on a caption file that boxing and its retain/release were a larger share
/// of the CPU than SQLite's own insert. Here each value goes straight to `sqlite3_bind_*`, strings without a
/// copy (bound `SQLITE_STATIC` for the duration of the step). Only for use inside a `Catalog.write` body, on
/// that body's `Database`.
///
/// ```swift
/// let insert = try BoundStatement(db, sql: "INSERT INTO captions (image_id, external_id, text) VALUES (?, ?, ?)")
/// insert.bind(1, imageID); insert.bind(2, externalID)
/// try insert.step(text: text, at: 3)
/// ```
struct BoundStatement {
    let statement: Statement
    let db: Database
    private let handle: OpaquePointer

    init(_ db: Database, sql: String) throws {
        self.db = db
        statement = try db.makeStatement(sql: sql)
        handle = statement.sqliteStatement
    }

    func bind(_ index: Int32, _ value: Int64) { sqlite3_bind_int64(handle, index, value) }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    func bind(_ index: Int32, _ value: Int?) { bind(index, value.map(Int64.init)) }

    func bind(_ index: Int32, _ value: Double) { sqlite3_bind_double(handle, index, value) }

    func bind(_ index: Int32, _ value: Double?) {
        if let value { sqlite3_bind_double(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    /// Binds text that SQLite copies (for rows with several strings, bound before one `step()`).
    func bindCopy(_ index: Int32, _ value: String?) {
        guard var value else { sqlite3_bind_null(handle, index); return }
        value.withUTF8 { utf8 in
            _ = sqlite3_bind_text(handle, index, utf8.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) },
                                  Int32(utf8.count), Self.transient)
        }
    }

    /// Binds `text` at `index` without a copy and runs the statement once.
    func step(text: String, at index: Int32) throws {
        var text = text
        try text.withUTF8 { utf8 in
            // A zero-length buffer may have no address; SQLite needs a non-null pointer for '' (null is NULL).
            let empty: StaticString = ""
            let pointer = utf8.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(empty.utf8Start)
            sqlite3_bind_text(handle, index, pointer.assumingMemoryBound(to: CChar.self), Int32(utf8.count), nil)
            defer { sqlite3_bind_null(handle, index) }   // the buffer is not ours after this call
            try step()
        }
    }

    /// Runs the statement once with what is bound (an INSERT or UPDATE: no rows expected) and resets it.
    func step() throws {
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE else {
            let error = failure(code)   // the message before reset
            sqlite3_reset(handle)
            throw error
        }
        sqlite3_reset(handle)
    }

    /// Runs a query, calling `row` for each result row with this statement to read columns from.
    func forEachRow(_ row: (BoundStatement) throws -> Void) throws {
        defer { sqlite3_reset(handle) }
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { return }
            guard code == SQLITE_ROW else { throw failure(code) }
            try row(self)
        }
    }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func optionalInt64(_ column: Int32) -> Int64? {
        sqlite3_column_type(handle, column) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, column)
    }

    private func failure(_ code: Int32) -> DatabaseError {
        let message = db.sqliteConnection.map { String(cString: sqlite3_errmsg($0)) }
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
    }

    /// SQLITE_TRANSIENT: SQLite copies the bound bytes before `sqlite3_bind_text` returns.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
}
