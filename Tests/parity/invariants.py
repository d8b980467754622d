"""The invariants every composed output must hold, read back from a workspace's training shards.

Shared by test_composition.py (the templates x tokenizers x modes x parts matrix), test_partition_geometry.py and
test_text_spm.py:
- `samples(ws)`: key -> {member suffix: bytes} from the shards the catalog indexes;
- `check_parts(ws, found)`: each sample's members exist in its shard where the index says (sample_parts);
- `check_geometry_and_boxes`: image tokens equal the stored pixel geometry, every stated box is an annotated
  object's box in the frame of the pixels, the json records the original size and the frame;
- `runs`, `replies`, `supervises_replies`: the supervised stretches of the labels decode to the assistant replies
  (plus the template's end-of-turn text).
"""
import io
import json
import os
import re
import sqlite3
import tarfile

import numpy as np

from conftest import SHARED

COCO = SHARED / "coco-mini"
IGNORE_INDEX = -100
BOX = re.compile(r"\[(-?\d+\.\d+), (-?\d+\.\d+), (-?\d+\.\d+), (-?\d+\.\d+)\]")
# The box frame that matches each patchify mode's pixels (docs/geometry.md).
FRAME = {"crop": "crop", "pad": "pad", "anyres": "original", "squash": "original"}
# What a template appends to each supervised reply.
END_OF_TURN = {"vicuna_v1": "</s>", "llama_2": " </s>", "chatml": "<|im_end|>", "plain": "\n"}


def _catalog(ws):
    return sqlite3.connect(os.path.join(ws, "catalog.sqlite"))


def _resolve(ws, path):
    return path if os.path.isabs(path) else os.path.join(ws, path)


def samples(ws):
    """key -> {member suffix: bytes}, read from the training shards the catalog indexes."""
    with _catalog(ws) as db:
        paths = [p for (p,) in db.execute("SELECT path FROM shards ORDER BY name")]
    out = {}
    for path in paths:
        with tarfile.open(_resolve(ws, path)) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                out.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return out


def check_parts(ws, found):
    """Each sample has its json, input_ids and labels, and pixels exactly when it has an image; the index's
    sample_parts name the same members, at offsets whose bytes are the members' bytes."""
    with _catalog(ws) as db:
        rows = db.execute("SELECT s.key, s.has_image, h.path, p.name, p.offset, p.size FROM samples s "
                          "JOIN shards h ON h.id = s.shard_id JOIN sample_parts p ON p.sample_id = s.id").fetchall()
    indexed = {}
    for key, has_image, path, name, offset, size in rows:
        indexed.setdefault(key, {"has_image": has_image, "parts": {}})["parts"][name] = (path, offset, size)
    assert sorted(indexed) == sorted(found), "the index and the shards hold different samples"
    files = {}
    for key, members in found.items():
        expected = {"json", "input_ids.npy", "labels.npy"} | ({"pixels.npy"} if indexed[key]["has_image"] else set())
        assert set(members) == expected, (key, sorted(members))
        assert set(indexed[key]["parts"]) == expected, (key, sorted(indexed[key]["parts"]))
        for name, (path, offset, size) in indexed[key]["parts"].items():
            if path not in files:
                with open(_resolve(ws, path), "rb") as f:
                    files[path] = f.read()
            assert files[path][offset:offset + size] == members[name], (key, name)


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


def check_geometry_and_boxes(found, mode, objects, size=56, patch=14):
    """Image tokens equal the stored pixel geometry; every box is in [0, 1] and is an object's box in the pixels'
    frame; the json records the original image size and the frame. Returns how many samples state a box."""
    grounded = 0
    for key, members in found.items():
        meta = json.loads(members["json"])
        if "pixels.npy" not in members:
            continue
        pixels = np.load(io.BytesIO(members["pixels.npy"]))
        tiles, patches, dim = pixels.shape
        assert meta["pixels_shape"] == list(pixels.shape)
        assert meta["image_tokens"] == tiles * patches, key
        assert dim == patch * patch * 3 and patches == (size // patch) ** 2
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


def runs(labels):
    """The supervised stretches of a label row (runs of ids that are not IGNORE_INDEX)."""
    out, current = [], []
    for x in labels:
        if x != IGNORE_INDEX:
            current.append(int(x))
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def replies(conversations):
    """The assistant turns' texts (a leading non-human turn is a system prompt and skipped)."""
    turns = conversations if conversations[0]["from"] == "human" else conversations[1:]
    return [t["value"] for t in turns[1::2]]


def _squeeze(text):
    return "".join(text.split())


def supervises_replies(stretches, texts, decode, template, eot_is_token):
    """Each stretch decodes to its reply + the end-of-turn text (whitespace aside: the slow tokenizer's decode puts
    a space before special tokens in legacy mode), or to the reply + a prefix of the end-of-turn text where that
    text is not one token (the tokenizer merges it into the next turn's tokens)."""
    if len(stretches) != len(texts):
        return False
    eot = END_OF_TURN[template]
    for stretch, reply in zip(stretches, texts):
        text, expected = _squeeze(decode(stretch)), _squeeze(reply + eot)
        if not (text == expected if eot_is_token else text.startswith(_squeeze(reply)) and expected.startswith(text)):
            return False
    return True
