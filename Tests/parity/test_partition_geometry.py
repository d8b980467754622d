"""Partitioned runs, patch geometry and box frames, end to end on ../shared/data/coco-mini with the release binary.

Regression tests for issue 12:
- case 2: `--part I/N` on ingest, patchify and shard, then `catalog merge`, gave 150 samples where one workspace
  gives 636 (the stages partitioned by different keys);
- case 4: `patchify --image-size 28` with the default tokenization: `show` printed 576 image tokens beside pixels
  [1, 4, 588], and shard exited 0;
- case 5: grounding boxes were normalized to the original image while `--mode pad` pixels are the padded square.

The full composition (templates x tokenizers x modes x parts, merged) is test_composition.py; the checks both
use are in invariants.py.
"""
import json
import os
import sqlite3

import pytest

from conftest import SHARED, run
from invariants import COCO, FRAME, check_geometry_and_boxes, coco_objects, samples

TOKENIZER = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"


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
    assert len(expected) == 80   # one multi-turn sample per image (docs/text.md); the parts merge to the same
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


# ---- box frames of every generator: a changed frame, crop counts, LLaVA imports ----

def pixels_hash(ws, mode):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        (config,) = db.execute("SELECT DISTINCT config_hash FROM pixels WHERE config LIKE ?", (f'%"mode":"{mode}"%',)).fetchone()
    return config


def two_frame_instructions(vlmdata_bin, ws, pad_part=None):
    """coco-mini ingested into `ws`, with template instructions in the original frame for every image and again
    with `--box-frame pad` (for the images of `pad_part` only, when given)."""
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017")
    kinds = ["--generator", "templates", "--kinds", "caption,grounding,count", "--seed", "3"]
    run(vlmdata_bin, "gen-instructions", *q, *kinds)
    run(vlmdata_bin, "gen-instructions", *q, *kinds, "--box-frame", "pad", *(["--part", pad_part] if pad_part else []))


def test_another_box_frame_needs_no_fresh_workspace(vlmdata_bin, tmp_path):
    """gen-instructions again with --box-frame pad in a workspace that holds original-frame instructions adds the
    pad rows (the frame is in their keys); shard beside pad pixels takes those and leaves the others out, counted.
    Before: the second run kept the original rows, and shard refused the workspace."""
    ws = str(tmp_path / "ws")
    q = ["--workspace", ws, "--quiet"]
    two_frame_instructions(vlmdata_bin, ws)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        frames = dict(db.execute("SELECT COALESCE(json_extract(meta, '$.box_frame'), '-'), COUNT(*) FROM instructions GROUP BY 1"))
    assert frames["pad"] == frames["original"] > 60 and frames["-"] == 80, frames   # captions once, the rest per frame
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--patch-size", 14, "--mode", "pad", "--jobs", 2)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels",
        "--sample-per-instruction")   # counts per instruction
    report = json.loads(run(vlmdata_bin, "shard", *q, "--target-size", "200KB", "--json").stdout.strip().splitlines()[-1])
    assert report["counts"]["skipped_other_box_frame"] == frames["original"]
    found = samples(ws)
    assert len(found) == frames["pad"] + frames["-"]
    assert check_geometry_and_boxes(found, "pad", coco_objects()) > 40
    assert all(json.loads(m["json"]).get("box_frame") in (None, "pad") for m in found.values())


def crop_window(w, h):
    side = min(w, h)
    return (w - side) / 2, (h - side) / 2, side


def test_crop_counts_leave_out_what_the_crop_cuts(vlmdata_bin, tmp_path):
    """Counts and yes/no made for the whole image beside crop pixels are refused (they count objects the crop cut
    off; before, shard took them); made with --box-frame crop, a count is the number of objects wholly inside the
    crop, and a category the crop's edge cuts is not counted."""
    ws = str(tmp_path / "ws")
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "count,yesno", "--seed", "3", "--per-image", "3")
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--patch-size", 14, "--mode", "crop", "--jobs", 2)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels",
        "--sample-per-instruction")   # checks each count on its own
    refused = run(vlmdata_bin, "shard", *q, check=False)
    assert refused.returncode != 0 and "pixels need crop" in refused.stderr and "--box-frame crop" in refused.stderr
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "count,yesno", "--seed", "3",
        "--per-image", "3", "--box-frame", "crop")
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels",
        "--sample-per-instruction")
    run(vlmdata_bin, "shard", *q)
    found = samples(ws)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        metas = {k: json.loads(m) for k, m in db.execute("SELECT key, meta FROM instructions")}
    data = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    by_file = {}
    for a in data["annotations"]:
        by_file.setdefault(files[a["image_id"]], []).append((names[a["category_id"]], a["bbox"]))
    counted = differs = 0
    for key in found:
        meta, sample = metas[key], json.loads(found[key]["json"])
        assert meta["box_frame"] == "crop" and key.endswith("-crop")
        w, h = sample["image_size"]
        ox, oy, side = crop_window(w, h)
        boxes = [b for name, b in by_file[sample["image_file"]] if name == meta["category"]]
        inside = [b for b in boxes if b[0] >= ox - 0.5 and b[1] >= oy - 0.5 and b[0] + b[2] <= ox + side + 0.5 and b[1] + b[3] <= oy + side + 0.5]
        touching = [b for b in boxes if b[0] < ox + side and b[0] + b[2] > ox and b[1] < oy + side and b[1] + b[3] > oy]
        if meta["type"] == "count":
            assert meta["count"] == len(inside) and len(touching) == len(inside), (key, meta, len(boxes))
            counted += 1
            differs += len(boxes) != len(inside)
        elif meta["answer"] == "yes":
            assert inside, key
        else:
            assert not boxes, key
    assert counted > 40 and differs > 0


def test_llava_imports_record_their_box_frame(vlmdata_bin, shared, tmp_path):
    """`ingest llava --box-frame pad`: records that state a box record the frame (others none), so shard checks
    them like template ones; the default is original, refused beside pad pixels; another frame adds rows."""
    sample = shared / "llava" / "pretrain-sample"
    records = json.loads((sample / "blip_laion_cc_sbu_first50.json").read_text())[:8]
    for r in records[:3]:
        r["conversations"] = [{"from": "human", "value": "<image>\nWhere is the main object?"},
                              {"from": "gpt", "value": "It is at [0.12, 0.25, 0.60, 0.91]."}]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    ws = str(tmp_path / "ws")
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "llava", *q, "--json", path, "--images", sample / "images")
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--patch-size", 14, "--mode", "pad", "--jobs", 2)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "plain", "--image-tokens", "pixels")
    refused = run(vlmdata_bin, "shard", *q, check=False)
    assert refused.returncode != 0 and "3 instructions state boxes" in refused.stderr and "pixels need pad" in refused.stderr
    run(vlmdata_bin, "ingest", "llava", *q, "--json", path, "--images", sample / "images", "--box-frame", "pad")
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "plain", "--image-tokens", "pixels")
    report = json.loads(run(vlmdata_bin, "shard", *q, "--json").stdout.strip().splitlines()[-1])
    assert report["counts"]["samples"] == 8 and report["counts"]["skipped_other_box_frame"] == 3
    frames = sorted(json.loads(m["json"]).get("box_frame") or "-" for m in samples(ws).values())
    assert frames == ["-"] * 5 + ["pad"] * 3


@pytest.mark.parametrize("layout", ["grouped", "per-instruction"])
def test_shard_parts_choose_the_frame_of_the_whole_workspace(vlmdata_bin, tmp_path, layout):
    """Two frames in one workspace (original-frame instructions for every image, pad-frame ones made for part 0's
    images only) beside pad pixels: `shard --part I/2` keeps exactly the samples the whole shard keeps, part by
    part. Before: each part chose the frame from its own rows, so part 1 (no pad rows) fell back to the original
    ones and refused their boxes, where the whole run takes the pad rows and leaves the original ones out."""
    import shutil
    ws = str(tmp_path / "ws")
    q = ["--workspace", ws, "--quiet"]
    two_frame_instructions(vlmdata_bin, ws, pad_part="0/2")
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--patch-size", 14, "--mode", "pad", "--jobs", 2)
    layout_flag = ["--sample-per-instruction"] if layout == "per-instruction" else []
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", TOKENIZER, "--template", "vicuna_v1", "--image-tokens", "pixels",
        *layout_flag)
    copies = {}
    for name, part in (("whole", []), ("p0", ["--part", "0/2"]), ("p1", ["--part", "1/2"])):
        copies[name] = str(tmp_path / name)
        shutil.copytree(ws, copies[name])
        result = run(vlmdata_bin, "shard", "--workspace", copies[name], "--quiet", "--target-size", "200KB", *part,
                     check=False)
        assert result.returncode == 0, (name, result.stderr)
    whole, p0, p1 = (set(samples(copies[n])) for n in ("whole", "p0", "p1"))
    # Per instruction: one sample per instruction. Grouped (the workspace states two frames): one sample per image
    # and stated frame, the captions in a group of their own; part 1's images state only original-frame boxes, so
    # the whole run (which takes pad) leaves those groups out and keeps their captions. Both parts keep some.
    assert len(whole) >= (80 if layout == "grouped" else 100) and p0 and p1
    assert p0.isdisjoint(p1) and p0 | p1 == whole
    found = samples(copies["whole"])
    assert all(json.loads(m["json"]).get("box_frame") in (None, "pad") for m in found.values())
