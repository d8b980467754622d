import Foundation
import Testing
import VLMCore
@testable import VLMPipeline

/// Image keys unique by construction, and the box rules ingest applies.
struct IngestRulesTests {
    @Test func namesThatEscapeAlikeGetDistinctHashedKeys() {
        let items = [("1", "x.jpg"), ("2", "x.png"), ("3", "a b.jpg"), ("4", "a_b.jpg"), ("5", "solo.jpg"),
                     ("6", "a_b/c.jpg"), ("7", "a/b_c.jpg")].map { (identity: $0.0, name: $0.1) }
        let keys = ImageKeys.assign(split: "s", items: items, existing: [:], taken: [])
        #expect(Set(keys).count == keys.count)
        #expect(keys[4] == "s_solo")
        for i in [0, 1, 2, 3, 5, 6] {
            #expect(keys[i].hasPrefix(ImageKeys.base(split: "s", name: items[i].name) + "-"), "\(keys[i])")
            #expect(keys[i].count == ImageKeys.base(split: "s", name: items[i].name).count + 9)
        }
        // The same input gives the same keys, whatever the order.
        let reversed = ImageKeys.assign(split: "s", items: items.reversed(), existing: [:], taken: [])
        #expect(Array(reversed.reversed()) == keys)
    }

    @Test func keysHeldElsewhereAreNeverReused() {
        let items = [(identity: "1", name: "x.jpg")]
        let taken: Set<String> = ["s_x"]
        let key = ImageKeys.assign(split: "s", items: items, existing: [:], taken: taken)[0]
        #expect(key != "s_x" && key.hasPrefix("s_x-"))
        // A taken hashed key is lengthened.
        let longer = ImageKeys.assign(split: "s", items: items, existing: [:], taken: taken.union([key]))[0]
        #expect(longer != key && longer.hasPrefix(key))
        // An image already stored keeps its key.
        #expect(ImageKeys.assign(split: "s", items: items, existing: ["1": "s_old"], taken: taken) == ["s_old"])
    }

    @Test func boxesAreKeptClippedOrRejected() {
        func check(_ b: [Double]) -> BoxCheck.Verdict {
            BoxCheck.check(x: b[0], y: b[1], w: b[2], h: b[3], imageWidth: 100, imageHeight: 50)
        }
        #expect(check([10, 10, 20, 20]) == .keep)
        #expect(check([0, 0, 100, 50]) == .keep)
        guard case .clipped(0, 0, 50, 40, let message, true) = check([-10, -10, 60, 50]) else {
            Issue.record("negative origin overlapping the image is clipped"); return
        }
        #expect(message.contains("clipped to [0, 0, 50, 40]"))
        guard case .clipped(0, 0, 100, 50, _, true) = check([0, 0, 1000, 500]) else { Issue.record("10x is clipped"); return }
        guard case .clipped(90, 0, 10, 10, _, false) = check([90, 0, 10.5, 10]) else { Issue.record("half a pixel is clipped quietly"); return }
        for (box, reason) in [([100.0, 0, 5, 5], "outside the 100x50 image"), ([-30, -30, 20, 20], "outside"),
                              ([1e308, 1e308, 1e308, 1e308], "outside"), ([5, 5, .infinity, 5], "not finite"),
                              ([5, 5, 0, 5], "zero area"), ([5, 5, -1, 5], "negative")] {
            guard case .rejected(let message) = check(box) else { Issue.record("\(box) must be rejected"); continue }
            #expect(message.contains(reason), "\(message)")
        }
        // Without a known image size only the box itself is checked.
        #expect(BoxCheck.check(x: 5000, y: 0, w: 5, h: 5, imageWidth: nil, imageHeight: nil) == .keep)
    }
}
