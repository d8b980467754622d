"""One sample per image (issue 19): `tokenize` groups an image's instructions into one multi-turn conversation, as
LLaVA's 665K mix is built, and `shard` then stores the image's pixels once.

- every instruction is in exactly one sample, its turns in catalog order, `<image>` only in the first human turn;
- each sample's input_ids and labels equal LLaVA's own preprocess_v1 / preprocess_llama_2 on that multi-turn
  conversation (text_llava.py), and for chatml every answer is supervised (LLaVA's preprocess_mpt arithmetic
  fails there, see docs/text.md);
- a conversation longer than --max-length is split into several samples of whole instructions, each with the image;
- --sample-per-instruction gives the layout from before grouping (one sample per instruction, the same config hash);
- plain is never grouped; the shards hold one copy of the pixels per image.
"""
import hashlib
import json
import os
import shutil
import sqlite3
import struct

import pytest

from conftest import run
from invariants import COCO, runs, samples, supervises_replies

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer  # noqa: E402
from text_llava import LLaVA  # noqa: E402

SHARED = COCO.parent
MISTRAL = SHARED / "tokenizers" / "mistral-v1" / "tokenizer.json"
GPT2 = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"
KINDS = "caption,detail,grounding,count,yesno,mcq,multiturn"


@pytest.fixture(scope="module")
def prepared(vlmdata_bin, tmp_path_factory):
    """coco-mini ingested, every template kind generated (boxes in the pad frame), patchified (pad, 56 px)."""
    ws = str(tmp_path_factory.mktemp("grouping") / "base")
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", KINDS, "--seed", "1",
        "--box-frame", "pad")
    run(vlmdata_bin, "patchify", *q, "--image-size", 56, "--patch-size", 14, "--mode", "pad", "--jobs", 2)
    return ws


def copy(prepared, tmp_path, name="ws"):
    ws = str(tmp_path / name)
    shutil.copytree(prepared, ws)
    return ws


def tokenize(bin_path, ws, tokenizer, template, *extra):
    out = run(bin_path, "tokenize", "--workspace", ws, "--quiet", "--tokenizer", tokenizer, "--template", template,
              "--json", *extra).stdout
    return json.loads(out.strip().splitlines()[-1])


def ints(blob):
    return list(struct.unpack(f"<{len(blob) // 4}i", blob))


def merged(conversations):
    """The multi-turn conversation LLaVA's 665K layout makes of one image's conversations: the first as it is,
    the others with <image> taken out (as preprocess_multimodal takes it out: removed, then stripped)."""
    turns = [dict(t) for t in conversations[0]]
    for conv in conversations[1:]:
        for t in conv:
            v = t["value"]
            turns.append({"from": t["from"], "value": v.replace("<image>", "").strip() if "<image>" in v else v})
    return turns


def catalog_rows(ws, config):
    """instruction key -> (image id, conversation, tokenized row) for `config`, in instruction id order."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return db.execute("""
            SELECT i.id, i.key, i.image_id, i.conversations, t.status, t.input_ids, t.labels, t.n_image_tokens,
                   t.sample, hi.key
            FROM instructions i JOIN tokenized t ON t.instruction_id = i.id AND t.config_hash = ?
            LEFT JOIN instructions hi ON hi.id = t.sample_of ORDER BY i.id""", (config,)).fetchall()


def check_groups(ws, config, max_length=None):
    """Every instruction in exactly one sample; each sample's turns are its instructions' turns merged in catalog
    order, all of one image. Returns [(sample conversation, ids, labels)] of the grouped samples and the count of
    samples."""
    rows = catalog_rows(ws, config)
    by_key = {r[1]: r for r in rows}
    covered = []
    grouped = []
    for (_id, key, image, conv, status, ids, labels, n_image, sample, head) in rows:
        if head is not None:
            assert ids is None and by_key[head][8] is not None and key in json.loads(by_key[head][8])["keys"], key
            continue
        assert status in ("ok", "truncated"), (key, status)
        if sample is None:
            covered.append(key)
            continue
        info = json.loads(sample)
        assert info["keys"][0] == key and len(info["keys"]) >= 2
        members = [by_key[k] for k in info["keys"]]
        assert all(m[2] == image for m in members), "a sample holds one image"
        assert [m[0] for m in members] == sorted(m[0] for m in members), "catalog order"
        assert info["conversations"] == merged([json.loads(m[3]) for m in members])
        assert sum(t["value"].count("<image>") for t in info["conversations"]) == 1
        assert "<image>" in info["conversations"][0]["value"]
        got_ids, got_labels = ints(ids), ints(labels)
        assert got_ids.count(-200) == 1
        if max_length is not None:
            assert len(got_ids) - 1 + n_image <= max_length, key
        covered += info["keys"]
        grouped.append((info["conversations"], got_ids, got_labels))
    assert sorted(covered) == sorted(by_key), "every instruction exactly once"
    return grouped, len(rows) - sum(1 for r in rows if r[9] is not None)


@pytest.mark.parametrize("template", ["vicuna_v1", "llama_2"])
def test_grouped_samples_have_llava_masks(vlmdata_bin, prepared, tmp_path, template):
    ws = copy(prepared, tmp_path)
    report = tokenize(vlmdata_bin, ws, MISTRAL, template)
    config = report["run"]["output"]
    assert report["run"]["name"] == f"{template}@mistral-v1"
    assert report["counts"]["llava_differs"] == 0 and report["counts"]["mismatch"] == 0
    grouped, count = check_groups(ws, config)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        images = db.execute("SELECT COUNT(DISTINCT image_id) FROM instructions").fetchone()[0]
        instructions = db.execute("SELECT COUNT(*) FROM instructions").fetchone()[0]
    assert count == images == 80 and report["counts"]["instructions"] == instructions > 7 * images
    assert len(grouped) == images
    ref = LLaVA(Tokenizer.from_file(str(MISTRAL)))
    for turns, ids, labels in grouped:
        want_ids, want_labels = ref.preprocess(template, {"image": "x.jpg", "conversations": turns})
        assert ids == want_ids
        assert labels == want_labels, [i for i, (a, b) in enumerate(zip(labels, want_labels)) if a != b][:5]
        assert len(runs(labels)) == len(turns) // 2, "one supervised stretch per answer"


def test_grouped_chatml_supervises_every_answer(vlmdata_bin, prepared, tmp_path):
    """chatml on GPT-2: ids are LLaVA's; each answer (and its <|im_end|>) is supervised, as per-instruction rows are."""
    ws = copy(prepared, tmp_path)
    report = tokenize(vlmdata_bin, ws, GPT2, "chatml")
    grouped, _ = check_groups(ws, report["run"]["output"])
    hf = Tokenizer.from_file(str(GPT2))
    ref = LLaVA(hf)
    eot_is_token = len(hf.encode("<|im_end|>", add_special_tokens=False).ids) == 1
    for turns, ids, labels in grouped:
        assert ids == ref.preprocess("chatml", {"image": "x.jpg", "conversations": turns})[0]
        texts = [t["value"] for t in turns[1::2]]
        assert supervises_replies(runs(labels), texts, lambda x: hf.decode(x, skip_special_tokens=False), "chatml",
                                  eot_is_token)


def test_long_conversations_split_into_samples_that_fit(vlmdata_bin, prepared, tmp_path):
    ws = copy(prepared, tmp_path)
    report = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1", "--max-length", "300", "--image-tokens", "pixels")
    grouped, count = check_groups(ws, report["run"]["output"], max_length=300)
    assert 80 < count < report["counts"]["instructions"], "some images split, none fell apart"
    assert report["counts"]["truncated"] == 0 and report["counts"]["dropped"] == 0
    ref = LLaVA(Tokenizer.from_file(str(MISTRAL)))
    for turns, ids, labels in grouped:
        assert (ids, labels) == tuple(ref.preprocess("vicuna_v1", {"image": "x.jpg", "conversations": turns}))
    # The shards: every split starts with the image again; every sample within the limit.
    run(vlmdata_bin, "shard", "--workspace", ws, "--quiet")
    found = samples(ws)
    assert len(found) == count
    per_image = {}
    for key, members in found.items():
        meta = json.loads(members["json"])
        assert "pixels.npy" in members and meta["length"] - 1 + meta["image_tokens"] <= 300
        per_image.setdefault(meta["image"], []).append(meta.get("instructions", [key]))
    assert len(per_image) == 80 and max(len(v) for v in per_image.values()) >= 2


def test_sample_per_instruction_keeps_the_old_layout(vlmdata_bin, prepared, tmp_path):
    """The ungrouped layout: one row and one sample per instruction, no `sample` and no `instructions`, and the
    config hash of before grouping (the golden below is the hash `tokenize` printed for these settings before
    grouping existed, at efd5bf5; it covers the tokenizer's sha256, the template and the limits)."""
    ws = copy(prepared, tmp_path)
    report = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1", "--sample-per-instruction")
    assert report["run"]["name"] == "vicuna_v1@mistral-v1/per-instruction"
    assert report["run"]["output"] == "cc52755a150e5bfc40226b09e119bf113a9a0719bfe956b2f053e8c943a0ab17"
    config = report["run"]["output"]
    rows = catalog_rows(ws, config)
    assert all(r[8] is None and r[9] is None for r in rows)
    assert "instructions" not in report["counts"] and report["counts"]["tokenized"] == len(rows)
    ref = LLaVA(Tokenizer.from_file(str(MISTRAL)))
    for (_id, key, _image, conv, _s, ids, labels, *_rest) in rows:
        want = ref.preprocess("vicuna_v1", {"image": "x.jpg", "conversations": json.loads(conv)})
        assert (ints(ids), ints(labels)) == tuple(want), key
    # Sharded beside the 56 px pixels (16 image tokens each): one sample per instruction, json as before.
    config = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1", "--sample-per-instruction", "--image-tokens", "pixels")["run"]["output"]
    run(vlmdata_bin, "shard", "--workspace", ws, "--quiet", "--tokenized", config)
    found = samples(ws)
    assert sorted(found) == sorted(r[1] for r in rows)
    assert all("instructions" not in json.loads(m["json"]) for m in found.values())


def test_plain_is_never_grouped(vlmdata_bin, prepared, tmp_path):
    ws = copy(prepared, tmp_path)
    captions = copy(prepared, tmp_path, "captions")
    report = tokenize(vlmdata_bin, ws, MISTRAL, "plain", "--allow-unsupervised")
    assert report["run"]["name"] == "plain@mistral-v1"
    per = tokenize(vlmdata_bin, captions, MISTRAL, "plain", "--allow-unsupervised", "--sample-per-instruction")
    assert per["run"]["output"] == report["run"]["output"] and per["run"]["name"] == "plain@mistral-v1"
    assert all(r[8] is None and r[9] is None for r in catalog_rows(ws, report["run"]["output"]))


def test_grouped_shards_hold_the_pixels_once_per_image(vlmdata_bin, prepared, tmp_path):
    """Grouped shards hold each image's pixels once; per-instruction shards once per instruction."""
    sizes = {}
    for layout, extra in (("grouped", []), ("per-instruction", ["--sample-per-instruction"])):
        ws = copy(prepared, tmp_path, layout)
        tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1", "--image-tokens", "pixels", *extra)
        report = json.loads(run(vlmdata_bin, "shard", "--workspace", ws, "--quiet", "--json").stdout.strip().splitlines()[-1])
        found = samples(ws)
        pixels = [hashlib.sha256(m["pixels.npy"]).hexdigest() for m in found.values()]
        sizes[layout] = (report["counts"]["bytes"], len(found), len(pixels), len(set(pixels)))
        run(vlmdata_bin, "verify", "--workspace", ws, "--deep")
    grouped, per = sizes["grouped"], sizes["per-instruction"]
    assert grouped[2] == grouped[3] == 80, "one copy of the pixels per image"
    assert per[1] > 7 * 80 and per[3] == 80
    assert per[0] > 4 * grouped[0], sizes


def test_instructions_added_later_regroup_their_image(vlmdata_bin, prepared, tmp_path):
    """Instructions added to an image after it was tokenized (here: count and yes/no generated later) are grouped
    with the image's others when tokenize runs again: still one sample per image, each instruction once."""
    ws = copy(prepared, tmp_path)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        later = db.execute("SELECT COUNT(*) FROM instructions WHERE kind IN ('count', 'yesno')").fetchone()[0]
        db.execute("DELETE FROM instructions WHERE kind IN ('count', 'yesno')")
    assert later > 80
    first = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1")
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", "--generator", "templates", "--kinds", "count,yesno",
        "--seed", "1", "--box-frame", "pad")
    report = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1")
    assert report["run"]["output"] == first["run"]["output"]
    assert report["counts"]["instructions"] == first["counts"]["instructions"] + later
    grouped, count = check_groups(ws, report["run"]["output"])
    assert count == 80 and len(grouped) == 80


def test_a_bad_instruction_is_an_error_row_and_its_image_still_grouped(vlmdata_bin, prepared, tmp_path):
    """An instruction whose conversation is not LLaVA's shape gets its own error row naming it; the other
    instructions of its image (before and after it) still make one sample."""
    ws = copy(prepared, tmp_path)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        image, = db.execute("SELECT image_id FROM instructions GROUP BY image_id HAVING COUNT(*) >= 5 LIMIT 1").fetchone()
        ids = [i for (i,) in db.execute("SELECT id FROM instructions WHERE image_id = ? ORDER BY id", (image,))]
        bad = ids[2]
        db.execute("UPDATE instructions SET conversations = ? WHERE id = ?",
                   (json.dumps([{"from": "gpt", "value": "<image>\nan answer first"}]), bad))
    report = tokenize(vlmdata_bin, ws, MISTRAL, "vicuna_v1")
    assert report["counts"]["error"] == 1 and report["problem_count"] == 1
    assert report["problems"][0].startswith(f"instruction {bad}:") and "turns" in report["problems"][0]
    rows = {r[0]: r for r in catalog_rows(ws, report["run"]["output"])}
    assert rows[bad][4] == "error" and rows[bad][8] is None and rows[bad][9] is None
    head = rows[ids[0]]
    assert head[8] is not None and [rows[i][9] for i in ids if i not in (ids[0], bad)] == [head[1]] * (len(ids) - 2)
    assert json.loads(head[8])["keys"] == [rows[i][1] for i in ids if i != bad]
