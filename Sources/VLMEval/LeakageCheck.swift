import Foundation
import VLMCatalog
import VLMCore

/// `vlmdata eval check`: which training samples hold an image of an evaluation set, compared by the image's
/// sha256, so the same bytes under another file name or key are caught too.
///
/// ```swift
/// let report = try LeakageCheck.run(catalog: catalog)
/// if !report.overlaps.isEmpty { print(report.render()) }
/// ```
public enum LeakageCheck {
    public struct Report: Codable, Sendable, Equatable {
        public var eval_sets: Int
        public var eval_images: Int
        public var training_samples: Int
        /// Distinct image sha256 values found on both sides.
        public var overlap_images: Int
        public var overlaps: [Catalog.EvalOverlap]

        public var clean: Bool { overlaps.isEmpty }

        public func render() -> String {
            var lines = ["eval check: \(eval_sets) evaluation sets, \(eval_images) images; \(training_samples) training samples; " +
                         "\(overlaps.count) samples hold \(overlap_images) evaluation images"]
            for overlap in overlaps.prefix(50) {
                lines.append("  leak: sample \(overlap.sample) (\(overlap.shard), image \(overlap.trainImage)) has the bytes of " +
                             "\(overlap.evalImage) in eval set \(overlap.evalSet) (sha256 \(overlap.sha256.prefix(16))...)")
            }
            if overlaps.count > 50 { lines.append("  ... and \(overlaps.count - 50) more") }
            return lines.joined(separator: "\n")
        }
    }

    public static func run(catalog: Catalog) throws -> Report {
        let overlaps = try catalog.evalTrainingOverlaps()
        return Report(eval_sets: try catalog.evalSets().count, eval_images: try catalog.evalImageSHA256s().count,
                      training_samples: try catalog.trainingSampleCount(),
                      overlap_images: Set(overlaps.map(\.sha256)).count, overlaps: overlaps)
    }
}
