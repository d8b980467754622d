import Foundation
import VLMCore
import VLMIO

/// One line of the question file, in LLaVA's question JSONL (what `model_vqa_loader.py` and its kin read).
public struct EvalQuestion: Codable, Sendable, Equatable {
    public var question_id: Int
    /// The image's file name as the annotation names it (relative to the split's image folder).
    public var image: String
    public var text: String
    public var category: String
}

/// One line of the answer key: the label (yes/no), letter or box, plus what the kind's scoring needs.
public struct EvalKey: Codable, Sendable, Equatable {
    public var question_id: Int
    public var category: String
    public var image: String
    /// The catalog's image key.
    public var image_key: String
    /// POPE and MME: "yes" or "no".
    public var label: String?
    /// MMBench: the right letter in this rotation.
    public var answer: String?
    /// MMBench: letter → option text, in this rotation.
    public var options: [String: String]?
    /// MMBench: the rotation group (VLMEvalKit's `g_index`: the index of rotation 0).
    public var group: Int?
    /// MMBench: 0...3.
    public var rotation: Int?
    /// MME: the image's pair id (both questions of an image share it; acc+ needs both right).
    public var pair: String?
    /// POPE: random, popular or adversarial.
    public var sampling: String?
    /// POPE and MME: the category asked about.
    public var object: String?
    /// Grounding: `[x1, y1, x2, y2]` normalized in `frame`.
    public var bbox: [Double]?
    /// Grounding: the referring phrase.
    public var phrase: String?
    public var frame: String?
    /// Caption: the reference caption the attributes were read from.
    public var caption: String?
    /// Caption: attribute class (colour, category, side) → the term the reference caption names first.
    public var reference: [String: String]?

    init(question_id: Int, category: String, image: String, image_key: String) {
        self.question_id = question_id
        self.category = category
        self.image = image
        self.image_key = image_key
    }
}

/// One line of a model's answer file, as LLaVA's `model_vqa*.py` writes it.
public struct EvalAnswer: Codable, Sendable, Equatable {
    public var question_id: Int
    public var prompt: String
    public var text: String
    public var model_id: String

    public init(question_id: Int, prompt: String, text: String, model_id: String) {
        self.question_id = question_id
        self.prompt = prompt
        self.text = text
        self.model_id = model_id
    }
}

/// `eval_set.json`: what was built, from what, with which parameters.
public struct EvalSetManifest: Codable, Sendable, Equatable {
    public var format = 1
    public var name: String
    public var kind: EvalKind
    public var split: String
    public var seed: UInt64
    /// The requested image count (nil: every eligible image).
    public var count: Int?
    public var sampling: [PopeSampling]?
    public var frame: BoxFrame?
    public var questions: Int
    public var images: Int
    /// Images of the split that could not carry this kind's questions (too few objects, ...).
    public var ineligible_images: Int
    public var files: [String]
    /// Caption: the terms of each attribute class the scorer looks for (colour, category, side).
    public var vocabulary: [String: [String]]? = nil
}

/// The files of an evaluation set folder.
public enum EvalFiles {
    public static let manifest = "eval_set.json"
    public static let questions = "questions.jsonl"
    public static let answerKey = "answer_key.jsonl"
    /// POPE: LLaVA's `eval_pope.py --annotation-dir` folder (`coco_pope_<sampling>.json`, JSON lines).
    public static let popeAnnotations = "coco_pope"
    /// MMBench: the VLMEvalKit-style TSV.
    public static let mmbenchTSV = "mmbench.tsv"

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// JSON lines, one record a line, keys sorted.
    static func jsonl<T: Encodable>(_ records: [T]) throws -> [UInt8] {
        let encoder = encoder()
        var out: [UInt8] = []
        for record in records {
            out += try encoder.encode(record)
            out.append(0x0A)
        }
        return out
    }

    /// The questions of a built set (its `questions.jsonl`), in file order.
    public static func loadQuestions(set directory: String) throws -> [EvalQuestion] {
        try readJSONL(EvalQuestion.self, path: directory + "/" + questions)
    }

    /// Writes a model's answers as LLaVA's answer JSONL (what `vlmdata eval score --answers` reads).
    public static func writeAnswers(_ answers: [EvalAnswer], to path: String) throws {
        try AtomicFile.write(try jsonl(answers), to: path)
    }

    /// Reads a JSON-lines file of `T`; a bad line is an error naming the file and line.
    static func readJSONL<T: Decodable>(_ type: T.Type, path: String) throws -> [T] {
        let decoder = JSONDecoder()
        var out: [T] = []
        for (number, line) in try lines(path) where !line.trimmingCharacters(in: .whitespaces).isEmpty {
            do { out.append(try decoder.decode(T.self, from: Data(line.utf8))) } catch {
                throw VLMError.badInput(file: path, record: "line \(number)", "not a valid record: \(error)")
            }
        }
        return out
    }

    static func lines(_ path: String) throws -> [(Int, String)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read the file")
        }
        let text = String(decoding: data, as: UTF8.self)
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().map { ($0.offset + 1, String($0.element)) }
    }
}
