/// The attribute classes a caption set scores: which colour, object category and side a caption names first.
///
/// A reference caption and a model's answer are read the same way: lowercased, split into words at every
/// character that is not a letter or digit, and for each class the earliest term of its vocabulary found as whole
/// words (the longest term when two start at the same word, so "traffic light" wins over "light"). An answer is
/// right in a class when it names the same term first as the reference caption does.
///
/// ```swift
/// let vocabulary = CaptionAttributes.vocabulary(categories: ["circle", "square"])
/// CaptionAttributes.read("a red circle on the left", vocabulary)   // ["colour": "red", "category": "circle", "side": "left"]
/// ```
public enum CaptionAttributes {
    /// The classes in table order.
    public static let classes = ["colour", "category", "side"]
    /// English basic colour terms (Berlin and Kay's eleven, with both spellings of grey).
    public static let colours = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
                                 "gray", "grey"]
    public static let sides = ["left", "right"]

    /// The vocabulary of each class: the basic colours, the split's category names, left and right.
    public static func vocabulary(categories: [String]) -> [String: [String]] {
        ["colour": colours, "category": categories.map { $0.lowercased() }, "side": sides]
    }

    /// The term of each class the text names first (a class it does not name is absent).
    public static func read(_ text: String, _ vocabulary: [String: [String]]) -> [String: String] {
        let words = self.words(text)
        var out: [String: String] = [:]
        for (name, terms) in vocabulary {
            if let term = first(terms, in: words) { out[name] = term }
        }
        return out
    }

    static func words(_ text: String) -> [Substring] {
        Substring(text.lowercased()).split { !($0.isLetter || $0.isNumber) }
    }

    static func first(_ terms: [String], in text: [Substring]) -> String? {
        let split = terms.map { ($0, Self.words($0)) }.filter { !$0.1.isEmpty }.sorted { $0.1.count > $1.1.count }
        guard !split.isEmpty else { return nil }
        for start in text.indices {
            for (term, parts) in split where start + parts.count <= text.count {
                if zip(parts, text[start..<start + parts.count]).allSatisfy({ $0 == $1 }) { return term }
            }
        }
        return nil
    }
}
