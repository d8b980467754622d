import Foundation
import Testing
import VLMCore
@testable import VLMEval

/// Scoring against small hand-made sets whose metrics are worked out here by hand.
struct ScoreTests {
    static func close(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) < 1e-9 } ?? false }

    @Test func popeParsesAsEvalPopeAndCountsMissingAsWrong() throws {
        let labels = ["yes", "no", "yes", "no", "yes", "no", "yes", "no"]
        let dir = try writeSet(.pope, labels.enumerated().map { i, label in
            key(i + 1, "random") { $0.label = label; $0.sampling = "random" }
        })
        let path = try writeAnswers([
            answer(1, "Yes, there is a dog in the image."),  // yes, label yes: TP
            answer(2, "No"),                                   // no, label no: TN
            answer(3, "There is not a cat. Yes really."),      // first sentence has "not": no, label yes: FN
            answer(4, "Yes. But no, not really."),             // first sentence "Yes": yes, label no: FP
            // 5 missing: label yes, counted wrong (FN)
            answer(6, "I cannot tell"),                        // no no/not word: yes, label no: FP
            answer(7, "NO"),                                   // "NO" is not a no-word for eval_pope.py: yes, label yes: TP
            answer(8, "no,"),                                  // comma dropped: "no": TN
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        // TP 2, FP 2, TN 2, FN 2.
        let row = report.categories[0]
        #expect(row.name == "random" && row.n == 8)
        #expect(row.metrics["tp"] == 2 && row.metrics["fp"] == 2 && row.metrics["tn"] == 2 && row.metrics["fn"] == 2)
        #expect(Self.close(row.metrics["accuracy"], 4.0 / 8))
        #expect(Self.close(row.metrics["precision"], 2.0 / 4))
        #expect(Self.close(row.metrics["recall"], 2.0 / 4))
        #expect(Self.close(row.metrics["f1"], 0.5))
        #expect(Self.close(row.metrics["yes_ratio"], 4.0 / 8))
        #expect(report.missing == 1 && report.missing_ids == ["5"] && report.answered == 7)
        #expect(report.overall.metrics == row.metrics)
        #expect(report.table().contains("missing question ids: 5"))
    }

    @Test func mmeAccAccPlusAndScore() throws {
        let dir = try writeSet(.mme, [
            key(1, "existence", image: "a") { $0.label = "yes"; $0.pair = "a" },
            key(2, "existence", image: "a") { $0.label = "no"; $0.pair = "a" },
            key(3, "existence", image: "b") { $0.label = "yes"; $0.pair = "b" },
            key(4, "existence", image: "b") { $0.label = "no"; $0.pair = "b" },
            key(5, "count", image: "c") { $0.label = "yes"; $0.pair = "c" },
            key(6, "count", image: "c") { $0.label = "no"; $0.pair = "c" },
        ])
        let path = try writeAnswers([
            answer(1, "Yes, there is a dog."),   // prefix "yes,": yes, right
            answer(2, "No."),                    // prefix "no.": no, right → image a both right
            answer(3, "yes"),                    // right
            answer(4, "I don't think so"),       // prefix "i do": other, wrong → image b not both
            // 5 missing: wrong
            answer(6, "Nope, only one."),        // prefix "nope" holds "no": right
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        let existence = try #require(report.categories.first { $0.name == "existence" })
        let count = try #require(report.categories.first { $0.name == "count" })
        // existence: acc 3/4, acc+ 1/2, score 125; count: acc 1/2, acc+ 0, score 50; total 175.
        #expect(existence.n == 2 && Self.close(existence.metrics["acc"], 0.75) && Self.close(existence.metrics["acc_plus"], 0.5))
        #expect(Self.close(existence.metrics["score"], 125) && existence.metrics["other"] == 1)
        #expect(count.n == 1 && Self.close(count.metrics["acc"], 0.5) && Self.close(count.metrics["acc_plus"], 0))
        #expect(Self.close(count.metrics["score"], 50) && count.metrics["other"] == 0)
        #expect(Self.close(report.overall.metrics["score"], 175))
        #expect(Self.close(report.overall.metrics["acc"], 4.0 / 6) && Self.close(report.overall.metrics["acc_plus"], 1.0 / 3))
        #expect(report.missing == 1)
    }

    static func rotations(group: Int, category: String, options: [String], answer: String) -> [EvalKey] {
        (0..<4).map { r in
            let rotated = Array(options[r...] + options[..<r])
            let letters = ["A", "B", "C", "D"]
            return key(group + r * 1_000_000, category) {
                $0.options = Dictionary(uniqueKeysWithValues: zip(letters, rotated))
                $0.answer = letters[rotated.firstIndex(of: answer)!]
                $0.group = group
                $0.rotation = r
            }
        }
    }

    @Test func mmbenchCountsAGroupOnlyWhenEveryRotationIsRight() throws {
        let g1 = Self.rotations(group: 1, category: "object_recognition", options: ["dog", "cat", "bus", "kite"], answer: "dog")
        let g2 = Self.rotations(group: 2, category: "counting", options: ["3", "1", "2", "5"], answer: "2")
        let g3 = Self.rotations(group: 3, category: "counting", options: ["4", "0", "6", "7"], answer: "4")
        let dir = try writeSet(.mmbench, g1 + g2 + g3)
        // Right letters: g1 A D C B; g2 C B A D; g3 A D C B.
        let path = try writeAnswers([
            answer(1, "A"),
            answer(1_000_001, "The answer is D."),
            answer(2_000_001, "(C) dog"),
            answer(3_000_001, "dog"),                                      // option text → B, right
            answer(2, "C. Because there are two of them in the picture"),  // trailing explanation, letter C
            answer(1_000_002, "B"),
            answer(2_000_002, "A"),
            answer(3_000_002, "I really cannot tell"),                     // no letter, no option text: unparsed
            answer(3, "A"),
            answer(1_000_003, "D"),
            answer(2_000_003, "Z"),                                        // refusal: no option, wrong
            // 3_000_003 missing
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        // g1 right in all 4; g2 one unparsed; g3 one "Z" and one missing → 1 of 3 groups.
        #expect(Self.close(report.overall.metrics["circular_accuracy"], 1.0 / 3))
        #expect(Self.close(report.overall.metrics["vanilla_accuracy"], 1.0))   // rotation 0 right in all three
        #expect(report.unparsed == 1 && report.missing == 1 && report.overall.n == 3)
        let counting = try #require(report.categories.first { $0.name == "counting" })
        #expect(counting.n == 2 && Self.close(counting.metrics["circular_accuracy"], 0))
    }

    @Test func choiceRulesFollowVLMEvalKit() {
        let options = ["A": "dog", "B": "cat", "C": "bus", "D": "hot dog"]
        #expect(AnswerParsing.choice("B", options: options) == "B")
        #expect(AnswerParsing.choice("**C**: bus", options: options) == "C")
        #expect(AnswerParsing.choice("A or B", options: options) == nil)          // two letters: the rule cannot decide
        #expect(AnswerParsing.choice("a cat", options: options) == "B")           // lowercase "a" is no letter; text "cat"
        #expect(AnswerParsing.choice("hot dog", options: options) == nil)         // "dog" and "hot dog" both match
        #expect(AnswerParsing.choice("Cannot determine the answer", options: options) == "Z")
    }

    @Test func groundingTakesTheFirstBoxAndScoresIoU() throws {
        let dir = try writeSet(.refcoco, [
            key(1, "dog") { $0.bbox = [0, 0, 0.5, 0.5] },
            key(2, "dog") { $0.bbox = [0, 0, 0.5, 0.5] },
            key(3, "cat") { $0.bbox = [0.2, 0.2, 0.6, 0.6] },
            key(4, "cat") { $0.bbox = [0.1, 0.1, 0.3, 0.3] },
            key(5, "cat") { $0.bbox = [0.1, 0.1, 0.3, 0.3] },
        ])
        let path = try writeAnswers([
            answer(1, "[0.0, 0.0, 0.5, 0.5] and not [0.5, 0.5, 1, 1]"),  // first box: IoU 1
            answer(2, "The dog is at [0.25,0,0.75,0.5]."),                 // IoU 0.125 / 0.375 = 1/3
            answer(3, "[0.2, 0.2, 0.6, 0.55]"),                            // IoU 0.14 / 0.16 = 0.875
            answer(4, "on the left"),                                      // unparsed: 0
            // 5 missing: 0
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        #expect(Self.close(report.overall.metrics["accuracy"], 2.0 / 5))
        #expect(Self.close(report.overall.metrics["mean_iou"], (1 + 1.0 / 3 + 0.875) / 5))
        #expect(report.unparsed == 1 && report.missing == 1)
        let dog = try #require(report.categories.first { $0.name == "dog" })
        #expect(Self.close(dog.metrics["accuracy"], 0.5))
    }

    @Test func badAnswerLinesAreReportedAndTheRestKept() throws {
        let dir = try writeSet(.pope, (1...3).map { i in key(i, "random") { $0.label = "yes"; $0.sampling = "random" } })
        let path = try writeAnswers([
            answer(1, "Yes"),
            "{not json",
            #"{"text": "Yes"}"#,
            answer(3, "Yes"),
            answer(99, "Yes"),
            answer(3, "No"),
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        #expect(report.answered == 2 && report.missing == 1 && report.missing_ids == ["2"] && report.extra == 1)
        #expect(report.problems.count == 3)
        #expect(report.problems[0].hasSuffix("answers.jsonl: line 2: not a JSON object"))
        #expect(report.problems[1].contains("line 3: no question_id"))
        #expect(report.problems[2].contains("line 6: question 3 is answered twice"))
        #expect(report.overall.metrics["tp"] == 2)   // the first answer of question 3 counts
    }

    @Test func captionScoresTheFirstTermOfEachClassAgainstTheReference() throws {
        let vocabulary = CaptionAttributes.vocabulary(categories: ["circle", "square", "traffic light", "light"])
        let dir = try writeSet(.caption, [
            key(1, "caption") { $0.reference = ["colour": "red", "category": "circle", "side": "left"] },
            key(2, "caption") { $0.reference = ["colour": "blue", "category": "traffic light", "side": "right"] },
            key(3, "caption") { $0.reference = ["category": "square"] },
            key(4, "caption") { $0.reference = ["colour": "green", "category": "circle", "side": "right"] },
            key(5, "caption") { $0.reference = ["colour": "green", "side": "left"] },
        ], vocabulary: vocabulary)
        let path = try writeAnswers([
            answer(1, "A red circle on the left."),                            // all right
            answer(2, "There is a Blue traffic-light, right side; a red light"), // longest term at a word: right x3
            answer(3, "I see nothing"),                                        // names no term: unparsed, wrong
            // 4 missing: wrong in every class
            answer(5, "a red and green shape on the left"),                    // first colour red: wrong; side right
        ], in: dir)
        let report = try EvalScorer(setDirectory: dir, answers: path).score()
        let rows = Dictionary(uniqueKeysWithValues: report.categories.map { ($0.name, $0) })
        #expect(report.categories.map(\.name) == ["colour", "category", "side"])
        #expect(rows["colour"]!.n == 4 && Self.close(rows["colour"]!.metrics["accuracy"], 2.0 / 4))
        #expect(rows["category"]!.n == 4 && Self.close(rows["category"]!.metrics["accuracy"], 2.0 / 4))
        #expect(rows["category"]!.metrics["unparsed"] == 1 && rows["colour"]!.metrics["unparsed"] == 0)
        #expect(rows["side"]!.n == 4 && Self.close(rows["side"]!.metrics["accuracy"], 3.0 / 4))
        #expect(Self.close(report.overall.metrics["accuracy"], 7.0 / 12))
        #expect(Self.close(report.overall.metrics["all_right"], 2.0 / 5))
        #expect(report.unparsed == 1 && report.missing == 1 && report.missing_ids == ["4"])
    }

    @Test func aCaptionSetWithoutVocabularyIsAClearError() throws {
        let dir = try writeSet(.caption, [key(1, "caption") { $0.reference = ["side": "left"] }])
        let path = try writeAnswers([answer(1, "left")], in: dir)
        #expect(throws: VLMError.self) { try EvalScorer(setDirectory: dir, answers: path).score() }
    }

    @Test func aFolderThatIsNoSetIsAClearError() throws {
        let dir = try temporaryDirectory()
        #expect(throws: VLMError.self) { try EvalScorer(setDirectory: dir, answers: dir + "/a.jsonl").score() }
    }
}
