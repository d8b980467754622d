import Foundation
import VLMCore

/// Picks an MMBench option when the rules cannot (`--judge llm`). Returns a letter, "Z" for none, or nil when it
/// could not decide (then the answer counts as unparsed).
public protocol ChoiceJudge {
    func choose(question: String, options: [String: String], answer: String) throws -> String?
}

/// Scores a model's answers (LLaVA's answer JSONL: `question_id`, `text`) against an evaluation set, parsing and
/// counting exactly as the benchmark's own script does. Missing answers are reported and counted wrong.
///
/// ```swift
/// let report = try EvalScorer(setDirectory: "eval/pope", answers: "answers.jsonl").score()
/// print(report.table())
/// ```
public struct EvalScorer {
    public let setDirectory: String
    public let answersPath: String
    public var judge: (any ChoiceJudge)?

    public init(setDirectory: String, answers: String, judge: (any ChoiceJudge)? = nil) {
        self.setDirectory = setDirectory
        self.answersPath = answers
        self.judge = judge
    }

    static let integerMetrics: Set<String> = ["tp", "fp", "tn", "fn", "other", "unparsed", "correct", "missing", "judged"]

    static func countLabel(_ kind: EvalKind) -> String {
        switch kind {
        case .pope, .refcoco, .caption: return "questions"
        case .mme: return "images"
        case .mmbench: return "groups"
        }
    }

    public func score() throws -> EvalReport {
        let manifestPath = setDirectory + "/" + EvalFiles.manifest
        guard let data = FileManager.default.contents(atPath: manifestPath) else {
            throw VLMError(.notFound, file: manifestPath, "not an evaluation set folder (no \(EvalFiles.manifest)); build one with `vlmdata eval build`")
        }
        let manifest: EvalSetManifest
        do { manifest = try JSONDecoder().decode(EvalSetManifest.self, from: data) } catch {
            throw VLMError.badInput(file: manifestPath, "not a valid evaluation set manifest: \(error)")
        }
        let keys = try EvalFiles.readJSONL(EvalKey.self, path: setDirectory + "/" + EvalFiles.answerKey)
        let questions = try EvalFiles.readJSONL(EvalQuestion.self, path: setDirectory + "/" + EvalFiles.questions)
        let texts = Dictionary(questions.map { ($0.question_id, $0.text) }, uniquingKeysWith: { a, _ in a })
        let answers = try AnswerFile.read(answersPath, known: Set(keys.map { String($0.question_id) }))

        var report = EvalReport(kind: manifest.kind, set: manifest.name, questions: keys.count, answered: 0, missing: 0,
                                missing_ids: [], unparsed: 0, judged: 0, extra: answers.extra, columns: [], categories: [],
                                overall: EvalRow(name: "overall", n: 0, metrics: [:]), problems: answers.problems)
        for key in keys {
            if answers.texts[String(key.question_id)] == nil {
                report.missing += 1
                if report.missing_ids.count < 20 { report.missing_ids.append(String(key.question_id)) }
            }
        }
        report.answered = keys.count - report.missing
        switch manifest.kind {
        case .pope: scorePOPE(keys, answers.texts, &report)
        case .mme: scoreMME(keys, answers.texts, &report)
        case .mmbench: try scoreMMBench(keys, answers.texts, texts, &report)
        case .refcoco: scoreGrounding(keys, answers.texts, &report)
        case .caption:
            guard let vocabulary = manifest.vocabulary else {
                throw VLMError.badInput(file: manifestPath, "a caption set's manifest needs its 'vocabulary'")
            }
            scoreCaption(keys, answers.texts, vocabulary, &report)
        }
        return report
    }

    /// Categories in first-seen order, then the rows.
    private func grouped(_ keys: [EvalKey], by category: (EvalKey) -> String) -> [(String, [EvalKey])] {
        var order: [String] = [], groups: [String: [EvalKey]] = [:]
        for key in keys {
            let name = category(key)
            if groups[name] == nil { order.append(name) }
            groups[name, default: []].append(key)
        }
        return order.map { ($0, groups[$0]!) }
    }

    // MARK: - POPE

    private func scorePOPE(_ keys: [EvalKey], _ texts: [String: String], _ report: inout EvalReport) {
        report.columns = ["accuracy", "precision", "recall", "f1", "yes_ratio", "tp", "fp", "tn", "fn"]
        func row(_ name: String, _ keys: [EvalKey]) -> EvalRow {
            var tp = 0, fp = 0, tn = 0, fn = 0
            for key in keys {
                let truth = key.label == "no" ? "no" : "yes"
                // A missing answer is counted as the wrong one.
                let predicted = texts[String(key.question_id)].map(AnswerParsing.popeYesNo) ?? (truth == "yes" ? "no" : "yes")
                switch (predicted, truth) {
                case ("yes", "yes"): tp += 1
                case ("yes", _): fp += 1
                case (_, "no"): tn += 1
                default: fn += 1
                }
            }
            let n = Double(max(1, keys.count))
            let precision = tp + fp > 0 ? Double(tp) / Double(tp + fp) : 0
            let recall = tp + fn > 0 ? Double(tp) / Double(tp + fn) : 0
            let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
            return EvalRow(name: name, n: keys.count, metrics: [
                "accuracy": Double(tp + tn) / n, "precision": precision, "recall": recall, "f1": f1,
                "yes_ratio": Double(tp + fp) / n, "tp": Double(tp), "fp": Double(fp), "tn": Double(tn), "fn": Double(fn),
            ])
        }
        report.categories = grouped(keys) { $0.sampling ?? $0.category }.map { row($0.0, $0.1) }
        report.overall = row("overall", keys)
    }

    // MARK: - MME

    private func scoreMME(_ keys: [EvalKey], _ texts: [String: String], _ report: inout EvalReport) {
        report.columns = ["acc", "acc_plus", "score", "other"]
        func stats(_ keys: [EvalKey]) -> (right: Int, images: Int, bothRight: Int, other: Int) {
            var right = 0, other = 0
            var pairs: [String: (Int, Int)] = [:]
            var order: [String] = []
            for key in keys {
                // A missing answer is wrong but not "other" (that counts answers the rule could not read).
                let answered = texts[String(key.question_id)].map(AnswerParsing.mmeLabel)
                if answered == "other" { other += 1 }
                let predicted = answered ?? "other"
                let ok = predicted == key.label
                if ok { right += 1 }
                let pair = key.pair ?? key.image_key
                if pairs[pair] == nil { order.append(pair) }
                pairs[pair, default: (0, 0)].0 += 1
                pairs[pair, default: (0, 0)].1 += ok ? 1 : 0
            }
            return (right, pairs.count, pairs.values.filter { $0.0 == $0.1 }.count, other)
        }
        var total = 0.0
        report.categories = grouped(keys) { $0.category }.map { name, members in
            let s = stats(members)
            let acc = Double(s.right) / Double(max(1, members.count))
            let accPlus = Double(s.bothRight) / Double(max(1, s.images))
            let score = (acc + accPlus) * 100
            total += score
            return EvalRow(name: name, n: s.images, metrics: ["acc": acc, "acc_plus": accPlus, "score": score,
                                                              "other": Double(s.other)])
        }
        let s = stats(keys)
        // MME's total is the sum of its subtasks' scores; acc and acc+ overall are pooled.
        report.overall = EvalRow(name: "overall", n: s.images, metrics: [
            "acc": Double(s.right) / Double(max(1, keys.count)), "acc_plus": Double(s.bothRight) / Double(max(1, s.images)),
            "score": total, "other": Double(s.other)])
    }

    // MARK: - MMBench

    private func scoreMMBench(_ keys: [EvalKey], _ texts: [String: String], _ questions: [Int: String],
                              _ report: inout EvalReport) throws {
        report.columns = ["circular_accuracy", "vanilla_accuracy", "unparsed"]
        var right: [Int: Bool] = [:]
        var unparsed: Set<Int> = []
        for key in keys {
            guard let text = texts[String(key.question_id)], let options = key.options else { continue }
            var letter = AnswerParsing.choice(text, options: options)
            if letter == nil, let judge {
                letter = try judge.choose(question: questions[key.question_id] ?? "", options: options, answer: text)
                if letter != nil { report.judged += 1 }
            }
            if letter == nil { unparsed.insert(key.question_id) }
            right[key.question_id] = letter == key.answer
        }
        report.unparsed = unparsed.count
        func row(_ name: String, _ keys: [EvalKey]) -> EvalRow {
            let groups = Dictionary(grouping: keys, by: { $0.group ?? $0.question_id })
            let circular = groups.values.filter { members in members.allSatisfy { right[$0.question_id] == true } }.count
            let vanilla = groups.values.filter { members in
                members.contains { ($0.rotation ?? 0) == 0 && right[$0.question_id] == true }
            }.count
            let n = Double(max(1, groups.count))
            return EvalRow(name: name, n: groups.count, metrics: [
                "circular_accuracy": Double(circular) / n, "vanilla_accuracy": Double(vanilla) / n,
                "unparsed": Double(keys.filter { unparsed.contains($0.question_id) }.count)])
        }
        report.categories = grouped(keys) { $0.category }.map { row($0.0, $0.1) }
        report.overall = row("overall", keys)
    }

    // MARK: - Grounding

    private func scoreGrounding(_ keys: [EvalKey], _ texts: [String: String], _ report: inout EvalReport) {
        report.columns = ["accuracy", "mean_iou", "unparsed"]
        var iou: [Int: Double] = [:]
        var unparsed: Set<Int> = []
        for key in keys {
            guard let text = texts[String(key.question_id)], let truth = key.bbox else { continue }
            guard let box = AnswerParsing.firstBox(text) else { unparsed.insert(key.question_id); continue }
            iou[key.question_id] = AnswerParsing.iou(box, truth)
        }
        report.unparsed = unparsed.count
        func row(_ name: String, _ keys: [EvalKey]) -> EvalRow {
            let values = keys.map { iou[$0.question_id] ?? 0 }
            let n = Double(max(1, keys.count))
            return EvalRow(name: name, n: keys.count, metrics: [
                "accuracy": Double(values.filter { $0 >= 0.5 }.count) / n, "mean_iou": values.reduce(0, +) / n,
                "unparsed": Double(keys.filter { unparsed.contains($0.question_id) }.count)])
        }
        report.categories = grouped(keys) { $0.category }.map { row($0.0, $0.1) }.sorted { $0.name < $1.name }
        report.overall = row("overall", keys)
    }
}

extension EvalScorer {
    // MARK: - Caption attributes

    /// Per class (colour, category, side): the share of the images whose reference names the class where the
    /// answer names the same term first; `unparsed` counts answers naming no term of the class (wrong). Overall:
    /// the pooled share, and `all_right`, the share of questions right in every class their reference names.
    func scoreCaption(_ keys: [EvalKey], _ texts: [String: String], _ vocabulary: [String: [String]],
                      _ report: inout EvalReport) {
        report.columns = ["accuracy", "all_right", "unparsed"]
        var right: [Int: [String: Bool]] = [:]
        var named: [Int: [String: String]] = [:]
        for key in keys {
            guard let text = texts[String(key.question_id)] else { continue }
            let terms = CaptionAttributes.read(text, vocabulary)
            named[key.question_id] = terms
            right[key.question_id] = (key.reference ?? [:]).reduce(into: [:]) { $0[$1.key] = terms[$1.key] == $1.value }
        }
        report.unparsed = keys.filter { named[$0.question_id]?.isEmpty == true }.count
        let classes = CaptionAttributes.classes.filter { name in keys.contains { $0.reference?[name] != nil } }
        var pooled = 0, pooledRight = 0
        report.categories = classes.map { name in
            let asked = keys.filter { $0.reference?[name] != nil }
            let ok = asked.filter { right[$0.question_id]?[name] == true }.count
            let unparsed = asked.filter { named[$0.question_id].map { $0[name] == nil } ?? false }.count
            pooled += asked.count
            pooledRight += ok
            return EvalRow(name: name, n: asked.count, metrics: [
                "accuracy": Double(ok) / Double(max(1, asked.count)), "unparsed": Double(unparsed)])
        }
        let allRight = keys.filter { key in
            guard let marks = right[key.question_id] else { return false }
            return marks.values.allSatisfy { $0 }
        }.count
        report.overall = EvalRow(name: "overall", n: keys.count, metrics: [
            "accuracy": Double(pooledRight) / Double(max(1, pooled)),
            "all_right": Double(allRight) / Double(max(1, keys.count)), "unparsed": Double(report.unparsed)])
    }
}

/// A model's answers: LLaVA's answer JSONL, one `{"question_id": ..., "text": ...}` a line (other fields ignored).
struct AnswerFile {
    var texts: [String: String] = [:]
    var extra = 0
    var problems: [String] = []

    /// Reads every good line; a bad line is reported (file, line, what is wrong) and the lines around it are kept.
    static func read(_ path: String, known: Set<String>) throws -> AnswerFile {
        var out = AnswerFile()
        for (number, line) in try EvalFiles.lines(path) where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            let place = "\(path): line \(number)"
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                out.problems.append("\(place): not a JSON object"); continue
            }
            let id: String
            switch object["question_id"] {
            case let value as String: id = value
            case let value as Int: id = String(value)
            case let value as Double where value == value.rounded() && abs(value) < 1e15: id = String(Int64(value))
            case nil: out.problems.append("\(place): no question_id"); continue
            default: out.problems.append("\(place): question_id is neither an integer nor a string"); continue
            }
            guard let text = object["text"] as? String else {
                out.problems.append("\(place): question \(id) has no text (a string)"); continue
            }
            guard known.contains(id) else { out.extra += 1; continue }
            guard out.texts[id] == nil else {
                out.problems.append("\(place): question \(id) is answered twice; the first answer is kept"); continue
            }
            out.texts[id] = text
        }
        return out
    }
}
