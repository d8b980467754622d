import Foundation
import Testing
import VLMCatalog
import VLMCore
import VLMImage
@testable import VLMLoader

@Suite(.serialized) struct StreamTests {
    let root: String
    let made: [MadeSample]
    let index: DatasetIndex

    init() throws {
        root = temporaryFolder("stream")
        let (catalog, made) = try makeWorkspace(root, shards: 5, perShard: 23, lastShard: 11)
        self.made = made
        index = try DatasetIndex.load(catalog: catalog)
    }

    func loader(world: Int = 1, rank: Int = 0, workers: Int = 0, unit: Int = 1, remainder: RemainderPolicy = .dropLast,
                spec: OrderSpec = OrderSpec(seed: 17, shuffle: .block, blockSize: 8, partitions: 4)) throws -> Loader {
        try Loader(datasets: [LoaderDataset(index: index, source: LocalShardSource(root: root))],
                   options: LoaderOptions(order: spec, topology: Topology(rank: rank, worldSize: world), workers: workers,
                                          prefetch: 3, unit: unit, remainder: remainder))
    }

    @Test func indexLoadsFromTheCatalog() {
        #expect(index.shards.count == 5)
        #expect(index.samples.count == 103)
        #expect(index.samples.map(\.key) == made.map(\.key))
        #expect(index.shards.map(\.firstSample) == [0, 23, 46, 69, 92])
    }

    @Test func bytesMatchWhatWasWritten() throws {
        let stream = try loader(workers: 2).samples(epoch: 0)
        var byKey: [String: LoadedSample] = [:]
        while let sample = try stream.next() { byKey[sample.key] = sample }
        #expect(byKey.count == made.count)
        for m in made {
            let s = try #require(byKey[m.key])
            #expect(s.inputIds == m.inputIds)
            #expect(s.labels == m.labels)
            #expect(s.pixels == m.pixels)
            #expect(s.pixelShape == (m.pixels.isEmpty ? [] : [1, 4, 12]))
            #expect(String(decoding: s.meta, as: UTF8.self) == "{\"key\":\"\(m.key)\"}")
        }
    }

    @Test(arguments: [(1, 0), (1, 3), (2, 1), (3, 2), (4, 4), (8, 3)])
    func everyKeyExactlyOncePerEpoch(world: Int, workers: Int) throws {
        var all: [String] = []
        var perRank: [Int] = []
        var dropped = 0
        for rank in 0..<world {
            let stream = try loader(world: world, rank: rank, workers: workers).samples(epoch: 1)
            let got = try keys(stream)
            perRank.append(got.count)
            all += got
            dropped = stream.report.droppedGlobal
        }
        #expect(Set(perRank).count == 1)
        #expect(all.count == Set(all).count)
        #expect(all.count + dropped == made.count)
        #expect(dropped == made.count % world)
        // with padding, every key is there and the extras are repeats
        var padded: [String] = []
        for rank in 0..<world {
            padded += try keys(loader(world: world, rank: rank, workers: workers, remainder: .pad).samples(epoch: 1))
        }
        #expect(Set(padded) == Set(made.map(\.key)))
        #expect(padded.count % world == 0 && padded.count - made.count < world)
    }

    @Test func workerCountNeverChangesARanksOrder() throws {
        let a = try keys(loader(world: 3, rank: 1, workers: 0).samples(epoch: 0))
        let b = try keys(loader(world: 3, rank: 1, workers: 1).samples(epoch: 0))
        let c = try keys(loader(world: 3, rank: 1, workers: 5).samples(epoch: 0))
        #expect(a == b && b == c)
    }

    @Test func resumeContinuesExactly() throws {
        let full = try keys(loader(workers: 2).samples(epoch: 2))
        for k in [0, 1, 37, 102] {
            let first = try loader(workers: 2).samples(epoch: 2)
            let head = try keys(first, limit: k)
            let state = first.state()
            #expect(state.consumed == k)
            let rest = try keys(loader(workers: 3).samples(resuming: state))
            #expect(head + rest == full)
        }
        // at the end of the epoch the state points at the next one
        let whole = try loader().samples(epoch: 2)
        _ = try keys(whole)
        #expect(whole.state().epoch == 3 && whole.state().consumed == 0)
    }

    /// Stop after k samples per rank with W=4; resume with W=3 and W=8: the rest is exactly the complement.
    @Test(arguments: [3, 8])
    func elasticResume(newWorld: Int) throws {
        var seen: [String] = []
        var state: LoaderState?
        for rank in 0..<4 {
            let stream = try loader(world: 4, rank: rank, workers: 2).samples(epoch: 0)
            seen += try keys(stream, limit: 9)
            if rank == 0 { state = stream.state() } else { #expect(stream.state() == state) }
        }
        let saved = try #require(state)
        #expect(saved.consumed == 36)
        var rest: [String] = []
        for rank in 0..<newWorld {
            rest += try keys(loader(world: newWorld, rank: rank, workers: 1, remainder: .pad).samples(resuming: saved))
        }
        #expect(rest.count % newWorld == 0)
        // The non-padding part of the rest is exactly the complement.
        var nonPad: [String] = []
        for rank in 0..<newWorld {
            let stream = try loader(world: newWorld, rank: rank, workers: 1, remainder: .pad).samples(resuming: saved)
            while let s = try stream.next() { if !s.isPad { nonPad.append(s.key) } }
        }
        #expect(nonPad.count == Set(nonPad).count)
        #expect(Set(nonPad) == Set(made.map(\.key)).subtracting(seen))
        #expect(Set(seen).count == 36)
    }

    @Test func fingerprintMismatchIsAClearError() throws {
        let stream = try loader().samples(epoch: 0)
        _ = try keys(stream, limit: 5)
        var state = stream.state()
        state.fingerprint = "0123456789abcdef"
        #expect {
            try loader().samples(resuming: state)
        } throws: { error in
            "\(error)".contains("fingerprint") && "\(error)".contains("shards changed")
        }
        var other = stream.state()
        other.seed = 99
        #expect(throws: VLMError.self) { try loader().samples(resuming: other) }
        try state.save(to: root + "/state.json")
        #expect(try LoaderState.load(from: root + "/state.json") == state)
    }

    @Test func missingShardErrorsOrIsSkipped() throws {
        var broken = index
        broken.shards[2].path = "shards/gone.tar"
        let erroring = try Loader(datasets: [LoaderDataset(index: broken, source: LocalShardSource(root: root))],
                                  options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2))
        #expect {
            _ = try keys(erroring.samples(epoch: 0))
        } throws: { "\($0)".contains("gone.tar") }
        let skipping = try Loader(datasets: [LoaderDataset(index: broken, source: LocalShardSource(root: root))],
                                  options: LoaderOptions(order: OrderSpec(seed: 1), workers: 2, onMissing: .skip))
        let stream = try skipping.samples(epoch: 0)
        let got = try keys(stream)
        #expect(got.count == made.count - 23)
        #expect(stream.report.skipped == 23)
        #expect(stream.report.missingShards == ["train-000002.tar"])
    }

    @Test func mixtureOfTwoWorkspaces() throws {
        let other = temporaryFolder("mix")
        let (catalog, _) = try makeWorkspace(other, shards: 2, perShard: 30, prefix: "t")
        let second = try DatasetIndex.load(catalog: catalog)
        let loader = try Loader(datasets: [
            LoaderDataset(index: index, source: LocalShardSource(root: root), policy: .weight(1)),
            LoaderDataset(index: second, source: LocalShardSource(root: other), policy: .weight(1)),
        ], options: LoaderOptions(order: OrderSpec(seed: 2), workers: 2, epochSize: 100))
        let got = try keys(loader.samples(epoch: 0))
        #expect(got.count == 100)
        #expect(got.filter { $0.hasPrefix("t") }.count == 50)
        #expect(Set(got.filter { $0.hasPrefix("t") }).count == 50)
        try? FileManager.default.removeItem(atPath: other)
    }

    @Test func packedBatchesKeepSegmentsApart() throws {
        let stream = try loader(workers: 2).batches(epoch: 0, resuming: nil,
                                                     options: BatchOptions(batchSize: 4, packContext: 64, packOpenRows: 4))
        let byKey = Dictionary(uniqueKeysWithValues: made.map { ($0.key, $0) })
        var seen: [String] = []
        var batches = 0
        while let batch = try stream.next() {
            batches += 1
            var k = 0
            var cu = 0
            for r in 0..<batch.rows {
                var column = 0
                var segment: Int32 = 0
                var model = 0
                while column < batch.length && batch.segmentIds[r * batch.length + column] != 0 {
                    segment += 1
                    let sample = try #require(byKey[batch.keys[k]])
                    k += 1
                    let n = sample.inputIds.count
                    let cells = (r * batch.length + column)..<(r * batch.length + column + n)
                    // One segment is exactly one sample: its ids, its own segment id, positions from 0.
                    #expect(Array(batch.inputIds[cells]) == sample.inputIds)
                    #expect(batch.segmentIds[cells].allSatisfy { $0 == segment })
                    #expect(Array(batch.positionIds[cells]) == (0..<n).map(Int32.init))
                    #expect(batch.attentionMask[cells].allSatisfy { $0 == 1 })
                    // No prediction across a boundary; the rest of the labels are the sample's.
                    #expect(batch.labels[cells.lowerBound] == ignoreIndex)
                    #expect(Array(batch.labels[cells.dropFirst()]) == Array(sample.labels.dropFirst()))
                    cu += n
                    #expect(batch.cuSeqlens.contains(Int32(cu)))
                    model += sample.inputIds.count - (sample.pixels.isEmpty ? 0 : 1) + sample.imageTokens
                    column += n
                }
                #expect(model <= 64)
                // Padding: pad id, -100, mask 0, segment 0.
                for c in column..<batch.length {
                    let i = r * batch.length + c
                    #expect(batch.inputIds[i] == 0 && batch.labels[i] == ignoreIndex && batch.attentionMask[i] == 0 && batch.segmentIds[i] == 0)
                }
            }
            #expect(k == batch.keys.count)
            #expect(batch.paddingFraction >= 0 && batch.paddingFraction < 1)
            // The block-diagonal mask from the segment ids lets no token see another segment's.
            for r in 0..<batch.rows {
                let seg = batch.segmentIds[(r * batch.length)..<((r + 1) * batch.length)]
                for (i, a) in seg.enumerated() where a != 0 {
                    for (j, b) in seg.enumerated() where j <= i && b != 0 {
                        let allowed = a == b
                        #expect(allowed == (batch.segmentIds[r * batch.length + i] == batch.segmentIds[r * batch.length + j]))
                    }
                }
            }
            seen += batch.keys
        }
        #expect(Set(seen).count == seen.count)
        #expect(seen.count + stream.overlong.count == made.count)
        #expect(batches > 0)
        #expect(try #require(stream.packingPaddingFraction) < 0.5)
    }

    @Test func collationPadsAndNormalizes() throws {
        let samples = try keys(loader().samples(epoch: 0), limit: 0)
        #expect(samples.isEmpty)
        let stream = try loader().samples(epoch: 0)
        var picked: [LoadedSample] = []
        while picked.count < 5, let s = try stream.next() { picked.append(s) }
        let collator = Collator(options: CollateOptions(padId: 7, pixelFormat: .float32(.clip), padToMultipleOf: 8))
        let batch = try collator.collate(picked)
        let longest = picked.map(\.inputIds.count).max()!
        #expect(batch.length == (longest + 7) / 8 * 8)
        for (r, s) in picked.enumerated() {
            let row = (r * batch.length)..<((r + 1) * batch.length)
            let ids = Array(batch.inputIds[row])
            #expect(Array(ids.prefix(s.inputIds.count)) == s.inputIds)
            #expect(ids.dropFirst(s.inputIds.count).allSatisfy { $0 == 7 })
            #expect(Array(batch.labels[row].prefix(s.labels.count)) == s.labels)   // unpacked: labels untouched
            #expect(batch.labels[row].dropFirst(s.labels.count).allSatisfy { $0 == -100 })
            #expect(batch.attentionMask[row].filter { $0 == 1 }.count == s.inputIds.count)
            if let p = s.inputIds.firstIndex(of: imageTokenId) {
                #expect(zip(batch.imageRows, batch.imageColumns).contains { $0 == Int32(r) && $1 == Int32(p) })
            }
        }
        let images = picked.filter { !$0.pixels.isEmpty }
        #expect(batch.pixelShape == [images.count, 4, 12])
        let raw = images.flatMap(\.pixels)
        #expect(batch.pixelsFloat.count == raw.count)
        #expect(batch.pixelsFloat == Self.loaderFormula(raw, .clip))
        let u8 = try Collator(options: CollateOptions(pixelFormat: .uint8)).collate(picked)
        #expect(u8.pixelsUInt8 == raw && u8.pixelsFloat.isEmpty)
        #expect(Normalization.siglip.apply([0, 255, 128])[1] == 1)
    }

    /// The loader's own formula before it used VLMImage's `Normalization`: `(Float(v) / 255 - mean) / std` in float32.
    static func loaderFormula(_ pixels: [UInt8], _ n: Normalization) -> [Float] {
        pixels.enumerated().map { i, v in (Float(v) / 255 - Float(n.mean[i % 3])) / Float(n.std[i % 3]) }
    }

    /// One normalization: collating with VLMImage's tables gives, bit for bit, the values the loader's own copy
    /// gave, for every byte value, every channel and every preset.
    @Test(arguments: ["clip", "siglip", "imagenet"])
    func collateNormalizationIsTheLoaderFormulaBitForBit(_ name: String) throws {
        let normalization = try #require(Normalization.preset(name))
        var every: [UInt8] = []   // each byte value in each channel
        for v in 0..<256 {
            every += [UInt8(v), UInt8(255 - v), UInt8((v * 7) % 256)]
        }
        let got: [UInt32] = normalization.apply(every).map { $0.bitPattern }
        let expected: [UInt32] = Self.loaderFormula(every, normalization).map { $0.bitPattern }
        #expect(got == expected)
    }

    @Test func lengthGroupingLoaderKeepsCoverage() throws {
        let grouped = try loader(spec: OrderSpec(seed: 3, shuffle: .block, blockSize: 8, partitions: 2, groupMegabatch: 8))
        let got = try keys(grouped.samples(epoch: 0))
        #expect(got.sorted() == made.map(\.key).sorted())
        let hasImage = Dictionary(uniqueKeysWithValues: made.map { ($0.key, !$0.pixels.isEmpty) })
        let megas = stride(from: 0, to: got.count, by: 8).map { Array(got[$0..<min($0 + 8, got.count)]) }
        for mega in megas.dropLast() { #expect(Set(mega.map { hasImage[$0]! }).count == 1) }
    }
}
