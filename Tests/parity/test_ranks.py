"""A loader's rank from its launcher: torchrun's RANK/WORLD_SIZE/LOCAL_RANK, Slurm's SLURM_PROCID/SLURM_NTASKS.

`vlmdata stream` and the C ABI (so `vlmdata.Loader` and `vlmdata.torch`) read them when no rank is given: processes
launched by the real torchrun (`--standalone`, 4 per node) get disjoint shares that together are the epoch, equal to
the shares `--rank R --world-size 4` give. Flags win over the environment; inconsistent values are one clear error
naming where each value came from.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run, synthetic

SMALL = ["--tokens", "40", "--patches", "16", "--patch-dim", "48"]
N = 150
WORLD = 4
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                      "SLURM_LOCALID", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT")
LIB = os.environ.get("VLMDATA_LIB", str(ROOT / ".build" / "release" / "libVLMDataC.so"))


@pytest.fixture(scope="module")
def ws(vlmdata_bin, bench_bin, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ranks") / "ws")
    synthetic(bench_bin, path, N, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", path, "--target-size", "30KB", "--quiet")
    return path


def clean_env(**values):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update({k: str(v) for k, v in values.items()})
    return env


def stream(bin_path, ws, *args, env=None, check=True):
    result = run(bin_path, "stream", "--workspace", ws, "--quiet", "--seed", 5, *args, env=env or clean_env(),
                 check=check)
    return result if not check else result.stdout.split()


def by_flags(bin_path, ws, *args):
    return [stream(bin_path, ws, "--rank", r, "--world-size", WORLD, *args) for r in range(WORLD)]


def torchrun():
    found = pathlib.Path(sys.executable).parent / "torchrun"
    return str(found) if found.exists() else shutil.which("torchrun")


@pytest.mark.skipif(torchrun() is None, reason="torchrun is not installed (make venv installs torch)")
@pytest.mark.parametrize("drop_last", [False, True])
def test_torchrun_processes_get_disjoint_complete_shares(vlmdata_bin, ws, tmp_path, drop_last):
    out = tmp_path / "out"
    out.mkdir()
    extra = " --drop-last" if drop_last else ""
    command = f'exec "$0" stream --workspace "$1" --quiet --seed 5{extra} > "$2/keys-$RANK-$LOCAL_RANK-$WORLD_SIZE"'
    subprocess.run([torchrun(), "--standalone", f"--nproc-per-node={WORLD}", "--no-python", "sh", "-c", command,
                    vlmdata_bin, ws, str(out)], env=clean_env(), check=True, capture_output=True, timeout=300)
    shares = [(out / f"keys-{r}-{r}-{WORLD}").read_text().split() for r in range(WORLD)]
    assert shares == by_flags(vlmdata_bin, ws, *(["--drop-last"] if drop_last else []))
    seen = [k for share in shares for k in share]
    if drop_last:
        assert len(seen) == len(set(seen)) == N - N % WORLD
    else:
        # padding repeats the epoch's first samples so every rank gets as many: still every sample, each once more at most
        assert set(seen) == set(stream(vlmdata_bin, ws)) and len(set(seen)) == N and len(seen) == N + (-N) % WORLD


def test_slurm_variables_and_torchrun_over_slurm(vlmdata_bin, ws):
    expected = by_flags(vlmdata_bin, ws)
    assert [stream(vlmdata_bin, ws, env=clean_env(SLURM_PROCID=r, SLURM_NTASKS=WORLD, SLURM_LOCALID=0))
            for r in range(WORLD)] == expected
    # an sbatch script's batch step sets SLURM_PROCID=0 and no SLURM_NTASKS: one process, the whole epoch
    assert stream(vlmdata_bin, ws, env=clean_env(SLURM_PROCID=0, SLURM_LOCALID=0)) == stream(vlmdata_bin, ws)
    # `srun torchrun ...`: Slurm's task id is the node's, torchrun's RANK the process's; torchrun's set is taken
    assert stream(vlmdata_bin, ws, env=clean_env(RANK=3, WORLD_SIZE=WORLD, LOCAL_RANK=1, SLURM_PROCID=0,
                                                 SLURM_NTASKS=1)) == expected[3]


def test_flags_win_over_the_environment(vlmdata_bin, ws):
    whole = stream(vlmdata_bin, ws)
    assert len(whole) == N
    env = clean_env(RANK=3, WORLD_SIZE=WORLD)
    assert stream(vlmdata_bin, ws, "--rank", 0, "--world-size", 1, env=env) == whole
    assert stream(vlmdata_bin, ws, "--rank", 1, env=env) == by_flags(vlmdata_bin, ws)[1]


@pytest.mark.parametrize("env, args, message", [
    ({"RANK": 1}, [], "$RANK: is set (1) but $WORLD_SIZE is not"),
    ({"WORLD_SIZE": 4}, [], "$WORLD_SIZE: is set (4) but $RANK is not"),
    ({"SLURM_PROCID": 2}, [], "$SLURM_PROCID: is set (2) but $SLURM_NTASKS is not"),
    ({"RANK": 4, "WORLD_SIZE": 4}, [], "$RANK: rank 4 is outside 0..<4 (the world size, from $WORLD_SIZE)"),
    ({"RANK": 3, "WORLD_SIZE": 4}, ["--world-size", 2], "$RANK: rank 3 is outside 0..<2 (the world size, from --world-size)"),
    ({"RANK": "one", "WORLD_SIZE": 4}, [], "$RANK: 'one' is not an integer"),
    ({"RANK": 1, "WORLD_SIZE": 4, "LOCAL_RANK": 2}, [], "$LOCAL_RANK: 2 is inconsistent with $RANK=1"),
    ({"RANK": 1, "WORLD_SIZE": 4, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 8}, [],
     "$LOCAL_WORLD_SIZE: 8 is inconsistent with $LOCAL_RANK=1 and $WORLD_SIZE=4"),
    ({"WORLD_SIZE": 0, "RANK": 0}, [], "$WORLD_SIZE: the world size must be at least 1, not 0"),
])
def test_inconsistent_values_are_one_clear_error(vlmdata_bin, ws, env, args, message):
    result = stream(vlmdata_bin, ws, *args, env=clean_env(**env), check=False)
    assert result.returncode != 0 and result.stdout == ""
    assert message in result.stderr, result.stderr


@pytest.mark.skipif(not os.path.exists(LIB), reason=f"build the C ABI library first ({LIB})")
def test_python_package_reads_the_same_environment(vlmdata_bin, ws):
    """`vlmdata.topology()` and `vlmdata.Loader` in processes with only launcher variables set."""
    script = ("import json, sys; sys.path.insert(0, sys.argv[2]); import vlmdata; "
              "print(json.dumps([vlmdata.topology(), [s['key'] for s in vlmdata.Loader(sys.argv[1], seed=5).stream(0)]]))")
    expected = by_flags(vlmdata_bin, ws)
    for r in range(WORLD):
        for env in (dict(RANK=r, WORLD_SIZE=WORLD, LOCAL_RANK=r), dict(SLURM_PROCID=r, SLURM_NTASKS=WORLD)):
            out = subprocess.run([sys.executable, "-c", script, ws, str(ROOT / "python")], capture_output=True,
                                 text=True, env=clean_env(VLMDATA_LIB=LIB, **env), check=True).stdout
            topology, keys = __import__("json").loads(out)
            assert topology == [r, WORLD, r if "LOCAL_RANK" in env else 0]
            assert keys == expected[r]
    bad = subprocess.run([sys.executable, "-c", script, ws, str(ROOT / "python")], capture_output=True, text=True,
                         env=clean_env(VLMDATA_LIB=LIB, RANK=2))
    assert bad.returncode != 0 and "$RANK: is set (2) but $WORLD_SIZE is not" in bad.stderr
