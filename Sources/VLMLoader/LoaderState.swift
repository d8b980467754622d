import Foundation
import VLMCore
import VLMIO

/// Where a stream stands: enough to continue it exactly, on any number of ranks and workers.
///
/// `consumed` counts global positions of the epoch's order (all ranks together, padding included); the ranks are
/// taken to advance in lockstep. `orderSpec` and `fingerprint` pin down which order that count refers to.
///
/// ```swift
/// let state = stream.state()
/// try state.save(to: "state.json")
/// let again = try loader.samples(resuming: LoaderState.load(from: "state.json"))
/// ```
public struct LoaderState: Sendable, Hashable, Codable {
    public var version: Int = 1
    public var epoch: Int
    public var consumed: Int
    public var seed: UInt64
    /// The dataset (or mixture) fingerprint.
    public var fingerprint: String
    public var shuffle: ShuffleMode
    public var blockSize: Int
    public var partitions: Int
    /// LLaVA length-grouping mega-batch (`batch * world` at the time it was set), 0 when off.
    public var groupMegabatch: Int

    public init(epoch: Int, consumed: Int, fingerprint: String, spec: OrderSpec) {
        self.epoch = epoch
        self.consumed = consumed
        self.seed = spec.seed
        self.fingerprint = fingerprint
        self.shuffle = spec.shuffle
        self.blockSize = spec.blockSize
        self.partitions = spec.partitions
        self.groupMegabatch = spec.groupMegabatch
    }

    public var spec: OrderSpec {
        OrderSpec(seed: seed, shuffle: shuffle, blockSize: blockSize, partitions: partitions, groupMegabatch: groupMegabatch)
    }

    /// Throws a clear error when this state belongs to another dataset or another order.
    public func check(fingerprint expected: String, spec expectedSpec: OrderSpec) throws {
        if fingerprint != expected {
            throw VLMError(.conflict, record: "resume state",
                           "the state was saved for dataset \(fingerprint.prefix(12)) but the shards now have fingerprint \(expected.prefix(12)); the shards changed, so the saved position means nothing here")
        }
        if spec != expectedSpec {
            throw VLMError(.conflict, record: "resume state",
                           "the state was saved with order \(spec.summary) but this run asks for \(expectedSpec.summary); resume with the same seed, shuffle, block size and partitions")
        }
    }

    public func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data: Data
        do { data = try encoder.encode(self) } catch { throw VLMError.io(file: path, "cannot encode the state: \(error)") }
        try AtomicFile.write(Array(data) + [0x0A], to: path)
    }

    public static func load(from path: String) throws -> LoaderState {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VLMError(.notFound, file: path, "cannot read the resume state")
        }
        do { return try JSONDecoder().decode(LoaderState.self, from: data) } catch {
            throw VLMError.badInput(file: path, "not a loader state: \(error)")
        }
    }
}

extension OrderSpec {
    var summary: String {
        "seed=\(seed) shuffle=\(shuffle.rawValue) block=\(blockSize) partitions=\(partitions)" +
            (groupMegabatch > 0 ? " group=\(groupMegabatch)" : "")
    }
}
