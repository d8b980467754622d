"""One writer per stage per workspace (issue 18 #1): a second writer of a stage fails at once naming the holder,
or waits with --wait; readers never block; a lock left by a dead process is taken over; two real writers at once
never leave a corrupted index, and a rerun completes. The crash harness (scripts/crashtest.py) runs bounded."""
import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
from contextlib import closing
import sys
import time

import pytest

from conftest import ROOT, run, synthetic

sys.path.insert(0, str(ROOT / "scripts"))
import crashtest  # noqa: E402

SMALL = ["--tokens", "30", "--patches", "16", "--patch-dim", "48"]


class HeldLock:
    """Holds WS/locks/STAGE.lock as a writer would: flock, then the holder's record."""

    def __init__(self, ws, stage):
        os.makedirs(os.path.join(ws, "locks"), exist_ok=True)
        self.path = os.path.join(ws, "locks", f"{stage}.lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage, "command": "pytest holder",
                  "since": "2026-01-01T00:00:00Z"}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(record).encode(), 0)

    def release(self):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def runs(ws, stage_like):
    # Closed at once: a connection left to the garbage collector deletes the WAL file whenever it goes.
    with closing(sqlite3.connect(os.path.join(ws, "catalog.sqlite"))) as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE stage LIKE ?", (stage_like,)).fetchone()[0]


@pytest.fixture(scope="module")
def pipeline(vlmdata_bin, tmp_path_factory):
    """The small pipeline's folder: the shapes, the tokenizer, and a workspace after each stage."""
    base = str(tmp_path_factory.mktemp("lock"))
    snapshots, _ = crashtest.build_reference(vlmdata_bin, base, 12)
    return base, snapshots


@pytest.mark.parametrize("index,stage,run_name", [
    (0, "ingest", "ingest%"), (1, "gen-instructions", "gen-instructions%"), (2, "tokenize", "tokenize"),
    (3, "patchify", "patchify"), (4, "shard", "shard"),
])
def test_a_second_writer_fails_naming_the_holder_then_runs(vlmdata_bin, pipeline, tmp_path, index, stage, run_name):
    base, snapshots = pipeline
    before = snapshots["before-ingest" if index == 0 else f"after-{crashtest.STAGES[index - 1]}"]
    ws = str(tmp_path / "ws")
    shutil.copytree(before, ws)
    held = HeldLock(ws, stage)
    try:
        start = time.monotonic()
        bad = run(vlmdata_bin, *crashtest.stage_args(stage, ws, base), check=False)
        assert bad.returncode == 1
        assert f"pid {os.getpid()} on {socket.gethostname()}" in bad.stderr and "pytest holder" in bad.stderr
        assert "--wait" in bad.stderr and f"locks/{stage}.lock" in bad.stderr
        assert time.monotonic() - start < 20
        assert not os.path.exists(os.path.join(ws, "catalog.sqlite")) or runs(ws, run_name) == 0
    finally:
        held.release()
    run(vlmdata_bin, *crashtest.stage_args(stage, ws, base))
    assert crashtest.canonical_dump(ws) == crashtest.canonical_dump(snapshots[f"after-{stage}"])


def test_wait_waits_for_the_holder_and_readers_never_block(vlmdata_bin, pipeline, tmp_path):
    base, snapshots = pipeline
    ws = str(tmp_path / "ws")
    shutil.copytree(snapshots["after-shard"], ws)
    held = HeldLock(ws, "shard")
    try:
        # Other parameters, so the waiting run has shards to write once it has the lock.
        waiting = subprocess.Popen([vlmdata_bin, "shard", "--workspace", ws, "--target-size", "30KB", "--quiet", "--wait"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None, waiting.communicate()
        # Readers take no lock: they run while a writer holds it.
        key = subprocess.run(["sqlite3", os.path.join(ws, "catalog.sqlite"), "SELECT key FROM samples LIMIT 1"],
                             capture_output=True, text=True, check=True).stdout.strip()
        run(vlmdata_bin, "show", "--workspace", ws, key)
        run(vlmdata_bin, "stream", "--workspace", ws, "--max-samples", "3")
        run(vlmdata_bin, "verify", "--workspace", ws)
        assert waiting.poll() is None
    finally:
        held.release()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert f"waiting for pid {os.getpid()}" in err
    run(vlmdata_bin, "verify", "--deep", "--workspace", ws)
    assert crashtest.shard_files(ws) != crashtest.shard_files(snapshots["after-shard"])


def test_a_lock_left_by_a_dead_process_is_taken_over(vlmdata_bin, pipeline, tmp_path):
    base, snapshots = pipeline
    ws = str(tmp_path / "ws")
    shutil.copytree(snapshots["after-patchify"], ws)
    dead = subprocess.Popen(["true"])
    dead.wait()
    os.makedirs(os.path.join(ws, "locks"), exist_ok=True)
    with open(os.path.join(ws, "locks", "shard.lock"), "w") as f:
        json.dump({"pid": dead.pid, "host": socket.gethostname(), "stage": "shard", "command": "killed",
                   "since": "2026-01-01T00:00:00Z"}, f)
    run(vlmdata_bin, *crashtest.stage_args("shard", ws, base))
    run(vlmdata_bin, "verify", "--deep", "--workspace", ws)


def consistent(vlmdata_bin, ws):
    """The index agrees with the files: verify --deep passes and the catalog is sound."""
    result = run(vlmdata_bin, "verify", "--deep", "--workspace", ws, check=False)
    # Closed at once: a connection left to the garbage collector deletes the WAL file whenever it goes.
    with closing(sqlite3.connect(os.path.join(ws, "catalog.sqlite"))) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return result


@pytest.mark.parametrize("wait", [False, True])
def test_two_shard_runs_at_once_never_corrupt_the_index(vlmdata_bin, bench_bin, tmp_path, wait):
    ws = str(tmp_path / "ws")
    synthetic(bench_bin, ws, 400, *SMALL)
    for trial in range(3):
        procs = [subprocess.Popen([vlmdata_bin, "shard", "--workspace", ws, "--target-size", size, "--quiet",
                                   *(["--wait"] if wait else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for size in ("30KB", "70KB")]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
        assert any(code == 0 for code, _ in results), results
        for code, err in results:
            if wait:
                assert code == 0, err
            elif code != 0:
                assert code == 1 and "another shard is writing this workspace" in err, err
        check = consistent(vlmdata_bin, ws)
        assert check.returncode == 0, check.stdout
    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "30KB", "--quiet")
    assert consistent(vlmdata_bin, ws).returncode == 0


def test_two_patchify_runs_at_once_end_in_one_clean_result(vlmdata_bin, pipeline, tmp_path):
    base, snapshots = pipeline
    ws = str(tmp_path / "ws")
    shutil.copytree(snapshots["after-tokenize"], ws)
    args = crashtest.stage_args("patchify", ws, base)
    procs = [subprocess.Popen([vlmdata_bin, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert code == 0 or "another patchify is writing this workspace" in err, err
    run(vlmdata_bin, *args)
    assert crashtest.canonical_dump(ws) == crashtest.canonical_dump(snapshots["after-patchify"])
    assert crashtest.shard_files(ws) == crashtest.shard_files(snapshots["after-patchify"])


def test_crash_harness_bounded(vlmdata_bin):
    """`make crashtest` in small: every writing stage killed twice at seeded points, rerun, compared."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "crashtest.py"), "--bin", vlmdata_bin,
                             "--kills", "2", "--images", "12", "--seed", "7", "--json"],
                            capture_output=True, text=True, timeout=600)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and summary["failed"] == 0, summary["failures"]
    assert summary["trials"] == 10
