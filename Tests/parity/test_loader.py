"""The streaming loader end to end through the CLI: determinism across processes, exact and elastic resume,
the source order against Python webdataset, padding/drop-last, HTTP through a loopback nginx with a small cache."""
import glob
import os
import pathlib
import shutil
import sqlite3
import subprocess

import pytest

from conftest import ROOT, run, synthetic

SMALL = ["--tokens", "40", "--patches", "16", "--patch-dim", "48"]
NGINX_SCRIPT = ROOT / "Tests" / "support" / "nginx_loopback.sh"
N = 150


@pytest.fixture(scope="module")
def ws(vlmdata_bin, bench_bin, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("loader") / "ws")
    synthetic(bench_bin, path, N, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", path, "--target-size", "30KB", "--quiet")
    return path


def index_keys(ws):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return [k for (k,) in db.execute(
            "SELECT s.key FROM samples s JOIN shards h ON h.id = s.shard_id ORDER BY h.name, s.index_in_shard")]


def stream(bin_path, ws, *args):
    result = run(bin_path, "stream", "--workspace", ws, "--quiet", *args)
    return result.stdout.split()


def test_same_order_in_separate_processes_and_workers(vlmdata_bin, ws):
    a = stream(vlmdata_bin, ws, "--seed", 7, "--workers", 0)
    b = stream(vlmdata_bin, ws, "--seed", 7, "--workers", 3)
    assert a == b
    assert sorted(a) == sorted(index_keys(ws))
    assert a != stream(vlmdata_bin, ws, "--seed", 8)
    assert a != stream(vlmdata_bin, ws, "--seed", 7, "--epoch", 1)


def test_source_order_is_webdatasets_order(vlmdata_bin, ws):
    import webdataset as wds

    shards = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    peer = [s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)]
    assert stream(vlmdata_bin, ws, "--shuffle", "none") == peer
    # shard mode keeps each shard's samples together and in their order; only the shard order moves
    position = {k: i for i, k in enumerate(peer)}
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        shard_of = dict(db.execute("SELECT s.key, h.name FROM samples s JOIN shards h ON h.id = s.shard_id"))
    keys = stream(vlmdata_bin, ws, "--shuffle", "shard", "--partitions", 1, "--seed", 3)
    changes = sum(1 for i in range(1, len(keys)) if shard_of[keys[i]] != shard_of[keys[i - 1]])
    assert changes == len(shards) - 1
    assert all(position[keys[i]] == position[keys[i - 1]] + 1
               for i in range(1, len(keys)) if shard_of[keys[i]] == shard_of[keys[i - 1]])
    assert keys != peer


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_key_once_over_ranks(vlmdata_bin, ws, world):
    seen = []
    for rank in range(world):
        seen += stream(vlmdata_bin, ws, "--seed", 1, "--world-size", world, "--rank", rank, "--drop-last", "--workers", 2)
    assert len(seen) == len(set(seen)) == N - N % world
    padded = []
    for rank in range(world):
        padded += stream(vlmdata_bin, ws, "--seed", 1, "--world-size", world, "--rank", rank)
    assert set(padded) == set(index_keys(ws)) and len(padded) % world == 0


def test_resume_equals_uninterrupted(vlmdata_bin, ws, tmp_path):
    full = stream(vlmdata_bin, ws, "--seed", 5, "--epoch", 2)
    state = tmp_path / "state.json"
    head = stream(vlmdata_bin, ws, "--seed", 5, "--epoch", 2, "--max-samples", 41, "--save-state", state)
    tail = stream(vlmdata_bin, ws, "--resume", state, "--save-state", state)  # the order comes from the state
    assert head + tail == full
    # after the epoch the state points at the next one
    assert stream(vlmdata_bin, ws, "--seed", 5, "--resume", state) == stream(vlmdata_bin, ws, "--seed", 5, "--epoch", 3)


@pytest.mark.parametrize("new_world", [3, 8])
def test_elastic_resume(vlmdata_bin, ws, tmp_path, new_world):
    seen = []
    for rank in range(4):
        seen += stream(vlmdata_bin, ws, "--seed", 9, "--world-size", 4, "--rank", rank, "--max-samples", 11,
                       "--save-state", tmp_path / f"state{rank}.json")
    states = {(tmp_path / f"state{r}.json").read_text() for r in range(4)}
    assert len(states) == 1  # lockstep: every rank saves the same state
    rest = []
    for rank in range(new_world):
        rest += stream(vlmdata_bin, ws, "--seed", 9, "--world-size", new_world, "--rank", rank, "--drop-last",
                       "--resume", tmp_path / "state0.json")
    assert len(set(seen)) == 44
    assert not set(rest) & set(seen)
    assert len(rest) == len(set(rest))
    # drop-last drops fewer than new_world; together with them, exactly the complement
    missing = set(index_keys(ws)) - set(seen) - set(rest)
    assert len(missing) == (N - 44) % new_world


def test_fingerprint_mismatch_is_a_clear_error(vlmdata_bin, ws, tmp_path):
    state = tmp_path / "state.json"
    stream(vlmdata_bin, ws, "--seed", 5, "--max-samples", 3, "--save-state", state)
    text = state.read_text().replace('"fingerprint" : "', '"fingerprint" : "00')
    state.write_text(text)
    result = run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 5, "--resume", state, check=False)
    assert result.returncode != 0
    assert "fingerprint" in result.stderr and "shards changed" in result.stderr
    result = run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 6, "--resume", tmp_path / "nothing.json", check=False)
    assert result.returncode != 0 and "nothing.json" in result.stderr


def test_batches_and_packing_lines(vlmdata_bin, ws):
    lines = stream(vlmdata_bin, ws, "--seed", 2, "--batch-size", 8)
    assert lines  # whitespace-split; rebuild from stdout for structure
    out = run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 2, "--batch-size", 8, "--quiet").stdout.splitlines()
    keys = [k for line in out for k in line.split("keys=")[1].split(",")]
    assert set(keys) == set(index_keys(ws)) and len(keys) % 8 == 0
    packed = run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 2, "--batch-size", 4, "--pack", 400).stdout.splitlines()
    pkeys = [k for line in packed for k in line.split("keys=")[1].split(",")]
    assert sorted(pkeys) == sorted(keys[:len(pkeys)]) or set(pkeys) <= set(keys)
    assert len(pkeys) == len(set(pkeys))
    for line in packed:
        fields = dict(f.split("=", 1) for f in line.split())
        assert int(fields["model_tokens"]) <= int(fields["rows"]) * 400


@pytest.fixture()
def nginx(ws, tmp_path):
    if not (os.path.exists("/usr/sbin/nginx") or shutil.which("nginx")):
        pytest.skip("nginx is not installed (make deps installs nginx-light)")
    work = tmp_path / "nginx"
    port = subprocess.run(["sh", str(NGINX_SCRIPT), "start", os.path.join(ws, "shards"), str(work)],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout.strip()
    yield f"http://127.0.0.1:{port}"
    subprocess.run(["sh", str(NGINX_SCRIPT), "stop", str(work)], check=False)


def test_http_with_a_small_cache_matches_local(vlmdata_bin, ws, nginx, tmp_path):
    shards = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    biggest = max(os.path.getsize(s) for s in shards)
    total = sum(os.path.getsize(s) for s in shards)
    cap = 3 * biggest
    assert cap < total
    last = len(shards) - 1
    pattern = f"{nginx}/train-{{000000..{last:06d}}}.tar"
    local = stream(vlmdata_bin, ws, "--seed", 4, "--workers", 2)
    cache = tmp_path / "cache"
    remote = stream(vlmdata_bin, ws, "--seed", 4, "--workers", 2, "--url", pattern, "--cache-dir", cache,
                    "--cache-size", cap)
    assert remote == local
    held = sum(p.stat().st_size for p in cache.iterdir() if p.is_file())
    assert held <= cap
    # the same through a shard-list file
    listing = tmp_path / "shards.txt"
    listing.write_text("# all shards\n" + "\n".join(f"{nginx}/{os.path.basename(s)}" for s in shards) + "\n")
    assert stream(vlmdata_bin, ws, "--seed", 4, "--shard-list", listing, "--cache-dir", tmp_path / "c2",
                  "--cache-size", cap) == local


def test_http_missing_shard_errors_or_skips(vlmdata_bin, ws, nginx, tmp_path):
    shards = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    last = len(shards) - 1
    pattern = f"{nginx}/train-{{000000..{last:06d}}}.tar"
    hidden = shards[1] + ".hidden"
    os.rename(shards[1], hidden)
    try:
        result = run(vlmdata_bin, "stream", "--workspace", ws, "--url", pattern, "--cache-dir", tmp_path / "c",
                     check=False)
        assert result.returncode != 0
        assert os.path.basename(shards[1]) in result.stderr and "404" in result.stderr
        result = run(vlmdata_bin, "stream", "--workspace", ws, "--url", pattern, "--cache-dir", tmp_path / "d",
                     "--on-missing", "skip", "--json")
        with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
            lost = db.execute("SELECT samples FROM shards WHERE name = ?", (os.path.basename(shards[1]),)).fetchone()[0]
        assert len(result.stdout.split()) == N - lost
        assert f'"skipped":{lost}' in result.stderr.replace(" ", "")
    finally:
        os.rename(hidden, shards[1])
