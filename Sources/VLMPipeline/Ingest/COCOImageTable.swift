/// The images that a COCO ingest's annotation files list, held for the run in flat arrays: id, name, size, and
/// after the image rows are written, each one's row id and stored size.
///
/// About 70 bytes per image plus its name's bytes (a lookup from COCO id to position, 8 + 4 bytes per slot, is
/// the largest part), where a dictionary of structs holding Strings took several hundred: ingest's memory was
/// growing with the file by that much (issue 19). The rest of the run is streamed.
///
/// ```swift
/// var table = COCOImageTable()
/// table.append(id: 139, name: "000000000139.jpg", width: 640, height: 426, record: 0)
/// table.index(of: 139)   // 0
/// ```
struct COCOImageTable {
    private(set) var ids: [Int64] = []
    private(set) var names = PackedStrings()
    /// The annotation's size; `Self.none` when it gives none.
    private var widths: [Int] = []
    private var heights: [Int] = []
    /// Index of the entry in its file's `images` array, for "images[N]" in messages.
    private var records: [Int32] = []
    private var indexOfID: [Int64: Int32] = [:]
    /// Row id of each image once written (`Self.none` before), and the size the catalog stores for it.
    private var rowIDs: [Int64] = []
    private var rowWidths: [Int] = []
    private var rowHeights: [Int] = []

    private static let none = Int.min

    var count: Int { ids.count }

    func index(of id: Int64) -> Int? { indexOfID[id].map(Int.init) }

    mutating func append(id: Int64, name: String, width: Int?, height: Int?, record: Int) {
        indexOfID[id] = Int32(ids.count)
        ids.append(id)
        names.append(name)
        widths.append(width ?? Self.none)
        heights.append(height ?? Self.none)
        records.append(Int32(record))
    }

    func name(_ i: Int) -> String { names[i] }

    func record(_ i: Int) -> String { "images[\(records[i])]" }

    /// The annotation's (width, height) when it gives both.
    func expected(_ i: Int) -> (width: Int, height: Int)? {
        widths[i] == Self.none || heights[i] == Self.none ? nil : (widths[i], heights[i])
    }

    mutating func setRow(_ i: Int, id: Int64, width: Int?, height: Int?) {
        if rowIDs.isEmpty {
            rowIDs = Array(repeating: -1, count: count)
            rowWidths = Array(repeating: Self.none, count: count)
            rowHeights = rowWidths
        }
        rowIDs[i] = id
        rowWidths[i] = width ?? Self.none
        rowHeights[i] = height ?? Self.none
    }

    /// The image's row id and stored size, once written.
    func row(_ i: Int) -> (id: Int64, width: Int?, height: Int?)? {
        guard !rowIDs.isEmpty, rowIDs[i] != -1 else { return nil }
        return (rowIDs[i], rowWidths[i] == Self.none ? nil : rowWidths[i], rowHeights[i] == Self.none ? nil : rowHeights[i])
    }
}
