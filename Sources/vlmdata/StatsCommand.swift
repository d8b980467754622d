import ArgumentParser
import Foundation
import VLMCatalog

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Counts per catalog table (images by status, captions, objects, instructions, tokens, pixels, shards)."
    )
    @OptionGroup var common: WorkspaceOptions
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        guard FileManager.default.fileExists(atPath: Workspace(root: common.path).catalogPath) else {
            FileHandle.standardError.write(Data("error: no catalog at \(Workspace(root: common.path).catalogPath) (run an ingest first)\n".utf8))
            throw ExitCode(1)
        }
        let stats = try runOrExit { try Catalog(workspace: Workspace(root: common.path)).stats() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(stats), as: UTF8.self))
            return
        }
        let i = stats.images
        print("workspace     \(Workspace(root: common.path).root)")
        print("images        \(i.total) (ok \(i.ok), missing \(i.missing), corrupt \(i.corrupt), size_mismatch \(i.size_mismatch), too_large \(i.too_large))")
        print("captions      \(stats.captions)")
        print("objects       \(stats.objects)")
        print("categories    \(stats.categories)")
        let kinds = stats.instructions_by_kind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("instructions  \(stats.instructions)\(kinds.isEmpty ? "" : " (\(kinds))")")
        print("tokenized     \(stats.tokenized)")
        print("pixels        \(stats.pixels)\(stats.pixel_errors > 0 ? " (\(stats.pixel_errors) errors)" : "")")
        print("shards        \(stats.shards)")
        print("samples       \(stats.samples)")
        if let t = stats.tokens_with_image, let x = stats.tokens_without_image {
            print("tokens/sample text only: min \(x.min) median \(x.median) p95 \(x.p95) max \(x.max); with image: min \(t.min) median \(t.median) p95 \(t.p95) max \(t.max)")
        }
        if stats.urls.total > 0 {
            let failed = stats.urls.failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("urls          \(stats.urls.total) (ok \(stats.urls.ok)\(failed.isEmpty ? "" : ", " + failed))")
        }
        let l = stats.llm_calls
        if l.ok + l.rejected + l.failed > 0 {
            print("llm calls     ok \(l.ok), rejected \(l.rejected), failed \(l.failed); tokens \(l.prompt_tokens) prompt + \(l.completion_tokens) completion")
        }
    }
}
