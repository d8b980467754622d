"""`export llava` writes what `tokenize` trains on (issue 19 follow-up): by default one record per image, an image's
instructions as one multi-turn conversation, the way LLaVA's llava_v1_5_mix665k.json is laid out.

- the records are the groups tokenize makes: the same instructions, in catalog order, the same merged turns,
  `<image>` only in the first human turn, the id the first instruction's key (unique); box frames split as there;
- composition: export → `ingest llava` into a fresh workspace → tokenize gives the original's ids and labels, and
  LLaVA's own preprocessing (text_llava.py) of each exported record gives them too;
- `--tokenized NAME` writes a tokenize config's samples as they are, its --max-length splits included;
- `--per-instruction` writes byte for byte what the export wrote before grouping existed;
- a malformed instruction is left out and named; the others (its image's included) are written.
"""
import hashlib
import json
import os
import shutil
import sqlite3
import struct

import jsonschema
import pytest

from conftest import ROOT, run
from invariants import COCO

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Tokenizer  # noqa: E402
from text_llava import LLaVA  # noqa: E402

SHARED = COCO.parent
MISTRAL = SHARED / "tokenizers" / "mistral-v1" / "tokenizer.json"
KINDS = "caption,detail,grounding,count,yesno,mcq,multiturn"
SCHEMA = json.loads((ROOT / "Schemas" / "instruction.schema.json").read_text())
IMAGES = COCO / "train2017"


@pytest.fixture(scope="module")
def prepared(vlmdata_bin, tmp_path_factory):
    """coco-mini ingested and every template kind generated, boxes in the pad frame (636 instructions, 80 images)."""
    ws = str(tmp_path_factory.mktemp("export") / "base")
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", IMAGES)
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", KINDS, "--seed", "1",
        "--box-frame", "pad")
    return ws


def copy(prepared, tmp_path, name="ws"):
    ws = str(tmp_path / name)
    shutil.copytree(prepared, ws)
    return ws


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def export(bin_path, ws, out, *extra, check=True):
    result = run(bin_path, "export", "llava", "--workspace", ws, "--out", out, "--quiet", "--json", *extra, check=check)
    return (last_json(result) if result.returncode == 0 or result.stdout.strip() else None), result


def tokenize(bin_path, ws, *extra):
    return last_json(run(bin_path, "tokenize", "--workspace", ws, "--quiet", "--tokenizer", MISTRAL, "--json", *extra))


def ints(blob):
    return list(struct.unpack(f"<{len(blob) // 4}i", blob))


def instructions(ws):
    """[(id, key, image id, turns, box frame)] in id order."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        rows = db.execute("SELECT id, key, image_id, conversations, meta FROM instructions ORDER BY id").fetchall()
    return [(i, k, img, parsed(c), json.loads(m or "{}").get("box_frame")) for i, k, img, c, m in rows]


def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def merged(conversations):
    """LLaVA's 665K layout of one image's conversations: the first as stored, <image> taken out of the others."""
    turns = [dict(t) for t in conversations[0]]
    for conv in conversations[1:]:
        turns += [{"from": t["from"], "value": t["value"].replace("<image>", "").strip() if "<image>" in t["value"] else t["value"]}
                  for t in conv]
    return turns


def samples_of(ws, config):
    """key of each sample of tokenize config `config` -> (turns, ids, labels, instruction keys), from the catalog."""
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        rows = db.execute("""
            SELECT i.key, i.conversations, t.input_ids, t.labels, t.sample FROM tokenized t
            JOIN instructions i ON i.id = t.instruction_id
            WHERE t.config_hash = ? AND t.sample_of IS NULL AND t.status IN ('ok', 'truncated')""", (config,)).fetchall()
    out = {}
    for key, conv, ids, labels, sample in rows:
        info = json.loads(sample) if sample else {"conversations": json.loads(conv), "keys": [key]}
        out[key] = (info["conversations"], ints(ids), ints(labels), info["keys"])
    return out


def check_records(records):
    """LLaVA's shape: schema-valid, ids unique, <image> once, in the first human turn."""
    jsonschema.Draft202012Validator(SCHEMA).validate(records)
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        values = [t["value"] for t in r["conversations"]]
        assert [t["from"] for t in r["conversations"]] == ["human", "gpt"] * (len(values) // 2)
        assert values[0].count("<image>") == 1 and sum(v.count("<image>") for v in values) == 1, r["id"]


def test_default_is_one_record_per_image_as_tokenize_groups(vlmdata_bin, prepared, tmp_path):
    ws = copy(prepared, tmp_path)
    out = tmp_path / "mix.json"
    report, _ = export(vlmdata_bin, ws, out)
    records = json.loads(out.read_text())
    check_records(records)
    rows = instructions(ws)
    by_image = {}
    for row in rows:
        by_image.setdefault(row[2], []).append(row)
    assert report["counts"]["records"] == len(records) == len(by_image) == 80
    assert report["counts"]["instructions"] == len(rows) == 636 and report["counts"]["bad"] == 0
    assert [r["id"] for r in records] == sorted(r["id"] for r in records), "in id order"
    got = {r["id"]: r for r in records}
    for image_rows in by_image.values():
        record = got[image_rows[0][1]]   # the first instruction's key
        assert record["conversations"] == merged([r[3] for r in image_rows])
        assert record["image"] and len(record["conversations"]) == sum(len(r[3]) for r in image_rows)
    # The same groups tokenize makes: every sample of the grouped config is a record with the same turns.
    config = tokenize(vlmdata_bin, ws, "--template", "vicuna_v1")["run"]["output"]
    samples = samples_of(ws, config)
    assert len(samples) == 80
    assert {key: s[0] for key, s in samples.items()} == {key: r["conversations"] for key, r in got.items()}


@pytest.mark.parametrize("template", ["vicuna_v1", "llama_2"])
def test_export_ingest_tokenize_gives_the_same_ids_and_labels(vlmdata_bin, prepared, tmp_path, template):
    """Composition: the exported file, read back by `ingest llava` into a fresh workspace and tokenized, gives every
    sample's ids and labels of the original workspace tokenized grouped; LLaVA's preprocessing of each exported
    record gives them too."""
    ws = copy(prepared, tmp_path)
    out = tmp_path / "mix.json"
    export(vlmdata_bin, ws, out, "--image-root", IMAGES)
    records = json.loads(out.read_text())
    original = samples_of(ws, tokenize(vlmdata_bin, ws, "--template", template)["run"]["output"])
    back = str(tmp_path / "back")
    run(vlmdata_bin, "ingest", "llava", "--workspace", back, "--json", out, "--images", IMAGES, "--split", "rt", "--quiet")
    report = tokenize(vlmdata_bin, back, "--template", template)
    assert report["counts"]["error"] == 0 and report["counts"]["ok"] == 80
    again = samples_of(back, report["run"]["output"])
    assert sorted(again) == sorted("rt_" + key for key in original)
    ref = LLaVA(Tokenizer.from_file(str(MISTRAL)))
    for record in records:
        turns, ids, labels, keys = original[record["id"]]
        assert len(keys) > 1 and record["conversations"] == turns
        assert again["rt_" + record["id"]][1:3] == (ids, labels), record["id"]
        assert tuple(ref.preprocess(template, record)) == (ids, labels), record["id"]


def test_tokenized_writes_the_samples_of_a_tokenize_run_splits_included(vlmdata_bin, prepared, tmp_path):
    """--tokenized NAME: one record per sample of that config, --max-length splits included; read back and
    tokenized with the same limits, each record is the same sample again."""
    ws = copy(prepared, tmp_path)
    limits = ["--template", "vicuna_v1", "--max-length", "300", "--image-tokens", "16"]
    report = tokenize(vlmdata_bin, ws, *limits)
    samples = samples_of(ws, report["run"]["output"])
    assert 80 < len(samples) < 636, "some images split"
    out = tmp_path / "samples.json"
    counts, _ = export(vlmdata_bin, ws, out, "--tokenized", report["run"]["name"], "--image-root", IMAGES)
    records = json.loads(out.read_text())
    check_records(records)
    assert counts["counts"]["records"] == len(records) == len(samples)
    assert counts["counts"]["instructions"] == 636
    assert {r["id"]: r["conversations"] for r in records} == {k: s[0] for k, s in samples.items()}
    assert sorted(k for s in samples.values() for k in s[3]) == sorted(r[1] for r in instructions(ws))
    back = str(tmp_path / "back")
    run(vlmdata_bin, "ingest", "llava", "--workspace", back, "--json", out, "--images", IMAGES, "--split", "rt", "--quiet")
    again = samples_of(back, tokenize(vlmdata_bin, back, *limits)["run"]["output"])
    assert {k: s[1:3] for k, s in again.items()} == {"rt_" + k: s[1:3] for k, s in samples.items()}
    # A name that is no tokenize config is refused, naming the flag and the configs there are.
    _, bad = export(vlmdata_bin, ws, tmp_path / "no.json", "--tokenized", "nope", check=False)
    assert bad.returncode != 0 and "--tokenized" in bad.stderr and report["run"]["name"] in bad.stderr
    _, bad = export(vlmdata_bin, ws, tmp_path / "no.json", "--tokenized", report["run"]["name"], "--per-instruction", check=False)
    assert bad.returncode != 0 and "per_instruction" in bad.stderr.replace("-", "_")


# sha256 of `export llava` on the `prepared` workspace, written by the binary of d049898 (before grouping existed),
# with and without --image-root (coco-mini's images are plain files, so both write the file name).
BEFORE_GROUPING = "5f86c47fa48ec4013be9362f469c8447285aeb1bbb1137e2935f2d54059c8745"


def test_per_instruction_is_byte_identical_to_the_export_before_grouping(vlmdata_bin, prepared, tmp_path):
    for extra in ([], ["--image-root", IMAGES]):
        out = tmp_path / "per.json"
        report, _ = export(vlmdata_bin, prepared, out, "--per-instruction", *extra)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == BEFORE_GROUPING
        assert report["counts"]["records"] == report["counts"]["instructions"] == 636
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == sorted(r[1] for r in instructions(prepared))


def test_box_frames_make_records_as_tokenize_groups_them(vlmdata_bin, prepared, tmp_path):
    """Half the images get count/grounding instructions in a second box frame: tokenize groups those images per
    frame (pad, original, and the captions that state none), and so does the export (one record per group, the
    same turns)."""
    ws = copy(prepared, tmp_path)
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", "--generator", "templates", "--kinds",
        "grounding,count", "--seed", "1", "--box-frame", "original", "--part", "0/2")
    rows = instructions(ws)
    two_frames = {img for img in {r[2] for r in rows} if len({r[4] for r in rows if r[2] == img} - {None}) > 1}
    assert len(two_frames) == 40
    out = tmp_path / "frames.json"
    report, _ = export(vlmdata_bin, ws, out)
    records = json.loads(out.read_text())
    check_records(records)
    assert report["counts"]["instructions"] == len(rows)
    samples = samples_of(ws, tokenize(vlmdata_bin, ws, "--template", "vicuna_v1")["run"]["output"])
    assert {k: s[0] for k, s in samples.items()} == {r["id"]: r["conversations"] for r in records}
    # Each of the 40 images with two frames is split (pad, original, and its captions, which state none).
    assert report["counts"]["records"] == len(samples) >= 80 + 40 * 2


def test_a_bad_instruction_is_named_and_the_others_are_written(vlmdata_bin, prepared, tmp_path):
    """Two malformed instructions (not JSON; an answer first) are left out and named on stderr and in --json; their
    image's other instructions before and after them still make one record; --strict exits non-zero."""
    ws = copy(prepared, tmp_path)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        image, = db.execute("SELECT image_id FROM instructions GROUP BY image_id HAVING COUNT(*) >= 5 LIMIT 1").fetchone()
        members = db.execute("SELECT id, key FROM instructions WHERE image_id = ? ORDER BY id", (image,)).fetchall()
        (not_json, key1), (answer_first, key2) = members[1], members[3]
        db.execute("UPDATE instructions SET conversations = '[{\"from\": \"human\"' WHERE id = ?", (not_json,))
        db.execute("UPDATE instructions SET conversations = ? WHERE id = ?",
                   (json.dumps([{"from": "gpt", "value": "<image>\nan answer first"}, {"from": "human", "value": "q"}]),
                    answer_first))
    for layout in ([], ["--per-instruction"]):
        out = tmp_path / "out.json"
        report, result = export(vlmdata_bin, ws, out, *layout)
        assert report["counts"]["bad"] == 2 and report["problem_count"] == 2
        assert report["counts"]["instructions"] == 634
        assert f"instruction {key1}: conversations is not a JSON array" in result.stderr
        assert f"instruction {key2}: turn 0 is from 'gpt'" in result.stderr
        assert all(any(f"instruction {k}:" in p for p in report["problems"]) for k in (key1, key2))
        records = json.loads(out.read_text())
        check_records(records)
        ids = {r["id"] for r in records}
        assert key1 not in ids and key2 not in ids
        if not layout:
            assert report["counts"]["records"] == 80
            by_id = {r["id"]: r for r in records}
            kept = [k for (_i, k) in members if k not in (key1, key2)]
            rows = {r[1]: r[3] for r in instructions(ws) if r[1] in kept}
            assert by_id[members[0][1]]["conversations"] == merged([rows[k] for k in kept])
    _, strict = export(vlmdata_bin, ws, tmp_path / "strict.json", "--strict", check=False)
    assert strict.returncode == 1 and f"instruction {key1}" in strict.stderr


def test_records_read_by_ingest_llava_group_per_image_and_text_only_stay_alone(vlmdata_bin, tmp_path):
    """A LLaVA file with two records about one image (the second with its <image> last), one about another image and
    one text-only: the export has one record per image (the first record's <image> placement kept, the second's
    <image> taken out) and the text-only record alone, with no image."""
    files = sorted(IMAGES.iterdir())[:2]
    source = [
        {"id": "a1", "image": files[0].name, "conversations": [{"from": "human", "value": "What is here?\n<image>"},
                                                               {"from": "gpt", "value": "A scene."}]},
        {"id": "a2", "image": files[0].name, "conversations": [{"from": "human", "value": "<image>\nHow many?"},
                                                               {"from": "gpt", "value": "Two."}]},
        {"id": "b1", "image": files[1].name, "conversations": [{"from": "human", "value": "<image>\nDescribe it."},
                                                               {"from": "gpt", "value": "A photo."}]},
        {"id": "t1", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
    ]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(source))
    ws = str(tmp_path / "ws")
    run(vlmdata_bin, "ingest", "llava", "--workspace", ws, "--json", path, "--images", IMAGES, "--split", "s", "--quiet")
    out = tmp_path / "out.json"
    report, _ = export(vlmdata_bin, ws, out)
    records = json.loads(out.read_text())
    assert report["counts"]["records"] == 3 and report["counts"]["instructions"] == 4
    assert report["counts"]["with_image"] == 2 and report["counts"]["text_only"] == 1
    assert records == [
        {"id": "s_a1", "image": files[0].name, "conversations": [
            {"from": "human", "value": "What is here?\n<image>"}, {"from": "gpt", "value": "A scene."},
            {"from": "human", "value": "How many?"}, {"from": "gpt", "value": "Two."}]},
        {"id": "s_b1", "image": files[1].name, "conversations": source[2]["conversations"]},
        {"id": "s_t1", "conversations": source[3]["conversations"]},
    ]
