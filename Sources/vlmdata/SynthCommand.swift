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

        func validate() throws {
            guard count >= 1 else { throw ValidationError("--count must be at least 1.") }
            guard (32...512).contains(size) else { throw ValidationError("--size must be within 32...512.") }
            guard ["png", "jpeg"].contains(format) else { throw ValidationError("--format must be png or jpeg.") }
            guard minShapes >= 1, maxShapes >= minShapes, maxShapes <= 4 else {
                throw ValidationError("--min-shapes/--max-shapes must satisfy 1 <= min <= max <= 4.")
            }
        }

        func run() throws {
            var options = ShapesSynth.Options(count: count, seed: seed, out: out)
            options.size = size
            options.minShapes = minShapes
            options.maxShapes = maxShapes
            options.format = format
            options.split = split
            options.captionsPerImage = captionsPerImage
            options.firstID = firstId
            let report = try runOrExit { try ShapesSynth(options: options).run(progress: TerminalProgress(quiet: quiet)) }
            printReport(report, json: json)
        }
    }
}
