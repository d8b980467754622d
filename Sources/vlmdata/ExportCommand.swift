import ArgumentParser
import Foundation
import VLMCatalog
import VLMCore
import VLMPipeline

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export catalog data in other tools' formats.",
        subcommands: [LLaVA.self]
    )

    struct LLaVA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "llava",
            abstract: "Write instructions as a LLaVA JSON file: [{\"id\", \"image\", \"conversations\"}, ...].",
            discussion: """
            Records are in key order and valid against Schemas/instruction.schema.json; `vlmdata ingest llava` reads \
            the file back. With --image-root, image paths are relative to that folder (images inside an archive are \
            given by their member name); without it, the annotation's file name is written.
            """)

        @OptionGroup var workspace: WorkspaceOptions
        @Option(help: "Output JSON file (written atomically).") var out: String
        @Option(help: ArgumentHelp("Only these kinds (comma-separated, e.g. caption,conversation).", valueName: "list")) var kinds: String?
        @Option(help: ArgumentHelp("Only these generators (comma-separated: templates, llm, import).", valueName: "list")) var generators: String?
        @Option(help: ArgumentHelp("Folder the image paths are written relative to.", valueName: "dir")) var imageRoot: String?
        @Flag(help: "Print the report as JSON.") var json = false

        func validate() throws {
            if out.isEmpty { throw ValidationError("--out needs a file name.") }
            if let imageRoot {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: imageRoot, isDirectory: &isDirectory), isDirectory.boolValue else {
                    throw ValidationError("--image-root \(imageRoot) is not a folder.")
                }
            }
        }

        func run() throws {
            func list(_ text: String?) -> [String]? {
                text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            }
            let options = ExportLLaVA.Options(out: out, kinds: list(kinds), generators: list(generators), imageRoot: imageRoot)
            let report = try runOrExit {
                let catalog = try Catalog(workspace: Workspace(root: workspace.path))
                return try ExportLLaVA(options: options).run(catalog: catalog, progress: workspace.progress())
            }
            printReport(report, json: json)
        }
    }
}
