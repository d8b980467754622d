/// What every stage reports when it ends: named counts, printed by the CLI and stored in the `runs` row.
public struct StageReport: Sendable, Codable, Equatable {
    public var stage: String
    /// Ordered counts (name, value), e.g. ("images", 80), ("captions", 400).
    public var counts: [String: Int]
    /// True when the stage found its outputs already complete and did nothing.
    public var skipped: Bool
    /// Per-record problems kept going past (file/record: message), capped for display.
    public var problems: [String]

    public init(stage: String, counts: [String: Int] = [:], skipped: Bool = false, problems: [String] = []) {
        self.stage = stage
        self.counts = counts
        self.skipped = skipped
        self.problems = problems
    }
}
