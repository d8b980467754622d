import Foundation
import Testing

/// VLMCatalog owns the data: no other module under Sources/ imports GRDB (its SQL lives in Catalog methods).
struct LayeringTests {
    @Test func onlyVLMCatalogImportsGRDB() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: root.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50)
        var importers: [String] = []
        for file in files {
            let text = try String(contentsOfFile: root.appendingPathComponent(file).path, encoding: .utf8)
            let imports = text.split(separator: "\n").contains { line in
                let words = line.split(separator: " ")
                return words.count >= 2 && words[words.count - 2] == "import" && words.last!.hasPrefix("GRDB")
            }
            if imports { importers.append(file) }
        }
        #expect(importers.contains { $0.hasPrefix("VLMCatalog/") })
        #expect(importers.filter { !$0.hasPrefix("VLMCatalog/") }.sorted() == [])
    }
}
