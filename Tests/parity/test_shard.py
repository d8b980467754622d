"""Training shards against the peers: Python webdataset, GNU tar, the sqlite3 CLI, numpy; resume after
SIGKILL; partitioned runs merged with `catalog merge`."""
import glob
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from conftest import run, synthetic

SMALL = ["--tokens", "30", "--patches", "16", "--patch-dim", "48"]


def fill(bin_path, ws, count, *extra):
    """Generated shard inputs from `vlmdata-bench` beside `bin_path` (or $VLMDATA_BENCH_BIN)."""
    synthetic(os.environ.get("VLMDATA_BENCH_BIN", os.path.join(os.path.dirname(bin_path), "vlmdata-bench")), ws, count, *extra)


def shard_hashes(ws):
    """Each shard's integrity hash as indexed: the XXH3-128 recorded at write time."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return dict(db.execute("SELECT name, xxh3_128 FROM shards ORDER BY name").fetchall())


def index_keys(ws):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return [k for (k,) in db.execute(
            "SELECT s.key FROM samples s JOIN shards h ON h.id = s.shard_id ORDER BY h.name, s.index_in_shard")]


@pytest.fixture(scope="module")
def sharded(vlmdata_bin, tmp_path_factory):
    ws = str(tmp_path_factory.mktemp("shard") / "ws")
    fill(vlmdata_bin, ws, 120, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "40KB", "--include-jpeg", "--quiet")
    return ws


def test_webdataset_reads_every_sample_as_show_reports(vlmdata_bin, sharded):
    import webdataset as wds

    shards = sorted(glob.glob(os.path.join(sharded, "shards", "train-*.tar")))
    assert len(shards) > 3
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    assert keys == index_keys(sharded)
    assert len(keys) == 120
    for s in samples:
        shown = json.loads(run(vlmdata_bin, "show", "--workspace", sharded, s["__key__"], "--json").stdout)
        ids = np.load(io.BytesIO(s["input_ids.npy"]))
        labels = np.load(io.BytesIO(s["labels.npy"]))
        assert ids.dtype == np.int32 and labels.dtype == np.int32
        assert ids.tolist() == shown["input_ids"]
        assert labels.tolist() == shown["labels"]
        meta = json.loads(s["json"])
        assert meta == shown["metadata"]
        assert meta["length"] == len(ids)
        assert meta["supervised"] == int((labels != -100).sum())
        if "pixels.npy" in s:
            pixels = np.load(io.BytesIO(s["pixels.npy"]))
            assert pixels.dtype == np.uint8
            assert list(pixels.shape) == shown["pixels_shape"] == meta["pixels_shape"]
            assert hashlib.sha256(pixels.tobytes()).hexdigest() == shown["pixels_sha256"]
            assert (ids == -200).sum() == 1
            jpg = s["jpg"]
            with open(os.path.join(sharded, "synthetic-images", meta["image_file"]), "rb") as f:
                assert f.read() == jpg
            assert hashlib.sha256(jpg).hexdigest() == meta["image_sha256"]
        else:
            assert shown["pixels_shape"] is None and meta["image"] is None
            assert (ids == -200).sum() == 0


def test_gnu_tar_lists_every_shard(sharded):
    with sqlite3.connect(os.path.join(sharded, "catalog.sqlite")) as db:
        expected = dict(db.execute("""
            SELECT h.name, COUNT(*) FROM sample_parts p JOIN samples s ON s.id = p.sample_id
            JOIN shards h ON h.id = s.shard_id GROUP BY h.name"""))
    assert expected
    for name, members in expected.items():
        out = subprocess.run(["tar", "-tvf", os.path.join(sharded, "shards", name)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == members
        assert all(line.startswith("-rw-r--r-- root/root") for line in lines)


def test_sqlite3_cli_answers_the_documented_query(vlmdata_bin, sharded):
    """The query of docs/shards.md: where one member lives; one ranged read gives the .npy."""
    sqlite_cli = shutil.which("sqlite3")
    if sqlite_cli is None:
        pytest.skip("sqlite3 CLI not installed")
    key = index_keys(sharded)[37]
    query = ("SELECT h.path, p.offset, p.size FROM samples s "
             "JOIN shards h ON h.id = s.shard_id JOIN sample_parts p ON p.sample_id = s.id "
             f"WHERE s.key = '{key}' AND p.name = 'labels.npy'")
    out = subprocess.run([sqlite_cli, "-separator", " ", os.path.join(sharded, "catalog.sqlite"), query],
                         capture_output=True, text=True, check=True).stdout.split()
    path, offset, size = out[0], int(out[1]), int(out[2])
    with open(os.path.join(sharded, path), "rb") as f:
        f.seek(offset)
        labels = np.load(io.BytesIO(f.read(size)))
    shown = json.loads(run(vlmdata_bin, "show", "--workspace", sharded, key, "--json").stdout)
    assert labels.tolist() == shown["labels"]


def test_show_text_marks_masked_tokens_and_writes_png(vlmdata_bin, sharded, tmp_path):
    key = index_keys(sharded)[2]
    png = tmp_path / "p.png"
    text = run(vlmdata_bin, "show", "--workspace", sharded, key, "--pixels-png", png).stdout
    assert "<image>" in text and "[" in text and "human" in text and "gpt" in text
    from PIL import Image
    shown = json.loads(run(vlmdata_bin, "show", "--workspace", sharded, key, "--json").stdout)
    img = np.asarray(Image.open(png).convert("RGB"))
    # Undo our unpatchify with numpy: 16 patches of 4x4x3 → a 16x16 image.
    tiles, patches, dim = shown["pixels_shape"]
    p, g = int((dim // 3) ** 0.5), int(patches ** 0.5)
    s = next(x for x in __import__("webdataset").WebDataset(
        sorted(glob.glob(os.path.join(sharded, "shards", "*.tar"))), shardshuffle=False) if x["__key__"] == key)
    arr = np.load(io.BytesIO(s["pixels.npy"]))[0].reshape(g, g, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * p, g * p, 3)
    assert np.array_equal(img, arr)
    missing = run(vlmdata_bin, "show", "--workspace", sharded, "no_such_key", check=False)
    assert missing.returncode != 0 and "no_such_key" in missing.stderr


def test_verify_passes_then_lists_corruption(vlmdata_bin, sharded, tmp_path):
    ws = str(tmp_path / "ws")
    shutil.copytree(sharded, ws)
    ok = run(vlmdata_bin, "verify", "--workspace", ws, "--deep")
    assert "all well" in ok.stdout
    shard = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))[1]
    with open(shard, "r+b") as f:
        f.seek(2000)
        byte = f.read(1)
        f.seek(2000)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = run(vlmdata_bin, "verify", "--workspace", ws, check=False)
    assert bad.returncode == 1
    assert "xxh3-128 is" in bad.stdout and os.path.basename(shard) in bad.stdout
    os.truncate(shard, 3000)
    bad = run(vlmdata_bin, "verify", "--workspace", ws, "--deep", "--json", check=False)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    assert any("tar structure" in p for p in problems)
    assert any("is not in the tar" in p for p in problems)


def test_sigkill_then_rerun_gives_the_clean_hashes(vlmdata_bin, tmp_path):
    clean = str(tmp_path / "clean")
    killed = str(tmp_path / "killed")
    args = ["--tokens", "600", "--patches", "144", "--patch-dim", "588"]
    fill(vlmdata_bin, clean, 1500, *args)
    shutil.copytree(clean, killed)
    shard_args = ["--target-size", "2MB", "--quiet"]
    run(vlmdata_bin, "shard", "--workspace", clean, *shard_args)
    expected = shard_hashes(clean)
    assert len(expected) > 20
    kills = 0
    # Kill three times, each once a few more shards are committed (polling the index), so the kills land
    # mid-run at different points whatever the machine's speed.
    for threshold in (3, len(expected) // 3, 2 * len(expected) // 3):
        proc = subprocess.Popen([vlmdata_bin, "shard", "--workspace", killed, *shard_args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            try:
                committed = len(shard_hashes(killed))
            except sqlite3.OperationalError:
                committed = 0
            if committed >= threshold:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait()
    partial = shard_hashes(killed)
    assert kills >= 1 and len(partial) < len(expected), "the run finished before it could be killed"
    assert all(expected[name] == sha for name, sha in partial.items())
    run(vlmdata_bin, "shard", "--workspace", killed, *shard_args)
    assert shard_hashes(killed) == expected
    for name in expected:
        with open(os.path.join(clean, "shards", name), "rb") as a, open(os.path.join(killed, "shards", name), "rb") as b:
            assert a.read() == b.read()
    assert not [f for f in os.listdir(os.path.join(killed, "shards")) if ".tmp-" in f]
    run(vlmdata_bin, "verify", "--workspace", killed, "--deep")
    with sqlite3.connect(os.path.join(killed, "catalog.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_parts_merged_equal_one_run(vlmdata_bin, tmp_path):
    base = str(tmp_path / "base")
    fill(vlmdata_bin, base, 200, *SMALL)
    parts = []
    for i in (0, 1):
        ws = str(tmp_path / f"part{i}")
        shutil.copytree(base, ws)
        run(vlmdata_bin, "shard", "--workspace", ws, "--part", f"{i}/2", "--target-size", "30KB", "--quiet")
        parts.append(ws)
    whole = str(tmp_path / "whole")
    shutil.copytree(base, whole)
    run(vlmdata_bin, "shard", "--workspace", whole, "--target-size", "30KB", "--quiet")
    merged = str(tmp_path / "merged")
    report = json.loads(run(vlmdata_bin, "catalog", "merge", merged, *parts, "--json", "--quiet").stdout)
    assert report["counts"]["samples"] == 200
    assert sorted(index_keys(merged)) == sorted(index_keys(whole))
    assert 0 < len(index_keys(parts[0])) < 200
    run(vlmdata_bin, "verify", "--workspace", merged, "--deep")
    # The merged samples are the whole run's samples, member for member.
    for key in index_keys(whole)[::17]:
        a = json.loads(run(vlmdata_bin, "show", "--workspace", merged, key, "--json").stdout)
        b = json.loads(run(vlmdata_bin, "show", "--workspace", whole, key, "--json").stdout)
        for field in ("metadata", "input_ids", "labels", "pixels_sha256"):
            assert a[field] == b[field]
    # --reference indexes the parts' shard files where they are.
    referenced = str(tmp_path / "referenced")
    run(vlmdata_bin, "catalog", "merge", referenced, *parts, "--reference", "--quiet")
    assert not glob.glob(os.path.join(referenced, "shards", "*.tar"))
    with sqlite3.connect(os.path.join(referenced, "catalog.sqlite")) as db:
        paths = [p for (p,) in db.execute("SELECT path FROM shards")]
    assert paths and all(p.startswith(str(tmp_path / "part")) for p in paths)
    assert sorted(index_keys(referenced)) == sorted(index_keys(whole))
    run(vlmdata_bin, "verify", "--workspace", referenced, "--deep")
    # Overlap: the same part twice, or a part already merged, is refused.
    twice = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m2"), parts[0], parts[0], check=False)
    assert twice.returncode != 0 and "twice" in twice.stderr
    again = run(vlmdata_bin, "catalog", "merge", merged, parts[1], check=False)
    assert again.returncode != 0 and "overlapping" in again.stderr
    # Conflicting configuration: a part sharded with another target size.
    other = str(tmp_path / "other")
    shutil.copytree(base, other)
    run(vlmdata_bin, "shard", "--workspace", other, "--part", "1/2", "--target-size", "99KB", "--quiet")
    conflict = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m3"), parts[0], other, check=False)
    assert conflict.returncode != 0 and "disagree" in conflict.stderr
    # Parts of different splits.
    third = str(tmp_path / "third")
    shutil.copytree(base, third)
    run(vlmdata_bin, "shard", "--workspace", third, "--part", "2/3", "--target-size", "30KB", "--quiet")
    mixed = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m4"), parts[0], third, check=False)
    assert mixed.returncode != 0 and "split" in mixed.stderr


def test_ambiguous_configs_need_a_flag(vlmdata_bin, tmp_path):
    ws = str(tmp_path / "ws")
    fill(vlmdata_bin, ws, 20, *SMALL)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        db.execute("INSERT INTO pixels (sha256, config_hash, config, status, error) "
                   "SELECT sha256, 'pix-other', '{}', 'error', 'x' FROM pixels")
    out = run(vlmdata_bin, "shard", "--workspace", ws, check=False)
    assert out.returncode == 1
    assert "--pixels" in out.stderr and "pix-other" in out.stderr and "pix-synthetic" in out.stderr
    run(vlmdata_bin, "shard", "--workspace", ws, "--pixels", "pix-synthetic", "--quiet")
    assert len(index_keys(ws)) == 20


def test_real_pipeline_shards(vlmdata_bin, shared, tmp_path):
    """ingest llava → tokenize → patchify → shard on the shared LLaVA sample: every sample readable by
    webdataset, pixels byte-equal to the pixel shard's npy, tokens equal to the tokenized rows."""
    import webdataset as wds

    ws = str(tmp_path / "ws")
    data = shared / "llava" / "pretrain-sample"
    run(vlmdata_bin, "ingest", "llava", "--workspace", ws, "--json", data / "blip_laion_cc_sbu_first50.json",
        "--images", data / "images", "--quiet")
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", shared / "tokenizers" / "mistral-v1" / "tokenizer.json",
        "--template", "plain", "--quiet")
    run(vlmdata_bin, "patchify", "--workspace", ws, "--mode", "pad", "--quiet")
    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "5MB", "--quiet")
    assert "all well" in run(vlmdata_bin, "verify", "--workspace", ws, "--deep").stdout
    db = sqlite3.connect(os.path.join(ws, "catalog.sqlite"))
    rows = {key: (ids, shard, offset, size) for key, ids, shard, offset, size in db.execute("""
        SELECT i.key, t.input_ids, ps.name, p.offset, p.size FROM tokenized t JOIN instructions i ON i.id = t.instruction_id
        JOIN images img ON img.id = i.image_id JOIN pixels p ON p.sha256 = img.sha256
        JOIN pixel_shards ps ON ps.id = p.pixel_shard_id""")}
    samples = list(wds.WebDataset(sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar"))), shardshuffle=False))
    assert len(samples) == 50 == len(rows)
    for s in samples:
        ids, shard, offset, size = rows[s["__key__"]]
        assert s["input_ids.npy"][-len(ids):] == ids
        with open(os.path.join(ws, "shards", "pixels", shard), "rb") as f:
            f.seek(offset)
            assert f.read(size) == s["pixels.npy"]
        assert np.load(io.BytesIO(s["pixels.npy"])).shape == (1, 576, 588)
