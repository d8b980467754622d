"""Shared fixtures for the parity tests: the built vlmdata binary and the shared data folder."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def vlmdata_bin():
    path = os.environ.get("VLMDATA_BIN", str(ROOT / ".build" / "release" / "vlmdata"))
    assert pathlib.Path(path).exists(), f"build vlmdata first: {path}"
    return path


@pytest.fixture(scope="session")
def shared():
    return SHARED


@pytest.fixture(scope="session")
def bench_bin(vlmdata_bin):
    """`vlmdata-bench` (benchmark fixtures, not shipped): $VLMDATA_BENCH_BIN or beside the vlmdata binary."""
    path = os.environ.get("VLMDATA_BENCH_BIN", str(pathlib.Path(vlmdata_bin).parent / "vlmdata-bench"))
    assert pathlib.Path(path).exists(), f"build vlmdata-bench first: {path}"
    return path


def synthetic(bench_path, ws, count, *extra):
    """Fills `ws` with generated shard inputs (`vlmdata-bench synthetic`), ready for `vlmdata shard`."""
    run(bench_path, "synthetic", "--workspace", ws, "--count", count, *extra)


def run(bin_path, *args, check=True, **kwargs):
    """Runs the CLI, returning the CompletedProcess (text mode)."""
    result = subprocess.run([bin_path, *map(str, args)], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"vlmdata {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result
