import ArgumentParser
import Foundation
import VLMCatalog
import VLMPipeline

struct ViewCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "view",
        abstract: "Write a static report of a workspace: DIR/index.html with sample images beside it.",
        discussion: """
        The page opens from disk: no server, no network, no script. It shows the rows per catalog table and the \
        problems per kind, histograms (tokens per sample, supervised tokens, image tokens, instructions per image, \
        images per shard), the loss curve when train-smoke ran in or above the workspace, and --samples cards drawn \
        with --seed: the pixels as the model sees them (rebuilt from the stored patches, pad borders and anyres \
        tiles visible, written as PNG under DIR/images/), the boxes the conversation names, the conversation, and \
        the tokens coloured supervised / masked / image (hover a token for its string). See docs/view.md.
        """)

    @OptionGroup var workspace: WorkspaceOptions

    @Option(help: ArgumentHelp("Folder for index.html and images/. Default: WORKSPACE/report.", valueName: "dir"))
    var out: String?

    @Option(help: "Number of sample cards.") var samples = 12

    @Option(help: "Seed of the sample draw.") var seed: UInt64 = 0

    @Option(help: ArgumentHelp("tokenizer.json / tokenizer.model for the token strings. Default: the workspace's own, else the file the tokenize run read, when its sha256 matches the samples'; else ids are shown and the file (path + sha256) to pass is named.", valueName: "file"))
    var tokenizer: String?

    @Flag(help: "Print one JSON object (page, samples, images written, loss curve).") var json = false

    func validate() throws {
        if samples < 0 { throw ValidationError("--samples must be 0 or more.") }
    }

    func run() throws {
        let ws = Workspace(root: workspace.path)
        let options = ReportPage.Options(out: out ?? ws.root + "/report", samples: samples, seed: seed, tokenizer: tokenizer)
        let summary = try runOrExit { try ReportPage.write(workspace: ws, options: options, progress: workspace.progress()) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print("report: \(summary.page) (\(summary.samples_shown) of \(summary.samples_total) samples, \(summary.images_written) images)")
            if let loss = summary.loss_curve { print("loss curve: \(loss)") }
            for needed in summary.tokenizer_needed { print("note: token ids are shown, not strings: \(needed)") }
        }
    }
}
