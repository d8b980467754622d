/// The benchmark an evaluation set imitates: its question form, its files and its scoring script.
public enum EvalKind: String, Codable, CaseIterable, Sendable {
    /// Object-hallucination probes (POPE): "Is there a X in the image?", half yes, half no.
    case pope
    /// MME-style yes/no pairs: two questions per image, one yes and one no; acc and acc+ per subtask.
    case mme
    /// MMBench-style 4-option questions, each in all 4 circular rotations.
    case mmbench
    /// RefCOCO-style grounding: a referring phrase, answered with its box.
    case refcoco
    /// COCO-Caption-style short descriptions, scored by whether the answer names the colour, object category and
    /// side that the image's reference caption names (what a caption-trained model such as RefVLM answers).
    case caption
}

/// How POPE picks the absent objects ("no" questions), as the POPE paper defines its three settings.
public enum PopeSampling: String, Codable, CaseIterable, Sendable {
    /// Any category the image does not hold, uniformly.
    case random
    /// The most frequent categories of the split that the image does not hold.
    case popular
    /// The categories that co-occur most often with the present object, among those the image does not hold.
    case adversarial
}

