import Foundation
import VLMCore

/// The kinds `--generator templates` produces.
public enum TemplateKind: String, CaseIterable, Codable, Sendable {
    case caption, detail, grounding, count, yesno, mcq, multiturn
}

/// Parameters of the template generator (they form the run's parameter hash).
public struct TemplateOptions: Codable, Sendable, Equatable {
    public var seed: UInt64
    public var kinds: [TemplateKind]
    /// Instructions per image and kind (a yes/no pair and a set of circular rotations count as one).
    public var perImage: Int
    public var circular: Bool
    /// Boxes covering less than this fraction of the image are too small to ground.
    public var minBoxFraction: Double
    /// Counts above this are not asked (annotators miss objects in large groups).
    public var maxCount: Int
    /// The frame boxes are stated in: the pixels' (`pad` for LLaVA-1.5's padded square, `crop` for CLIP's centre
    /// crop, which drops the boxes it cuts). nil is `original`, the whole image (squash, anyres).
    public var boxFrame: BoxFrame?

    public init(seed: UInt64 = 0, kinds: [TemplateKind] = TemplateKind.allCases, perImage: Int = 1,
                circular: Bool = false, minBoxFraction: Double = 0.01, maxCount: Int = 10, boxFrame: BoxFrame? = nil) {
        self.boxFrame = boxFrame == .original ? nil : boxFrame
        self.seed = seed
        self.kinds = kinds
        self.perImage = perImage
        self.circular = circular
        self.minBoxFraction = minBoxFraction
        self.maxCount = maxCount
    }
}

/// Instructions from annotations: every answer is a fact of the catalog (a caption, a box, a count, presence),
/// and `meta` records that fact so a check can compare it with the catalog.
///
/// ```swift
/// let generator = TemplateGenerator(options: TemplateOptions(seed: 1, kinds: [.caption], perImage: 1),
///                                   categories: try ImageFactsReader.categories(catalog))
/// for image in try ImageFactsReader.read(catalog) { rows += generator.generate(image) }
/// ```
public struct TemplateGenerator: Sendable {
    public let options: TemplateOptions
    /// Categories per source, to draw absent ones for yes/no and multiple choice.
    public let categories: [Int64: [CategoryFact]]

    public init(options: TemplateOptions, categories: [Int64: [CategoryFact]]) {
        self.options = options
        self.categories = categories
    }

    /// The frame boxes are stated in.
    public var boxFrame: BoxFrame { options.boxFrame ?? .original }

    public func generate(_ image: ImageFacts) -> [GeneratedInstruction] {
        let analysis = Analysis(image: image, options: options, frame: boxFrame)
        var out: [GeneratedInstruction] = []
        for kind in TemplateKind.allCases where options.kinds.contains(kind) {
            var rng = InstructRandom(seed: options.seed, key: image.key, kind: kind.rawValue)
            switch kind {
            case .caption: out += captions(image, &rng)
            case .detail: out += detail(image, analysis, &rng)
            case .grounding: out += grounding(image, analysis, &rng)
            case .count: out += counts(image, analysis, &rng)
            case .yesno: out += yesno(image, analysis, &rng)
            case .mcq: out += mcq(image, analysis, &rng)
            case .multiturn: out += multiturn(image, analysis, &rng)
            }
        }
        return out
    }

    // MARK: - Kinds

    private func make(_ image: ImageFacts, _ kind: TemplateKind, _ suffix: String, group: String? = nil,
                      _ turns: [(String, String)], meta: [String: MetaValue]) -> GeneratedInstruction {
        var conversation: [Turn] = []
        for (index, (question, answer)) in turns.enumerated() {
            conversation.append(Turn(from: .human, value: index == 0 ? "\(Conversation.imagePlaceholder)\n\(question)" : question))
            conversation.append(Turn(from: .gpt, value: answer))
        }
        var meta = meta
        // An instruction whose text depends on the frame records it, so `shard` can check it against the pixels'
        // mode: every kind but captions (boxes are stated in the frame; counts and presence leave out what a crop
        // cuts). Its key holds a frame other than `original`, so generating again with another --box-frame adds
        // rows beside the old ones (shard picks the frame of its pixels) instead of keeping the old ones.
        let dependsOnFrame = kind != .caption
        if dependsOnFrame { meta["box_frame"] = .string(boxFrame.rawValue) }
        let frameSuffix = dependsOnFrame && boxFrame != .original ? "-\(boxFrame.rawValue)" : ""
        return GeneratedInstruction(key: "\(image.key)-tpl-\(kind.rawValue)-\(suffix)\(frameSuffix)", imageID: image.id,
                                    sourceID: image.sourceID, generator: "templates", kind: kind.rawValue,
                                    groupID: group, turns: conversation, meta: meta)
    }

    /// True when the metadata (or a turn's, for multi-turn) holds a box.
    static func statesBox(_ meta: [String: MetaValue]) -> Bool {
        if meta["box"] != nil { return true }
        if case .array(let turns)? = meta["turns"] {
            return turns.contains { if case .object(let turn) = $0 { return statesBox(turn) } else { return false } }
        }
        return false
    }

    private func captions(_ image: ImageFacts, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let usable = image.captions.filter { !English.clean($0.text).isEmpty }
        guard !usable.isEmpty else { return [] }
        let chosen = rng.shuffled(Array(usable.indices)).prefix(options.perImage)
        let prompts = rng.shuffled(Phrasings.brief)
        return chosen.enumerated().map { i, index in
            let caption = usable[index]
            return make(image, .caption, "\(i)", [(prompts[i % prompts.count], English.clean(caption.text))],
                        meta: ["type": .string("caption"), "caption_id": .int(Int(caption.id))])
        }
    }

    /// One composed description per image: all captions as sentences, then the annotated objects.
    private func detail(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        var seen = Set<String>()
        var sentences: [String] = []
        for caption in image.captions {
            let sentence = English.sentence(caption.text)
            if !sentence.isEmpty, seen.insert(sentence.lowercased()).inserted { sentences.append(sentence) }
        }
        guard !sentences.isEmpty, options.perImage > 0 else { return [] }
        var parts: [String] = []
        var counts: [String: MetaValue] = [:]
        for name in analysis.categoryOrder {
            let instances = analysis.byCategory[name]!
            if analysis.crowdCategories.contains(name) {
                parts.append("a group of \(English.plural(name))")
            } else if analysis.cutCategories.contains(name) {
                parts.append("some \(English.plural(name))")   // the crop cuts one: no count
            } else {
                parts.append(English.counted(instances.count, name))
                counts[name] = .int(instances.count)
            }
        }
        var text = sentences.joined(separator: " ")
        if !parts.isEmpty {
            let lead = rng.pick(["The annotated objects in the scene are", "Objects visible in the image include",
                                 "In the picture one can find"])
            text += " \(lead) \(English.list(parts))."
        }
        return [make(image, .detail, "0", [(rng.pick(Phrasings.detail), text)],
                     meta: ["type": .string("detail"), "captions": .int(sentences.count), "counts": .object(counts)])]
    }

    private func grounding(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let chosen = rng.shuffled(analysis.referable).prefix(options.perImage)
        return chosen.enumerated().map { i, target in
            let item = rng.chance(1, in: 2) ? recItem(image, target, &rng) : regionItem(image, target, &rng)
            return make(image, .grounding, "\(i)", [(item.question, item.answer)], meta: item.meta)
        }
    }

    private func counts(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let chosen = rng.shuffled(analysis.countable).prefix(options.perImage)
        return chosen.enumerated().map { i, name in
            let item = countItem(analysis, name, short: rng.chance(1, in: 2), &rng)
            return make(image, .count, "\(i)", [(item.question, item.answer)], meta: item.meta)
        }
    }

    /// MME-style: per pair, one present category (answer yes) and one absent one (answer no), the absent one from
    /// the same supercategory when the source has one.
    private func yesno(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let absent = absentCategories(image, analysis)
        guard !absent.isEmpty else { return [] }
        let present = rng.shuffled(analysis.categoryOrder).prefix(options.perImage)
        var out: [GeneratedInstruction] = []
        var usedNo = Set<String>()
        for (i, yesName) in present.enumerated() {
            let supercategory = analysis.supercategory[yesName] ?? nil
            let fresh = absent.filter { !usedNo.contains($0.name) }
            let pool = fresh.isEmpty ? absent : fresh
            let same = pool.filter { supercategory != nil && $0.supercategory == supercategory }
            let noCategory = rng.pick(same.isEmpty ? pool : same)
            usedNo.insert(noCategory.name)
            let group = "\(image.key)-yesno-\(i)"
            let yes = yesNoItem(yesName, present: true, &rng)
            let no = yesNoItem(noCategory.name, present: false, &rng)
            var noMeta = no.meta
            noMeta["same_supercategory"] = .bool(!same.isEmpty)
            out.append(make(image, .yesno, "\(i)-yes", group: group, [(yes.question, yes.answer)], meta: yes.meta))
            out.append(make(image, .yesno, "\(i)-no", group: group, [(no.question, no.answer)], meta: noMeta))
        }
        return out
    }

    /// MMBench-style: a question, four options A-D, the letter as the answer; `circular` adds the other three
    /// rotations of the options under one group id.
    private func mcq(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let absent = absentCategories(image, analysis)
        var out: [GeneratedInstruction] = []
        var usedPresent = Set<String>()
        var usedCount = Set<String>()
        for i in 0..<options.perImage {
            var question: String
            var answer: String
            var distractors: [String]
            var type: String
            var category: String
            let presentChoices = analysis.categoryOrder.filter { !usedPresent.contains($0) }
            let countChoices = analysis.countable.filter { !usedCount.contains($0) }
            let canPresence = !presentChoices.isEmpty && absent.count >= 3
            let canCount = !countChoices.isEmpty
            if canPresence && (!canCount || rng.chance(1, in: 2)) {
                answer = rng.pick(presentChoices)
                category = answer
                usedPresent.insert(answer)
                let supercategory = analysis.supercategory[answer] ?? nil
                let same = rng.shuffled(absent.filter { supercategory != nil && $0.supercategory == supercategory }.map(\.name))
                let other = rng.shuffled(absent.filter { supercategory == nil || $0.supercategory != supercategory }.map(\.name))
                distractors = Array((same + other).prefix(3))
                question = rng.pick(Phrasings.mcqPresence)
                type = "presence"
            } else if canCount {
                let name = rng.pick(countChoices)
                category = name
                usedCount.insert(name)
                let n = analysis.byCategory[name]!.count
                answer = String(n)
                let candidates = [n - 2, n - 1, n + 1, n + 2, n + 3, n + 4].filter { $0 >= 0 && $0 != n }
                distractors = rng.shuffled(candidates).prefix(3).map(String.init)
                question = rng.pick(Phrasings.mcqCount).replacingOccurrences(of: "{plural}", with: English.plural(name))
                type = "count"
            } else {
                break
            }
            let options4 = rng.shuffled([answer] + distractors)
            let group = "\(image.key)-mcq-\(i)"
            let rotations = options.circular ? 4 : 1
            for r in 0..<rotations {
                let rotated = Array(options4[r...] + options4[..<r])
                let letters = ["A", "B", "C", "D"]
                let index = rotated.firstIndex(of: answer)!
                let body = ([question] + zip(letters, rotated).map { "\($0). \($1)" } + [Phrasings.mcqSuffix])
                    .joined(separator: "\n")
                out.append(make(image, .mcq, options.circular ? "\(i)-r\(r)" : "\(i)", group: options.circular ? group : nil,
                                [(body, letters[index])],
                                meta: ["type": .string("mcq"), "question": .string(type), "category": .string(category), "answer": .string(answer), "letter": .string(letters[index]),
                                       "options": .array(rotated.map { .string($0) }), "rotation": .int(r),
                                       "rotations": .int(rotations)]))
            }
        }
        return out
    }

    /// Several short QA pairs about one image in one conversation, `<image>` in the first human turn only.
    private func multiturn(_ image: ImageFacts, _ analysis: Analysis, _ rng: inout InstructRandom) -> [GeneratedInstruction] {
        let absent = absentCategories(image, analysis)
        var out: [GeneratedInstruction] = []
        for i in 0..<options.perImage {
            var items: [QA] = []
            for name in analysis.countable { items.append(countItem(analysis, name, short: true, &rng)) }
            for name in analysis.categoryOrder { items.append(yesNoItem(name, present: true, &rng)) }
            for category in rng.shuffled(absent).prefix(max(1, analysis.categoryOrder.count)) {
                items.append(yesNoItem(category.name, present: false, &rng))
            }
            for target in analysis.referable {
                items.append(rng.chance(1, in: 2) ? recItem(image, target, &rng) : regionItem(image, target, &rng))
            }
            guard items.count >= 2 else { break }
            let take = min(items.count, 2 + rng.below(3))
            let chosen = Array(rng.shuffled(items).prefix(take))
            out.append(make(image, .multiturn, "\(i)", chosen.map { ($0.question, $0.answer) },
                            meta: ["type": .string("multiturn"), "turns": .array(chosen.map { .object($0.meta) })]))
        }
        return out
    }

    // MARK: - Question/answer items

    struct QA {
        var question: String
        var answer: String
        var meta: [String: MetaValue]
    }

    private func recItem(_ image: ImageFacts, _ target: Referable, _ rng: inout InstructRandom) -> QA {
        let box = target.box
        return QA(question: rng.pick(Phrasings.rec).replacingOccurrences(of: "{expr}", with: target.expression),
                  answer: English.box(box),
                  meta: ["type": .string("rec"), "object_id": .int(Int(target.object.externalID)),
                         "category": .string(target.object.category), "box": .box(box),
                         "expression": .string(target.expression)])
    }

    private func regionItem(_ image: ImageFacts, _ target: Referable, _ rng: inout InstructRandom) -> QA {
        let box = target.box
        return QA(question: rng.pick(Phrasings.region).replacingOccurrences(of: "{box}", with: English.box(box)),
                  answer: English.sentence(target.description),
                  meta: ["type": .string("region"), "object_id": .int(Int(target.object.externalID)),
                         "category": .string(target.object.category), "box": .box(box)])
    }

    private func countItem(_ analysis: Analysis, _ name: String, short: Bool, _ rng: inout InstructRandom) -> QA {
        let n = analysis.byCategory[name]!.count
        let question = rng.pick(Phrasings.count).replacingOccurrences(of: "{plural}", with: English.plural(name))
        if short {
            return QA(question: "\(question)\n\(Phrasings.shortAnswer)", answer: String(n),
                      meta: ["type": .string("count"), "category": .string(name), "count": .int(n)])
        }
        let answer = n == 1 ? "There is one \(name) in the image." : "There are \(English.counted(n, name)) in the image."
        return QA(question: question, answer: answer,
                  meta: ["type": .string("count"), "category": .string(name), "count": .int(n)])
    }

    private func yesNoItem(_ name: String, present: Bool, _ rng: inout InstructRandom) -> QA {
        let question = rng.pick(Phrasings.yesno).replacingOccurrences(of: "{a}", with: English.withArticle(name))
        return QA(question: "\(question) \(Phrasings.yesNoSuffix)", answer: present ? "Yes" : "No",
                  meta: ["type": .string("yesno"), "category": .string(name), "answer": .string(present ? "yes" : "no")])
    }

    /// Categories of the source with no instance anywhere in the image (a crop never makes one absent).
    private func absentCategories(_ image: ImageFacts, _ analysis: Analysis) -> [CategoryFact] {
        (categories[image.sourceID] ?? []).filter { !analysis.inImage.contains($0.name) }
    }

    // MARK: - What an image's annotations support

    struct Referable {
        var object: ObjectFact
        /// "the dog", "the dog on the left", "the leftmost dog".
        var expression: String
        /// "a dog", "the dog on the left".
        var description: String
        /// The box in the generator's frame (2 decimals).
        var box: [Double]
    }

    /// What an image's annotations support in a frame. In the crop frame only objects wholly inside the crop count:
    /// a category is present when one is, counted when none is cut by the crop's edge, and an object is referable
    /// only when no other instance is visible beside it; in the other frames nothing is cut and every object counts.
    struct Analysis {
        /// Category names in order of first annotation (crop: those with an instance wholly inside the crop).
        var categoryOrder: [String] = []
        /// The objects of each category in `categoryOrder` (crop: those wholly inside).
        var byCategory: [String: [ObjectFact]] = [:]
        /// Every category annotated anywhere in the image.
        var inImage = Set<String>()
        /// Crop: categories with an instance the crop's edge cuts (present, but not countable).
        var cutCategories = Set<String>()
        var supercategory: [String: String?] = [:]
        var crowdCategories = Set<String>()
        /// Objects a phrase picks out unambiguously, not crowd, not tiny.
        var referable: [Referable] = []
        /// Categories whose count is reliable: no crowd annotation, at most `maxCount` instances.
        var countable: [String] = []

        init(image: ImageFacts, options: TemplateOptions, frame: BoxFrame) {
            var visible: [String: [ObjectFact]] = [:]
            for object in image.objects {
                inImage.insert(object.category)
                supercategory[object.category] = object.supercategory
                if object.isCrowd { crowdCategories.insert(object.category) }
                switch Self.visibility(object, image: image, frame: frame) {
                case .inside:
                    if byCategory[object.category] == nil { categoryOrder.append(object.category) }
                    byCategory[object.category, default: []].append(object)
                    visible[object.category, default: []].append(object)
                case .cut:
                    cutCategories.insert(object.category)
                    visible[object.category, default: []].append(object)
                case .outside:
                    break
                }
            }
            countable = categoryOrder.filter {
                !crowdCategories.contains($0) && !cutCategories.contains($0) && byCategory[$0]!.count <= options.maxCount
            }
            for object in image.objects where !object.isCrowd && !crowdCategories.contains(object.category)
                && image.areaFraction(object) >= options.minBoxFraction {
                // A box the crop cuts off is not stated (the model would not see the whole object).
                guard let box = image.normalizedBox(object, in: frame) else { continue }
                let instances = visible[object.category]!
                let name = object.category
                if instances.count == 1 {
                    referable.append(Referable(object: object, expression: "the \(name)", description: English.withArticle(name), box: box))
                } else if let phrase = Analysis.position(of: object, among: instances, image: image) {
                    referable.append(Referable(object: object, expression: phrase, description: phrase, box: box))
                }
            }
        }

        enum Visibility { case inside, cut, outside }

        /// Where an object lies relative to the frame: only the crop frame leaves objects out or cuts them.
        static func visibility(_ object: ObjectFact, image: ImageFacts, frame: BoxFrame) -> Visibility {
            guard frame == .crop else { return .inside }
            if frame.normalized(object.box, imageWidth: image.width, imageHeight: image.height) != nil { return .inside }
            let f = frame.window(imageWidth: max(image.width, 1), imageHeight: max(image.height, 1))
            let b = object.box
            let overlaps = b.x < f.x + f.width && b.x + b.width > f.x && b.y < f.y + f.height && b.y + b.height > f.y
            return overlaps ? .cut : .outside
        }

        /// A position phrase that holds for `object` and for no other instance: its center is at least 10% of the
        /// image beyond every other instance's center along one axis.
        static func position(of object: ObjectFact, among instances: [ObjectFact], image: ImageFacts) -> String? {
            let others = instances.filter { $0.externalID != object.externalID }
            func cx(_ o: ObjectFact) -> Double { (o.box.x + o.box.width / 2) / Double(image.width) }
            func cy(_ o: ObjectFact) -> Double { (o.box.y + o.box.height / 2) / Double(image.height) }
            let margin = 0.1
            let name = object.category
            let pair = instances.count == 2
            if others.allSatisfy({ cx($0) - cx(object) >= margin }) {
                return pair ? "the \(name) on the left" : "the leftmost \(name)"
            }
            if others.allSatisfy({ cx(object) - cx($0) >= margin }) {
                return pair ? "the \(name) on the right" : "the rightmost \(name)"
            }
            if others.allSatisfy({ cy($0) - cy(object) >= margin }) {
                return pair ? "the \(name) at the top" : "the topmost \(name)"
            }
            if others.allSatisfy({ cy(object) - cy($0) >= margin }) {
                return pair ? "the \(name) at the bottom" : "the bottommost \(name)"
            }
            return nil
        }
    }
}
