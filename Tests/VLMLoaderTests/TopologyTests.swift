import Testing
import VLMCore
@testable import VLMLoader

/// The rank a loader takes from flags and its launcher's environment (torchrun, Slurm).
struct TopologyTests {
    func message(_ body: () throws -> Topology) -> String {
        do { return "no error: \(try body())" } catch { return String(describing: error) }
    }

    @Test func torchrunThenSlurmThenAlone() throws {
        #expect(try Topology.resolve(environment: ["RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"])
            == Topology(rank: 3, worldSize: 8, localRank: 1))
        #expect(try Topology.resolve(environment: ["SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"])
            == Topology(rank: 2, worldSize: 4, localRank: 0))
        #expect(try Topology.resolve(environment: [:]) == Topology())
        // an sbatch script's batch step: SLURM_PROCID=0 and no SLURM_NTASKS (measured on slurm 22.05)
        #expect(try Topology.resolve(environment: ["SLURM_PROCID": "0", "SLURM_LOCALID": "0"]) == Topology())
        // srun torchrun: Slurm's task is the node's, torchrun's RANK the process's
        #expect(try Topology.resolve(environment: ["RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1",
                                                   "SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"])
            == Topology(rank: 5, worldSize: 8, localRank: 1))
    }

    @Test func flagsWin() throws {
        let env = ["RANK": "3", "WORLD_SIZE": "4"]
        #expect(try Topology.resolve(rank: 0, worldSize: 1, environment: env) == Topology(rank: 0, worldSize: 1))
        #expect(try Topology.resolve(rank: 1, environment: env) == Topology(rank: 1, worldSize: 4))
        #expect(try Topology.resolve(rank: 0, worldSize: 2, environment: ["RANK": "x", "LOCAL_RANK": "9"])
            == Topology(rank: 0, worldSize: 2))
    }

    @Test(arguments: [
        (["RANK": "1"], nil as Int?, "$RANK: is set (1) but $WORLD_SIZE is not: torchrun sets both; set both, or pass --rank and --world-size"),
        (["SLURM_NTASKS": "4"], nil, "$SLURM_NTASKS: is set (4) but $SLURM_PROCID is not: Slurm sets both; set both, or pass --rank and --world-size"),
        (["RANK": "4", "WORLD_SIZE": "4"], nil, "$RANK: rank 4 is outside 0..<4 (the world size, from $WORLD_SIZE)"),
        (["RANK": "3", "WORLD_SIZE": "4"], 2, "$RANK: rank 3 is outside 0..<2 (the world size, from --world-size)"),
        (["RANK": "-1", "WORLD_SIZE": "4"], nil, "$RANK: rank -1 is outside 0..<4 (the world size, from $WORLD_SIZE)"),
        (["RANK": "0", "WORLD_SIZE": "0"], nil, "$WORLD_SIZE: the world size must be at least 1, not 0"),
        (["RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"], nil, "$LOCAL_WORLD_SIZE: 8 is inconsistent with $LOCAL_RANK=1 and $WORLD_SIZE=4"),
        (["RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "2"], nil, "$LOCAL_RANK: 2 is inconsistent with $RANK=1: a local rank is at least 0 and at most the rank"),
        (["RANK": "one", "WORLD_SIZE": "2"], nil, "$RANK: 'one' is not an integer"),
    ])
    func inconsistentValuesNameTheirSource(env: [String: String], worldFlag: Int?, expected: String) {
        #expect(message { try Topology.resolve(worldSize: worldFlag, environment: env) } == expected)
    }
}
