import Foundation
import VLMCore

/// The kinds `--generator llm` produces (LLaVA-Instruct's three).
public enum LLMKind: String, CaseIterable, Codable, Sendable {
    case conversation, detail, complex
}

/// One chat message of a request body.
public struct ChatMessage: Codable, Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The prompts of the LLM generator: a system message per kind, few-shot examples in LLaVA's symbolic form
/// (captions, a blank line, then `category: [x1, y1, x2, y2]` with normalized coordinates), then the image's own
/// symbolic form as the last user message.
public enum LLMPrompts {
    /// LLaVA's symbolic representation of an image: its captions, then its objects with normalized boxes
    /// (3 decimals, as LLaVA's `caps_boxes` files have them). Crowd regions are listed as "crowd of <plural>".
    /// The boxes are in `frame` (LLaVA's files use `original`); in the crop frame objects the crop cuts are left out.
    public static func symbolic(_ image: ImageFacts, frame: BoxFrame = .original) -> String {
        var lines = image.captions.map { English.clean($0.text) }.filter { !$0.isEmpty }
        lines.append("")
        for object in image.objects {
            let normalized = frame == .original
                ? object.box.normalized(imageWidth: image.width, imageHeight: image.height)
                : frame.normalized(object.box, imageWidth: image.width, imageHeight: image.height)
            guard let normalized else { continue }
            let box = normalized.map { formatThreeDecimals($0) }.joined(separator: ", ")
            let name = object.isCrowd ? "crowd of \(English.plural(object.category))" : object.category
            lines.append("\(name): [\(box)]")
        }
        return lines.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func formatThreeDecimals(_ value: Double) -> String {
        let thousandths = Int((value * 1000).rounded())
        let frac = thousandths % 1000
        return "\(thousandths / 1000)." + String(repeating: "0", count: frac < 10 ? 2 : frac < 100 ? 1 : 0) + "\(frac)"
    }

    private static let common = """
    You are an AI visual assistant looking at a single image. Instead of the pixels you are given several \
    sentences that describe the image and a list of the objects in it, each with its bounding box as normalized \
    coordinates [x1, y1, x2, y2] from 0 to 1 (x grows to the right, y grows downwards). Speak as if you see the \
    image yourself: never mention the descriptions, the sentences, the object list or coordinates.
    """

    public static func system(_ kind: LLMKind, json: Bool) -> String {
        let task: String
        switch kind {
        case .conversation:
            task = """
            Write a conversation between a person asking about the image and you answering. Ask diverse questions: \
            the object types, counting the objects, their actions, their locations, their relative positions. Only \
            ask questions that have a definite answer from what you see; answer in a helpful, natural tone. \
            Write between 2 and 4 question and answer pairs.
            """
        case .detail:
            task = """
            Describe the image in detail in one paragraph: the scene, the objects, their counts, colors and \
            positions, and what is happening. Do not guess beyond what you can see.
            """
        case .complex:
            task = """
            Ask one question that needs reasoning about the image beyond describing it (why something is happening, \
            what might happen next, what a person should take care of), and answer it with a detailed, well \
            grounded explanation.
            """
        }
        let format: String
        switch (kind, json) {
        case (.detail, false): format = "Reply with the paragraph only."
        case (.detail, true): format = "Reply with a JSON object: {\"description\": \"<the paragraph>\"}."
        case (_, false):
            format = "Write each question after a line \"Question:\" and each answer after a line \"Answer:\", and " +
                "separate the blocks with a line \"===\", exactly as in the examples."
        case (_, true):
            format = "Reply with a JSON object: {\"qa\": [{\"question\": \"...\", \"answer\": \"...\"}, ...]}."
        }
        return "\(common)\n\n\(task)\n\n\(format)"
    }

    /// Few-shot inputs we wrote in LLaVA's symbolic form.
    static let exampleInputs = [
        """
        A woman rides a bicycle down a city street next to parked cars.
        A person on a bike with a red basket passes a row of cars.
        A cyclist in a yellow jacket travels along a busy road.

        person: [0.412, 0.218, 0.571, 0.803]
        bicycle: [0.398, 0.512, 0.602, 0.911]
        car: [0.000, 0.455, 0.231, 0.720]
        car: [0.702, 0.470, 1.000, 0.748]
        """,
        """
        Two dogs play with a frisbee on a grassy field.
        A brown dog jumps for a frisbee while a black dog watches.
        Dogs running in a park on a sunny day.

        dog: [0.120, 0.301, 0.455, 0.780]
        dog: [0.603, 0.402, 0.880, 0.812]
        frisbee: [0.341, 0.150, 0.452, 0.221]
        """,
    ]

    static let examplePairs: [LLMKind: [[(String, String)]]] = [
        .conversation: [
            [("What is the woman riding?", "She is riding a bicycle with a red basket on the front."),
             ("How many cars can be seen?", "There are two cars, one parked on each side of the street."),
             ("Where is the cyclist relative to the cars?",
              "The cyclist is in the middle of the street, between the car on the left and the car on the right.")],
            [("How many dogs are in the image?", "There are two dogs in the image."),
             ("What is the brown dog doing?", "The brown dog is jumping to catch a frisbee in the air."),
             ("Where are the dogs playing?", "They are playing on a grassy field in a park on a sunny day.")],
        ],
        .complex: [
            [("What should the cyclist pay attention to on this street?",
              "The cyclist rides between two rows of parked cars on a busy road, so she should watch for car doors " +
              "opening suddenly and for traffic coming from behind. Keeping a steady line, staying visible in her " +
              "bright jacket and leaving some space from the parked cars would help her ride safely.")],
            [("Why might the black dog be watching instead of jumping?",
              "The brown dog is already under the frisbee and jumping for it, so the black dog is probably waiting " +
              "for its turn or ready to chase the frisbee if the brown dog misses it. Dogs playing together often " +
              "take turns like this, which keeps the game going without them colliding.")],
        ],
    ]

    static let exampleDetails = [
        "A woman in a yellow jacket rides a bicycle with a red basket down the middle of a busy city street. " +
            "Two cars are parked along the sides of the road, one on the left edge of the scene and one on the " +
            "right, and the cyclist passes between them.",
        "Two dogs are playing on a grassy field in a sunny park. A brown dog on the left leaps into the air " +
            "toward a frisbee flying above it, while a black dog on the right stands a little farther away and " +
            "watches the throw.",
    ]

    /// The reply an ideal model gives to example `index`, in the requested format.
    static func exampleReply(_ kind: LLMKind, index: Int, json: Bool) -> String {
        if kind == .detail {
            let text = exampleDetails[index]
            return json ? InstructJSON.encode(["description": text]) : text
        }
        let pairs = examplePairs[kind]![index]
        if json {
            return InstructJSON.encode(["qa": pairs.map { ["question": $0.0, "answer": $0.1] }])
        }
        return pairs.map { "Question:\n\($0.0)\n===\nAnswer:\n\($0.1)" }.joined(separator: "\n===\n")
    }

    /// The messages of one request: system, few-shot user/assistant pairs, then the image.
    public static func messages(_ kind: LLMKind, image: ImageFacts, json: Bool, frame: BoxFrame = .original) -> [ChatMessage] {
        var messages = [ChatMessage(role: "system", content: system(kind, json: json))]
        for index in exampleInputs.indices {
            messages.append(ChatMessage(role: "user", content: exampleInputs[index]))
            messages.append(ChatMessage(role: "assistant", content: exampleReply(kind, index: index, json: json)))
        }
        messages.append(ChatMessage(role: "user", content: symbolic(image, frame: frame)))
        return messages
    }
}
