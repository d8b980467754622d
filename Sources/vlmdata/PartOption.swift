import ArgumentParser
import VLMCore

/// `--part I/N`, parsed once: every stage that takes it selects with `PartSpec.owns` (the image key).
extension PartSpec: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
    public static var defaultValueDescription: String { "I/N" }
}

/// The help text every `--part` shares.
enum PartHelp {
    static let text = ArgumentHelp(
        "Handle part I of N (0-based, I < N): the images whose key hashes to I (text-only samples by their own key), "
            + "the same images in every stage; join the parts' workspaces with `vlmdata catalog merge`.",
        valueName: "I/N")
}
