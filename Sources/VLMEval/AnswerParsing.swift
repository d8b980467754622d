import Foundation

/// How each benchmark's own script reads a model's free-text answer. Each function states the script it follows;
/// the parity tests run the scripts' logic on the same answers.
public enum AnswerParsing {
    /// POPE, as LLaVA's `eval_pope.py`: keep the text before the first ".", drop commas, split on single spaces;
    /// the word "No", "not" or "no" makes it "no", anything else (also an empty answer) is "yes".
    public static func popeYesNo(_ text: String) -> String {
        var sentence = Substring(text)
        if let dot = sentence.firstIndex(of: ".") { sentence = sentence[..<dot] }
        let words = sentence.replacingOccurrences(of: ",", with: "").split(separator: " ", omittingEmptySubsequences: false)
        return words.contains(where: { $0 == "No" || $0 == "not" || $0 == "no" }) ? "no" : "yes"
    }

    /// MME, as its `calculation.py`: the lowercased answer is "yes" or "no" exactly, or its first 4 characters hold
    /// "yes" (then "no"); otherwise "other", which is never right.
    public static func mmeLabel(_ text: String) -> String {
        let lower = text.lowercased()
        if lower == "yes" || lower == "no" { return lower }
        let prefix = String(String.UnicodeScalarView(lower.unicodeScalars.prefix(4)))
        if prefix.contains("yes") { return "yes" }
        if prefix.contains("no") { return "no" }
        return "other"
    }

    /// Refusals VLMEvalKit maps to "Z" (no option), as its `can_infer_option` lists them.
    static let refusals = [
        "Sorry, I can't help with images of people yet.",
        "I can't process this file.",
        "I'm sorry, but without the image provided",
        "Cannot determine the answer",
    ]

    /// The option letter an answer names, as VLMEvalKit's `can_infer_option`: punctuation `.()[],:;!*#{}` becomes
    /// spaces, the answer splits on whitespace, and exactly one of the letters must appear as a word. A refusal,
    /// or a lone "Z" word, gives "Z" (no option); nil when the rule cannot decide.
    public static func choiceLetter(_ answer: String, letters: [String]) -> String? {
        if answer.contains("Failed to obtain answer via API") { return nil }
        if refusals.contains(where: { answer.contains($0) }) { return "Z" }
        var cleaned = answer
        for c in ".()[],:;!*#{}" { cleaned = cleaned.replacingOccurrences(of: String(c), with: " ") }
        let words = Set(cleaned.split(whereSeparator: { $0.isWhitespace }).map(String.init))
        let named = letters.filter { words.contains($0) }
        if named.count == 1 { return named[0] }
        if named.isEmpty, words.contains("Z") { return "Z" }
        return nil
    }

    /// The option whose text the answer contains, as VLMEvalKit's `can_infer_text`: lowercased substring match,
    /// exactly one option must match.
    public static func choiceByText(_ answer: String, options: [String: String]) -> String? {
        let lower = answer.lowercased()
        let hits = options.keys.sorted().filter { lower.contains(options[$0]!.lowercased()) }
        return hits.count == 1 ? hits[0] : nil
    }

    /// VLMEvalKit's `can_infer`: the letter rule, then the option-text rule.
    public static func choice(_ answer: String, options: [String: String]) -> String? {
        choiceLetter(answer, letters: options.keys.sorted()) ?? choiceByText(answer, options: options)
    }

    private static let number = #"(-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)"#
    private static let boxPattern = try! NSRegularExpression(
        pattern: #"\[\s*"# + number + #"\s*,\s*"# + number + #"\s*,\s*"# + number + #"\s*,\s*"# + number + #"\s*\]"#)

    /// The first `[x1, y1, x2, y2]` in the answer, or nil.
    public static func firstBox(_ text: String) -> [Double]? {
        let range = NSRange(text.startIndex..., in: text)
        guard let match = boxPattern.firstMatch(in: text, range: range) else { return nil }
        return (1...4).compactMap { Range(match.range(at: $0), in: text).flatMap { Double(text[$0]) } }
    }

    /// Intersection over union of two `[x1, y1, x2, y2]` boxes; a box with x2 < x1 or y2 < y1 has no area.
    public static func iou(_ a: [Double], _ b: [Double]) -> Double {
        func area(_ r: [Double]) -> Double { max(0, r[2] - r[0]) * max(0, r[3] - r[1]) }
        let inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
        let union = area(a) + area(b) - inter
        return union > 0 ? inter / union : 0
    }
}
