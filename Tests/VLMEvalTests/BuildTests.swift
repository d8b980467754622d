import Foundation
import Testing
import VLMCatalog
import VLMCore
@testable import VLMEval
import VLMInstruct
import VLMIO

/// `eval build` on coco-mini: structure and balance of each kind, and the images recorded as held out.
struct BuildTests {
    /// Categories per image of coco-mini, from the catalog (what the questions must agree with).
    static func present() throws -> [String: Set<String>] {
        let images = try ImageFactsReader.read(try cocoMini.get())
        return Dictionary(uniqueKeysWithValues: images.map { ($0.key, Set($0.objects.map(\.category))) })
    }

    @Test func popeIsHalfYesPerSamplingWithAbsentNegatives() throws {
        let (report, dir) = try buildSet(.pope, count: 20, seed: 3)
        let keys = try readKeys(dir)
        let questions = try readQuestions(dir)
        let present = try Self.present()
        #expect(report.manifest.images == 20)
        #expect(keys.count == 20 * 6 * 3)
        #expect(questions.map(\.question_id) == keys.map(\.question_id))
        for sampling in PopeSampling.allCases {
            let part = keys.filter { $0.sampling == sampling.rawValue }
            #expect(part.count == 120)
            #expect(part.filter { $0.label == "yes" }.count == 60, "\(sampling): 50% yes")
            // Per image: 3 distinct present objects (yes) and 3 distinct absent ones (no), alternating as POPE writes them.
            for (image, members) in Dictionary(grouping: part, by: \.image_key) {
                #expect(members.map { $0.label! } == ["yes", "no", "yes", "no", "yes", "no"])
                let objects = members.map { $0.object! }
                #expect(Set(objects).count == 6, "\(image): no object asked twice")
                for member in members {
                    #expect(present[image]!.contains(member.object!) == (member.label == "yes"),
                            "\(image) \(member.object!) labelled \(member.label!)")
                }
            }
        }
        // The same present objects in every sampling.
        let yes = { (s: PopeSampling) in keys.filter { $0.sampling == s.rawValue && $0.label == "yes" }.map { "\($0.image_key)/\($0.object!)" } }
        #expect(yes(.random) == yes(.popular) && yes(.popular) == yes(.adversarial))
        // Question text as POPE writes it, with a/an.
        #expect(questions.allSatisfy { $0.text.hasPrefix("Is there a")
            && $0.text.hasSuffix(" in the image?\nAnswer the question using a single word or phrase.") })
        // LLaVA's eval_pope.py annotation files: same order and labels as the key.
        for sampling in PopeSampling.allCases {
            let lines = try EvalFiles.readJSONL(POPEAnnotation.self, path: dir + "/coco_pope/coco_pope_\(sampling.rawValue).json")
            #expect(lines.map(\.label) == keys.filter { $0.sampling == sampling.rawValue }.map { $0.label! })
        }
    }

    @Test func popePopularAndAdversarialRankTheSplitsCategories() throws {
        let images = try ImageFactsReader.read(try cocoMini.get())
        let stats = SplitStatistics(images: images, vocabulary: [])
        let (_, dir) = try buildSet(.pope, count: 10, seed: 1) { $0.popeSampling = [.popular, .adversarial] }
        let keys = try readKeys(dir)
        let present = try Self.present()
        for (image, members) in Dictionary(grouping: keys.filter { $0.sampling == "popular" }, by: \.image_key) {
            // The first "no" is the most frequent category of the split that the image lacks.
            let expected = stats.popular.first { !present[image]!.contains($0) }
            #expect(members[1].object == expected)
        }
        for (image, members) in Dictionary(grouping: keys.filter { $0.sampling == "adversarial" }, by: \.image_key) {
            let expected = stats.cooccurring(with: members[0].object!).first { !present[image]!.contains($0) }
            if let expected { #expect(members[1].object == expected, "\(image): co-occurring with \(members[0].object!)") }
        }
        // person is coco-mini's most frequent category: popular asks for it whenever the image lacks it.
        #expect(stats.popular.first == "person")
    }

    @Test func mmeHasOneYesAndOneNoPerImage() throws {
        let (report, dir) = try buildSet(.mme, seed: 2)
        let keys = try readKeys(dir)
        let pairs = Dictionary(grouping: keys, by: { $0.pair! })
        #expect(pairs.count == report.manifest.images)
        for (image, members) in pairs {
            #expect(members.count == 2)
            #expect(Set(members.map { $0.label! }) == ["yes", "no"], "\(image)")
            #expect(Set(members.map(\.category)).count == 1)
        }
        #expect(Set(keys.map(\.category)) == ["existence", "count"])
        let questions = try readQuestions(dir)
        #expect(questions.allSatisfy { $0.text.hasSuffix("Please answer yes or no.") })
        #expect(report.labels == ["yes": pairs.count, "no": pairs.count])
    }

    @Test func mmbenchRotationsAreComplete() throws {
        let (_, dir) = try buildSet(.mmbench, count: 12, seed: 5)
        let keys = try readKeys(dir)
        let groups = Dictionary(grouping: keys, by: { $0.group! })
        #expect(keys.count == groups.count * 4)
        for (group, members) in groups {
            #expect(members.map { $0.rotation! }.sorted() == [0, 1, 2, 3])
            #expect(Set(members.map { $0.answer! }) == ["A", "B", "C", "D"], "group \(group): each letter right once")
            #expect(Set(members.map { $0.options![$0.answer!]! }).count == 1, "group \(group): one right option text")
            #expect(Set(members.map { Set($0.options!.values) }).count == 1, "group \(group): the same 4 options")
            for member in members { #expect(member.question_id == group + member.rotation! * 1_000_000) }
        }
        // The TSV: header, one row per rotation, the image as base64 of the file's bytes.
        let tsv = try String(contentsOfFile: dir + "/mmbench.tsv", encoding: .utf8)
        let rows = tsv.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        #expect(rows[0] == ["index", "question", "A", "B", "C", "D", "answer", "category", "image"])
        #expect(rows.count == keys.count + 1)
        let first = rows[1]
        let key = keys.first { String($0.question_id) == first[0] }!
        #expect(first[6] == key.answer)
        let bytes = try #require(Data(base64Encoded: first[8]))
        #expect(Hashing.sha256(bytes) == (try Hashing.sha256(file: sharedData + "/coco-mini/train2017/" + key.image)))
    }

    @Test func groundingBoxesAreInTheFrameTheModelSees() throws {
        let (_, plain) = try buildSet(.refcoco, count: 15, seed: 4)
        let (_, square) = try buildSet(.refcoco, count: 15, seed: 4) { $0.frame = .pad }
        let a = try readKeys(plain), b = try readKeys(square)
        #expect(a.count == 15 && b.count == 15)
        let images = Dictionary(uniqueKeysWithValues: try ImageFactsReader.read(try cocoMini.get()).map { ($0.key, $0) })
        for (k, s) in zip(a, b) {
            #expect(k.phrase == s.phrase)
            let image = images[k.image_key]!
            let object = try #require(image.objects.first { abs(Double(image.width) * k.bbox![0] - $0.box.x) < 0.01 * Double(image.width)
                && abs(Double(image.height) * k.bbox![1] - $0.box.y) < 0.01 * Double(image.height) && $0.category == k.category })
            // Pad frame: expand2square pastes the image at ((side - w) // 2, (side - h) // 2) in a max(w, h) square.
            let sideInt = max(image.width, image.height), side = Double(sideInt)
            let ox = Double((sideInt - image.width) / 2), oy = Double((sideInt - image.height) / 2)
            #expect(abs(s.bbox![0] - (object.box.x + ox) / side) < 1e-4)
            #expect(abs(s.bbox![3] - (object.box.y + object.box.height + oy) / side) < 1e-4)
            #expect(k.phrase!.contains(k.category))
        }
    }

    @Test func captionReferencesAreTheTermsTheCaptionNamesFirst() throws {
        let (report, dir) = try buildSet(.caption, count: 20, seed: 2)
        let keys = try readKeys(dir), questions = try readQuestions(dir)
        #expect(keys.count == 20 && questions.count == 20 && report.manifest.images == 20)
        #expect(questions.allSatisfy { $0.text == "Describe the image concisely." && $0.category == "caption" })
        let vocabulary = try #require(report.manifest.vocabulary)
        let categories = try ImageFactsReader.categories(try cocoMini.get()).values.flatMap { $0 }.map { $0.name.lowercased() }
        #expect(Set(vocabulary["category"] ?? []).isSubset(of: Set(categories)) && vocabulary["category"]?.contains("person") == true)
        #expect(vocabulary["side"] == ["left", "right"] && vocabulary["colour"]?.contains("red") == true)
        let images = Dictionary(uniqueKeysWithValues: try ImageFactsReader.read(try cocoMini.get()).map { ($0.key, $0) })
        for key in keys {
            let reference = try #require(key.reference)
            let caption = try #require(key.caption)
            #expect(!reference.isEmpty && images[key.image_key]!.captions.contains { $0.text == caption })
            // Each term is the class's earliest whole-word term in the caption.
            let words = caption.lowercased().split { !($0.isLetter || $0.isNumber) }.map(String.init)
            for (name, term) in reference {
                let first = words.indices.first { i in
                    (vocabulary[name] ?? []).contains { t in
                        let parts = t.split(separator: " ").map(String.init)
                        return i + parts.count <= words.count && Array(words[i..<i + parts.count]) == parts
                    }
                }
                let at = try #require(first)
                #expect(term.split(separator: " ").first.map(String.init) == words[at], "\(caption): \(name) = \(term)")
            }
        }
    }

    @Test func builtImagesAreRecordedAsHeldOut() throws {
        let (report, dir) = try buildSet(.pope, count: 7, seed: 9) { $0.name = "held-out-test" }
        let catalog = try cocoMini.get()
        let sets = try catalog.evalSets().filter { $0.name == "held-out-test" }
        #expect(sets.count == 1 && sets[0].images == 7 && sets[0].questions == report.manifest.questions)
        let held = try catalog.evalImageSHA256s()
        for key in Set(try readKeys(dir).map(\.image)) {
            #expect(held.contains(try Hashing.sha256(file: sharedData + "/coco-mini/train2017/" + key)))
        }
    }

    @Test func aNameInUseForAnotherFolderIsAConflict() throws {
        let (_, first) = try buildSet(.mme, count: 3) { $0.name = "name-in-use" }
        // Rebuilding into the same folder replaces the record.
        let again = try EvalSetBuilder(catalog: try cocoMini.get(), options: {
            var o = EvalBuildOptions(kind: .mme, split: "mini", out: first)
            o.count = 3
            o.name = "name-in-use"
            return o
        }()).build()
        #expect(again.manifest.images == 3)
        do {
            _ = try buildSet(.mme, count: 3) { $0.name = "name-in-use" }
            Issue.record("the same name for another folder must fail")
        } catch let error as VLMError {
            #expect(error.kind == .conflict && error.message.contains(first))
        }
        #expect(try cocoMini.get().evalSets().filter { $0.name == "name-in-use" }.count == 1)
    }

    @Test func sameSeedSameSetOtherSeedOtherImages() throws {
        let (_, a) = try buildSet(.mme, count: 10, seed: 11)
        let (_, b) = try buildSet(.mme, count: 10, seed: 11)
        let (_, c) = try buildSet(.mme, count: 10, seed: 12)
        #expect(try String(contentsOfFile: a + "/questions.jsonl", encoding: .utf8) == (try String(contentsOfFile: b + "/questions.jsonl", encoding: .utf8)))
        #expect(Set(try readKeys(a).map(\.image)) != Set(try readKeys(c).map(\.image)))
    }

    @Test func tooLargeCountAndUnknownSplitAreClearErrors() throws {
        #expect(throws: VLMError.self) { try buildSet(.pope, count: 10_000) }
        let out = try temporaryDirectory()
        do {
            _ = try EvalSetBuilder(catalog: try cocoMini.get(), options: EvalBuildOptions(kind: .pope, split: "nope", out: out)).build()
            Issue.record("an unknown split must fail")
        } catch let error as VLMError {
            #expect(error.kind == .notFound)
            #expect(error.message.contains("mini"), "names the splits there are: \(error)")
        }
    }
}
