import VLMCore
import Testing
@testable import VLMLoader

@Suite struct OrderTests {
    @Test func splitMixMatchesReferenceVector() {
        // Reference values of SplitMix64 seeded with 1234567 (from the published C reference implementation).
        var rng = SplitMix64(seed: 1_234_567)
        #expect(rng.next() == 6_457_827_717_110_365_317)
        #expect(rng.next() == 3_203_168_211_198_807_973)
        #expect(rng.next() == 9_817_491_932_198_370_423)
    }

    @Test func belowIsUniformEnoughAndInRange() {
        var rng = SplitMix64(seed: 9)
        var counts = [Int](repeating: 0, count: 7)
        for _ in 0..<70_000 { counts[rng.below(7)] += 1 }
        for c in counts { #expect(abs(c - 10_000) < 500) }
    }

    @Test(arguments: ShuffleMode.allCases)
    func orderIsAPermutation(mode: ShuffleMode) {
        let sizes = [10, 7, 0, 13, 5]
        let order = SampleOrder(shardSizes: sizes, fingerprint: "fp", epoch: 3, spec: OrderSpec(seed: 5, shuffle: mode, blockSize: 4, partitions: 3))
        #expect(order.positions.map(Int.init).sorted() == Array(0..<35))
        if mode == .none { #expect(order.positions.map(Int.init) == Array(0..<35)) }
    }

    @Test func orderIsPureAndDependsOnEachInput() {
        let sizes = [50, 50, 50, 50]
        let spec = OrderSpec(seed: 1, shuffle: .block, blockSize: 16, partitions: 4)
        let a = SampleOrder(shardSizes: sizes, fingerprint: "fp", epoch: 0, spec: spec).positions
        #expect(a == SampleOrder(shardSizes: sizes, fingerprint: "fp", epoch: 0, spec: spec).positions)
        #expect(a != SampleOrder(shardSizes: sizes, fingerprint: "fp", epoch: 1, spec: spec).positions)
        #expect(a != SampleOrder(shardSizes: sizes, fingerprint: "other", epoch: 0, spec: spec).positions)
        var seed2 = spec
        seed2.seed = 2
        #expect(a != SampleOrder(shardSizes: sizes, fingerprint: "fp", epoch: 0, spec: seed2).positions)
    }

    @Test func shardModeKeepsSamplesOfAShardTogether() {
        let sizes = [5, 5, 5, 5, 5, 5]
        let order = SampleOrder(shardSizes: sizes, fingerprint: "x", epoch: 0, spec: OrderSpec(seed: 3, shuffle: .shard, partitions: 1))
        let shards = order.positions.map { Int($0) / 5 }
        for run in stride(from: 0, to: 30, by: 5) {
            #expect(Set(shards[run..<run + 5]).count == 1)
            #expect(order.positions[run..<run + 5].map { Int($0) % 5 } == [0, 1, 2, 3, 4])
        }
        #expect(shards.enumerated().contains { $0.offset / 5 != $0.element })   // shards did move
    }

    @Test func blockModeShufflesOnlyInsideBlocks() {
        let sizes = [40]
        let order = SampleOrder(shardSizes: sizes, fingerprint: "x", epoch: 0, spec: OrderSpec(seed: 3, shuffle: .block, blockSize: 8, partitions: 1))
        for block in stride(from: 0, to: 40, by: 8) {
            #expect(Set(order.positions[block..<block + 8].map(Int.init)) == Set(block..<block + 8))
        }
        #expect(order.positions.map(Int.init) != Array(0..<40))
    }

    @Test func partitionsInterleaveContiguousSpans() {
        let interleaved = SampleOrder.interleave((0..<10).map(Int32.init), partitions: 3)
        // spans [0,3) [3,6) [6,10)
        #expect(interleaved == [0, 3, 6, 1, 4, 7, 2, 5, 8, 9])
    }

    @Test func rankSlicesCoverEveryPositionOnce() {
        for world in [1, 2, 3, 4, 7] {
            for n in [0, 1, 10, 13] {
                for consumed in [0, 3] where consumed <= n {
                    let pad = (0..<world).map { RankSlice(epochLength: n, consumed: consumed, topology: Topology(rank: $0, worldSize: world), remainder: .pad) }
                    var seen: [Int] = []
                    for slice in pad {
                        for j in 0..<slice.count where !slice.globalPosition(j).isPad { seen.append(slice.globalPosition(j).position) }
                    }
                    #expect(seen.sorted() == Array(consumed..<n))
                    #expect(Set(pad.map(\.count)).count == 1)
                    let drop = (0..<world).map { RankSlice(epochLength: n, consumed: consumed, topology: Topology(rank: $0, worldSize: world), remainder: .dropLast) }
                    let total = drop.reduce(0) { $0 + $1.count }
                    #expect(total + drop[0].dropped == n - consumed)
                    #expect(drop[0].dropped < world)
                }
            }
        }
    }

    @Test func topologyFromEnvironment() throws {
        let torch = try Topology.fromEnvironment(["RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"])
        #expect(torch == Topology(rank: 3, worldSize: 8, localRank: 1))
        let slurm = try Topology.fromEnvironment(["SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"])
        #expect(slurm == Topology(rank: 2, worldSize: 4, localRank: 0))
        #expect(try Topology.fromEnvironment([:]) == Topology())
        #expect(throws: (any Error).self) { try Topology.fromEnvironment(["RANK": "4", "WORLD_SIZE": "4"]) }
        #expect(throws: (any Error).self) { try Topology.fromEnvironment(["RANK": "x"]) }
    }

    @Test func mixtureTakesExactSharesAndKeepsProportionsThroughout() {
        let a = PlanComponent(fingerprint: "a", shardSizes: [300, 300], policy: .weight(3))
        let b = PlanComponent(fingerprint: "b", shardSizes: [100, 100], policy: .weight(1))
        let plan = EpochPlan(components: [a, b], epoch: 0, spec: OrderSpec(seed: 11), epochSize: 800)
        #expect(plan.takes == [600, 200])
        #expect(plan.count == 800)
        // Within every window of 200 the share of dataset 0 stays near 3/4.
        for start in stride(from: 0, to: 800, by: 200) {
            let share = Double(plan.refs[start..<start + 200].filter { $0.dataset == 0 }.count) / 200
            #expect(abs(share - 0.75) < 0.1)
        }
        // b is upsampled (200 of 200: one whole pass), a downsampled: no sample twice within a pass.
        let bSamples = plan.refs.filter { $0.dataset == 1 }.map(\.sample)
        #expect(Set(bSamples).count == 200)
        let again = EpochPlan(components: [a, b], epoch: 0, spec: OrderSpec(seed: 11), epochSize: 800)
        #expect(again.refs == plan.refs)
        #expect(again.fingerprint == plan.fingerprint)
    }

    @Test func mixtureRepeatAndChoose() {
        let a = PlanComponent(fingerprint: "a", shardSizes: [10], policy: .repeat(2.5))
        let b = PlanComponent(fingerprint: "b", shardSizes: [10, 10], policy: .choose(7))
        let plan = EpochPlan(components: [a, b], epoch: 2, spec: OrderSpec(seed: 1, blockSize: 4))
        #expect(plan.takes == [25, 7])
        let aSamples = plan.refs.filter { $0.dataset == 0 }.map(\.sample)
        var counts: [Int32: Int] = [:]
        for s in aSamples { counts[s, default: 0] += 1 }
        #expect(counts.count == 10)
        #expect(counts.values.allSatisfy { $0 == 2 || $0 == 3 })
        #expect(Set(plan.refs.filter { $0.dataset == 1 }.map(\.sample)).count == 7)
    }

    @Test func modalityGroupingKeepsModalitiesApart() {
        var lengths: [Int] = []
        for i in 0..<200 { lengths.append(i % 3 == 0 ? -(10 + i % 17) : 50 + (i * 7) % 90) }
        var rng = SplitMix64(seed: 4)
        let order = LengthGrouping.modalityGrouped(lengths: lengths, batchSize: 4, worldSize: 2, rng: &rng)
        #expect(order.sorted() == Array(0..<200))
        let mega = 8
        let megabatches = stride(from: 0, to: 200, by: mega).map { Array(order[$0..<min($0 + mega, 200)]) }
        // All but the last mega-batch are of one modality.
        for batch in megabatches.dropLast() {
            #expect(Set(batch.map { lengths[$0] > 0 }).count == 1)
        }
        // Within a single-modality mega-batch, the per-rank chunks are sorted longest first.
        for batch in megabatches.dropLast() where batch.count == mega {
            for chunk in 0..<2 {
                let part = batch[(chunk * 4)..<(chunk * 4 + 4)].map { abs(lengths[$0]) }
                #expect(part == part.sorted(by: >))
            }
        }
    }

    @Test func splitToEvenChunksMatchesLLaVA() {
        // Python: split_to_even_chunks([0,1,2,3], [10,8,6,1], 2) == [[0, 3], [1, 2]]
        let chunks = LengthGrouping.splitToEvenChunks([0, 1, 2, 3], lengths: [10, 8, 6, 1], chunks: 2)
        #expect(chunks == [[0, 3], [1, 2]])
        #expect(LengthGrouping.splitToEvenChunks([0, 1, 2], lengths: [1, 1, 1], chunks: 2) == [[0, 2], [1]])
    }
}
