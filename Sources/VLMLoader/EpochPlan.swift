import VLMCore
import VLMIO

/// How much of a dataset one epoch of a mixture takes (the policies of MosaicML Streaming's `Stream`).
public enum MixPolicy: Sendable, Hashable, Codable {
    /// A share of the mixture's epoch: `weight / sum of weights × epoch size`.
    case weight(Double)
    /// The dataset `r` times per epoch (fractions take a shuffled part of one more pass): upsample or downsample.
    case `repeat`(Double)
    /// Exactly this many samples per epoch, from as many shuffled passes as needed.
    case choose(Int)

    var summary: String {
        switch self {
        case .weight(let w): return "weight=\(w)"
        case .repeat(let r): return "repeat=\(r)"
        case .choose(let n): return "choose=\(n)"
        }
    }
}

/// One dataset's identity as the order needs it.
public struct PlanComponent: Sendable {
    public var fingerprint: String
    public var shardSizes: [Int]
    public var policy: MixPolicy
    /// Signed model lengths (positive with an image, negative text-only), needed only for length grouping.
    public var signedLengths: [Int]?

    public init(fingerprint: String, shardSizes: [Int], policy: MixPolicy = .repeat(1), signedLengths: [Int]? = nil) {
        self.fingerprint = fingerprint
        self.shardSizes = shardSizes
        self.policy = policy
        self.signedLengths = signedLengths
    }

    public init(index: DatasetIndex, policy: MixPolicy = .repeat(1)) {
        self.init(fingerprint: index.fingerprint, shardSizes: index.shardSizes, policy: policy,
                  signedLengths: index.samples.map { $0.hasImage ? max(1, $0.modelLength) : -max(1, $0.modelLength) })
    }

    var count: Int { shardSizes.reduce(0, +) }
}

/// A sample of one dataset of the plan.
public struct SampleRef: Sendable, Hashable {
    public var dataset: Int32
    public var sample: Int32
}

/// The global order of one epoch over one dataset or a mixture: what every rank slices.
///
/// A single dataset with policy `.repeat(1)` gives exactly `SampleOrder`'s positions. A mixture takes each
/// dataset's share (`MixPolicy`) from its own shuffled passes (pass `r` of dataset `d` uses the seed
/// `SplitMix64(derivedFrom: ["pass", seed, d, r]).next()`), then interleaves the datasets by drawing, for each
/// position, dataset `d` with probability (its samples left) / (all samples left) from
/// `SplitMix64(derivedFrom: ["mix", seed, epoch, fingerprint])`: every dataset keeps its own order and its exact
/// share of the epoch, and the proportions hold throughout in expectation.
///
/// ```swift
/// let plan = EpochPlan(components: [PlanComponent(index: coco, policy: .weight(3)),
///                                   PlanComponent(index: text, policy: .weight(1))], epoch: 0, spec: OrderSpec(seed: 1))
/// ```
public struct EpochPlan: Sendable {
    public let epoch: Int
    public let spec: OrderSpec
    public let fingerprint: String
    public let refs: [SampleRef]
    /// Samples each dataset contributes to this epoch.
    public let takes: [Int]

    public init(components: [PlanComponent], epoch: Int, spec: OrderSpec, epochSize: Int? = nil) {
        self.epoch = epoch
        self.spec = spec
        if components.count == 1, case .repeat(1) = components[0].policy, epochSize == nil {
            let c = components[0]
            fingerprint = c.fingerprint
            let order = SampleOrder(shardSizes: c.shardSizes, fingerprint: c.fingerprint, epoch: epoch, spec: spec)
            var refs = order.positions.map { SampleRef(dataset: 0, sample: $0) }
            if spec.groupMegabatch > 0 {
                refs = EpochPlan.grouped(refs, components: components, spec: spec, epoch: epoch, fingerprint: fingerprint)
            }
            self.refs = refs
            takes = [refs.count]
            return
        }
        var text = "mixture\n"
        for c in components { text += "\(c.fingerprint)\t\(c.policy.summary)\n" }
        if let epochSize { text += "epoch_size=\(epochSize)\n" }
        fingerprint = Hashing.sha256(text)

        // Each dataset's share.
        let weighted = components.filter { if case .weight = $0.policy { return true } else { return false } }
        let weightSum = weighted.reduce(0.0) { acc, c in if case .weight(let w) = c.policy { return acc + w } else { return acc } }
        let weightedBudget = epochSize ?? weighted.reduce(0) { $0 + $1.count }
        var takes: [Int] = []
        for c in components {
            switch c.policy {
            case .weight(let w): takes.append(weightSum > 0 ? Int((w / weightSum * Double(weightedBudget)).rounded()) : 0)
            case .repeat(let r): takes.append(Int((r * Double(c.count)).rounded()))
            case .choose(let n): takes.append(n)
            }
        }
        for (d, c) in components.enumerated() where c.count == 0 { takes[d] = 0 }
        self.takes = takes

        // Each dataset's sequence: as many shuffled passes as its share needs.
        var streams: [[Int32]] = []
        for (d, c) in components.enumerated() {
            var stream: [Int32] = []
            stream.reserveCapacity(takes[d])
            var pass = 0
            while stream.count < takes[d] {
                var passSpec = spec
                var seeder = SplitMix64(derivedFrom: ["pass", String(spec.seed), String(d), String(pass)])
                passSpec.seed = seeder.next()
                let order = SampleOrder(shardSizes: c.shardSizes, fingerprint: c.fingerprint, epoch: epoch, spec: passSpec)
                stream += order.positions.prefix(takes[d] - stream.count)
                pass += 1
            }
            streams.append(stream)
        }

        // Interleave by drawing in proportion to what is left.
        var rng = SplitMix64(derivedFrom: ["mix", String(spec.seed), String(epoch), fingerprint])
        var left = takes
        var next = [Int](repeating: 0, count: components.count)
        var total = takes.reduce(0, +)
        var refs: [SampleRef] = []
        refs.reserveCapacity(total)
        while total > 0 {
            var u = rng.below(total)
            var d = 0
            while u >= left[d] { u -= left[d]; d += 1 }
            refs.append(SampleRef(dataset: Int32(d), sample: streams[d][next[d]]))
            next[d] += 1
            left[d] -= 1
            total -= 1
        }
        if spec.groupMegabatch > 0 {
            refs = EpochPlan.grouped(refs, components: components, spec: spec, epoch: epoch, fingerprint: fingerprint)
        }
        self.refs = refs
    }

    /// Applies LLaVA's modality/length grouping to the whole epoch.
    static func grouped(_ refs: [SampleRef], components: [PlanComponent], spec: OrderSpec, epoch: Int,
                        fingerprint: String) -> [SampleRef] {
        let lengths = refs.map { ref -> Int in
            guard let l = components[Int(ref.dataset)].signedLengths else { return 1 }
            let v = l[Int(ref.sample)]
            return v == 0 ? 1 : v
        }
        var rng = SplitMix64(derivedFrom: ["group", String(spec.seed), String(epoch), fingerprint])
        let order = LengthGrouping.modalityGrouped(lengths: lengths, batchSize: spec.groupMegabatch, worldSize: 1, rng: &rng)
        return order.map { refs[$0] }
    }

    public var count: Int { refs.count }
}
