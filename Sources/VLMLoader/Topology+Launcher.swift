import VLMCore

/// A process's rank and world size as the launcher that started it states them.
///
/// Flags win (with both given the environment is not read). Without them torchrun's `RANK`/`WORLD_SIZE`/
/// `LOCAL_RANK` are read, else Slurm's `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` (a batch step's lone
/// `SLURM_PROCID=0` is 0 of 1), else the process is alone (0 of 1). torchrun's set wins over Slurm's because
/// `srun torchrun ...` sets both and torchrun's is the per-process one. A launcher's set is taken whole: a rank
/// without its world size (or the reverse) is an error, not a guess, because a guess would give two processes the
/// same samples.
///
/// ```swift
/// let topology = try Topology.resolve(rank: nil, worldSize: nil, environment: ProcessInfo.processInfo.environment)
/// ```
extension Topology {
    /// One launcher's variable names.
    struct Launcher {
        var name: String
        var rank: String
        var worldSize: String
        var localRank: String
        var localWorldSize: String?
        /// Rank 0 without a world size is a lone process: Slurm's batch step (sbatch without --ntasks) sets
        /// SLURM_PROCID=0 and no SLURM_NTASKS.
        var rankZeroAlone = false
    }

    static let launchers = [
        Launcher(name: "torchrun", rank: "RANK", worldSize: "WORLD_SIZE", localRank: "LOCAL_RANK", localWorldSize: "LOCAL_WORLD_SIZE"),
        Launcher(name: "Slurm", rank: "SLURM_PROCID", worldSize: "SLURM_NTASKS", localRank: "SLURM_LOCALID", localWorldSize: nil,
                 rankZeroAlone: true),
    ]

    /// From the launcher's environment alone (no flags).
    public static func fromEnvironment(_ env: [String: String]) throws -> Topology {
        try resolve(environment: env)
    }

    /// `rank` and `worldSize` (flags, when given) over what the environment's launcher states; every value is
    /// checked, and an error names where each value came from (`--rank`, `$RANK`, ...).
    public static func resolve(rank flagRank: Int? = nil, worldSize flagWorld: Int? = nil,
                               environment env: [String: String]) throws -> Topology {
        func int(_ name: String) throws -> Int? {
            guard let text = env[name] else { return nil }
            guard let value = Int(text) else {
                throw VLMError(.invalidArgument, record: "$" + name, "'\(text)' is not an integer")
            }
            return value
        }
        var rank = (value: 0, source: "default"), world = (value: 1, source: "default")
        var launcher: Launcher?
        // both flags given: the environment is not read at all (a stale or broken variable cannot interfere)
        for candidate in launchers where flagRank == nil || flagWorld == nil {
            let r = try int(candidate.rank)
            var w = try int(candidate.worldSize)
            if r == nil && w == nil { continue }
            if candidate.rankZeroAlone, r == 0, w == nil { w = 1 }
            guard let r, let w else {
                let (set, unset) = r == nil ? (candidate.worldSize, candidate.rank) : (candidate.rank, candidate.worldSize)
                throw VLMError(.invalidArgument, record: "$" + set,
                               "is set (\(env[set]!)) but $\(unset) is not: \(candidate.name) sets both; set both, "
                                   + "or pass --rank and --world-size")
            }
            rank = (r, "$" + candidate.rank)
            world = (w, "$" + candidate.worldSize)
            launcher = candidate
            break
        }
        if let flagRank { rank = (flagRank, "--rank") }
        if let flagWorld { world = (flagWorld, "--world-size") }
        guard world.value >= 1 else {
            throw VLMError(.invalidArgument, record: world.source, "the world size must be at least 1, not \(world.value)")
        }
        guard rank.value >= 0, rank.value < world.value else {
            throw VLMError(.invalidArgument, record: rank.source,
                           "rank \(rank.value) is outside 0..<\(world.value) (the world size, from \(world.source))")
        }
        // the local rank is the launcher's; checked against its own rank and world size only
        var local = 0
        if let launcher {
            local = try int(launcher.localRank) ?? 0
            if rank.source == "$" + launcher.rank, local < 0 || local > rank.value {
                throw VLMError(.invalidArgument, record: "$" + launcher.localRank,
                               "\(local) is inconsistent with \(rank.source)=\(rank.value): a local rank is at least 0 and at most the rank")
            }
            if let name = launcher.localWorldSize, let localWorld = try int(name), world.source == "$" + launcher.worldSize,
               localWorld < 1 || localWorld > world.value || local >= localWorld {
                throw VLMError(.invalidArgument, record: "$" + name,
                               "\(localWorld) is inconsistent with $\(launcher.localRank)=\(local) and \(world.source)=\(world.value)")
            }
        }
        return Topology(rank: rank.value, worldSize: world.value, localRank: local)
    }
}
