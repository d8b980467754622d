import Foundation
import Testing
import VLMCore
import VLMIO
@testable import VLMPipeline

/// The packed key assignment (flat arrays, issue 19's memory bound) gives the keys of the rule's first
/// implementation, kept here as the reference: the dictionary-of-sets version ingest used before.
struct ImageKeysPackedTests {
    static func reference(split: String, items: [(identity: String, name: String)], existing: [String: String],
                          taken: Set<String>) -> [String] {
        let bases = items.map { "\(split)_\(SampleKey.sanitize(($0.name as NSString).deletingPathExtension))" }
        var identitiesOfBase: [String: Set<String>] = [:]
        for (item, base) in zip(items, bases) { identitiesOfBase[base, default: []].insert(item.identity) }
        var used = taken.union(existing.values)
        var keys = [String?](repeating: nil, count: items.count)
        var needHash: [Int] = []
        for (i, item) in items.enumerated() {
            if let key = existing[item.identity] {
                keys[i] = key
            } else if identitiesOfBase[bases[i]]!.count == 1, !used.contains(bases[i]) {
                keys[i] = bases[i]
                used.insert(bases[i])
            } else {
                needHash.append(i)
            }
        }
        for i in needHash {
            let digest = Hashing.sha256(items[i].identity)
            var length = 8
            var key = "\(bases[i])-\(digest.prefix(length))"
            while used.contains(key) && length < digest.count {
                length += 4
                key = "\(bases[i])-\(digest.prefix(length))"
            }
            var n = 2
            while used.contains(key) { key = "\(bases[i])-\(digest)-\(n)"; n += 1 }
            keys[i] = key
            used.insert(key)
        }
        return keys.map { $0! }
    }

    /// The byte-wise stem of plain names equals Foundation's `deletingPathExtension` on every name here, and
    /// names that are not plain take Foundation's path.
    @Test func baseEqualsTheFoundationDefinition() {
        let names = ["000000000139.jpg", "x.jpg", "x.png", "a.b.jpg", "a..jpg", "a.", ".jpg", ".hidden.png", "a b.jpg",
                     "a_b.jpg", "a_b/c.jpg", "a/b_c.jpg", "dir/x.jpg", "x.jpg/", "x", "ab", "x.tar.gz", "x.j-g", "x.JPG",
                     "é.jpg", "ü/é.png", "x .jpg", "-.jpg", "_x_.jpeg", "a\\b.jpg", "x.jp g", "..", "...", "a.b/", "x.1",
                     "COCO_train2014_000000000009.jpg", "x.", "x..", "x.y.", "/abs/x.jpg", "~/x.jpg", "x.jpg.bak"]
        for name in names {
            let expected = "s_\(SampleKey.sanitize((name as NSString).deletingPathExtension))"
            #expect(ImageKeys.base(split: "s", name: name) == expected, "\(name)")
        }
        #expect(ImageKeys.plainStem("000000000139.jpg") == 12)
        #expect(ImageKeys.plainStem("dir/x.jpg") == nil && ImageKeys.plainStem("é.jpg") == nil)
    }

    /// Random names from a small alphabet (so that many escape alike), identities sometimes listed twice, some
    /// keys already in the catalog and some held elsewhere: the packed assignment equals the reference.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    func packedAssignmentEqualsTheReference(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        func pick(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        let stems = ["x", "a b", "a_b", "a-b", "é", "y", "z", "a/b", "q.r"]
        let extensions = ["jpg", "png", "JPG", ""]
        var items: [(identity: String, name: String)] = []
        for _ in 0..<(20 + pick(60)) {
            let ext = extensions[pick(extensions.count)]
            let name = stems[pick(stems.count)] + (ext.isEmpty ? "" : "." + ext)
            items.append(pick(8) == 0 && !items.isEmpty ? items[pick(items.count)] : ("\(pick(50))", name))
        }
        var existing: [String: String] = [:]
        var taken = Set<String>()
        for item in items where pick(6) == 0 { existing[item.identity] = "s_kept\(pick(5))" }
        for item in items where pick(6) == 0 {
            taken.insert(ImageKeys.base(split: "s", name: item.name) + (pick(2) == 0 ? "" : "-" + Hashing.sha256(item.identity).prefix(8)))
        }
        let expected = Self.reference(split: "s", items: items, existing: existing, taken: taken)
        #expect(ImageKeys.assign(split: "s", items: items, existing: existing, taken: taken) == expected, "seed \(seed)")
    }
}
