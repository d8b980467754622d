"""Grouped samples in a workspace whose instructions state several box frames (issue 19), end to end on
../shared/data/coco-mini with the release binary.

When the workspace holds instructions in more than one frame, tokenize groups each image's instructions per frame,
and those that state no frame (captions, ...) in a group of their own, so whichever frame `shard` takes, they are
kept. When a second frame first appears, images grouped under the one-frame rule are grouped again.

Regression tests: before, an image whose instructions stated one frame was one group, captions included; where
other images held instructions in a second frame and shard took that frame, the one-frame images' groups were
left out whole, captions too (counted `skipped_other_box_frame`, exit 0).
"""
import json
import os
import sqlite3

import pytest

from conftest import SHARED, run
from invariants import COCO, samples

TOKENIZER = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"
KINDS = ["--generator", "templates", "--kinds", "caption,grounding,count", "--seed", "3"]


def ingest(vlmdata_bin, ws):
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--quiet", "--captions",
        COCO / "annotations" / "captions_train2017.json", "--instances", COCO / "annotations" / "instances_train2017.json",
        "--images", COCO / "train2017")


def gen(vlmdata_bin, ws, *extra):
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", *KINDS, *extra)


def patchify(vlmdata_bin, ws):
    run(vlmdata_bin, "patchify", "--workspace", ws, "--quiet", "--image-size", 56, "--patch-size", 14, "--mode", "pad",
        "--jobs", 2)


def tokenize(vlmdata_bin, ws, *extra):
    out = run(vlmdata_bin, "tokenize", "--workspace", ws, "--quiet", "--tokenizer", TOKENIZER, "--template", "vicuna_v1",
              "--image-tokens", "pixels", "--json", *extra).stdout
    return json.loads(out.strip().splitlines()[-1])


def shard(vlmdata_bin, ws):
    out = run(vlmdata_bin, "shard", "--workspace", ws, "--quiet", "--target-size", "200KB", "--json").stdout
    return json.loads(out.strip().splitlines()[-1])


def frames_of(ws):
    """instruction key -> (kind, box frame or None, image id)."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return {key: (kind, json.loads(meta or "{}").get("box_frame"), image)
                for key, kind, meta, image in db.execute("SELECT key, kind, meta, image_id FROM instructions")}


def sharded_instructions(ws):
    """Every instruction key the training shards hold (a grouped sample names its instructions), with repeats."""
    keys = []
    for key, members in samples(ws).items():
        meta = json.loads(members["json"])
        keys += meta.get("instructions") or [key]
    return keys


def groups(ws):
    """Each tokenized sample (one config) as the list of its instructions' keys, in id order."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        rows = db.execute("""
            SELECT i.key, COALESCE(h.key, i.key) FROM tokenized t JOIN instructions i ON i.id = t.instruction_id
            LEFT JOIN instructions h ON h.id = t.sample_of ORDER BY i.id""").fetchall()
        assert len({c for (c,) in db.execute("SELECT config_hash FROM tokenized")}) == 1
    out = {}
    for key, head in rows:
        out.setdefault(head, []).append(key)
    return list(out.values())


def assert_groups_state_one_frame(ws):
    frames = frames_of(ws)
    for group in groups(ws):
        assert len({frames[k][1] for k in group}) == 1, [(k, frames[k][1]) for k in group]


@pytest.mark.parametrize("layout", ["disjoint", "overlapping"])
def test_captions_are_kept_whichever_frame_shard_takes(vlmdata_bin, tmp_path, layout):
    """Instructions in the original frame and in the pad frame on different images (disjoint: original on part 1's
    images, pad on part 0's; overlapping: original on every image, pad on part 0's), grouped, beside pad pixels:
    every caption is in the shards exactly once, and the shards hold the same instructions as one sample per
    instruction does. Before: part 1's images were one group each in the original frame, captions included, and
    shard left them out whole."""
    ws = str(tmp_path / "ws")
    ingest(vlmdata_bin, ws)
    gen(vlmdata_bin, ws, *(["--part", "1/2"] if layout == "disjoint" else []))
    gen(vlmdata_bin, ws, "--box-frame", "pad", "--part", "0/2")
    patchify(vlmdata_bin, ws)
    per_instruction = str(tmp_path / "per-instruction")
    import shutil
    shutil.copytree(ws, per_instruction)

    report = tokenize(vlmdata_bin, ws)
    frames = frames_of(ws)
    assert {f for _, f, _ in frames.values()} == {None, "original", "pad"}
    assert report["counts"]["instructions"] == len(frames)
    counts = shard(vlmdata_bin, ws)["counts"]
    found = sharded_instructions(ws)
    assert len(found) == len(set(found)), "an instruction is in two samples"
    captions = {k for k, (kind, _, _) in frames.items() if kind == "caption"}
    assert len(captions) == 80   # one per coco-mini image
    assert captions <= set(found), f"{len(captions - set(found))} captions left out"
    assert_groups_state_one_frame(ws)
    # Pad pixels: the pad-frame instructions and those that state no frame; the original-frame ones are left out.
    assert set(found) == {k for k, (_, f, _) in frames.items() if f in (None, "pad")}
    original_groups = [g for g in groups(ws) if frames[g[0]][1] == "original"]
    assert counts["skipped_other_box_frame"] == len(original_groups) > 0
    for members in samples(ws).values():
        assert json.loads(members["json"]).get("box_frame") in (None, "pad")

    # One sample per instruction keeps the same instructions.
    tokenize(vlmdata_bin, per_instruction, "--sample-per-instruction")
    shard(vlmdata_bin, per_instruction)
    assert sorted(sharded_instructions(per_instruction)) == sorted(found)


def test_a_second_frame_regroups_the_images_grouped_under_one_frame(vlmdata_bin, tmp_path):
    """Tokenized (grouped) while the workspace held one frame, each image is one group with its captions. Then
    `gen-instructions --box-frame pad --part 0/2` adds a second frame on part 0's images only. `tokenize --part 0/2`
    regroups part 0's images; shard then refuses to leave out part 1's one-frame groups (their captions would go
    with them) and says to tokenize again; `tokenize --part 1/2` (same options, same config) regroups part 1's
    images, which gained no instruction. Before: part 1's tokenize was skipped, and shard left their captions out."""
    ws = str(tmp_path / "ws")
    ingest(vlmdata_bin, ws)
    gen(vlmdata_bin, ws)
    patchify(vlmdata_bin, ws)
    first = tokenize(vlmdata_bin, ws)
    one_frame = groups(ws)
    assert len(one_frame) == 80   # one frame: an image is one group, captions included
    frames = frames_of(ws)
    assert any(len({frames[k][1] for k in g}) == 2 for g in one_frame)

    gen(vlmdata_bin, ws, "--box-frame", "pad", "--part", "0/2")
    frames = frames_of(ws)
    pad_images = {image for _, f, image in frames.values() if f == "pad"}
    part0 = tokenize(vlmdata_bin, ws, "--part", "0/2")
    assert part0["run"]["output"] == first["run"]["output"]

    def mixed_images():
        return {frames[g[0]][2] for g in groups(ws) if len({frames[k][1] for k in g}) > 1}

    assert mixed_images() and not mixed_images() & pad_images
    refused = run(vlmdata_bin, "shard", "--workspace", ws, "--quiet", check=False)
    assert refused.returncode != 0
    assert "grouped before the workspace held a second frame" in refused.stderr and "vlmdata tokenize" in refused.stderr

    left = mixed_images()   # part 1's images, none of which gained an instruction
    part1 = tokenize(vlmdata_bin, ws, "--part", "1/2")
    assert not part1.get("skipped"), "tokenize --part 1/2 has images to regroup"
    assert part1["run"]["output"] == first["run"]["output"]
    assert part1["counts"]["regrouped_images"] == len(left)
    assert not mixed_images()
    assert tokenize(vlmdata_bin, ws).get("skipped")   # nothing left to tokenize or regroup
    counts = tokenize(vlmdata_bin, ws)["counts"]
    assert counts["instructions"] == len(frames)

    shard(vlmdata_bin, ws)
    found = sharded_instructions(ws)
    assert len(found) == len(set(found))
    captions = {k for k, (kind, _, _) in frames.items() if kind == "caption"}
    assert captions <= set(found), f"{len(captions - set(found))} captions left out"
    assert set(found) == {k for k, (_, f, _) in frames.items() if f in (None, "pad")}
    assert_groups_state_one_frame(ws)
