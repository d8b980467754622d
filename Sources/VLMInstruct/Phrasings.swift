/// The instruction phrasings the template generator draws from: many per kind, so a model learns the task and
/// not one sentence. `{x}` marks are filled by the generator.
public enum Phrasings {
    /// Brief description (LLaVA's pretraining prompts are of this kind).
    public static let brief = [
        "Describe the image concisely.",
        "Provide a brief description of the given image.",
        "Offer a succinct explanation of the picture presented.",
        "Summarize the visual content of the image.",
        "Give a short and clear explanation of the subsequent image.",
        "Share a concise interpretation of the image provided.",
        "Present a compact description of the photo's key features.",
        "Relay a brief, clear account of the picture shown.",
        "Render a clear and concise summary of the photo.",
        "Write a terse but informative summary of the picture.",
        "Create a compact narrative representing the image presented.",
        "What is in the photo?",
        "Describe this image in one sentence.",
        "Caption this image.",
    ]

    /// Detailed description.
    public static let detail = [
        "Describe the following image in detail.",
        "Provide a detailed description of the given image.",
        "Give an elaborate explanation of the image you see.",
        "Share a comprehensive rundown of the presented image.",
        "Offer a thorough analysis of the image.",
        "Explain the various aspects of the image before you.",
        "Clarify the contents of the displayed image with great detail.",
        "Characterize the image using a well-detailed description.",
        "Break down the elements of the image in a detailed manner.",
        "Walk through the important details of the image.",
        "Portray the image with a rich, descriptive narrative.",
        "Narrate the contents of the image with precision.",
        "Analyze the image in a comprehensive and detailed manner.",
        "Illustrate the image through a descriptive explanation.",
        "Examine the image closely and share its details.",
        "Write an exhaustive depiction of the given image.",
    ]

    /// Referring-expression comprehension: `{expr}` → box (the first is LLaVA-1.5's own wording).
    public static let rec = [
        "Please provide the bounding box coordinate of the region this sentence describes: {expr}.",
        "Give the bounding box of {expr} as [x1, y1, x2, y2], normalized to the image size.",
        "Where is {expr}? Answer with a normalized bounding box [x1, y1, x2, y2].",
        "Locate {expr} in the image and output its box coordinates.",
        "Find {expr} and give its bounding box coordinates.",
        "Output the normalized bounding box of {expr}.",
        "Which region contains {expr}? Reply with its box as [x1, y1, x2, y2].",
    ]

    /// Region description: `{box}` → category-based description (the first is LLaVA-1.5's own wording).
    public static let region = [
        "Please provide a short description for this region: {box}.",
        "Describe the object in the region {box}.",
        "What is shown in the region {box}?",
        "Briefly describe what is inside the box {box}.",
        "What object does the region {box} contain?",
        "Give a short description of the area {box} of the image.",
    ]

    /// Counting: `{plural}` is the category's plural.
    public static let count = [
        "How many {plural} are there in the image?",
        "How many {plural} can you see in this picture?",
        "Count the {plural} in the image.",
        "What is the number of {plural} in the image?",
        "How many {plural} are visible?",
        "How many {plural} does this photo show?",
    ]

    /// The short-answer suffix LLaVA-1.5 uses for VQA-style data.
    public static let shortAnswer = "Answer the question using a single word or phrase."

    /// Presence, MME-style: `{a}` is "a dog" / "an apple". The generator appends `yesNoSuffix`.
    public static let yesno = [
        "Is there {a} in this image?",
        "Is there {a} in the image?",
        "Does this image contain {a}?",
        "Can you see {a} in the picture?",
        "Is {a} present in this photo?",
        "Does the picture show {a}?",
        "Is {a} visible in the image?",
    ]

    public static let yesNoSuffix = "Please answer yes or no."

    /// MMBench-style questions whose answer is a category present in the image.
    public static let mcqPresence = [
        "Which of the following objects appears in the image?",
        "Which of these can be seen in the picture?",
        "Which object is present in this image?",
        "What can be found in the image?",
    ]

    /// MMBench-style counting question: `{plural}`.
    public static let mcqCount = [
        "How many {plural} are in the image?",
        "What is the number of {plural} shown in the picture?",
        "How many {plural} can be counted in this image?",
    ]

    /// LLaVA-1.5's MMBench instruction.
    public static let mcqSuffix = "Answer with the option's letter from the given choices directly."
}

/// Small English helpers for category names.
public enum English {
    /// "a dog", "an apple", "an umbrella".
    public static func withArticle(_ noun: String) -> String {
        guard let first = noun.lowercased().first else { return noun }
        return ("aeiou".contains(first) ? "an " : "a ") + noun
    }

    private static let irregular: [String: String] = [
        "person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
        "skateboard": "skateboards", "bus": "buses", "glass": "glasses", "wine glass": "wine glasses", "fish": "fish",
        "dining table": "dining tables", "teddy bear": "teddy bears", "hair drier": "hair driers", "man": "men",
        "woman": "women", "child": "children", "foot": "feet", "tooth": "teeth", "leaf": "leaves",
        "shelf": "shelves", "wolf": "wolves", "deer": "deer",
    ]

    /// A plural that is right for COCO's 80 categories and regular nouns.
    public static func plural(_ noun: String) -> String {
        let lower = noun.lowercased()
        if let p = irregular[lower] { return p }
        if let space = noun.lastIndex(of: " ") {
            return String(noun[...space]) + plural(String(noun[noun.index(after: space)...]))
        }
        if lower.hasSuffix("s") || lower.hasSuffix("x") || lower.hasSuffix("ch") || lower.hasSuffix("sh") || lower.hasSuffix("z") {
            return noun + "es"
        }
        if lower.hasSuffix("y"), let before = lower.dropLast().last, !"aeiou".contains(before) {
            return noun.dropLast() + "ies"
        }
        return noun + "s"
    }

    private static let numberWords = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                      "ten", "eleven", "twelve"]

    public static func number(_ n: Int) -> String {
        n >= 0 && n < numberWords.count ? numberWords[n] : String(n)
    }

    /// "2 dogs" → "two dogs", "1 dog" → "a dog".
    public static func counted(_ n: Int, _ noun: String) -> String {
        n == 1 ? withArticle(noun) : "\(number(n)) \(plural(noun))"
    }

    /// "a, b and c".
    public static func list(_ items: [String]) -> String {
        switch items.count {
        case 0: return ""
        case 1: return items[0]
        default: return items.dropLast().joined(separator: ", ") + " and " + items.last!
        }
    }

    /// Trims, collapses inner whitespace and line breaks to single spaces.
    public static func clean(_ text: String) -> String {
        text.split(whereSeparator: { $0.isWhitespace || $0.isNewline }).joined(separator: " ")
    }

    /// Capitalized first letter and a final period (for composing sentences from captions).
    public static func sentence(_ text: String) -> String {
        var t = clean(text)
        guard let first = t.first else { return t }
        t = first.uppercased() + t.dropFirst()
        if let last = t.last, !".!?".contains(last) { t += "." }
        return t
    }

    /// `[0.12, 0.34, 0.56, 0.78]` with exactly 2 decimals.
    public static func box(_ values: [Double]) -> String {
        "[" + values.map { formatTwoDecimals($0) }.joined(separator: ", ") + "]"
    }

    static func formatTwoDecimals(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded())
        let sign = hundredths < 0 ? "-" : ""
        let a = abs(hundredths)
        let frac = a % 100
        return "\(sign)\(a / 100).\(frac < 10 ? "0" : "")\(frac)"
    }
}
