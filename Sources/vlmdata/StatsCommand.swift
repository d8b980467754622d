import ArgumentParser
import Foundation
import VLMCatalog

struct StatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Counts per catalog table, per split, per status and per stage config (by its readable name).",
        discussion: "Aligned tables for reading; --json prints the counts as one JSON object for scripts."
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
        let ws = Workspace(root: common.path)
        let breakdown = try runOrExit { try Catalog(workspace: ws).statsBreakdown() }
        print("workspace \(ws.root)\n")
        let totals: [[String]] = [
            ["images", "\(stats.images.total)"], ["captions", "\(stats.captions)"], ["objects", "\(stats.objects)"],
            ["categories", "\(stats.categories)"], ["instructions", "\(stats.instructions)"], ["tokenized", "\(stats.tokenized)"],
            ["pixels", "\(stats.pixels)"], ["shards", "\(stats.shards)"], ["samples", "\(stats.samples)"],
        ]
        print(TextTable(["table", "rows"], totals).render() + "\n")
        if !breakdown.splits.isEmpty {
            print(TextTable(["split", "source", "images", "ok", "instructions", "samples"], breakdown.splits.map {
                [$0.name, $0.kind, "\($0.images)", "\($0.ok)", "\($0.instructions)", "\($0.samples)"]
            }).render() + "\n")
        }
        if !breakdown.statuses.isEmpty {
            print(TextTable(["table", "status", "rows"], breakdown.statuses.map { [$0.table, $0.status, "\($0.rows)"] }).render() + "\n")
        }
        if !breakdown.configs.isEmpty {
            print(TextTable(["stage", "config", "rows"], breakdown.configs.map { [$0.stage, $0.name, "\($0.rows)"] }).render() + "\n")
        }
        if !stats.instructions_by_kind.isEmpty {
            print(TextTable(["instruction kind", "rows"], stats.instructions_by_kind.sorted { $0.key < $1.key }.map { [$0.key, "\($0.value)"] }).render() + "\n")
        }
        if let t = stats.tokens_with_image, let x = stats.tokens_without_image {
            print(TextTable(["tokens per sample", "min", "median", "p95", "max"], [
                ["text only", "\(x.min)", "\(x.median)", "\(x.p95)", "\(x.max)"],
                ["with image positions", "\(t.min)", "\(t.median)", "\(t.p95)", "\(t.max)"],
            ]).render() + "\n")
        }
        if stats.urls.total > 0 {
            let failed = stats.urls.failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("urls          \(stats.urls.total) (ok \(stats.urls.ok)\(failed.isEmpty ? "" : ", " + failed))")
        }
        let l = stats.llm_calls
        if l.ok + l.rejected + l.failed > 0 {
            print(TextTable(["llm calls", "ok", "rejected", "failed", "prompt tokens", "completion tokens"], [
                ["", "\(l.ok)", "\(l.rejected)", "\(l.failed)", "\(l.prompt_tokens)", "\(l.completion_tokens)"],
            ]).render())
        }
    }
}
