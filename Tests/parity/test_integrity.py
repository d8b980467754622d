"""Every byte served is checked (issue 18 #4, issue 19): `show` and `stream` check each member against the XXH3
recorded at write time, against `xxhsum` (Debian's xxhash) as the reference; damaged, truncated and empty shards
give a clear error naming shard, member and offset, or a counted skip, and keys delivered before an error are
printed."""
import glob
import json
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing

import pytest

from conftest import run, synthetic

SMALL = ["--tokens", "30", "--patches", "16", "--patch-dim", "48"]


@pytest.fixture(scope="module")
def sharded(vlmdata_bin, bench_bin, tmp_path_factory):
    ws = str(tmp_path_factory.mktemp("integrity") / "ws")
    synthetic(bench_bin, ws, 30, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "20KB", "--quiet")
    return ws


@pytest.fixture
def ws(sharded, tmp_path):
    copy = str(tmp_path / "ws")
    shutil.copytree(sharded, copy)
    return copy


def query(ws, sql, *args):
    # Closed at once: a connection left to the garbage collector deletes the WAL file whenever it goes.
    with closing(sqlite3.connect(os.path.join(ws, "catalog.sqlite"))) as db:
        return db.execute(sql, args).fetchall()


def member(ws, key, name):
    """(shard file, shard path as indexed, content offset, size) of one member."""
    (path, offset, size), = query(ws, """
        SELECT h.path, p.offset, p.size FROM samples s JOIN shards h ON h.id = s.shard_id
        JOIN sample_parts p ON p.sample_id = s.id WHERE s.key = ? AND p.name = ?""", key, name)
    return os.path.join(ws, path), path, offset, size


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def stream(bin_path, ws, *extra):
    return run(bin_path, "stream", "--workspace", ws, "--shuffle", "none", "--workers", "2", *extra, check=False)


def order(bin_path, ws):
    result = stream(bin_path, ws)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def a_key_in_the_middle(ws):
    """A sample with pixels in the second shard, not its first (so samples come before and after it)."""
    (key,), = query(ws, """
        SELECT s.key FROM samples s JOIN shards h ON h.id = s.shard_id
        WHERE s.has_image = 1 AND s.index_in_shard = 1 ORDER BY h.name LIMIT 1 OFFSET 1""")
    return key


def test_shard_and_member_checksums_equal_xxhsum(vlmdata_bin, sharded, tmp_path):
    shards = query(sharded, "SELECT path, xxh3_128 FROM shards ORDER BY name")
    assert len(shards) > 3
    for path, recorded in shards:
        out = subprocess.run(["xxhsum", "-H2", os.path.join(sharded, path)], capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == recorded
    # Pixel shards too (migration v15): their XXH3-128, no sha256 unless asked for.
    pixel_shards = query(sharded, "SELECT name, xxh3_128, sha256 FROM pixel_shards ORDER BY name")
    assert pixel_shards
    for name, recorded, sha in pixel_shards:
        path = os.path.join(sharded, "shards", "pixels", name)
        out = subprocess.run(["xxhsum", "-H2", path], capture_output=True, text=True, check=True)
        assert out.stdout.split()[0] == recorded and sha is None
    rows = query(sharded, """
        SELECT h.path, p.name, p.offset, p.size, printf('%016x', p.xxh3) FROM sample_parts p
        JOIN samples s ON s.id = p.sample_id JOIN shards h ON h.id = s.shard_id ORDER BY s.key, p.name LIMIT 40""")
    assert {r[1] for r in rows} == {"json", "input_ids.npy", "labels.npy", "pixels.npy"}
    for path, name, offset, size, recorded in rows:
        with open(os.path.join(sharded, path), "rb") as f:
            f.seek(offset)
            (tmp_path / "member").write_bytes(f.read(size))
        out = subprocess.run(["xxhsum", "-H3", str(tmp_path / "member")], capture_output=True, text=True, check=True)
        # xxhsum 0.8.1 prints "XXH3 (FILE) = HEX" for -H3.
        assert out.stdout.strip().split()[-1] == recorded, (path, name)


def test_show_refuses_a_flipped_token_byte(vlmdata_bin, ws):
    key = a_key_in_the_middle(ws)
    clean = json.loads(run(vlmdata_bin, "show", "--workspace", ws, key, "--json").stdout)
    file, path, offset, size = member(ws, key, "input_ids.npy")
    flip(file, offset + size - 4)   # the low byte of the last token id
    bad = run(vlmdata_bin, "show", "--workspace", ws, key, "--json", check=False)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert path in bad.stderr and f"{key}.input_ids.npy" in bad.stderr and f"offset {offset}" in bad.stderr
    assert "xxh3" in bad.stderr
    # The flag that turns checking off shows the damaged bytes: the check is what refused them.
    raw = json.loads(run(vlmdata_bin, "show", "--workspace", ws, key, "--json", "--no-verify-reads").stdout)
    assert raw["input_ids"][:-1] == clean["input_ids"][:-1]
    assert raw["input_ids"][-1] == clean["input_ids"][-1] ^ 1


@pytest.mark.parametrize("name", ["json", "input_ids.npy", "labels.npy", "pixels.npy"])
def test_stream_stops_at_a_damaged_member_after_printing_the_keys_before(vlmdata_bin, ws, name):
    keys = order(vlmdata_bin, ws)
    key = a_key_in_the_middle(ws)
    file, path, offset, size = member(ws, key, name)
    flip(file, offset + size - 1)
    bad = stream(vlmdata_bin, ws)
    assert bad.returncode == 1
    assert f"{path}: {key}.{name} ({size} bytes at offset {offset})" in bad.stderr
    assert bad.stdout.split() == keys[:keys.index(key)]

    skipped = stream(vlmdata_bin, ws, "--on-corrupt", "skip")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.split() == [k for k in keys if k != key]
    assert "skipped=1" in skipped.stderr and "corrupt=1" in skipped.stderr
    assert f"skipped: {path}: {key}.{name}" in skipped.stderr


def test_a_truncated_shard_is_skipped_or_named(vlmdata_bin, ws):
    keys = order(vlmdata_bin, ws)
    (path, size), = query(ws, "SELECT path, bytes FROM shards ORDER BY name LIMIT 1 OFFSET 1")
    cut = size // 2
    os.truncate(os.path.join(ws, path), cut)
    lost = [k for (k,) in query(ws, """
        SELECT s.key FROM samples s JOIN shards h ON h.id = s.shard_id WHERE h.path = ? AND s.offset + s.size > ?
        ORDER BY s.index_in_shard""", path, cut)]
    assert lost and len(lost) < len(keys)

    bad = stream(vlmdata_bin, ws)
    assert bad.returncode == 1
    assert path in bad.stderr and lost[0] in bad.stderr and "truncated" in bad.stderr
    assert bad.stdout.split() == keys[:keys.index(lost[0])]

    for policy in (["--on-missing", "skip"], ["--on-corrupt", "skip"]):
        skipped = stream(vlmdata_bin, ws, *policy)
        assert skipped.returncode == 0, skipped.stderr
        assert skipped.stdout.split() == [k for k in keys if k not in lost]
        assert f"skipped={len(lost)}" in skipped.stderr

    shown = run(vlmdata_bin, "show", "--workspace", ws, lost[-1], check=False)
    assert shown.returncode == 1 and path in shown.stderr and "truncated" in shown.stderr


def test_an_empty_shard_is_skipped_or_named(vlmdata_bin, ws):
    keys = order(vlmdata_bin, ws)
    (path,), = query(ws, "SELECT path FROM shards ORDER BY name LIMIT 1 OFFSET 2")
    open(os.path.join(ws, path), "wb").close()
    lost = [k for (k,) in query(ws, """
        SELECT s.key FROM samples s JOIN shards h ON h.id = s.shard_id WHERE h.path = ? ORDER BY s.index_in_shard""", path)]
    bad = stream(vlmdata_bin, ws)
    assert bad.returncode == 1 and path in bad.stderr
    assert bad.stdout.split() == keys[:keys.index(lost[0])]
    skipped = stream(vlmdata_bin, ws, "--on-missing", "skip", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.split() == [k for k in keys if k not in lost]
    report = json.loads(skipped.stderr.strip().splitlines()[-1])
    assert report["skipped"] == len(lost) and report["corrupt"] == len(lost)


def test_batches_skip_damaged_samples_too(vlmdata_bin, ws):
    key = a_key_in_the_middle(ws)
    file, _, offset, size = member(ws, key, "pixels.npy")
    flip(file, offset + size // 2)
    bad = stream(vlmdata_bin, ws, "--batch-size", "4")
    assert bad.returncode == 1 and f"{key}.pixels.npy" in bad.stderr
    ok = stream(vlmdata_bin, ws, "--batch-size", "4", "--on-corrupt", "skip")
    assert ok.returncode == 0, ok.stderr
    assert key not in ok.stdout and "corrupt=1" in ok.stderr


def test_verify_checks_xxh3_and_deep_adds_sha256(vlmdata_bin, ws):
    # By default no sha256 is recorded: the flipped byte is caught by the XXH3-128 alone.
    assert query(ws, "SELECT COUNT(*) FROM shards WHERE sha256 IS NOT NULL") == [(0,)]
    assert query(ws, "SELECT COUNT(*) FROM pixel_shards WHERE sha256 IS NOT NULL") == [(0,)]
    quick = json.loads(run(vlmdata_bin, "verify", "--workspace", ws, "--json").stdout)
    assert quick["sha256_computed"] == 0 and query(ws, "SELECT COUNT(*) FROM shards WHERE sha256 IS NOT NULL") == [(0,)]
    key = a_key_in_the_middle(ws)
    file, path, offset, size = member(ws, key, "labels.npy")
    flip(file, offset + size - 2)
    quick = run(vlmdata_bin, "verify", "--workspace", ws, "--json", check=False)
    assert quick.returncode == 1
    problems = json.loads(quick.stdout)["problems"]
    name = os.path.basename(path)
    assert any(p.startswith(f"{name}: xxh3-128 is ") for p in problems)
    assert any(f"{key}.labels.npy" in p and "xxh3 is" in p for p in problems)
    assert not any("sha256 is" in p for p in problems)
    deep = run(vlmdata_bin, "verify", "--workspace", ws, "--deep", "--json", check=False)
    assert deep.returncode == 1
    assert not any("sha256 is" in p for p in json.loads(deep.stdout)["problems"])
    # --deep recorded the sha256 of every shard whose bytes matched their XXH3-128 (all but the damaged one) and
    # of every pixel shard, equal to sha256sum; the next --deep checks them instead of computing them again.
    report = json.loads(deep.stdout)
    recorded = dict(query(ws, "SELECT path, sha256 FROM shards"))
    assert recorded[path] is None and report["sha256_computed"] == len(recorded) - 1 == report["shards"] - 1 > 2
    for shard, sha in recorded.items():
        if shard != path:
            assert sha == sha256sum(os.path.join(ws, shard))
    for name, sha in query(ws, "SELECT name, sha256 FROM pixel_shards"):
        assert sha == sha256sum(os.path.join(ws, "shards", "pixels", name))
    again = json.loads(run(vlmdata_bin, "verify", "--workspace", ws, "--deep", "--json", check=False).stdout)
    assert again["sha256_checked"] == len(recorded) - 1 and again["sha256_computed"] == 0
    assert again["pixel_sha256_checked"] == report["pixel_sha256_computed"] > 0 and again["pixel_sha256_computed"] == 0


def sha256sum(path):
    out = subprocess.run(["sha256sum", path], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def test_shard_sha256_rows_equal_sha256sum_and_deep_checks_them(vlmdata_bin, bench_bin, ws, tmp_path):
    # Asked for after the shards were written: recorded for them (the files are not rewritten).
    before = {p: open(os.path.join(ws, p), "rb").read() for (p,) in query(ws, "SELECT path FROM shards")}
    added = json.loads(run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "20KB", "--sha256", "--json",
                           "--quiet").stdout)
    rows = query(ws, "SELECT path, sha256 FROM shards ORDER BY name")
    assert added["counts"]["sha256_added"] == len(rows) > 3
    for path, recorded in rows:
        assert recorded == sha256sum(os.path.join(ws, path))
        assert open(os.path.join(ws, path), "rb").read() == before[path]
    # Written with --sha256 from the start: the same bytes and rows.
    fresh = str(tmp_path / "fresh")
    synthetic(bench_bin, fresh, 30, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", fresh, "--target-size", "20KB", "--sha256", "--quiet")
    assert query(fresh, "SELECT name, sha256, xxh3_128 FROM shards ORDER BY name") == \
        query(ws, "SELECT name, sha256, xxh3_128 FROM shards ORDER BY name")
    checked = json.loads(run(vlmdata_bin, "verify", "--workspace", fresh, "--deep", "--json").stdout)
    assert checked["sha256_checked"] == len(rows) and checked["sha256_computed"] == 0
    # --deep now checks the recorded sha256 too.
    key = a_key_in_the_middle(fresh)
    file, path, offset, size = member(fresh, key, "labels.npy")
    flip(file, offset + size - 2)
    deep = run(vlmdata_bin, "verify", "--workspace", fresh, "--deep", "--json", check=False)
    assert deep.returncode == 1
    problems = json.loads(deep.stdout)["problems"]
    name = os.path.basename(path)
    assert any(p.startswith(f"{name}: sha256 is ") for p in problems)
    assert any(p.startswith(f"{name}: xxh3-128 is ") for p in problems)


def test_a_flipped_byte_in_a_pixel_shard_stops_shard_and_fails_verify(vlmdata_bin, ws):
    """Pixel shards were written without member checksums: a changed pixel member was copied into training shards
    under a fresh checksum and served as good. Now patchify records XXH3-64 per member (pixels.xxh3)."""
    (name, sha, offset, size, xxh3), = query(ws, """
        SELECT ps.name, p.sha256, p.offset, p.size, printf('%016x', p.xxh3) FROM pixels p
        JOIN pixel_shards ps ON ps.id = p.pixel_shard_id ORDER BY p.sha256 LIMIT 1""")
    path = glob.glob(os.path.join(ws, "shards", "**", name), recursive=True)[0]
    with open(path, "rb") as f:
        f.seek(offset)
        content = f.read(size)
    reference = subprocess.run(["xxhsum", "-H3", "-"], input=content, capture_output=True, check=True).stdout.decode()
    assert xxh3 in reference  # the recorded value is XXH3_64bits of the member, as xxhsum prints it
    assert run(vlmdata_bin, "verify", "--workspace", ws, check=False).returncode == 0
    flip(path, offset + size - 5)
    verify = run(vlmdata_bin, "verify", "--workspace", ws, "--json", check=False)
    assert verify.returncode == 1
    problems = json.loads(verify.stdout)["problems"]
    assert [p for p in problems if p.startswith(f"{name}: {sha}.npy ({size} bytes at offset {offset}): xxh3 is ")], problems
    shard = run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "7KB", "--quiet", check=False)
    assert shard.returncode == 1
    assert name in shard.stderr and f"{sha}.npy ({size} bytes at offset {offset})" in shard.stderr, shard.stderr
