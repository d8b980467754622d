import Foundation
import GRDB
import Testing
import VLMCatalog
import VLMCore
@testable import VLMInstruct

@Suite struct TemplateGeneratorTests {
    let coco = CocoMini.shared

    func normalized(_ bbox: [Double], _ image: CocoMini.Image) -> [Double] {
        func r(_ v: Double) -> Double { (min(max(v, 0), 1) * 100).rounded() / 100 }
        return [r(bbox[0] / Double(image.width)), r(bbox[1] / Double(image.height)),
                r((bbox[0] + bbox[2]) / Double(image.width)), r((bbox[1] + bbox[3]) / Double(image.height))]
    }

    @Test func everyKindIsTrueToTheAnnotations() throws {
        let dir = try TestPaths.temporaryDirectory("truth")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try coco.catalog(in: dir)
        _ = try generateTemplates(catalog, TemplateOptions(seed: 11, perImage: 3, circular: true))
        let rows = try storedInstructions(catalog)
        let imageByKey = Dictionary(uniqueKeysWithValues: coco.images.map { (CocoMini.key($0), $0) })
        let categoryName = Dictionary(uniqueKeysWithValues: coco.categories.map { ($0.id, $0.name) })
        let supercategory = Dictionary(uniqueKeysWithValues: coco.categories.map { ($0.name, $0.supercategory) })
        var kinds: [String: Int] = [:]
        var yes = 0, no = 0, sameSuper = 0
        var groups: [String: [StoredInstruction]] = [:]

        func annotations(_ image: CocoMini.Image) -> [CocoMini.Annotation] { coco.annotations.filter { $0.imageID == image.id } }
        func checkItem(_ meta: [String: Any], question: String, answer: String, image: CocoMini.Image) {
            let anns = annotations(image)
            let type = meta["type"] as! String
            switch type {
            case "rec", "region":
                let id = meta["object_id"] as! Int
                let object = anns.first { $0.id == id }!
                let name = categoryName[object.categoryID]!
                #expect(meta["category"] as? String == name)
                #expect(!object.iscrowd, "grounding never uses crowd boxes")
                #expect(!anns.contains { $0.iscrowd && $0.categoryID == object.categoryID })
                #expect(object.bbox[2] * object.bbox[3] / Double(image.width * image.height) >= 0.01, "no tiny boxes")
                let box = normalized(object.bbox, image)
                #expect((meta["box"] as! [Double]) == box)
                let boxText = English.box(box)
                if type == "rec" {
                    #expect(answer == boxText)
                    let expression = meta["expression"] as! String
                    #expect(question.contains(expression))
                    let instances = anns.filter { $0.categoryID == object.categoryID }
                    if instances.count > 1 {
                        // The position word must single the object out.
                        let cx = { (a: CocoMini.Annotation) in (a.bbox[0] + a.bbox[2] / 2) / Double(image.width) }
                        let cy = { (a: CocoMini.Annotation) in (a.bbox[1] + a.bbox[3] / 2) / Double(image.height) }
                        let others = instances.filter { $0.id != id }
                        let ok = (expression.contains("left") && others.allSatisfy { cx($0) > cx(object) })
                            || (expression.contains("right") && others.allSatisfy { cx($0) < cx(object) })
                            || (expression.contains("top") && others.allSatisfy { cy($0) > cy(object) })
                            || (expression.contains("bottom") && others.allSatisfy { cy($0) < cy(object) })
                        #expect(ok, "\(expression) is ambiguous in \(image.fileName)")
                    } else {
                        #expect(expression == "the \(name)")
                    }
                } else {
                    #expect(question.contains(boxText))
                    #expect(answer.lowercased().contains(name))
                }
            case "count":
                let name = meta["category"] as! String
                let instances = anns.filter { categoryName[$0.categoryID] == name }
                #expect(!instances.contains { $0.iscrowd }, "no count where a crowd box exists")
                #expect(meta["count"] as? Int == instances.count)
                #expect(answer == String(instances.count) || answer.contains(English.counted(instances.count, name))
                        || answer == "There is one \(name) in the image.")
            case "yesno":
                let name = meta["category"] as! String
                let present = anns.contains { categoryName[$0.categoryID] == name }
                #expect(question.hasSuffix("Please answer yes or no."))
                #expect(answer == (present ? "Yes" : "No"))
                #expect((meta["answer"] as! String) == (present ? "yes" : "no"))
            default:
                Issue.record("unexpected item type \(type)")
            }
        }

        for row in rows {
            kinds[row.kind, default: 0] += 1
            let image = imageByKey[row.imageKey]!
            let conversation = Conversation(id: row.key, image: image.fileName, conversations: row.turns)
            try conversation.validate()
            #expect(row.turns[0].value.hasPrefix("<image>\n"))
            #expect(!row.key.contains("."))
            let question = String(row.turns[0].value.dropFirst("<image>\n".count))
            let answer = row.turns[1].value
            let anns = annotations(image)
            switch row.kind {
            case "caption":
                let captions = coco.captions.filter { $0.imageID == image.id }
                let id = row.meta["caption_id"] as! Int
                #expect(captions.first { $0.id == id }.map { English.clean($0.text) } == answer)
                #expect(Phrasings.brief.contains(question))
            case "detail":
                #expect(Phrasings.detail.contains(question))
                let counts = row.meta["counts"] as! [String: Int]
                for (name, n) in counts {
                    #expect(anns.filter { categoryName[$0.categoryID] == name }.count == n)
                    #expect(answer.contains(English.counted(n, name)))
                }
            case "grounding", "count":
                checkItem(row.meta, question: question, answer: answer, image: image)
            case "yesno":
                checkItem(row.meta, question: question, answer: answer, image: image)
                if answer == "Yes" { yes += 1 } else { no += 1 }
                if row.meta["same_supercategory"] as? Bool == true {
                    sameSuper += 1
                    let name = row.meta["category"] as! String
                    #expect(anns.contains { supercategory[categoryName[$0.categoryID]!] == supercategory[name] })
                }
                groups[row.groupID!, default: []].append(row)
            case "mcq":
                let options = row.meta["options"] as! [String]
                let letter = row.meta["letter"] as! String
                let correct = row.meta["answer"] as! String
                #expect(answer == letter)
                #expect(options.count == 4 && Set(options).count == 4)
                #expect(options[Int(letter.unicodeScalars.first!.value - 65)] == correct)
                #expect(question.hasSuffix("\n" + Phrasings.mcqSuffix))
                for (i, option) in options.enumerated() { #expect(question.contains("\n\(["A", "B", "C", "D"][i]). \(option)\n")) }
                #expect(row.meta["type"] as? String == "mcq")
                if row.meta["question"] as? String == "presence" {
                    let present = Set(anns.map { categoryName[$0.categoryID]! })
                    #expect(present.contains(correct))
                    #expect(options.filter { present.contains($0) } == [correct], "exactly one option is present")
                } else {
                    let name = row.meta["category"] as! String
                    #expect(question.contains(English.plural(name)))
                    let instances = anns.filter { categoryName[$0.categoryID] == name }
                    #expect(!instances.contains { $0.iscrowd })
                    #expect(String(instances.count) == correct)
                }
                groups[row.groupID!, default: []].append(row)
            case "multiturn":
                #expect(row.turns.count >= 4)
                for (i, turn) in row.turns.enumerated() where i > 0 { #expect(!turn.value.contains("<image>")) }
                let items = row.meta["turns"] as! [[String: Any]]
                #expect(items.count * 2 == row.turns.count)
                for (i, item) in items.enumerated() {
                    var q = row.turns[2 * i].value
                    if i == 0 { q = String(q.dropFirst("<image>\n".count)) }
                    checkItem(item, question: q, answer: row.turns[2 * i + 1].value, image: image)
                }
            default:
                Issue.record("unexpected kind \(row.kind)")
            }
        }
        for kind in TemplateKind.allCases { #expect((kinds[kind.rawValue] ?? 0) > 0, "kind \(kind) produced") }
        #expect(kinds["caption"] == 3 * coco.images.count, "3 per image: coco-mini images all have ≥ 3 captions")
        // Yes/no balanced within 5%, mostly with a same-supercategory "no".
        #expect(abs(Double(yes - no)) / Double(yes + no) <= 0.05)
        #expect(sameSuper * 2 > no)
        // Circular groups complete: 4 rotations with the same answer, each letter once; yes/no groups are pairs.
        for (group, members) in groups {
            if members[0].kind == "mcq" {
                #expect(members.count == 4, "group \(group)")
                #expect(Set(members.map { $0.meta["answer"] as! String }).count == 1)
                #expect(Set(members.map { $0.meta["letter"] as! String }) == ["A", "B", "C", "D"])
                #expect(Set(members.map { $0.meta["rotation"] as! Int }) == [0, 1, 2, 3])
            } else {
                #expect(members.count == 2 && Set(members.map { $0.turns[1].value }) == ["Yes", "No"], "pair \(group)")
            }
        }
    }

    @Test func theSameSeedGivesTheSameBytes() throws {
        var outputs: [[String]] = []
        for seed: UInt64 in [5, 5, 6] {
            let dir = try TestPaths.temporaryDirectory("seed")
            defer { try? FileManager.default.removeItem(at: dir) }
            let catalog = try coco.catalog(in: dir)
            _ = try generateTemplates(catalog, TemplateOptions(seed: seed, perImage: 2, circular: true))
            outputs.append(try storedInstructions(catalog).map { "\($0.key)|\($0.groupID ?? "")|\($0.conversationsText)|\($0.metaText)" })
        }
        #expect(outputs[0] == outputs[1])
        #expect(outputs[0] != outputs[2], "another seed draws other phrasings")
        #expect(outputs[0].count > 500)
    }

    @Test func runningTwiceAddsNothing() throws {
        let dir = try TestPaths.temporaryDirectory("idem")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try coco.catalog(in: dir)
        let first = try generateTemplates(catalog, TemplateOptions(seed: 1, kinds: [.caption, .yesno]))
        let second = try generateTemplates(catalog, TemplateOptions(seed: 1, kinds: [.caption, .yesno]))
        #expect(first > 0)
        #expect(second == 0)
        let total = try catalog.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM instructions") }
        #expect(total == first)
    }

    /// The reference trainer's pretraining data: one caption per 32×32 synthetic shape, `--per-image 1`.
    @Test func singleCaptionImagesGiveOnePretrainingPairEach() throws {
        let dir = try TestPaths.temporaryDirectory("shapes")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try Catalog(workspace: Workspace(root: dir.path))
        let captions = ["a red circle on the left", "a blue square at the top", "a green triangle on the right"]
        try catalog.write { db in
            try db.execute(sql: "INSERT INTO sources (kind, name, uri, fingerprint, created_at) VALUES ('synth', 'shapes', 'x', 'x', 'now')")
            for (i, caption) in captions.enumerated() {
                try db.execute(sql: """
                    INSERT INTO images (source_id, key, external_id, file_name, width, height, status) VALUES (1, ?, ?, ?, 32, 32, 'ok')
                    """, arguments: ["shapes_\(i)", i, "\(i).png"])
                try db.execute(sql: "INSERT INTO captions (image_id, external_id, text) VALUES (?, ?, ?)",
                               arguments: [db.lastInsertedRowID, i, caption])
            }
        }
        _ = try generateTemplates(catalog, TemplateOptions(seed: 1, kinds: [.caption], perImage: 1))
        let rows = try storedInstructions(catalog)
        #expect(rows.count == 3)
        for row in rows {
            let i = Int(row.imageKey.split(separator: "_").last!)!
            #expect(row.turns.count == 2)
            #expect(row.turns[0].value.hasPrefix("<image>\n"))
            #expect(Phrasings.brief.contains(String(row.turns[0].value.dropFirst(8))))
            #expect(row.turns[1].value == captions[i])
        }
        // Every kind copes with images that have no objects: nothing false is produced.
        _ = try generateTemplates(catalog, TemplateOptions(seed: 1, kinds: TemplateKind.allCases, perImage: 2))
        let all = try storedInstructions(catalog)
        #expect(Set(all.map(\.kind)) == ["caption", "detail"])
    }

    @Test func randomStreamsAreStableAndIndependent() {
        var a = InstructRandom(seed: 1, key: "k", kind: "caption")
        var b = InstructRandom(seed: 1, key: "k", kind: "caption")
        var c = InstructRandom(seed: 1, key: "k", kind: "detail")
        let sa = (0..<8).map { _ in a.next() }
        #expect(sa == (0..<8).map { _ in b.next() })
        #expect(sa != (0..<8).map { _ in c.next() })
        var counts = [0, 0, 0]
        for _ in 0..<3000 { counts[a.below(3)] += 1 }
        #expect(counts.allSatisfy { $0 > 900 && $0 < 1100 })
        #expect(English.box([0, 0.125, 1, 0.5]) == "[0.00, 0.13, 1.00, 0.50]")
        #expect(English.plural("person") == "people" && English.plural("bus") == "buses" && English.plural("wine glass") == "wine glasses")
        #expect(English.withArticle("apple") == "an apple" && English.withArticle("dog") == "a dog")
    }

    /// Issue 12 case 5: boxes are stated in the frame of the pixels (pad: LLaVA-1.5's padded square; crop: the
    /// centre crop, dropping boxes it cuts), and each instruction stating a box records its frame.
    @Test(arguments: [BoxFrame.original, .pad, .crop])
    func groundingBoxesAreInTheFrameOfThePixels(frame: BoxFrame) throws {
        let dir = try TestPaths.temporaryDirectory("frame-\(frame.rawValue)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try coco.catalog(in: dir)
        _ = try generateTemplates(catalog, TemplateOptions(seed: 5, kinds: [.grounding, .multiturn, .caption], perImage: 3, boxFrame: frame))
        let imageByKey = Dictionary(uniqueKeysWithValues: coco.images.map { (CocoMini.key($0), $0) })
        var boxes = 0
        for row in try storedInstructions(catalog) {
            let image = imageByKey[row.imageKey]!
            let items = row.kind == "multiturn" ? (row.meta["turns"] as! [[String: Any]]) : [row.meta]
            let stated = items.filter { $0["box"] != nil }
            // Every kind but captions depends on the frame: it records it, and a frame other than original is in its key.
            #expect((row.meta["box_frame"] as? String) == (row.kind == "caption" ? nil : frame.rawValue), "\(row.key)")
            #expect(row.key.hasSuffix("-\(frame.rawValue)") == (row.kind != "caption" && frame != .original), "\(row.key)")
            for item in stated {
                let object = coco.annotations.first { $0.id == item["object_id"] as! Int }!
                let (x, y, w, h) = (object.bbox[0], object.bbox[1], object.bbox[2], object.bbox[3])
                let (W, H) = (Double(image.width), Double(image.height))
                var expected: [Double]
                switch frame {
                case .original:
                    expected = [x / W, y / H, (x + w) / W, (y + h) / H]
                case .pad:
                    let side = Double(max(image.width, image.height))
                    let ox = Double((max(image.width, image.height) - image.width) / 2)
                    let oy = Double((max(image.width, image.height) - image.height) / 2)
                    expected = [(x + ox) / side, (y + oy) / side, (x + w + ox) / side, (y + h + oy) / side]
                case .crop:
                    let side = min(W, H), ox = (W - side) / 2, oy = (H - side) / 2
                    expected = [(x - ox) / side, (y - oy) / side, (x + w - ox) / side, (y + h - oy) / side]
                    #expect(expected.allSatisfy { $0 >= -0.5 / side && $0 <= 1 + 0.5 / side }, "the crop cuts \(row.key)'s box")
                }
                expected = expected.map { (min(max($0, 0), 1) * 100).rounded() / 100 }
                #expect((item["box"] as! [Double]) == expected, "\(row.key)")
                boxes += 1
            }
        }
        #expect(boxes > 30)
    }

    /// Crop frame: a count counts only the instances wholly inside the crop and is not asked when the crop cuts one;
    /// "yes" is asked only for a category with an instance wholly inside; "no" only for one absent from the whole
    /// image. The other frames count every instance.
    @Test(arguments: [BoxFrame.original, .crop])
    func countsAndPresenceLeaveOutWhatTheCropCuts(frame: BoxFrame) throws {
        let dir = try TestPaths.temporaryDirectory("crop-counts-\(frame.rawValue)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try coco.catalog(in: dir)
        _ = try generateTemplates(catalog, TemplateOptions(seed: 2, kinds: [.count, .yesno, .multiturn], perImage: 3, boxFrame: frame))
        let imageByKey = Dictionary(uniqueKeysWithValues: coco.images.map { (CocoMini.key($0), $0) })
        let names = Dictionary(uniqueKeysWithValues: coco.categories.map { ($0.id, $0.name) })
        var counted = 0, cutCounts = 0
        for row in try storedInstructions(catalog) {
            let image = imageByKey[row.imageKey]!
            let objects = coco.annotations.filter { $0.imageID == image.id }
            func inside(_ a: CocoMini.Annotation) -> Bool {
                BoxFrame.crop.normalized(Box(x: a.bbox[0], y: a.bbox[1], width: a.bbox[2], height: a.bbox[3]),
                                         imageWidth: image.width, imageHeight: image.height) != nil
            }
            func instances(_ name: String) -> [CocoMini.Annotation] { objects.filter { names[$0.categoryID] == name } }
            let items = row.kind == "multiturn" ? (row.meta["turns"] as! [[String: Any]]) : [row.meta]
            for item in items {
                let all = instances(item["category"] as? String ?? "")
                switch item["type"] as? String {
                case "count":
                    let n = item["count"] as! Int
                    if frame == .crop {
                        #expect(n == all.filter(inside).count && n > 0, "\(row.key): \(n) counted")
                        // No instance of a counted category is cut by the crop's edge.
                        let window = BoxFrame.crop.window(imageWidth: image.width, imageHeight: image.height)
                        let cut = all.filter { a in
                            !inside(a) && a.bbox[0] < window.x + window.width && a.bbox[0] + a.bbox[2] > window.x
                                && a.bbox[1] < window.y + window.height && a.bbox[1] + a.bbox[3] > window.y
                        }
                        #expect(cut.isEmpty, "\(row.key): the crop cuts a counted \(item["category"]!)")
                        if all.count != n { cutCounts += 1 }
                    } else {
                        #expect(n == all.count)
                    }
                    counted += 1
                case "yesno":
                    if item["answer"] as? String == "yes" {
                        #expect(frame == .crop ? all.contains(where: inside) : !all.isEmpty, "\(row.key)")
                    } else {
                        #expect(all.isEmpty, "\(row.key): 'no' for a category in the image")
                    }
                default:
                    break
                }
            }
        }
        #expect(counted > 40)
        // Some counts differ from the whole image's: the crop left instances out (wholly outside it).
        if frame == .crop { #expect(cutCounts > 0) }
    }

    /// Generating again with another --box-frame adds the frame's rows beside the first ones (captions, which do
    /// not depend on the frame, once), so a changed frame needs no fresh workspace.
    @Test func anotherFrameAddsRowsBesideTheFirst() throws {
        let dir = try TestPaths.temporaryDirectory("frame-again")
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try coco.catalog(in: dir)
        _ = try generateTemplates(catalog, TemplateOptions(seed: 5, kinds: [.caption, .grounding, .count], boxFrame: .original))
        let first = try storedInstructions(catalog)
        _ = try generateTemplates(catalog, TemplateOptions(seed: 5, kinds: [.caption, .grounding, .count], boxFrame: .pad))
        let both = try storedInstructions(catalog)
        let added = both.filter { row in !first.contains { $0.key == row.key } }
        #expect(!added.isEmpty && added.allSatisfy { $0.kind != "caption" && ($0.meta["box_frame"] as? String) == "pad" })
        #expect(both.filter { $0.kind == "caption" }.count == first.filter { $0.kind == "caption" }.count)
        #expect(added.count == first.filter { $0.kind != "caption" }.count)
    }
}
