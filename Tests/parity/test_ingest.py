"""End-to-end tests of `vlmdata ingest coco|llava`, `synth shapes` and `stats` on real and broken inputs."""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import time
import zipfile

import pytest

from conftest import run

COCO = "coco-mini"


def stats(bin_path, ws):
    return json.loads(run(bin_path, "stats", "--workspace", ws, "--json").stdout)


def ingest_mini(bin_path, shared, ws, images):
    ann = shared / COCO / "annotations"
    return run(bin_path, "ingest", "coco", "--workspace", ws, "--captions", ann / "captions_train2017.json",
               "--instances", ann / "instances_train2017.json", "--images", images, "--split", "train2017", "--quiet")


def expect_mini_counts(s):
    assert s["images"] == {"total": 80, "ok": 80, "missing": 0, "corrupt": 0, "size_mismatch": 0, "too_large": 0}
    assert (s["captions"], s["objects"], s["categories"]) == (400, 739, 80)


def test_coco_mini_folder_zip_and_tar(vlmdata_bin, shared, tmp_path):
    images = shared / COCO / "train2017"
    ingest_mini(vlmdata_bin, shared, tmp_path / "folder", images)
    expect_mini_counts(stats(vlmdata_bin, tmp_path / "folder"))

    zpath = tmp_path / "train2017.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(images.iterdir()):
            z.write(p, f"train2017/{p.name}")
    ingest_mini(vlmdata_bin, shared, tmp_path / "zip", zpath)
    expect_mini_counts(stats(vlmdata_bin, tmp_path / "zip"))

    tpath = tmp_path / "train2017.tar"
    with tarfile.open(tpath, "w") as t:
        for p in sorted(images.iterdir()):
            t.add(p, f"train2017/{p.name}")
    ingest_mini(vlmdata_bin, shared, tmp_path / "tar", tpath)
    expect_mini_counts(stats(vlmdata_bin, tmp_path / "tar"))

    # The same bytes give the same sha256 whatever the container.
    def hashes(ws):
        with sqlite3.connect(ws / "catalog.sqlite") as db:
            return dict(db.execute("SELECT key, sha256 FROM images"))
    assert hashes(tmp_path / "folder") == hashes(tmp_path / "zip") == hashes(tmp_path / "tar")

    # Running again adds nothing.
    ingest_mini(vlmdata_bin, shared, tmp_path / "folder", images)
    expect_mini_counts(stats(vlmdata_bin, tmp_path / "folder"))


def test_captions_without_images_are_missing(vlmdata_bin, shared, tmp_path):
    run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path, "--captions",
        shared / "coco-captions" / "captions_val2017.json", "--split", "val2017", "--quiet")
    s = stats(vlmdata_bin, tmp_path)
    assert s["images"]["total"] == 5000 and s["images"]["missing"] == 5000
    assert s["captions"] == 25014


def test_llava_pretrain_sample(vlmdata_bin, shared, tmp_path):
    sample = shared / "llava" / "pretrain-sample"
    (json_file,) = sample.glob("*.json")
    run(vlmdata_bin, "ingest", "llava", "--workspace", tmp_path, "--json", json_file, "--images", sample / "images", "--quiet")
    s = stats(vlmdata_bin, tmp_path)
    assert s["images"]["total"] == 50 and s["images"]["ok"] == 50
    assert s["instructions"] == 50
    with sqlite3.connect(tmp_path / "catalog.sqlite") as db:
        stored = [json.loads(c) for (c,) in db.execute("SELECT conversations FROM instructions ORDER BY id")]
    original = json.load(open(json_file))
    assert stored == [r["conversations"] for r in original]


def write_coco(path, images, annotations, categories=None, raw=None):
    doc = {"images": images, "annotations": annotations}
    if categories is not None:
        doc["categories"] = categories
    path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
    return path




@pytest.fixture
def mini(shared, tmp_path):
    src = shared / COCO / "train2017"
    ann = json.load(open(shared / COCO / "annotations" / "captions_train2017.json"))
    images = ann["images"][:4]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for im in images:
        shutil.copy(src / im["file_name"], folder / im["file_name"])
    caps = [a for a in ann["annotations"] if a["image_id"] in {im["id"] for im in images}]
    return folder, images, caps


def test_bad_records_are_reported_and_good_ones_kept(vlmdata_bin, tmp_path, mini):
    folder, images, caps = mini
    bad_caps = list(caps)
    bad_caps.append({"id": 99000001, "image_id": 424242, "caption": "a caption for an image that does not exist"})
    bad_caps.append({"id": "x", "image_id": images[0]["id"], "caption": "id is a string"})
    bad_caps.append({"id": 99000002, "image_id": images[0]["id"], "caption": 7})
    f = write_coco(tmp_path / "caps.json", images, bad_caps)
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, "--quiet")
    assert "image_id 424242 is not in 'images'" in r.stderr
    assert "field 'id' is a string, expected an integer" in r.stderr
    assert "field 'caption' is an integer, expected a string" in r.stderr
    assert "caps.json" in r.stderr and "annotations[" in r.stderr
    s = stats(vlmdata_bin, tmp_path / "ws")
    assert s["captions"] == len(caps) and s["images"]["ok"] == 4
    # --strict turns problems into a failing exit code.
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws2", "--captions", f, "--images", folder, "--strict", check=False)
    assert r.returncode == 1


def test_truncated_json_keeps_the_records_before(vlmdata_bin, tmp_path, mini):
    folder, images, caps = mini
    full = json.dumps({"images": images, "annotations": caps}).encode()
    f = write_coco(tmp_path / "trunc.json", None, None, raw=full[: full.index(b'"caption"', len(full) // 2) + 20])
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, check=False)
    assert r.returncode == 1
    assert "trunc.json" in r.stderr and "unexpected end of file" in r.stderr
    s = stats(vlmdata_bin, tmp_path / "ws")
    assert s["images"]["ok"] == 4 and 0 < s["captions"] < len(caps)


def test_invalid_utf8_is_named(vlmdata_bin, tmp_path, mini):
    folder, images, caps = mini
    raw = json.dumps({"images": images, "annotations": caps[:2] + [{"id": 5, "image_id": images[0]["id"], "caption": "XX"}]}).encode()
    raw = raw.replace(b'"XX"', b'"\xff\xfe"')
    f = write_coco(tmp_path / "utf.json", None, None, raw=raw)
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, check=False)
    assert r.returncode == 1
    assert "invalid UTF-8" in r.stderr and "utf.json" in r.stderr and "annotations[2]" in r.stderr
    assert stats(vlmdata_bin, tmp_path / "ws")["captions"] == 2


def test_bad_images_get_a_status_and_a_reason(vlmdata_bin, tmp_path, mini):
    folder, images, caps = mini
    (folder / images[0]["file_name"]).write_bytes(b"this is not an image at all")
    images[1] = dict(images[1], width=images[1]["width"] + 7)
    (folder / images[2]["file_name"]).unlink()
    f = write_coco(tmp_path / "caps.json", images, caps)
    run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, "--quiet")
    s = stats(vlmdata_bin, tmp_path / "ws")["images"]
    assert (s["ok"], s["corrupt"], s["size_mismatch"], s["missing"]) == (1, 1, 1, 1)
    with sqlite3.connect(tmp_path / "ws" / "catalog.sqlite") as db:
        errors = dict(db.execute("SELECT status, error FROM images WHERE status != 'ok'"))
    assert "not an image" in errors["corrupt"]
    assert "annotation says" in errors["size_mismatch"]
    assert "no file at" in errors["missing"]


def test_too_large_from_the_header(vlmdata_bin, tmp_path):
    import struct
    import zlib
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png)
    f = write_coco(tmp_path / "c.json", [{"id": 1, "file_name": "bomb.png", "width": 100000, "height": 100000}],
                   [{"id": 1, "image_id": 1, "caption": "big"}])
    run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, "--quiet")
    assert stats(vlmdata_bin, tmp_path / "ws")["images"]["too_large"] == 1


def test_zip_members_outside_the_root_are_never_followed(vlmdata_bin, shared, tmp_path, mini):
    folder, images, caps = mini
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for im in images[:2]:
            z.write(folder / im["file_name"], im["file_name"])
        z.writestr("../evil.jpg", (folder / images[2]["file_name"]).read_bytes())
        z.writestr("/abs/evil2.jpg", (folder / images[3]["file_name"]).read_bytes())
    named = [dict(images[0]), dict(images[1]), dict(images[2], file_name="../evil.jpg"), dict(images[3], file_name="/abs/evil2.jpg")]
    f = write_coco(tmp_path / "c.json", named, caps)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", zpath, cwd=workdir)
    assert "unsafe name" in r.stderr
    s = stats(vlmdata_bin, tmp_path / "ws")["images"]
    assert s["ok"] == 2 and s["missing"] == 2
    assert not (tmp_path / "evil.jpg").exists() and not os.path.exists("/abs/evil2.jpg")
    # The same names in folder mode are not followed either.
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws2", "--captions", f, "--images", folder)
    assert stats(vlmdata_bin, tmp_path / "ws2")["images"]["missing"] == 2


def test_missing_files_are_clear_errors(vlmdata_bin, tmp_path):
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", tmp_path / "nope.json", check=False)
    assert r.returncode == 1 and "nope.json" in r.stderr and "does not exist" in r.stderr
    r = run(vlmdata_bin, "ingest", "llava", "--workspace", tmp_path / "ws", "--json", tmp_path / "nope.json", check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    f = write_coco(tmp_path / "c.json", [], [])
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", tmp_path / "nodir", check=False)
    assert r.returncode == 1 and "nodir" in r.stderr


def test_llava_bad_records(vlmdata_bin, shared, tmp_path):
    sample = shared / "llava" / "pretrain-sample"
    (json_file,) = sample.glob("*.json")
    records = json.load(open(json_file))[:5]
    records.insert(1, {"id": "two-images", "image": records[0]["image"],
                       "conversations": [{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "x"}]})
    records.insert(2, {"id": "bad-role", "conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]})
    records.insert(3, {"id": "no-convs", "image": records[0]["image"]})
    records.insert(4, {"id": "escape", "image": "../../etc/passwd",
                       "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]})
    f = tmp_path / "llava.json"
    f.write_text(json.dumps(records))
    r = run(vlmdata_bin, "ingest", "llava", "--workspace", tmp_path / "ws", "--json", f, "--images", sample / "images")
    for needle in ["two-images", "exactly one <image>", "bad-role", "'robot'", "no-convs", "conversations", "escape"]:
        assert needle in r.stderr, needle
    assert stats(vlmdata_bin, tmp_path / "ws")["instructions"] == 5


def test_sigkill_midway_then_rerun_equals_a_clean_run(vlmdata_bin, shared, tmp_path):
    caps = shared / "coco-captions" / "captions_val2017.json"
    args = ["ingest", "coco", "--captions", str(caps), "--split", "val2017", "--quiet"]
    run(vlmdata_bin, *args, "--workspace", tmp_path / "clean")
    clean = stats(vlmdata_bin, tmp_path / "clean")
    rng = random.Random(7)
    ws = tmp_path / "killed"
    for attempt in range(3):
        p = subprocess.Popen([vlmdata_bin, *args, "--workspace", str(ws)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
    run(vlmdata_bin, *args, "--workspace", ws)
    assert stats(vlmdata_bin, ws) == clean
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_synth_shapes_is_deterministic_and_ingestable(vlmdata_bin, tmp_path):
    for name in ["a", "b"]:
        run(vlmdata_bin, "synth", "shapes", "--count", 12, "--seed", 3, "--out", tmp_path / name, "--quiet")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 14
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    d = tmp_path / "a"
    run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", d / "annotations/captions_train.json",
        "--instances", d / "annotations/instances_train.json", "--images", d / "train", "--quiet")
    s = stats(vlmdata_bin, tmp_path / "ws")
    assert s["images"]["ok"] == 12 and s["categories"] == 3 and s["captions"] == 36


def test_synth_captions_are_true_to_the_pixels(vlmdata_bin, tmp_path):
    """Each object's box holds its colour, and each caption names every object's colour, shape and side."""
    import numpy as np
    from PIL import Image
    run(vlmdata_bin, "synth", "shapes", "--count", 30, "--seed", 5, "--out", tmp_path, "--quiet")
    inst = json.load(open(tmp_path / "annotations/instances_train.json"))
    caps = json.load(open(tmp_path / "annotations/captions_train.json"))
    colours = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (235, 215, 40),
               "purple": (140, 50, 190), "orange": (245, 135, 25)}
    shapes = {c["id"]: c["name"] for c in inst["categories"]}
    files = {im["id"]: im["file_name"] for im in inst["images"]}
    for obj in inst["annotations"]:
        px = np.asarray(Image.open(tmp_path / "train" / files[obj["image_id"]]).convert("RGB")).astype(int)
        x, y, w, h = map(int, obj["bbox"])
        cx, cy = x + w // 2, y + h * 2 // 3
        want = np.array(colours[obj["attributes"]["colour"]])
        assert np.abs(px[cy, cx] - want).max() <= 12
        side = "left" if x + w / 2 < px.shape[1] / 2 else "right"
        assert side == obj["attributes"]["side"]
        phrase = f'{obj["attributes"]["colour"]} {shapes[obj["category_id"]]}'
        for cap in (c["caption"] for c in caps["annotations"] if c["image_id"] == obj["image_id"]):
            assert phrase in cap and side in cap
