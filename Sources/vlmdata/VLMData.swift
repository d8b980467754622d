import ArgumentParser
import Foundation
import VLMCore

@main
struct VLMDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vlmdata",
        abstract: "Build LLaVA-style vision-language training data and stream it into training.",
        discussion: """
        Stages read and write a workspace (a folder with catalog.sqlite and shards/):
          ingest coco|llava  →  gen-instructions  →  tokenize  →  patchify  →  shard  →  stream / train-smoke
        """,
        version: "0.1.0",
        subcommands: [
            IngestCommand.self, SynthCommand.self, StatsCommand.self,
            PatchifyCommand.self, PreprocessCommand.self,
            TokenizeCommand.self, TokenizerCommand.self,
            GenInstructionsCommand.self, ExportCommand.self,
            ShardCommand.self, ShowCommand.self, VerifyCommand.self, CatalogCommand.self,
            StreamCommand.self,
            TrainSmokeCommand.self, RunCommand.self, EvalCommand.self, ViewCommand.self,
        ]
    )
}
