"""The recipes in Pipelines/ run end to end on ../shared/data: the COCO → LLaVA stage-1 records match LLaVA's 558K
pre-training file field by field (and its `plain` tokenization), the instruct recipe makes every annotation kind,
and the LLM recipe runs against the project's LLM test server and names what is missing when it cannot."""
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import ROOT, SHARED, run

LLAVA_PRETRAIN = SHARED / "llava" / "pretrain-sample" / "blip_laion_cc_sbu_first50.json"
TOKENIZER = SHARED / "tokenizers" / "mistral-v1" / "tokenizer.json"


def recipe(bin_path, name, ws, *sets, check=True, env=None):
    args = ["run", ROOT / "Pipelines" / name, "--workspace", ws, "--quiet",
            "--set", f"data={SHARED / 'coco-mini'}", "--set", f"tokenizer={TOKENIZER}"]
    for assignment in sets:
        args += ["--set", assignment]
    return run(bin_path, *args, check=check, env=env)


def shard_samples(ws):
    """Every sample of the workspace's shards: key -> {suffix: bytes}."""
    db = sqlite3.connect(ws / "catalog.sqlite")
    samples = {}
    for (path,) in db.execute("SELECT path FROM shards ORDER BY name"):
        with tarfile.open(ws / path) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                samples.setdefault(key, {})[suffix] = tar.extractfile(member).read()
    return samples


def npy(data):
    return np.load(io.BytesIO(data))


def prompt_of(human):
    """The instruction beside `<image>` in a first human turn (LLaVA puts the image first or last)."""
    assert human.count("<image>") == 1
    if human.startswith("<image>\n"):
        return human[len("<image>\n"):]
    assert human.endswith("\n<image>"), human
    return human[: -len("\n<image>")]


def test_coco_llava_pretrain_records_equal_llava_558k_format(vlmdata_bin, tmp_path):
    ws = tmp_path / "ws"
    recipe(vlmdata_bin, "coco-llava-pretrain.yaml", ws)
    out = tmp_path / "pretrain.json"
    run(vlmdata_bin, "export", "llava", "--workspace", ws, "--out", out)
    ours, theirs = json.loads(out.read_text()), json.loads(LLAVA_PRETRAIN.read_text())
    coco = json.loads((SHARED / "coco-mini/annotations/captions_train2017.json").read_text())
    captions = {a["caption"].strip() for a in coco["annotations"]}
    assert len(ours) == len({a["image_id"] for a in coco["annotations"]})   # one record per captioned image
    their_prompts = {prompt_of(r["conversations"][0]["value"]) for r in theirs}
    for a, b in zip(ours, theirs * 2):
        # Field by field: the same keys and types, two turns human then gpt, the image only in the human turn.
        assert set(a) == set(b) == {"id", "image", "conversations"}
        assert type(a["id"]) is type(b["id"]) is str and type(a["image"]) is type(b["image"]) is str
        assert [set(t) for t in a["conversations"]] == [set(t) for t in b["conversations"]] == [{"from", "value"}] * 2
        assert [t["from"] for t in a["conversations"]] == [t["from"] for t in b["conversations"]] == ["human", "gpt"]
        prompt_of(a["conversations"][0]["value"])
        assert "<image>" not in a["conversations"][1]["value"]
    # The prompts are LLaVA's brief-description prompts, the answers the COCO captions.
    ours_prompts = {prompt_of(r["conversations"][0]["value"]) for r in ours}
    assert ours_prompts & their_prompts and len(ours_prompts) > 3
    assert all(any(r["conversations"][1]["value"].rstrip(".") in c or c.rstrip(".") in r["conversations"][1]["value"]
                   for c in captions) for r in ours)

    # LLaVA's `plain` tokenization (preprocess_plain): <s> <image> caption \n, only the caption and \n supervised.
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    samples = shard_samples(ws)
    assert len(samples) == len(ours)
    for key, members in samples.items():
        meta = json.loads(members["json"])
        ids, labels = npy(members["input_ids.npy"]), npy(members["labels.npy"])
        assert meta["template"] == "plain" and meta["kind"] == "caption"
        assert ids[0] == tokenizer.token_to_id("<s>") and ids[1] == -200 and (labels[:2] == -100).all()
        assert (labels[2:] == ids[2:]).all()
        caption = meta["conversations"][1]["value"]
        assert ids[-1] == tokenizer.token_to_id("<0x0A>")
        assert tokenizer.decode(ids[2:-1].tolist()).strip() == caption.strip()
        assert npy(members["pixels.npy"]).shape == (1, 576, 588)


def instruction_keys(samples):
    """The instruction keys the samples hold: a grouped sample's `instructions`, else its own key."""
    return [k for key, m in samples.items() for k in json.loads(m["json"]).get("instructions", [key])]


def test_coco_llava_instruct_makes_every_annotation_kind(vlmdata_bin, tmp_path):
    ws = tmp_path / "ws"
    recipe(vlmdata_bin, "coco-llava-instruct.yaml", ws)
    db = sqlite3.connect(ws / "catalog.sqlite")
    kinds = {k for (k,) in db.execute("SELECT DISTINCT kind FROM instructions")}
    assert kinds == {"caption", "detail", "grounding", "count", "yesno", "mcq", "multiturn"}
    samples = shard_samples(ws)
    # One multi-turn sample per image (split where 2048 positions do not hold it): every instruction once.
    assert sorted(instruction_keys(samples)) == sorted(k for (k,) in db.execute("SELECT key FROM instructions"))
    assert 80 <= len(samples) < 2 * 80
    metas = [json.loads(m["json"]) for m in samples.values()]
    assert {m["template"] for m in metas} == {"vicuna_v1"}
    assert {tuple(m["pixels_shape"]) for m in metas} == {(1, 576, 588)}
    assert {m["box_frame"] for m in metas if "grounding" in m["kind"].split(",")} == {"pad"}
    # Running it again does nothing new: every stage that writes rows is skipped, the counts stay.
    before = [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("instructions", "tokenized", "pixels", "samples")]
    again = recipe(vlmdata_bin, "coco-llava-instruct.yaml", ws)
    for stage in ("gen-instructions", "tokenize", "patchify", "shard"):
        assert any(l.startswith(stage) and "already done" in l for l in again.stdout.splitlines()), (stage, again.stdout)
    db = sqlite3.connect(ws / "catalog.sqlite")
    assert [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("instructions", "tokenized", "pixels", "samples")] == before


class LLMServer:
    def __init__(self, *args):
        self.process = subprocess.Popen([sys.executable, str(ROOT / "Tests/support/llm_server.py"), "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.base = f"http://127.0.0.1:{int(self.process.stdout.readline().split()[1])}/v1"

    def stop(self):
        self.process.kill()
        self.process.wait()


def test_coco_llm_instruct_runs_against_the_test_server_and_names_what_is_missing(vlmdata_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    no_url = recipe(vlmdata_bin, "coco-llm-instruct.yaml", tmp_path / "a", "base_url=", check=False, env=env)
    assert no_url.returncode == 1 and "base_url" in no_url.stderr and "none was given" in no_url.stderr
    assert not (tmp_path / "a" / "catalog.sqlite").exists()   # the file is checked whole before anything runs
    key = "sk-recipe-test-0123456789"
    server = LLMServer("--require-key", key)
    try:
        no_key = recipe(vlmdata_bin, "coco-llm-instruct.yaml", tmp_path / "b", f"base_url={server.base}", "limit=3",
                        check=False, env=env)
        assert no_key.returncode == 1 and "OPENAI_API_KEY" in no_key.stderr
        ws = tmp_path / "c"
        recipe(vlmdata_bin, "coco-llm-instruct.yaml", ws, f"base_url={server.base}", "model=test-model", "limit=3",
               env=dict(env, OPENAI_API_KEY=key))
    finally:
        server.stop()
    db = sqlite3.connect(ws / "catalog.sqlite")
    rows = db.execute("SELECT generator, kind FROM instructions").fetchall()
    assert rows and {g for g, _ in rows} == {"llm"} and {k for _, k in rows} <= {"conversation", "detail", "complex"}
    samples = shard_samples(ws)
    assert len(instruction_keys(samples)) == len(rows) and len(samples) <= len(rows)
    assert {json.loads(m["json"])["template"] for m in samples.values()} == {"vicuna_v1"}


def test_run_list_names_every_recipe(vlmdata_bin):
    listed = run(vlmdata_bin, "run", "--list", "--dir", ROOT / "Pipelines").stdout
    for name in ("demo.yaml", "coco-llava-pretrain.yaml", "coco-llava-instruct.yaml", "coco-llm-instruct.yaml"):
        line = next(l for l in listed.splitlines() if l.split(":")[0].endswith("/" + name))
        assert "INVALID" not in line
    assert "base_url=" in next(l for l in listed.splitlines() if "coco-llm-instruct" in l)


def test_llava_import_recipe_keeps_every_record_and_its_conversation(vlmdata_bin, tmp_path):
    """Pipelines/llava-import.yaml: the 50-record LLaVA pre-training JSON → shards, one sample per record, each
    carrying its record's conversation, tokenized with `plain` and cropped to CLIP-336 pixels; a rerun adds nothing."""
    ws = tmp_path / "ws"
    sets = ["--set", f"json={LLAVA_PRETRAIN}", "--set", f"images={LLAVA_PRETRAIN.parent / 'images'}",
            "--set", f"tokenizer={TOKENIZER}"]
    run(vlmdata_bin, "run", ROOT / "Pipelines" / "llava-import.yaml", "--workspace", ws, "--quiet", *sets)
    records = {r["image"]: r for r in json.loads(LLAVA_PRETRAIN.read_text())}
    samples = shard_samples(ws)
    assert len(samples) == len(records) == 50
    seen = set()
    for members in samples.values():
        meta = json.loads(members["json"])
        record = records[meta["image_file"]]
        seen.add(record["image"])
        assert meta["template"] == "plain"
        assert [(t["from"], t["value"]) for t in meta["conversations"]] == \
            [(t["from"], t["value"]) for t in record["conversations"]]
        ids, labels = npy(members["input_ids.npy"]), npy(members["labels.npy"])
        assert -200 in ids.tolist() and (labels != -100).any()
        assert npy(members["pixels.npy"]).shape == (1, 576, 588)
    assert seen == set(records)
    before = shard_samples(ws)
    run(vlmdata_bin, "run", ROOT / "Pipelines" / "llava-import.yaml", "--workspace", ws, "--quiet", *sets)
    assert shard_samples(ws) == before


def test_demo_recipe_builds_its_shards(vlmdata_bin, tmp_path):
    """Pipelines/demo.yaml (what `make demo` runs before train-smoke): synthetic shapes through every stage to
    verified shards, every sample supervised."""
    ws = tmp_path / "demo"
    run(vlmdata_bin, "run", ROOT / "Pipelines" / "demo.yaml", "--workspace", ws, "--quiet")
    samples = shard_samples(ws)
    db = sqlite3.connect(ws / "catalog.sqlite")
    assert len(samples) == db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] > 0
    assert db.execute("SELECT COUNT(*) FROM samples WHERE supervised = 0").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM images WHERE status = 'ok'").fetchone()[0] == 300
