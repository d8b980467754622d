import Foundation
import VLMCore
import Yams

/// Every stage a pipeline file may name, by the name it is written with (the CLI command path).
public enum StageRegistry {
    public static let stages: [any Stage.Type] = [
        SynthShapesStep.self, IngestCOCOStep.self, IngestLLaVAStep.self, IngestURLsStep.self, GenInstructionsStep.self,
        TokenizerTrainStep.self, TokenizeStep.self, PatchifyStep.self, ShardStep.self, VerifyStep.self, ExportLLaVAStep.self,
        CatalogMergeStep.self, CatalogPublishStep.self, TrainSmokeStep.self, EvalBuildStep.self,
    ]

    public static func stage(named name: String) -> (any Stage.Type)? {
        stages.first { $0.name == name }
    }

    public static var names: [String] { stages.map { $0.name } }

    /// The allowed keys of a stage type.
    static func keys(_ type: any Stage.Type) -> [String] {
        func open<S: Stage>(_: S.Type) -> [String] { S.Config.keys }
        return open(type)
    }

    /// Decodes and validates a stage of `type` from a pipeline file's mapping.
    static func make(_ type: any Stage.Type, from node: Node) throws -> any Stage {
        func open<S: Stage>(_: S.Type) throws -> any Stage {
            try S(config: try YAMLDecoder().decode(S.Config.self, from: node))
        }
        return try open(type)
    }
}
