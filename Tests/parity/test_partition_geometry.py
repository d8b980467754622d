"""Partitioned runs, patch geometry and box frames, end to end on ../shared/data/coco-mini with the release binary.

Regression tests for issue 12:
- case 2: `--part I/N` on ingest, patchify and shard, then `catalog merge`, gave 150 samples where one workspace
  gives 636 (the stages partitioned by different keys);
- case 4: `patchify --image-size 28` with the default tokenization: `show` printed 576 image tokens beside pixels
  [1, 4, 588], and shard exited 0;
- case 5: grounding boxes were normalized to the original image while `--mode pad` pixels are the padded square.

Then the composition: modes (crop, pad, anyres) x parts (1, 2, 3) applied to every stage and merged give the
one-workspace samples byte for byte, image tokens equal to the stored pixel geometry, and every stated box is an
annotated object's box in the frame of the pixels.
"""
import glob
import io
import json
import os
import re
import sqlite3
import tarfile

import numpy as np
import pytest

from conftest import SHARED, run

COCO = SHARED / "coco-mini"
TOKENIZER = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"
BOX = re.compile(r"\[(-?\d+\.\d+), (-?\d+\.\d+), (-?\d+\.\d+), (-?\d+\.\d+)\]")
FRAME = {"crop": "crop", "pad": "pad", "anyres": "original", "squash": "original"}


def stages(bin_path, ws, mode, part=None, kinds="caption,grounding,count", size=56, image_tokens="pixels", patchify=()):
    """ingest, gen-instructions, patchify, tokenize, shard: each with the same --part when one is given."""
    p = ["--part", part] if part else []
    q = ["--workspace", ws, "--quiet"]
    run(bin_path, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017", *p)
    run(bin_path, "gen-instructions", *q, "--generator", "templates", "--kinds", kinds, "--seed", "3",
        "--box-frame", FRAME[mode], *p)
    run(bin_path, "patchify", *q, "--image-size", size, "--patch-size", 14, "--mode", mode, "--jobs", 2, *patchify, *p)
    run(bin_path, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", image_tokens, *p)
    run(bin_path, "shard", *q, "--target-size", "200KB", *p)


def samples(ws):
    """key -> {member suffix: bytes}, read from the training shards the catalog indexes."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        paths = [p for (p,) in db.execute("SELECT path FROM shards ORDER BY name")]
    out = {}
    for path in paths:
        with tarfile.open(os.path.join(ws, path) if not os.path.isabs(path) else path) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                out.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return out


def coco_objects():
    """image file name -> (width, height, [(x, y, w, h), ...])."""
    data = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    images = {i["id"]: (i["file_name"], i["width"], i["height"]) for i in data["images"]}
    out = {name: (w, h, []) for name, w, h in images.values()}
    for a in data["annotations"]:
        out[images[a["image_id"]][0]][2].append(a["bbox"])
    return out


def in_frame(box, w, h, frame):
    """[x1, y1, x2, y2] of a COCO box in a frame (the same rule as LLaVA's expand2square / CLIP's centre crop)."""
    x, y, bw, bh = box
    if frame == "pad":
        side = max(w, h)
        ox, oy, fw, fh = -((side - w) // 2), -((side - h) // 2), side, side
    elif frame == "crop":
        side = min(w, h)
        ox, oy, fw, fh = (w - side) / 2, (h - side) / 2, side, side
    else:
        ox, oy, fw, fh = 0, 0, w, h
    return [(x - ox) / fw, (y - oy) / fh, (x + bw - ox) / fw, (y + bh - oy) / fh]


def check_geometry_and_boxes(found, mode, objects):
    """Image tokens equal the stored pixel geometry; every box is in [0, 1] and is an object's box in the pixels'
    frame; the json records the original image size and the frame."""
    grounded = 0
    for key, members in found.items():
        meta = json.loads(members["json"])
        pixels = np.load(io.BytesIO(members["pixels.npy"]))
        tiles, patches, dim = pixels.shape
        assert meta["pixels_shape"] == list(pixels.shape)
        assert meta["image_tokens"] == tiles * patches, key
        assert dim == 14 * 14 * 3 and patches == (56 // 14) ** 2
        if mode == "anyres":
            rows, cols = meta["grid"]
            assert tiles == 1 + rows * cols
        else:
            assert tiles == 1
        w, h, boxes = objects[meta["image_file"]]
        assert meta["image_size"] == [w, h]
        text = " ".join(t["value"] for t in meta["conversations"])
        stated = [[float(v) for v in m] for m in BOX.findall(text)]
        if stated:
            grounded += 1
            assert meta["box_frame"] == FRAME[mode]
        for box in stated:
            assert all(0 <= v <= 1 for v in box), (key, box)
            truth = [in_frame(b, w, h, FRAME[mode]) for b in boxes]
            assert any(all(abs(a - min(max(b, 0), 1)) <= 0.0051 for a, b in zip(box, t)) for t in truth), (key, box)
    return grounded


# ---- regression: case 2 (one partition function) ----

def test_every_stage_partitioned_then_merged_equals_one_workspace(vlmdata_bin, tmp_path):
    whole = str(tmp_path / "whole")
    stages(vlmdata_bin, whole, "pad", kinds="caption,grounding,count,yesno,mcq,multiturn,detail")
    parts = []
    for i in range(2):
        ws = str(tmp_path / f"part{i}")
        stages(vlmdata_bin, ws, "pad", part=f"{i}/2", kinds="caption,grounding,count,yesno,mcq,multiturn,detail")
        parts.append(ws)
    merged = str(tmp_path / "merged")
    report = json.loads(run(vlmdata_bin, "catalog", "merge", merged, *parts, "--json", "--quiet").stdout)
    expected = samples(whole)
    assert len(expected) > 500
    assert report["counts"]["samples"] == len(expected)
    assert report["counts"]["parts_of"] == 2 and report["counts"]["parts_missing"] == 0
    assert samples(merged) == expected


# ---- regression: case 4 (image tokens from the stored pixels) ----

def test_image_tokens_follow_the_stored_pixels(vlmdata_bin, tmp_path):
    ws = str(tmp_path / "ws")
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--images", COCO / "train2017")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "caption")
    run(vlmdata_bin, "patchify", *q, "--image-size", 28, "--jobs", 2)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1")   # the default 576
    refused = run(vlmdata_bin, "shard", *q, check=False)
    assert refused.returncode != 0
    assert "tokenized with 576 image tokens" in refused.stderr and "4 image tokens" in refused.stderr
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels")
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        (config,) = db.execute("SELECT config_hash FROM tokenized GROUP BY config_hash HAVING MAX(n_image_tokens) = 4").fetchone()
    run(vlmdata_bin, "shard", *q, "--tokenized", config)
    found = samples(ws)
    key = sorted(found)[0]
    shown = run(vlmdata_bin, "show", "--workspace", ws, key).stdout
    assert "4 image tokens" in shown and "[1, 4, 588]" in shown and "576 image tokens" not in shown
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        assert {n for (n,) in db.execute("SELECT DISTINCT image_tokens FROM samples")} == {4}


def test_anyres_image_tokens_sum_every_tile(vlmdata_bin, tmp_path):
    ws = str(tmp_path / "ws")
    # Grids of 1 x 2, 2 x 1, 1 x 3, 3 x 1 tiles of 56 px: wide and tall images pick different ones.
    stages(vlmdata_bin, ws, "anyres", kinds="caption", patchify=("--grid-pinpoints", "112x56,56x112,168x56,56x168"))
    found = samples(ws)
    metas = [json.loads(m["json"]) for m in found.values()]
    assert {m["image_tokens"] for m in metas} <= {16 * 3, 16 * 4}   # (1 + 2) or (1 + 3) tiles of (56 / 14)^2 patches
    assert len({tuple(m["grid"]) for m in metas}) > 1
    check_geometry_and_boxes(found, "anyres", coco_objects())


# ---- regression: case 5 (boxes in the frame of the pixels) ----

def test_pad_boxes_are_in_the_padded_square_and_shard_checks_the_frame(vlmdata_bin, tmp_path):
    ws = str(tmp_path / "ws")
    stages(vlmdata_bin, ws, "pad", kinds="grounding")
    found = samples(ws)
    objects = coco_objects()
    assert check_geometry_and_boxes(found, "pad", objects) > 40
    # No COCO-mini image is square, so the original-frame box differs from the padded one somewhere.
    assert sum(w != h for w, h, _ in objects.values()) > 60
    # Instructions in the original frame beside pad pixels: shard refuses them, naming the frames.
    other = str(tmp_path / "other")
    q = ["--workspace", other, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "grounding")
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--mode", "pad", "--jobs", 2)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels")
    refused = run(vlmdata_bin, "shard", *q, check=False)
    assert refused.returncode != 0
    assert "boxes in the original frame, pixels need pad" in refused.stderr and "--box-frame pad" in refused.stderr


def test_crop_drops_the_boxes_the_crop_cuts(vlmdata_bin, tmp_path):
    ws = str(tmp_path / "ws")
    stages(vlmdata_bin, ws, "crop", kinds="grounding")
    found = samples(ws)
    assert check_geometry_and_boxes(found, "crop", coco_objects()) > 20
    original = str(tmp_path / "original")
    stages(vlmdata_bin, original, "squash", kinds="grounding")
    # Fewer objects can be grounded in the crop than in the whole image.
    assert len(found) < len(samples(original))


# ---- the composition: modes x parts on every stage, merged ----

@pytest.mark.parametrize("mode", ["crop", "pad", "anyres"])
def test_modes_by_parts_merge_to_the_one_workspace_result(vlmdata_bin, tmp_path, mode):
    objects = coco_objects()
    whole = str(tmp_path / "whole")
    stages(vlmdata_bin, whole, mode)
    expected = samples(whole)
    assert len(expected) > 150
    check_geometry_and_boxes(expected, mode, objects)
    for n in (1, 2, 3):
        parts = []
        for i in range(n):
            ws = str(tmp_path / f"n{n}-part{i}")
            stages(vlmdata_bin, ws, mode, part=f"{i}/{n}")
            parts.append(ws)
        merged = str(tmp_path / f"n{n}-merged")
        out = run(vlmdata_bin, "catalog", "merge", merged, *parts, "--quiet").stdout
        for i in range(n):
            assert f"coverage: {parts[i]}: part {i}/{n}" in out
        found = samples(merged)
        assert sorted(found) == sorted(expected)
        assert found == expected
        check_geometry_and_boxes(found, mode, objects)
        run(vlmdata_bin, "verify", "--workspace", merged)


def test_merge_refuses_a_missing_or_doubled_part_unless_partial(vlmdata_bin, tmp_path):
    parts = []
    for i in range(3):
        ws = str(tmp_path / f"part{i}")
        stages(vlmdata_bin, ws, "pad", part=f"{i}/3", kinds="caption")
        parts.append(ws)
    missing = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m1"), parts[0], parts[2], check=False)
    assert missing.returncode != 0 and "parts 1/3 are missing" in missing.stderr and "--partial" in missing.stderr
    assert not os.path.exists(os.path.join(tmp_path, "m1", "shards"))
    partial = json.loads(run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m2"), parts[0], parts[2], "--partial",
                             "--json", "--quiet").stdout)
    assert partial["counts"]["parts_missing"] == 1 and "1/3" in partial["problems"][0]
    # A workspace whose stages ran part 1 twice over with part 0 in another workspace ...
    doubled = str(tmp_path / "doubled")
    stages(vlmdata_bin, doubled, "pad", part="1/3", kinds="caption")
    twice = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m3"), parts[0], parts[1], doubled, parts[2], check=False)
    assert twice.returncode != 0 and "part 1/3 is also in" in twice.stderr
    # ... and a workspace whose stages ran different parts holds no whole part.
    mixed = str(tmp_path / "mixed")
    q = ["--workspace", mixed, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--images", COCO / "train2017", "--part", "0/3")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "caption", "--part", "1/3")
    bad = run(vlmdata_bin, "catalog", "merge", str(tmp_path / "m4"), mixed, parts[1], parts[2], check=False)
    assert bad.returncode != 0 and "ran different parts" in bad.stderr
