import Foundation
import VLMCore
import VLMInstruct

/// One question with its answer-key line.
struct EvalItem {
    var question: EvalQuestion
    var key: EvalKey
    /// MMBench: the question without its options (the TSV's `question` column).
    var stem: String?
}

/// Category statistics over a split's annotated images: what POPE's popular and adversarial samplings rank by.
struct SplitStatistics {
    /// Every category name of the source (the annotation vocabulary), in category order.
    let vocabulary: [String]
    /// Categories that occur in at least one image of the split, by name.
    let seen: [String]
    /// Images holding each category.
    let frequency: [String: Int]
    /// Images holding both categories.
    let cooccurrence: [String: [String: Int]]

    init(images: [ImageFacts], vocabulary: [String]) {
        var frequency: [String: Int] = [:]
        var cooccurrence: [String: [String: Int]] = [:]
        for image in images {
            let present = Set(image.objects.map(\.category))
            for a in present {
                frequency[a, default: 0] += 1
                for b in present where b != a { cooccurrence[a, default: [:]][b, default: 0] += 1 }
            }
        }
        self.vocabulary = vocabulary.isEmpty ? frequency.keys.sorted() : vocabulary
        self.seen = frequency.keys.sorted()
        self.frequency = frequency
        self.cooccurrence = cooccurrence
    }

    /// Categories by how many images hold them, most first (ties by name).
    var popular: [String] {
        seen.sorted { (frequency[$0]!, $1) > (frequency[$1]!, $0) }
    }

    /// Categories by how often they share an image with `name`, most first (ties: more frequent, then by name).
    func cooccurring(with name: String) -> [String] {
        let counts = cooccurrence[name] ?? [:]
        return counts.keys.sorted { (counts[$0]!, frequency[$0] ?? 0, $1) > (counts[$1]!, frequency[$1] ?? 0, $0) }
    }
}

/// Makes each kind's questions from an image's annotations.
struct EvalQuestionGenerator {
    let kind: EvalKind
    let stats: SplitStatistics
    let frame: BoxFrame
    let samplings: [PopeSampling]
    private var nextID = 1

    init(kind: EvalKind, stats: SplitStatistics, frame: BoxFrame, samplings: [PopeSampling]) {
        self.kind = kind
        self.stats = stats
        self.frame = frame
        self.samplings = samplings
    }

    static let yesNoSuffix = "Please answer yes or no."
    /// The offset between circular rotations of one MMBench question (VLMEvalKit's `index + k * 1e6`).
    static let rotationStride = 1_000_000

    static func requirement(_ kind: EvalKind) -> String {
        switch kind {
        case .pope: return "POPE needs at least 3 annotated categories in an image and 3 of the split's categories absent from it"
        case .mme: return "MME needs an annotated category in the image and one of the split's categories absent from it"
        case .mmbench: return "MMBench needs an annotated category in the image and 3 categories of the vocabulary absent from it"
        case .refcoco: return "grounding needs an object that a phrase can single out (the only one of its category, or leftmost/rightmost)"
        case .caption: return "a caption question needs a caption that names a basic colour, a category of the split, left or right"
        }
    }

    func isEligible(_ image: ImageFacts) -> Bool {
        let present = Self.present(image)
        switch kind {
        case .pope: return present.count >= 3 && stats.seen.filter { !present.contains($0) }.count >= 3
        case .mme: return !present.isEmpty && stats.seen.contains { !present.contains($0) }
        case .mmbench: return !present.isEmpty && stats.vocabulary.filter { !present.contains($0) }.count >= 3
        case .refcoco: return !Self.referable(image).isEmpty
        case .caption: return reference(image) != nil
        }
    }

    /// The image's categories, distinct, in annotation order.
    static func present(_ image: ImageFacts) -> [String] {
        var seen = Set<String>()
        return image.objects.map(\.category).filter { seen.insert($0).inserted }
    }

    /// Categories whose instances can be counted: no crowd region, 1 to 10 instances.
    static func countable(_ image: ImageFacts) -> [(name: String, count: Int)] {
        present(image).compactMap { name in
            let objects = image.objects.filter { $0.category == name }
            guard !objects.contains(where: \.isCrowd), (1...10).contains(objects.count) else { return nil }
            return (name, objects.count)
        }
    }

    mutating func make(_ images: [ImageFacts], rng: inout SplitMix64) -> [EvalItem] {
        switch kind {
        case .pope: return pope(images, &rng)
        case .mme: return mme(images, &rng)
        case .mmbench: return mmbench(images, &rng)
        case .refcoco: return refcoco(images, &rng)
        case .caption: return caption(images)
        }
    }

    fileprivate mutating func item(_ image: ImageFacts, text: String, category: String) -> EvalItem {
        defer { nextID += 1 }
        return EvalItem(question: EvalQuestion(question_id: nextID, image: image.fileName, text: text, category: category),
                        key: EvalKey(question_id: nextID, category: category, image: image.fileName, image_key: image.key))
    }

    // MARK: - POPE

    /// Per image and sampling: 3 present categories ("yes"), each followed by an absent one ("no") chosen as the
    /// sampling says; the same images and present objects in every sampling, as POPE's three files have them.
    private mutating func pope(_ images: [ImageFacts], _ rng: inout SplitMix64) -> [EvalItem] {
        let positives = images.map { image -> [String] in
            var present = Self.present(image)
            rng.shuffle(&present)
            return Array(present.prefix(3))
        }
        var out: [EvalItem] = []
        for sampling in samplings {
            for (image, picked) in zip(images, positives) {
                let present = Set(Self.present(image))
                var asked: Set<String> = []
                for positive in picked {
                    asked.insert(positive)
                    out.append(popeItem(image, positive, label: "yes", sampling))
                    let free = { (name: String) in !present.contains(name) && !asked.contains(name) }
                    let ranked: [String]
                    switch sampling {
                    case .random: ranked = []
                    case .popular: ranked = stats.popular
                    case .adversarial: ranked = stats.cooccurring(with: positive)
                    }
                    let negative = ranked.first(where: free) ?? rng.pick(stats.seen.filter(free))
                    asked.insert(negative)
                    out.append(popeItem(image, negative, label: "no", sampling))
                }
            }
        }
        return out
    }

    private mutating func popeItem(_ image: ImageFacts, _ object: String, label: String, _ sampling: PopeSampling) -> EvalItem {
        // POPE's question, then LLaVA's short-answer prompt (as LLaVA's llava_pope_test.jsonl has it).
        var item = item(image, text: "Is there \(English.withArticle(object)) in the image?\n\(Phrasings.shortAnswer)",
                        category: sampling.rawValue)
        item.key.label = label
        item.key.sampling = sampling.rawValue
        item.key.object = object
        return item
    }

    // MARK: - MME

    /// Two questions per image, one answered yes and one no, on one subtask: existence, or count when the image
    /// has a countable category (every other image).
    private mutating func mme(_ images: [ImageFacts], _ rng: inout SplitMix64) -> [EvalItem] {
        var out: [EvalItem] = []
        for (index, image) in images.enumerated() {
            let present = Self.present(image)
            let countable = Self.countable(image)
            var pair: [(text: String, label: String, object: String, category: String)]
            if index % 2 == 1, !countable.isEmpty {
                let (name, n) = rng.pick(countable)
                let wrong = n == 1 ? 2 : (rng.below(2) == 0 ? n - 1 : n + 1)
                pair = [(Self.countQuestion(name, n), "yes", name, "count"), (Self.countQuestion(name, wrong), "no", name, "count")]
            } else {
                let yes = rng.pick(present)
                let no = rng.pick(stats.seen.filter { !present.contains($0) })
                pair = [("Is there \(English.withArticle(yes)) in this image? \(Self.yesNoSuffix)", "yes", yes, "existence"),
                        ("Is there \(English.withArticle(no)) in this image? \(Self.yesNoSuffix)", "no", no, "existence")]
            }
            rng.shuffle(&pair)
            for question in pair {
                var item = item(image, text: question.text, category: question.category)
                item.key.label = question.label
                item.key.object = question.object
                item.key.pair = image.key
                out.append(item)
            }
        }
        return out
    }

    static func countQuestion(_ name: String, _ n: Int) -> String {
        n == 1 ? "Is there exactly one \(name) in this image? \(yesNoSuffix)"
            : "Are there exactly \(English.number(n)) \(English.plural(name)) in this image? \(yesNoSuffix)"
    }

    // MARK: - MMBench

    /// Per image a recognition question (one present category among 3 absent ones of the vocabulary) and, when
    /// the image has a countable category, a counting question; each in its 4 circular rotations.
    private mutating func mmbench(_ images: [ImageFacts], _ rng: inout SplitMix64) -> [EvalItem] {
        var out: [EvalItem] = []
        var group = 0
        for image in images {
            let present = Self.present(image)
            var questions: [(stem: String, answer: String, distractors: [String], category: String)] = []
            let answer = rng.pick(present)
            var absent = stats.vocabulary.filter { !present.contains($0) }
            rng.shuffle(&absent)
            questions.append(("Which of these objects is in the image?", answer, Array(absent.prefix(3)), "object_recognition"))
            let countable = Self.countable(image)
            if !countable.isEmpty {
                let (name, n) = rng.pick(countable)
                var numbers = (max(0, n - 3)...(n + 3)).filter { $0 != n }.map(String.init)
                rng.shuffle(&numbers)
                questions.append(("How many \(English.plural(name)) are there in the image?", String(n),
                                  Array(numbers.prefix(3)), "counting"))
            }
            for question in questions {
                group += 1
                var options = [question.answer] + question.distractors
                rng.shuffle(&options)
                for rotation in 0..<4 {
                    let rotated = Array(options[rotation...] + options[..<rotation])
                    let letters = ["A", "B", "C", "D"]
                    let lines = zip(letters, rotated).map { "\($0). \($1)" }
                    let text = ([question.stem] + lines + [Phrasings.mcqSuffix]).joined(separator: "\n")
                    var item = item(image, text: text, category: question.category)
                    let index = group + rotation * Self.rotationStride
                    item.question.question_id = index
                    item.key.question_id = index
                    item.key.answer = letters[rotated.firstIndex(of: question.answer)!]
                    item.key.options = Dictionary(uniqueKeysWithValues: zip(letters, rotated))
                    item.key.group = group
                    item.key.rotation = rotation
                    item.stem = question.stem
                    out.append(item)
                }
            }
        }
        // Rotation 0 of every question first, then rotation 1, ...: VLMEvalKit's order.
        return out.sorted { $0.question.question_id < $1.question.question_id }
    }

    // MARK: - Grounding

    /// An object a phrase can single out: the only one of its category ("the dog"), or the leftmost/rightmost
    /// (or larger/smaller) of several, using the annotations' boxes.
    struct Referable {
        var object: ObjectFact
        var phrase: String
    }

    static func referable(_ image: ImageFacts) -> [Referable] {
        var out: [Referable] = []
        let minArea = 0.005 * Double(image.width * image.height)
        for name in present(image) {
            let objects = image.objects.filter { $0.category == name }
            guard !objects.contains(where: \.isCrowd) else { continue }
            let large = { (o: ObjectFact) in o.box.width * o.box.height >= minArea }
            if objects.count == 1 {
                if large(objects[0]) { out.append(Referable(object: objects[0], phrase: "the \(name)")) }
                continue
            }
            let byX = objects.sorted { $0.box.x + $0.box.width / 2 < $1.box.x + $1.box.width / 2 }
            let centers = byX.map { $0.box.x + $0.box.width / 2 }
            let gap = 0.1 * Double(image.width)
            if centers[1] - centers[0] > gap, large(byX[0]) {
                out.append(Referable(object: byX[0], phrase: objects.count == 2 ? "the \(name) on the left" : "the leftmost \(name)"))
            }
            if centers[centers.count - 1] - centers[centers.count - 2] > gap, large(byX[byX.count - 1]) {
                out.append(Referable(object: byX[byX.count - 1],
                                     phrase: objects.count == 2 ? "the \(name) on the right" : "the rightmost \(name)"))
            }
            if objects.count == 2, centers[1] - centers[0] <= gap {
                let bySize = objects.sorted { $0.box.width * $0.box.height < $1.box.width * $1.box.height }
                let small = bySize[0].box.width * bySize[0].box.height, big = bySize[1].box.width * bySize[1].box.height
                if big >= 2 * small, large(bySize[1]) { out.append(Referable(object: bySize[1], phrase: "the larger \(name)")) }
            }
        }
        return out
    }

    private mutating func refcoco(_ images: [ImageFacts], _ rng: inout SplitMix64) -> [EvalItem] {
        images.map { image in
            let target = rng.pick(Self.referable(image))
            var item = item(image, text: "Please provide the bounding box coordinate of the region this sentence describes: \(target.phrase).",
                            category: target.object.category)
            item.key.bbox = Self.frameBox(target.object.box, width: image.width, height: image.height, frame: frame)
            item.key.phrase = target.phrase
            item.key.frame = frame.rawValue
            return item
        }
    }

    /// `[x1, y1, x2, y2]` of a pixel box, normalized in `frame` (VLMCore's `BoxFrame`, the frame instructions use)
    /// and rounded to 4 decimals. Only `original` and `pad` are built (a crop may cut the target off).
    static func frameBox(_ box: Box, width: Int, height: Int, frame: BoxFrame) -> [Double] {
        let edges = frame.normalized(box, imageWidth: width, imageHeight: height) ?? [0, 0, 0, 0]
        return edges.map { ($0 * 10_000).rounded() / 10_000 }
    }
}

extension EvalQuestionGenerator {
    /// The question of a caption set: the first of the brief-description prompts LLaVA's caption data uses.
    static let captionPrompt = Phrasings.brief[0]

    /// What the caption scorer looks for: basic colours, the split's categories, left and right.
    var captionVocabulary: [String: [String]] { CaptionAttributes.vocabulary(categories: stats.vocabulary) }

    /// The image's reference: its first caption (in annotation order) among those naming the most classes.
    func reference(_ image: ImageFacts) -> (caption: String, terms: [String: String])? {
        var best: (caption: String, terms: [String: String])?
        for caption in image.captions {
            let terms = CaptionAttributes.read(caption.text, captionVocabulary)
            if !terms.isEmpty, terms.count > (best?.terms.count ?? 0) { best = (caption.text, terms) }
        }
        return best
    }

    /// One brief-description question per image; the key holds the reference caption and the terms it names.
    fileprivate mutating func caption(_ images: [ImageFacts]) -> [EvalItem] {
        images.compactMap { image in
            guard let reference = reference(image) else { return nil }
            var item = item(image, text: Self.captionPrompt, category: "caption")
            item.key.caption = reference.caption
            item.key.reference = reference.terms
            return item
        }
    }
}

/// The VLMEvalKit-style MMBench TSV: index, question, A-D, answer, category, image (base64).
enum MMBenchTSV {
    static let columns = ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]

    static func render(_ items: [EvalItem], images: [String: String]) -> String {
        func cell(_ text: String) -> String {
            text.replacingOccurrences(of: "\t", with: " ").replacingOccurrences(of: "\n", with: " ")
        }
        var out = columns.joined(separator: "\t") + "\n"
        for item in items {
            let options = item.key.options ?? [:]
            let row = [String(item.question.question_id), item.stem ?? item.question.text,
                       options["A"] ?? "", options["B"] ?? "", options["C"] ?? "", options["D"] ?? "",
                       item.key.answer ?? "", item.question.category, images[item.key.image_key] ?? ""]
            out += row.map(cell).joined(separator: "\t") + "\n"
        }
        return out
    }
}
