"""SentencePiece `tokenizer.model` parity and label masking that supervises the assistant turns with every
tokenizer and template.

- `vlmdata tokenizer encode/decode --tokenizer tokenizer.model` against `sentencepiece` and transformers' slow
  `LlamaTokenizer(use_fast=False)` in both `legacy` modes, on the COCO captions, the LLaVA texts, edge texts and
  prompts holding the special tokens.
- `vlmdata tokenizer mask --llava-arithmetic` against LLaVA's preprocess_v1 / preprocess_llama_2 /
  preprocess_plain on the slow tokenizer (text_llava.py), both modes.
- The templates x tokenizers matrix: every sample supervised, the supervised tokens are the assistant replies
  (+ the template's end-of-turn text), identical to LLaVA wherever LLaVA's arithmetic is right.
- Regressions of issue 12 cases 1 (chatml / gpt2 leave samples unsupervised with exit 0) and 8 (decode default,
  `</s>` in text, the non-legacy mode).
"""
import json
import pathlib
import sqlite3
import struct
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from text_corpus import EDGE_TEXTS, coco_captions, llava_texts  # noqa: E402
from text_llava import IGNORE_INDEX, LLaVA  # noqa: E402
from invariants import END_OF_TURN, replies, runs, supervises_replies  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")
spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer  # noqa: E402

SPECIAL_TEXTS = [
    "A</s>USER: hi", "</s>USER", "x <s> y", "<s>[INST] q [/INST] a </s><s>[INST] b [/INST]", "<unk>", "a<unk>b",
    " x", "  two spaces", "\u2581a", "a\u2581\u2581b", "</s>", "</s> </s>", "trailing </s>", "USER: hi</s>ASSISTANT: ok",
    "", " ", "\n", "emoji 🦜 and 中文", "x\u2581", "<s>", "<<SYS>>\nsys\n<</SYS>>\n\n",
]


@pytest.fixture(scope="module")
def model_path(shared):
    return shared / "tokenizers" / "mistral-v1" / "tokenizer.model"


@pytest.fixture(scope="module")
def slow(model_path):
    """transformers' slow LlamaTokenizer in both modes (what LLaVA loads with use_fast=False)."""
    return {legacy: transformers.LlamaTokenizer(str(model_path), legacy=legacy) for legacy in (True, False)}


@pytest.fixture(scope="module")
def texts(shared):
    captions = coco_captions(shared)
    mini = json.loads((shared / "coco-mini" / "annotations" / "captions_train2017.json").read_text())["annotations"]
    return captions + [a["caption"] for a in mini] + llava_texts(shared) + EDGE_TEXTS + SPECIAL_TEXTS


def _run(bin_path, *args, stdin=None):
    out = subprocess.run([bin_path, *map(str, args)], capture_output=True, text=True, encoding="utf-8", input=stdin)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _encode(bin_path, tok_path, texts, tmp_path, extra=()):
    lines = tmp_path / "texts.jsonl"
    lines.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    out = _run(bin_path, "tokenizer", "encode", "--tokenizer", tok_path, "--lines", lines, "--json-lines", *extra)
    return [json.loads(line) for line in out.split("\n") if line]


def _decode(bin_path, tok_path, id_lists, tmp_path, extra=()):
    lines = tmp_path / "ids.jsonl"
    lines.write_text("".join(json.dumps(ids) + "\n" for ids in id_lists), encoding="utf-8")
    out = _run(bin_path, "tokenizer", "decode", "--tokenizer", tok_path, "--lines", lines, *extra)
    return [json.loads(line) for line in out.split("\n") if line]


def _model_folder(tmp_path, model_path, legacy):
    """A checkpoint-like folder: tokenizer.model with a tokenizer_config.json saying `legacy`."""
    folder = tmp_path / f"llama-legacy-{legacy}"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model_path.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"legacy": legacy, "add_bos_token": True, "add_eos_token": False}))
    return folder


def _differences(ours, theirs, texts):
    return [(i, texts[i], ours[i], theirs[i]) for i in range(len(texts)) if ours[i] != theirs[i]]


def test_sentencepiece_model_encodes_as_sentencepiece(vlmdata_bin, model_path, texts, tmp_path):
    """Without special tokens in the text, the legacy slow tokenizer is sentencepiece plus BOS."""
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    plain = [t for t in texts if "<s>" not in t and "</s>" not in t and "<unk>" not in t]
    ours = _encode(vlmdata_bin, model_path, plain, tmp_path, ["--no-special", "--legacy", "true"])
    bad = _differences(ours, [sp.encode(t) for t in plain], plain)
    assert not bad, f"{len(bad)}/{len(plain)} differ from sentencepiece; first: {bad[:3]}"
    assert len(plain) > 25000


@pytest.mark.parametrize("legacy", [True, False])
def test_slow_llama_tokenizer_ids(vlmdata_bin, model_path, slow, texts, tmp_path, legacy):
    """Ids equal LlamaTokenizer(use_fast=False, legacy=...) with and without special tokens, whether the mode
    comes from --legacy or from a tokenizer_config.json beside the model (given as the folder)."""
    ref = slow[legacy]
    theirs = [ref(t).input_ids for t in texts]
    ours = _encode(vlmdata_bin, model_path, texts, tmp_path, ["--legacy", str(legacy).lower()])
    bad = _differences(ours, theirs, texts)
    assert not bad, f"{len(bad)}/{len(texts)} differ (legacy={legacy}); first: {bad[:3]}"
    folder = _model_folder(tmp_path, model_path, legacy)
    assert _encode(vlmdata_bin, folder, texts, tmp_path) == ours
    no_special = _encode(vlmdata_bin, folder, texts, tmp_path, ["--no-special"])
    bad = _differences(no_special, [ref(t, add_special_tokens=False).input_ids for t in texts], texts)
    assert not bad, f"{len(bad)} differ without special tokens; first: {bad[:3]}"
    # Case 8: `</s>` in text is one token; after it, "USER" is "▁US ER" in legacy mode and one token otherwise.
    ids = _encode(vlmdata_bin, folder, ["A</s>USER: hi"], tmp_path)[0]
    assert ids[2] == 2
    assert ref.convert_ids_to_tokens(ids[3:5]) == (["▁US", "ER"] if legacy else ["USER", ":"])


@pytest.mark.parametrize("legacy", [True, False])
def test_slow_llama_tokenizer_decode(vlmdata_bin, model_path, slow, texts, tmp_path, legacy):
    ref = slow[legacy]
    sample = texts[::40] + SPECIAL_TEXTS + EDGE_TEXTS
    ids = [ref(t).input_ids for t in sample]
    folder = _model_folder(tmp_path, model_path, legacy)
    for skip in (True, False):
        flag = "--skip-special-tokens" if skip else "--no-skip-special-tokens"
        ours = _decode(vlmdata_bin, folder, ids, tmp_path, [flag])
        bad = _differences(ours, [ref.decode(x, skip_special_tokens=skip) for x in ids], sample)
        assert not bad, f"{len(bad)}/{len(sample)} decodes differ (legacy={legacy}, skip={skip}); first: {bad[:3]}"


@pytest.mark.parametrize("name", ["gpt2", "mistral-v1"])
def test_decode_default_is_tokenizers_default(vlmdata_bin, shared, tmp_path, name):
    """Case 8: tokenizers' Tokenizer.decode skips special tokens by default; --no-skip-special-tokens gives
    transformers' default ("<s> hello world")."""
    path = shared / "tokenizers" / name / "tokenizer.json"
    hf = Tokenizer.from_file(str(path))
    ids = hf.encode("hello world").ids + [hf.token_to_id("</s>") or hf.token_to_id("<|endoftext|>")]
    assert _decode(vlmdata_bin, path, [ids], tmp_path) == [hf.decode(ids)]
    kept = _decode(vlmdata_bin, path, [ids], tmp_path, ["--no-skip-special-tokens"])
    assert kept == [hf.decode(ids, skip_special_tokens=False)]
    if name == "mistral-v1":
        assert kept[0].startswith("<s> hello world")


# ---------------------------------------------------------------------------------------------------------------
# Masks


class SlowLLaVA(LLaVA):
    """LLaVA's masking on the slow tokenizer: `tokenizer(text).input_ids`, pad = unk, `tokenizer.legacy`."""

    def __init__(self, tok, legacy, model_max_length=2048):
        self.tok = tok
        self.legacy = legacy
        self.model_max_length = model_max_length
        self.bos = tok.bos_token_id
        self.pad = tok.unk_token_id

    def ids(self, text):
        return self.tok(text).input_ids


def _records(shared):
    """pretrain-sample records, and the GPT-4 QA records: one per record, text-only copies, and one multi-turn
    conversation per image (as LLaVA-1.5's mix is mostly multi-turn)."""
    records = json.loads((shared / "llava" / "pretrain-sample" / "blip_laion_cc_sbu_first50.json").read_text())
    qa = [json.loads(l) for l in (shared / "llava" / "coco2014_val_gpt4_qa_30x3.jsonl").read_text().splitlines() if l.strip()]
    single, by_image = [], {}
    for i, r in enumerate(qa):
        turns = [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]
        single.append({"id": f"qa{i}", "image": r["image"], "conversations": [{"from": "human", "value": r["instruction"] + "\n<image>"}, turns[1]]})
        single.append({"id": f"qa{i}-text", "conversations": turns})
        by_image.setdefault(r["image"], []).append(turns)
    multi = []
    for j, (image, groups) in enumerate(sorted(by_image.items())):
        turns = [dict(t) for g in groups for t in g]
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        multi.append({"id": f"multi{j}", "image": image, "conversations": turns})
    return records + single + multi


def _mask(bin_path, tok_path, template, records, tmp_path, extra=()):
    lines = tmp_path / "records.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = _run(bin_path, "tokenizer", "mask", "--tokenizer", tok_path, "--template", template, "--lines", lines, *extra)
    return [json.loads(line) for line in out.split("\n") if line]


@pytest.mark.parametrize("template", ["vicuna_v1", "llama_2", "plain"])
@pytest.mark.parametrize("legacy", [True, False])
def test_llava_masks_with_slow_tokenizer(vlmdata_bin, shared, model_path, slow, tmp_path, template, legacy):
    """LLaVA's own arithmetic on the slow tokenizer, both modes, is reproduced exactly; and the stage's labels
    equal it (LLaVA is right with the slow tokenizer for these templates)."""
    records = _records(shared)
    if template == "plain":
        records = [r for r in records if r.get("image") and len(r["conversations"]) == 2]
    folder = _model_folder(tmp_path, model_path, legacy)
    ref = SlowLLaVA(slow[legacy], legacy=legacy)
    arithmetic = _mask(vlmdata_bin, folder, template, records, tmp_path, ["--llava-arithmetic"])
    stage = _mask(vlmdata_bin, folder, template, records, tmp_path)
    for record, got, final in zip(records, arithmetic, stage, strict=True):
        ids, labels = ref.preprocess(template, record)
        assert got["input_ids"] == ids, f"{record['id']}: input_ids differ"
        assert got["labels"] == labels, f"{record['id']}: labels differ at {[i for i, (a, b) in enumerate(zip(got['labels'], labels)) if a != b][:5]}"
        assert any(x != IGNORE_INDEX for x in labels), f"{record['id']}: LLaVA masks everything"
        assert final["labels"] == labels and not final["llava_differs"], record["id"]
    assert sum(len(r["conversations"]) > 2 for r in records) >= (0 if template == "plain" else 30)


@pytest.fixture(scope="module")
def trained(vlmdata_bin, shared, tmp_path_factory):
    """A tokenizer trained by `vlmdata tokenizer train` (byte-level BPE; its chat markers are special tokens)."""
    folder = tmp_path_factory.mktemp("trained")
    src = folder / "train.txt"
    src.write_text("".join(t.replace("\n", " ") + "\n" for t in coco_captions(shared)[:4000] + llava_texts(shared)), encoding="utf-8")
    out = folder / "tokenizer.json"
    _run(vlmdata_bin, "tokenizer", "train", "--vocab-size", "1200", "--out", out, src)
    return out


def _matrix_tokenizers(shared, model_path, tmp_path, trained, slow):
    tj = shared / "tokenizers"
    return {
        "gpt2": (tj / "gpt2" / "tokenizer.json", [], lambda: Tokenizer.from_file(str(tj / "gpt2" / "tokenizer.json"))),
        "mistral-v1.json": (tj / "mistral-v1" / "tokenizer.json", [], lambda: Tokenizer.from_file(str(tj / "mistral-v1" / "tokenizer.json"))),
        "mistral-v1.model-legacy": (_model_folder(tmp_path, model_path, True), [], lambda: slow[True]),
        "mistral-v1.model-nonlegacy": (_model_folder(tmp_path, model_path, False), [], lambda: slow[False]),
        "trained": (trained, [], lambda: Tokenizer.from_file(str(trained))),
    }


@pytest.mark.parametrize("template", ["vicuna_v1", "llama_2", "chatml", "plain"])
@pytest.mark.parametrize("tok_name", ["gpt2", "mistral-v1.json", "mistral-v1.model-legacy", "mistral-v1.model-nonlegacy", "trained"])
def test_every_template_supervises_the_replies(vlmdata_bin, shared, model_path, slow, trained, tmp_path, template, tok_name):
    """Matrix: each sample has supervised tokens; its supervised runs are its replies, in order, each decoding
    to the reply plus the end-of-turn text (a prefix of that text where the tokenizer merges it into the next
    turn's tokens); where LLaVA's arithmetic gives that mask, the labels are LLaVA's."""
    path, extra, load = _matrix_tokenizers(shared, model_path, tmp_path, trained, slow)[tok_name]
    ref_tok = load()
    is_fast = isinstance(ref_tok, Tokenizer)
    records = _records(shared)
    records = [r for r in records if r.get("image") and len(r["conversations"]) == 2][:40] if template == "plain" else records[50:110] + records[-12:]
    ours = _mask(vlmdata_bin, path, template, records, tmp_path, extra)
    ref = LLaVA(ref_tok) if is_fast else SlowLLaVA(ref_tok, legacy=ref_tok.legacy)

    def decode(ids):
        return ref_tok.decode(ids, skip_special_tokens=False)


    eot = END_OF_TURN[template]
    eot_ids = ref_tok.encode(eot.strip(), add_special_tokens=False).ids if is_fast else ref_tok(eot.strip(), add_special_tokens=False).input_ids
    eot_is_token = template == "plain" or len(eot_ids) == 1

    def supervises(stretches, texts):
        return supervises_replies(stretches, texts, decode, template, eot_is_token)

    identical = 0
    for record, got in zip(records, ours, strict=True):
        stretches = runs(got["labels"])
        texts = replies(record["conversations"])
        assert stretches, f"{tok_name}/{template} {record['id']}: no supervised token"
        assert supervises(stretches, texts), (
            f"{tok_name}/{template} {record['id']}: supervised {[decode(r)[-30:] for r in stretches]} for replies {[r[-30:] for r in texts]}")
        ids, labels = ref.preprocess(template, record)
        assert got["input_ids"] == ids
        if supervises(runs(labels), texts):
            assert got["labels"] == labels and not got["llava_differs"], f"{record['id']}: LLaVA is right but not kept"
            identical += 1
        else:
            assert got["llava_differs"]
    if template in ("vicuna_v1", "llama_2", "plain") and tok_name.startswith("mistral"):
        assert identical == len(records), f"LLaVA's arithmetic is right here; {identical}/{len(records)} identical"


# ---------------------------------------------------------------------------------------------------------------
# The tokenize stage


def _workspace(vlmdata_bin, tmp_path, records, tok):
    ws = tmp_path / "ws"
    r = subprocess.run([vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", tok, "--template", "plain"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(ws / "catalog.sqlite")
    db.execute("INSERT INTO sources (id, kind, name, uri, fingerprint, created_at) VALUES (1, 'llava', 't', 'x', 'f', 'now')")
    db.execute("INSERT INTO images (id, source_id, key, file_name, status) VALUES (1, 1, 'img1', 'a.jpg', 'ok')")
    for i, rec in enumerate(records):
        db.execute("INSERT INTO instructions (key, image_id, source_id, generator, kind, conversations, created_at) "
                   "VALUES (?, ?, 1, 'import', 'conversation', ?, 'now')", (f"k{i}", 1 if rec.get("image") else None, json.dumps(rec["conversations"])))
    db.commit()
    db.close()
    return ws


def _tokenize(vlmdata_bin, ws, tok, template, *extra):
    # Every record is its own sample here (they share the workspace's one image): the per-instruction layout.
    args = [vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", tok, "--template", template, "--json",
            "--sample-per-instruction", *extra]
    return subprocess.run(list(map(str, args)), capture_output=True, text=True)


@pytest.mark.parametrize("name,template", [("gpt2", "chatml"), ("mistral-v1", "chatml"), ("gpt2", "vicuna_v1")])
def test_case1_every_sample_supervised(vlmdata_bin, shared, tmp_path, name, template):
    """Case 1: these pairs left every sample with 0 supervised tokens (or a mismatch) and exit 0; now every
    sample's replies are supervised, and the report counts where LLaVA's arithmetic was not used."""
    records = _records(shared)[50:90]
    tok = shared / "tokenizers" / name / "tokenizer.json"
    ws = _workspace(vlmdata_bin, tmp_path, records, tok)
    r = _tokenize(vlmdata_bin, ws, tok, template)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(ws / "catalog.sqlite")
    supervised = [n for (n,) in db.execute("SELECT n_supervised FROM tokenized WHERE template = ?", (template,))]
    assert len(supervised) == len(records)
    assert min(supervised) > 0, f"{supervised.count(0)}/{len(records)} samples have no supervised token"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["counts"]["ok"] + report["counts"]["truncated"] == len(records)
    assert report["counts"]["unsupervised"] == 0
    assert report["counts"]["llava_differs"] > 0
    # The run's readable name, and `output`: the config hash of the tokenized rows it made.
    assert report["run"]["name"] == f"{template}@{name}/per-instruction" and len(report["run"]["output"]) == 64


def test_unsupervised_sample_is_an_error_row(vlmdata_bin, shared, tmp_path):
    """An empty answer leaves a sample with nothing to learn: an error row naming why (never sharded), the
    good samples kept; --allow-unsupervised keeps it; a run where no sample is supervised fails."""
    good = _records(shared)[50:53]
    empty = {"id": "empty", "conversations": [{"from": "human", "value": "say nothing"}, {"from": "gpt", "value": ""}]}
    tok = shared / "tokenizers" / "mistral-v1" / "tokenizer.json"
    ws = _workspace(vlmdata_bin, tmp_path, good[:2] + [empty] + good[2:], tok)
    r = _tokenize(vlmdata_bin, ws, tok, "chatml")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["counts"]["ok"] == 3 and report["counts"]["error"] == 1 and report["counts"]["unsupervised"] == 1
    assert any("instruction 3" in p and "no supervised token" in p for p in report["problems"])
    kept = _tokenize(vlmdata_bin, ws, tok, "chatml", "--allow-unsupervised")
    assert kept.returncode == 0, kept.stderr
    counts = json.loads(kept.stdout.strip().splitlines()[-1])["counts"]
    assert counts["ok"] == 4 and counts["unsupervised"] == 1
    ws2 = _workspace(vlmdata_bin, tmp_path / "only-empty", [empty, empty], tok)
    failed = _tokenize(vlmdata_bin, ws2, tok, "chatml")
    assert failed.returncode != 0 and "none of the 2 samples has a supervised token" in failed.stderr


def test_tokenize_stage_with_tokenizer_model(vlmdata_bin, shared, model_path, slow, tmp_path):
    """The stage takes a checkpoint folder with tokenizer.model; its tokenizer_config.json's legacy mode decides
    ids and LLaVA's adjustment; rows equal LLaVA's preprocess_v1 on the slow tokenizer; the name is the folder."""
    records = _records(shared)[50:]
    folder = _model_folder(tmp_path, model_path, False)
    ws = _workspace(vlmdata_bin, tmp_path, records, shared / "tokenizers" / "gpt2" / "tokenizer.json")
    r = _tokenize(vlmdata_bin, ws, folder, "vicuna_v1", "--max-length", "4096")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["run"]["name"] == "vicuna_v1@llama-legacy-False/per-instruction"
    assert report["counts"]["ok"] == len(records) and report["counts"]["llava_differs"] == 0
    ref = SlowLLaVA(slow[False], legacy=False, model_max_length=4096)
    db = sqlite3.connect(ws / "catalog.sqlite")
    rows = db.execute("SELECT t.input_ids, t.labels FROM tokenized t JOIN instructions i ON i.id = t.instruction_id "
                      "WHERE t.template = 'vicuna_v1' ORDER BY i.id").fetchall()
    for rec, (ids_blob, labels_blob) in zip(records, rows, strict=True):
        ids, labels = ref.preprocess("vicuna_v1", rec)
        assert list(struct.unpack(f"<{len(ids_blob) // 4}i", ids_blob)) == ids
        assert list(struct.unpack(f"<{len(labels_blob) // 4}i", labels_blob)) == labels
    # --legacy true overrides the config: a different configuration (new rows), multi-turn ids differ.
    r2 = _tokenize(vlmdata_bin, ws, folder, "vicuna_v1", "--max-length", "4096", "--legacy", "true")
    assert r2.returncode == 0, r2.stderr
    second = json.loads(r2.stdout.strip().splitlines()[-1])
    assert second["run"]["output"] != report["run"]["output"] and second["counts"]["written"] == len(records)


def test_bad_tokenizer_files_are_clear_errors(vlmdata_bin, model_path, tmp_path):
    """A truncated tokenizer.model and a tokenizer_config.json with a bad `legacy` fail, naming the file."""
    bad = tmp_path / "bad" / "tokenizer.model"
    bad.parent.mkdir()
    bad.write_bytes(model_path.read_bytes()[:100000])
    lines = tmp_path / "t.txt"
    lines.write_text("hello\n")
    r = subprocess.run([vlmdata_bin, "tokenizer", "encode", "--tokenizer", str(bad), "--lines", str(lines)], capture_output=True, text=True)
    assert r.returncode == 1 and f"{bad}: not a SentencePiece model" in r.stderr
    folder = _model_folder(tmp_path, model_path, True)
    (folder / "tokenizer_config.json").write_text(json.dumps({"legacy": "no"}))
    r = subprocess.run([vlmdata_bin, "tokenizer", "encode", "--tokenizer", str(folder), "--lines", str(lines)], capture_output=True, text=True)
    assert r.returncode == 1 and "tokenizer_config.json: 'legacy' is not true or false" in r.stderr
    # --legacy on the command line wins: the broken setting is not read.
    r = subprocess.run([vlmdata_bin, "tokenizer", "encode", "--tokenizer", str(folder), "--legacy", "false", "--lines", str(lines)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == [1, 6312, 28709]
