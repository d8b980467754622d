"""The composition matrix of issue 12 on ../shared/data/coco-mini with the release binary: templates (vicuna_v1,
llama_2, chatml, plain) x tokenizers (gpt2, mistral-v1, one trained by `vlmdata tokenizer train`) x patchify modes
(crop, pad, anyres) x `--part` layouts (1, 2 and 3 parts, applied to every stage, then `catalog merge`).

For every combination the one-workspace shards hold
- at least one supervised token per sample, and supervised stretches that decode to the assistant replies;
- image tokens equal to the stored pixel geometry (anyres: every tile);
- boxes in the frame of the pixels, the original size and the frame in the sample json;
- every sample's parts (json, ids, labels, pixels when it has an image) where the index says;
and each part layout, merged, gives the same sample keys and the same bytes per sample.

The work is shared so the product stays affordable: per mode, each workspace (the whole, and each part of each
layout) runs ingest, gen-instructions and patchify once and holds several tokenizations (shard picks one by the
config its tokenize run reported; a new one replaces the previous shards). The whole workspace checks every
template x tokenizer pair in every mode; the part layouts check a third of the pairs per mode, a different third in
each, so every pair is partitioned and merged in one mode and every mode with four pairs (12 x 3 x 3 runs of every
stage would be 3x the CI budget). `make composition-full` (VLMDATA_COMPOSITION_FULL=1) partitions every pair in every
mode: the whole product, outside CI.
"""
import io
import json
import os
import shutil
import time

import pytest

from conftest import run
from invariants import (COCO, END_OF_TURN, FRAME, check_geometry_and_boxes, check_parts, coco_objects, replies, runs,
                        samples, supervises_replies)
from text_corpus import coco_captions, llava_texts

tokenizers = pytest.importorskip("tokenizers")
np = pytest.importorskip("numpy")
from tokenizers import Tokenizer  # noqa: E402

TEMPLATES = ["vicuna_v1", "llama_2", "chatml", "plain"]
MODES = ["crop", "pad", "anyres"]
LAYOUTS = [1, 2, 3]
KINDS = "caption,grounding,count,yesno"
SIZE = 56
# Anyres tiles of 56 px in grids of 1 x 2, 2 x 1, 1 x 3, 3 x 1: wide and tall images pick different grids.
PATCHIFY = {"crop": [], "pad": [], "anyres": ["--grid-pinpoints", "112x56,56x112,168x56,56x168"]}


@pytest.fixture(scope="module")
def tokenizer_files(vlmdata_bin, shared, tmp_path_factory):
    """name -> tokenizer.json: the two shipped ones and one trained by `vlmdata tokenizer train` (byte-level BPE
    whose chat markers are special tokens)."""
    folder = tmp_path_factory.mktemp("trained")
    src = folder / "train.txt"
    src.write_text("".join(t.replace("\n", " ") + "\n" for t in coco_captions(shared)[:4000] + llava_texts(shared)),
                   encoding="utf-8")
    trained = folder / "tokenizer.json"
    run(vlmdata_bin, "tokenizer", "train", "--vocab-size", "1200", "--out", trained, src)
    return {"gpt2": shared / "tokenizers" / "gpt2" / "tokenizer.json",
            "mistral-v1": shared / "tokenizers" / "mistral-v1" / "tokenizer.json",
            "trained": trained}


def prepare(bin_path, ws, mode, part, tokenizer_files, pairs):
    """ingest, gen-instructions and patchify once, then each (template, tokenizer) of `pairs`; returns
    (template, name) -> the tokenization's config hash (what `shard --tokenized` takes)."""
    p = ["--part", part] if part else []
    q = ["--workspace", ws, "--quiet"]
    run(bin_path, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017", *p)
    run(bin_path, "gen-instructions", *q, "--generator", "templates", "--kinds", KINDS, "--seed", "3",
        "--box-frame", FRAME[mode], *p)
    run(bin_path, "patchify", *q, "--image-size", SIZE, "--patch-size", 14, "--mode", mode, "--jobs", 2,
        *PATCHIFY[mode], *p)
    configs = {}
    for template, name in pairs:
        out = run(bin_path, "tokenize", *q, "--tokenizer", tokenizer_files[name], "--template", template,
                  "--image-tokens", "pixels", "--json", *p).stdout
        report = json.loads(out.strip().splitlines()[-1])
        assert report["counts"]["unsupervised"] == 0, (ws, template, name, report["counts"])
        configs[(template, name)] = report["run"]["output"]
    return configs


def check_supervision(found, template, hf):
    """Every sample has a supervised token, and its supervised stretches decode to its replies."""
    eot = END_OF_TURN[template].strip()
    eot_is_token = template == "plain" or len(hf.encode(eot, add_special_tokens=False).ids) == 1

    def decode(ids):
        return hf.decode(ids, skip_special_tokens=False)

    for key, members in found.items():
        labels = np.load(io.BytesIO(members["labels.npy"])).tolist()
        stretches = runs(labels)
        texts = replies(json.loads(members["json"])["conversations"])
        assert stretches, f"{key}: no supervised token"
        assert supervises_replies(stretches, texts, decode, template, eot_is_token), (
            f"{key}: supervised {[decode(r)[-30:] for r in stretches]} for replies {[t[-30:] for t in texts]}")


@pytest.mark.parametrize("mode", MODES)
def test_templates_by_tokenizers_by_parts_compose(vlmdata_bin, tokenizer_files, tmp_path, mode):
    start = time.monotonic()
    objects = coco_objects()
    pairs = [(t, name) for name in tokenizer_files for t in TEMPLATES]
    full = os.environ.get("VLMDATA_COMPOSITION_FULL") == "1"
    partitioned = pairs if full else pairs[MODES.index(mode)::len(MODES)]
    whole = str(tmp_path / "whole")
    workspaces = {0: [whole]}
    configs = {whole: prepare(vlmdata_bin, whole, mode, None, tokenizer_files, pairs)}
    for n in LAYOUTS:
        workspaces[n] = []
        for i in range(n):
            ws = str(tmp_path / f"n{n}-part{i}")
            configs[ws] = prepare(vlmdata_bin, ws, mode, f"{i}/{n}", tokenizer_files, partitioned)
            workspaces[n].append(ws)
    # Each config is one function of its settings: the same hash in every workspace.
    assert all(c == {p: configs[whole][p] for p in partitioned} for ws, c in configs.items() if ws != whole)
    hf = {name: Tokenizer.from_file(str(path)) for name, path in tokenizer_files.items()}
    for (template, name), config in sorted(configs[whole].items()):
        layouts = LAYOUTS if (template, name) in partitioned else []
        for n, parts in workspaces.items():
            if n and not layouts:
                continue
            for i, ws in enumerate(parts):
                part = ["--part", f"{i}/{n}"] if n else []
                run(vlmdata_bin, "shard", "--workspace", ws, "--quiet", "--target-size", "200KB", "--tokenized", config, *part)
        expected = samples(whole)
        # One multi-turn sample per image (docs/text.md); plain is never grouped.
        assert len(expected) > 300 if template == "plain" else len(expected) == 80, (template, name, len(expected))
        check_parts(whole, expected)
        check_supervision(expected, template, hf[name])
        grounded = check_geometry_and_boxes(expected, mode, objects, size=SIZE)
        assert grounded > (20 if mode == "crop" else 40), (template, name, grounded)
        for n in layouts:
            merged = str(tmp_path / f"n{n}-merged")
            shutil.rmtree(merged, ignore_errors=True)
            report = json.loads(run(vlmdata_bin, "catalog", "merge", merged, *workspaces[n], "--json", "--quiet").stdout)
            assert report["counts"]["parts_of"] == n and report["counts"]["parts_missing"] == 0
            found = samples(merged)
            assert sorted(found) == sorted(expected), (template, name, n)
            assert found == expected, (template, name, n)
            check_parts(merged, found)
            run(vlmdata_bin, "verify", "--workspace", merged)
    print(f"composition {mode}: {len(pairs)} template x tokenizer pairs, {len(partitioned)} of them in "
          f"{len(LAYOUTS)} part layouts, in {time.monotonic() - start:.1f} s")
