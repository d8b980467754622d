import ArgumentParser
import Foundation
import VLMCore
import VLMIO
import VLMPipeline

struct SynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Generate synthetic datasets.",
        subcommands: [Shapes.self]
    )

    struct Shapes: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "shapes",
            abstract: "Write a COCO-format dataset of coloured shapes with true captions and boxes.",
            discussion: """
            Writes OUT/SPLIT/*.png (or .jpg), OUT/annotations/captions_SPLIT.json and instances_SPLIT.json. Each image \
            holds one to a few circles, squares and triangles in six colours, clearly left or right of centre, on a \
            lightly noisy background; captions name colour, shape and side. Same seed, same files.
            """
        )
        @Option(help: "Number of images.") var count: Int
        @Option(help: "Random seed.") var seed: UInt64 = 0
        @Option(help: "Output folder.") var out: String
        @Option(help: "Image side in pixels (32...512).") var size = 64
        @Option(help: "Fewest shapes per image.") var minShapes = 1
        @Option(help: "Most shapes per image (up to 4).") var maxShapes = 3
        @Option(help: "Image format: png or jpeg.") var format = "png"
        @Option(help: "Split name (folder and annotation file suffix).") var split = "train"
        @Option(help: "Captions per image (1...5).") var captionsPerImage = 3
        @Option(help: "First image id (use distinct ranges for held-out sets).") var firstId = 1
        @Flag(help: "No progress output.") var quiet = false
        @Flag(help: "Print the report as JSON.") var json = false

        var config: SynthShapesStep.Config {
            var config = SynthShapesStep.Config(count: count, seed: seed, out: out)
            config.size = size
            config.minShapes = minShapes
            config.maxShapes = maxShapes
            config.format = format
            config.split = split
            config.captionsPerImage = captionsPerImage
            config.firstID = firstId
            return config
        }

        func validate() throws { _ = try makeStage(SynthShapesStep.self, config) }

        func run() throws {
            let stage = try makeStage(SynthShapesStep.self, config)
            try runStage(stage, StageContext(workspace: ".", progress: TerminalProgress(quiet: quiet)), json: json)
        }
    }
}
