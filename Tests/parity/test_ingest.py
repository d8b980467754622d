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


def test_invalid_utf8_rejects_that_record_only(vlmdata_bin, tmp_path, mini):
    """Finding 6: one invalid UTF-8 byte dropped every record after it; now only that record is rejected."""
    folder, images, caps = mini
    raw = json.dumps({"images": images, "annotations": caps[:2] + [{"id": 5, "image_id": images[0]["id"], "caption": "XX"}] + caps[2:]}).encode()
    raw = raw.replace(b'"XX"', b'"\xff\xfe"')
    f = write_coco(tmp_path / "utf.json", None, None, raw=raw)
    r = run(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder)
    assert "invalid UTF-8" in r.stderr and "utf.json" in r.stderr and "annotations[2]" in r.stderr
    assert stats(vlmdata_bin, tmp_path / "ws")["captions"] == len(caps)


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


# --- Hostile input (issue 18 findings 3, 5, 6, 7; issue 12's JSONL) -------------------------------------------------

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def ingest_json(bin_path, *args, check=True):
    """Runs an ingest with its JSON report; returns (report, stderr, returncode)."""
    r = run(bin_path, *args, check=check)
    return json.loads(r.stdout), r.stderr, r.returncode


def peak_rss_mb(bin_path, *args):
    """Runs the CLI in a fresh child of a fresh Python and returns that child's peak RSS in MB."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", probe, bin_path, *map(str, args)], capture_output=True, text=True, check=True)
    code, kb = out.stdout.split()
    assert code == "0", out
    return int(kb) / 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-corpus")
    subprocess.run([sys.executable, ROOT / "scripts" / "make_bad_corpus.py", out, "--bomb-mb", "200"], check=True)
    return out, json.loads((out / "expected.json").read_text())


def corpus_runs(vlmdata_bin, corpus, tmp_path):
    out, _ = corpus
    runs = {}
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "coco", "--captions", out / "coco/captions.json",
                                 "--instances", out / "coco/instances.json", "--images", out / "images", "--split", "bad", "--json", "--quiet")
    runs["coco"] = runs["instances"] = (report, err)
    for run_name, archive in [("zip", "images.zip"), ("targz", "images.tar.gz")]:
        report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / run_name,
                                     "--captions", out / "coco/archive_captions.json", "--images", out / archive, "--json", "--quiet")
        runs[run_name] = (report, err)
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "llava", "--workspace", tmp_path / "llava", "--json", out / "llava/records.jsonl",
                                 "--images", out / "llava/images", "--json-report", "--quiet")
    runs["llava"] = (report, err)
    return runs


def test_bad_corpus_every_case_is_named_and_good_records_kept(vlmdata_bin, corpus, tmp_path):
    _, expected = corpus
    runs = corpus_runs(vlmdata_bin, corpus, tmp_path)
    missing = []
    for case in expected["cases"]:
        report, _ = runs[case["run"]]
        if not any(case["needle"] in p for p in report["problems"]):
            missing.append(f'{case["run"]}: {case["case"]}: no problem contains {case["needle"]!r}')
    assert not missing, "\n".join(missing) + "\n\nproblems:\n" + "\n".join(
        p for r, _ in {id(v[0]): v for v in runs.values()}.values() for p in r["problems"])
    good = expected["good"]
    coco = runs["coco"][0]["counts"]
    assert coco["images_ok"] == good["coco_images_ok"]
    assert coco["captions"] == good["coco_captions"]
    assert coco["objects"] == good["objects"] and coco["objects_clipped"] == good["objects_clipped"]
    for name in ["zip", "targz"]:
        assert runs[name][0]["counts"]["images_ok"] == good["archive_images_ok"], name
    llava = runs["llava"][0]["counts"]
    assert llava["instructions"] == good["llava_instructions"] and llava["images"] == good["llava_images"]
    # Every problem is also on stderr (capped there, with the count of the rest).
    _, err = runs["coco"]
    assert "trunc_tail.jpg: corrupt" in err and "gone.jpg: missing" in err


def test_keys_that_escape_alike_stay_apart(vlmdata_bin, corpus, tmp_path):
    """Finding 3: x.jpg + x.png, 'a b.jpg' + 'a_b.jpg' and a repeated image id did abort with UNIQUE constraint failed."""
    out, _ = corpus
    ws = tmp_path / "ws"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", out / "coco/captions.json", "--images", out / "images", "--quiet")
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        rows = dict(db.execute("SELECT file_name, key FROM images"))
        caption_of = dict(db.execute("SELECT i.file_name, c.text FROM captions c JOIN images i ON i.id = c.image_id "
                                     "WHERE c.text LIKE 'a photo called %'"))
    for a, b in [("x.jpg", "x.png"), ("a b.jpg", "a_b.jpg")]:
        assert rows[a] != rows[b] and rows[a].startswith("train_") and rows[b].startswith("train_")
        assert caption_of[a] == f"a photo called {a}" and caption_of[b] == f"a photo called {b}"
    assert len(set(rows.values())) == len(rows)
    assert rows["good_0.jpg"] == "train_good_0"  # a name that collides with nothing keeps SPLIT_FILESTEM
    # Running again changes no key.
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", out / "coco/captions.json", "--images", out / "images", "--quiet")
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        assert dict(db.execute("SELECT file_name, key FROM images")) == rows


def test_llava_paths_that_escape_alike_get_their_own_image(vlmdata_bin, corpus, tmp_path):
    """Finding 3: a_b/c.jpg and a/b_c.jpg mapped to one image and a record lost its picture."""
    out, _ = corpus
    ws = tmp_path / "ws"
    run(vlmdata_bin, "ingest", "llava", "--workspace", ws, "--json", out / "llava/records.jsonl", "--images", out / "llava/images", "--quiet")
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        got = dict(db.execute("SELECT json_extract(i.meta, '$.id'), m.file_name FROM instructions i JOIN images m ON m.id = i.image_id "
                              "WHERE json_extract(i.meta, '$.id') IN ('r1', 'r2')"))
        sizes = dict(db.execute("SELECT file_name, width FROM images"))
    assert got == {"r1": "a_b/c.jpg", "r2": "a/b_c.jpg"}
    assert sizes["a/b_c.jpg"] == 16 and sizes["a_b/c.jpg"] != 16


def test_boxes_are_clipped_or_rejected(vlmdata_bin, corpus, tmp_path):
    """Finding 5: boxes outside the image, 10x it, at 1e308 or of zero area were stored with no message."""
    out, _ = corpus
    ws = tmp_path / "ws"
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--instances", out / "coco/instances.json",
                                 "--images", out / "images", "--json", "--quiet")
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        boxes = db.execute("SELECT o.x, o.y, o.w, o.h, i.width, i.height FROM objects o JOIN images i ON i.id = o.image_id").fetchall()
    assert len(boxes) == 4
    for x, y, w, h, iw, ih in boxes:
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= iw and y + h <= ih, (x, y, w, h, iw, ih)
    assert report["counts"]["objects_rejected"] == 7 and report["counts"]["objects_clipped"] == 2
    assert "outside the" in err and "clipped to" in err


def test_bombs_are_stopped_with_bounded_memory(vlmdata_bin, corpus, tmp_path):
    """Finding 6: a 400 MB member in a small zip or tar.gz was read whole (peak RSS ~ the member's size)."""
    out, _ = corpus
    for archive in ["images.zip", "images.tar.gz"]:
        mb = peak_rss_mb(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / archive, "--captions",
                         out / "coco/archive_captions.json", "--images", out / archive, "--quiet")
        assert mb < 150, f"{archive}: peak RSS {mb:.0f} MB"


def test_huge_caption_is_rejected_with_bounded_memory(vlmdata_bin, tmp_path, mini):
    """Finding 6: a 60 MB caption was materialized whole; now that record is rejected and the rest kept."""
    folder, images, caps = mini
    f = tmp_path / "caps.json"
    with open(f, "w") as out:
        out.write('{"images": %s, "annotations": [%s, ' % (json.dumps(images), json.dumps(caps[0])))
        out.write('{"id": 77, "image_id": %d, "caption": "' % images[0]["id"])
        for _ in range(60):
            out.write("z" * (1 << 20))
        out.write('"}, %s]}' % ", ".join(json.dumps(c) for c in caps[1:]))
    mb = peak_rss_mb(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", f, "--images", folder, "--quiet")
    assert mb < 60, f"peak RSS {mb:.0f} MB"
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws2", "--captions", f, "--images", folder, "--json", "--quiet")
    assert report["counts"]["captions"] == len(caps)
    assert "annotations[1]" in err and "'caption' is longer than 65536 bytes" in err


def test_image_problems_are_listed_per_item(vlmdata_bin, corpus, tmp_path):
    """Finding 7: corrupt, missing and too-large images showed only as counts."""
    out, _ = corpus
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", tmp_path / "ws", "--captions", out / "coco/captions.json",
                                 "--images", out / "images", "--json", "--quiet")
    for needle in ["text.jpg: corrupt: not an image", "gone.jpg: missing: no file at", "huge.png: too_large:",
                   "empty.jpg: corrupt: file is empty"]:
        assert needle in err, needle
        assert any(needle in p for p in report["problems"]), needle


def test_archive_links_are_reported_as_links(vlmdata_bin, corpus, tmp_path):
    """Finding 7: symbolic and hard links in an archive were reported as 'not in archive'."""
    out, _ = corpus
    ws = tmp_path / "ws"
    report, err, _ = ingest_json(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", out / "coco/archive_captions.json",
                                 "--images", out / "images.tar.gz", "--json", "--quiet")
    assert "member is a symbolic link to '/etc/passwd'" in err
    assert "member is a hard link to 'train/good_0.jpg'" in err
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        errors = dict(db.execute("SELECT file_name, error FROM images"))
    assert "symbolic link" in errors["link.jpg"] and "hard link" in errors["hard.jpg"]


def test_killed_run_is_marked_interrupted(vlmdata_bin, shared, tmp_path):
    """Finding 7: a killed run's row stayed 'running' forever."""
    caps = shared / "coco-captions" / "captions_val2017.json"
    ws = tmp_path / "ws"
    args = [vlmdata_bin, "ingest", "coco", "--captions", str(caps), "--split", "val2017", "--quiet", "--workspace", str(ws)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with sqlite3.connect(ws / "catalog.sqlite") as db:
                if db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        statuses = [s for (s,) in db.execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "done"], statuses


def test_llava_jsonl_gpt4_qa_file(vlmdata_bin, shared, tmp_path):
    """Issue 12 (7b): JSONL was refused ('expected a JSON array at byte 0'). GPT-4 QA records (instruction, output, type)
    become one human turn ('<image>' then the instruction) and one gpt turn; type conv/detail/complex gives the kind."""
    f = shared / "llava" / "coco2014_val_gpt4_qa_30x3.jsonl"
    report, _, _ = ingest_json(vlmdata_bin, "ingest", "llava", "--workspace", tmp_path / "ws", "--json", f, "--json-report", "--quiet")
    assert report["counts"]["instructions"] == 90 and report["counts"]["images"] == 30
    source = [json.loads(line) for line in open(f)]
    with sqlite3.connect(tmp_path / "ws" / "catalog.sqlite") as db:
        stored = db.execute("SELECT kind, conversations FROM instructions ORDER BY id").fetchall()
    kinds = {"conv": "conversation", "detail": "detail", "complex": "complex"}
    for (kind, conversations), record in zip(stored, source):
        assert kind == kinds[record["type"]]
        assert json.loads(conversations) == [{"from": "human", "value": "<image>\n" + record["instruction"]},
                                             {"from": "gpt", "value": record["output"]}]
