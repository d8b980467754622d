import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMIO
import VLMPipeline

struct CatalogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalog",
        abstract: "Catalog utilities: merge part catalogs, print the schema.",
        discussion: """
        The catalog is plain SQLite; the shard index answers questions with the sqlite3 CLI, e.g. where a sample
        lives and how to read one member with a single ranged read:

          sqlite3 WS/catalog.sqlite "SELECT h.path, p.offset, p.size FROM samples s JOIN shards h ON h.id = s.shard_id
                                     JOIN sample_parts p ON p.sample_id = s.id WHERE s.key = 'KEY' AND p.name = 'labels.npy'"
          dd if=WS/PATH bs=1 skip=OFFSET count=SIZE        # the .npy bytes; or: tail -c +$((OFFSET+1)) | head -c SIZE

        More queries in docs/shards.md.
        """,
        subcommands: [Merge.self, SchemaText.self, Publish.self])

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish",
            abstract: "Upload a consistent snapshot of the catalog as the dataset's index, so a trainer needs only its URL.",
            discussion: """
            Writes a snapshot of WORKSPACE/catalog.sqlite (VACUUM INTO: one read transaction) and uploads it to \
            the URL (s3://bucket/prefix/ gets index.sqlite appended). Shards resolve by the URL `shard --upload` \
            recorded, else by their path relative to the index, so after `vlmdata shard --upload s3://B/P` and \
            `vlmdata catalog publish s3://B/P/` a trainer runs `vlmdata stream --index s3://B/P/index.sqlite`. \
            Credentials: the AWS_* variables or ~/.aws/credentials (docs/s3.md).
            """)

        @OptionGroup var workspace: WorkspaceOptions

        @Argument(help: "Where to put the index: s3://bucket/prefix/index.sqlite (or s3://bucket/prefix/).")
        var destination: String

        @Flag(help: "Print the result as one JSON object.")
        var json = false

        func validate() throws {
            _ = try makeStage(CatalogPublishStep.self, .init(to: destination))
        }

        func run() throws {
            let stage = try makeStage(CatalogPublishStep.self, .init(to: destination))
            let report: StageReport
            do { report = try stage.run(workspace.context()) } catch let failure as StageFailure {
                FileHandle.standardError.write(Data("error: \(failure.error)\n".utf8))
                throw ExitCode(1)
            }
            let bytes = report.counts["bytes"] ?? 0
            if json {
                let data = try JSONSerialization.data(withJSONObject: ["index_url": stage.indexURL, "bytes": bytes] as [String: Any],
                                                      options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("published \(stage.indexURL) (\(bytes) bytes)")
            }
        }
    }

    struct Merge: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "merge",
            abstract: "Join the workspaces of a partitioned run (--part I/N) into one.",
            discussion: """
            Copies every part's catalog rows into OUT (matched by key, not row id) and hard-links (or copies) its
            shard files into OUT/shards/. Overlapping sample keys, shards of the same part twice, parts of
            different splits, shard runs with different parameters, and equal keys with different content are
            refused with an error naming them; nothing is merged from a refused part.

            Coverage: the parts each workspace holds are read from what its stages recorded when they ran with
            --part I/N (printed before the report). The workspaces must come from one split, hold each part once
            and, unless --partial, every part of N. See docs/partitioning.md.
            """)

        @Argument(help: "Output workspace (created if needed).")
        var out: String

        @Argument(help: "Part workspaces, each holding a catalog.sqlite.")
        var parts: [String]

        @Flag(help: "Index the parts' training shards where they are (absolute paths) instead of linking them into OUT.")
        var reference = false

        @Flag(help: "Merge even when parts of the split are missing (a partial merge is intended); the report lists them.")
        var partial = false

        @Flag(help: "Print the report as one JSON object.")
        var json = false

        @Flag(name: .long, help: "Print no progress.")
        var quiet = false

        func validate() throws {
            if parts.isEmpty { throw ValidationError("give at least one part workspace to merge into \(out).") }
        }

        func run() throws {
            let stage = try makeStage(CatalogMergeStep.self, .init(parts: parts, reference: reference, partial: partial))
            let report: StageReport
            do {
                report = try stage.run(StageContext(workspace: out, progress: TerminalProgress(quiet: quiet)))
            } catch let failure as StageFailure {
                FileHandle.standardError.write(Data("error: \(failure.error)\n".utf8))
                throw ExitCode(1)
            }
            if !json {
                for line in try runOrExit({ try stage.coverage() }) { print(line) }
            }
            printReport(report, json: json)
        }
    }

    struct SchemaText: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "schema", abstract: "Print the catalog's SQL schema (Schemas/catalog.sql).")

        func run() throws {
            print(Schema.sqlText, terminator: "")
        }
    }
}
