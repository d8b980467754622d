"""Tokenizer parity: `vlmdata tokenizer encode/decode` against HF `tokenizers`, record by record.

Shared tokenizers (gpt2, mistral-v1) and tokenizer shapes built here with HF `tokenizers` itself (Metaspace with
prepend_scheme first + NFKC + Lowercase, a LLaMA-3-style Split regex with ignore_merges, prefix/suffix BPE with
unk, added tokens with lstrip/rstrip/single_word/normalized) on the COCO captions, the LLaVA texts and an
edge-case corpus.
"""
import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from text_corpus import EDGE_TEXTS, coco_captions, llava_texts  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _encode(bin_path, tok_path, texts, tmp_path, special=True, jobs=1):
    lines = tmp_path / "texts.jsonl"
    lines.write_text("".join(json.dumps(t) + "\n" for t in texts), encoding="utf-8")
    args = [bin_path, "tokenizer", "encode", "--tokenizer", str(tok_path), "--lines", str(lines), "--json-lines"]
    if not special:
        args.append("--no-special")
    args += ["--jobs", str(jobs)]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.split("\n") if line]
    assert len(rows) == len(texts)
    return rows


def _decode(bin_path, tok_path, id_lists, tmp_path, keep_special=False):
    lines = tmp_path / "ids.jsonl"
    lines.write_text("".join(json.dumps(ids) + "\n" for ids in id_lists), encoding="utf-8")
    args = [bin_path, "tokenizer", "decode", "--tokenizer", str(tok_path), "--lines", str(lines)]
    if keep_special:
        args.append("--keep-special")
    out = subprocess.run(args, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.split("\n") if line]
    assert len(rows) == len(id_lists)
    return rows


def _compare(bin_path, tok_path, texts, tmp_path):
    """Encode with and without special tokens, decode with and without skipping: 100% identical or fail."""
    hf = Tokenizer.from_file(str(tok_path))
    for special in (True, False):
        ours = _encode(bin_path, tok_path, texts, tmp_path, special=special)
        theirs = [hf.encode(t, add_special_tokens=special).ids for t in texts]  # single encodes (batch padding differs)
        bad = [(i, texts[i], ours[i], theirs[i]) for i in range(len(texts)) if ours[i] != theirs[i]]
        assert not bad, f"{len(bad)}/{len(texts)} records differ (special={special}); first: {bad[:3]}"
    for keep in (False, True):
        decoded = _decode(bin_path, tok_path, theirs, tmp_path, keep_special=keep)
        expected = [hf.decode(ids, skip_special_tokens=not keep) for ids in theirs]
        bad = [(i, decoded[i], expected[i]) for i in range(len(texts)) if decoded[i] != expected[i]]
        assert not bad, f"{len(bad)}/{len(texts)} decodes differ (keep_special={keep}); first: {bad[:3]}"


@pytest.fixture(scope="module")
def corpora(shared):
    return {
        "coco": coco_captions(shared),
        "llava": llava_texts(shared),
        "edge": EDGE_TEXTS,
    }


@pytest.mark.parametrize("name", ["gpt2", "mistral-v1"])
@pytest.mark.parametrize("corpus", ["coco", "llava", "edge"])
def test_shared_tokenizers(vlmdata_bin, shared, corpora, tmp_path, name, corpus):
    texts = corpora[corpus]
    if corpus == "coco":
        assert len(texts) == 25014
    path = shared / "tokenizers" / name / "tokenizer.json"
    _compare(vlmdata_bin, path, texts, tmp_path)
    # --jobs splits records between threads; the output is the same, in order.
    assert _encode(vlmdata_bin, path, texts, tmp_path, jobs=3) == _encode(vlmdata_bin, path, texts, tmp_path)


def _train(tok, texts, **kwargs):
    trainer = trainers.BpeTrainer(show_progress=False, **kwargs)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _metaspace_first(texts):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    _train(tok, texts, vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    tok.add_special_tokens([AddedToken("<image>", lstrip=True, rstrip=False, normalized=False)])
    tok.add_tokens([AddedToken("Hello World", normalized=True), AddedToken("ﬁsh", normalized=True, single_word=True)])
    return tok


def _llama3_split(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    _train(tok, texts, vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
           special_tokens=["<|begin_of_text|>", "<|end_of_text|>"])
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return tok


def _prefix_suffix(texts):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    _train(tok, texts, vocab_size=1200, special_tokens=["[UNK]", "[CLS]", "[SEP]"],
           continuing_subword_prefix="##", end_of_word_suffix="</w>")
    tok.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    tok.enable_padding(pad_id=1, pad_token="[CLS]", pad_to_multiple_of=8, direction="left")
    tok.enable_truncation(max_length=24)
    return tok


def _gpt2_added(shared):
    tok = Tokenizer.from_file(str(shared / "tokenizers" / "gpt2" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<image>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([
        AddedToken("cat", single_word=True, normalized=False),
        AddedToken("hello world", normalized=True),
        AddedToken("[INST]", rstrip=True, normalized=False),
    ])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return tok


def _custom_regex(texts):
    """A Split regex that is none of the known patterns (runs through the generic regex engine)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Replace(tokenizers.Regex(r"\s{2,}"), " "), normalizers.NFC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(r"\p{N}+|[^\s\p{L}\p{N}]+"), behavior="isolated"),
        pre_tokenizers.Split(tokenizers.Regex(r"\s+"), behavior="merged_with_next"),
        pre_tokenizers.Punctuation(),
    ])
    tok.decoder = decoders.Fuse()
    _train(tok, texts, vocab_size=800, special_tokens=["<unk>"])
    return tok


SHAPES = {
    "custom_split_regex": lambda shared, texts: _custom_regex(texts),
    "metaspace_first_nfkc_lower": lambda shared, texts: _metaspace_first(texts),
    "llama3_split_regex": lambda shared, texts: _llama3_split(texts),
    "prefix_suffix_unk": lambda shared, texts: _prefix_suffix(texts),
    "gpt2_added_tokens": lambda shared, texts: _gpt2_added(shared),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_built_shapes(vlmdata_bin, shared, corpora, tmp_path, shape):
    train_texts = corpora["coco"][:8000]
    tok = SHAPES[shape](shared, train_texts)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    if shape == "llama3_split_regex":  # as LLaMA-3 ships it
        data = json.loads(path.read_text())
        data["model"]["ignore_merges"] = True
        path.write_text(json.dumps(data, ensure_ascii=False))
    extra = ["a cat sat", "cat", "concatenate cat.", "bobcat cat's", "hello world", "Hello World!", "say hello world now",
             "x <image> y", "x<image>y", "HELLO WORLD and fish, FISH, ﬁsh, catfish", "  <image>  ", "[INST]   hi", "<|im_start|>user\nhi<|im_end|>"]
    texts = corpora["edge"] + extra + corpora["llava"] + corpora["coco"][8000:12000]
    _compare(vlmdata_bin, path, texts, tmp_path)


def test_unsupported_component_is_a_load_error(vlmdata_bin, shared, tmp_path):
    data = json.loads((shared / "tokenizers" / "gpt2" / "tokenizer.json").read_text())
    data["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": ""}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    lines = tmp_path / "t.txt"
    lines.write_text("hello\n")
    out = subprocess.run([vlmdata_bin, "tokenizer", "encode", "--tokenizer", str(path), "--lines", str(lines)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Precompiled" in out.stderr


# ---------------------------------------------------------------------------------------------------------------
# LLaVA label masking

from text_llava import LLaVA  # noqa: E402


def _llava_records(shared):
    """pretrain-sample records, and the GPT-4 QA records as conversations: one per record, one multi-turn per
    image, and text-only copies."""
    records = json.loads((shared / "llava" / "pretrain-sample" / "blip_laion_cc_sbu_first50.json").read_text())
    qa = [json.loads(l) for l in (shared / "llava" / "coco2014_val_gpt4_qa_30x3.jsonl").read_text().splitlines() if l.strip()]
    single, by_image = [], {}
    for i, r in enumerate(qa):
        turns = [{"from": "human", "value": r["instruction"]}, {"from": "gpt", "value": r["output"]}]
        image_turns = [{"from": "human", "value": r["instruction"] + "\n<image>"}, turns[1]]
        single.append({"id": f"qa{i}", "image": r["image"], "conversations": image_turns})
        single.append({"id": f"qa{i}-text", "conversations": turns})
        by_image.setdefault(r["image"], []).append(turns)
    multi = []
    for j, (image, groups) in enumerate(sorted(by_image.items())):
        turns = [t for g in groups for t in g]
        turns = [dict(t) for t in turns]
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
        multi.append({"id": f"multi{j}", "image": image, "conversations": turns})
    return records + single + multi


def _mask(bin_path, tok_path, template, records, tmp_path, non_legacy=False):
    lines = tmp_path / "records.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    args = [bin_path, "tokenizer", "mask", "--tokenizer", str(tok_path), "--template", template, "--lines", str(lines),
            "--llava-arithmetic"]
    if non_legacy:
        args.append("--non-legacy")
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.split("\n") if line]


@pytest.mark.parametrize("name,template,non_legacy", [
    ("mistral-v1", "vicuna_v1", False),
    ("mistral-v1", "vicuna_v1", True),
    ("mistral-v1", "llama_2", False),
    ("mistral-v1", "plain", False),
    ("gpt2", "vicuna_v1", False),
    ("gpt2", "chatml", False),
    ("gpt2", "plain", False),
])
def test_llava_masks(vlmdata_bin, shared, tmp_path, name, template, non_legacy):
    path = shared / "tokenizers" / name / "tokenizer.json"
    records = _llava_records(shared)
    if template == "plain":
        records = [r for r in records if r.get("image") and len(r["conversations"]) == 2]
    ours = _mask(vlmdata_bin, path, template, records, tmp_path, non_legacy)
    ref = LLaVA(Tokenizer.from_file(str(path)), legacy=not non_legacy)
    mismatches = 0
    for record, got in zip(records, ours, strict=True):
        ids, labels = ref.preprocess(template, record)
        assert got["input_ids"] == ids, f"{record['id']}: input_ids differ"
        assert got["labels"] == labels, f"{record['id']}: labels differ at {[i for i, (a, b) in enumerate(zip(got['labels'], labels)) if a != b][:5]}"
        assert (-200 in ids) == bool(record.get("image"))
        mismatches += all(x == -100 for x in labels)
    if name == "mistral-v1" and not non_legacy:
        # The fast LLaMA tokenizer is legacy-style: LLaVA's rules line up and answers stay supervised.
        assert mismatches == 0


# ---------------------------------------------------------------------------------------------------------------
# BPE trainer and the tokenize stage


@pytest.mark.parametrize("vocab_size", [300, 500, 4000])
def test_trained_tokenizer_round_trips_through_hf(vlmdata_bin, shared, corpora, tmp_path, vocab_size):
    texts = corpora["coco"][:5000]
    src = tmp_path / "train.txt"
    src.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    out1, out2 = tmp_path / "a" / "tokenizer.json", tmp_path / "b" / "tokenizer.json"
    for out in (out1, out2):
        r = subprocess.run([vlmdata_bin, "tokenizer", "train", "--vocab-size", str(vocab_size), "--out", str(out), str(src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert out1.read_bytes() == out2.read_bytes(), "training is not deterministic"
    hf = Tokenizer.from_file(str(out1))
    assert hf.get_vocab_size() <= vocab_size
    assert hf.token_to_id("<image>") is not None and hf.token_to_id("</s>") is not None
    _compare(vlmdata_bin, out1, texts + corpora["edge"] + corpora["llava"], tmp_path)


def _workspace_with_instructions(vlmdata_bin, tmp_path, records):
    """A workspace whose `instructions` table holds `records` (image_id set when the record has an image)."""
    import sqlite3
    ws = tmp_path / "ws"
    # Any catalog command creates the catalog and runs the migrations; tokenize on an empty catalog does nothing.
    tok = SHARED_TOK("gpt2")
    r = subprocess.run([vlmdata_bin, "tokenize", "--workspace", str(ws), "--tokenizer", str(tok), "--template", "plain"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(ws / "catalog.sqlite")
    db.execute("INSERT INTO sources (id, kind, name, uri, fingerprint, created_at) VALUES (1, 'llava', 't', 'x', 'f', 'now')")
    db.execute("INSERT INTO images (id, source_id, key, file_name, status) VALUES (1, 1, 'img1', 'a.jpg', 'ok')")
    for i, rec in enumerate(records):
        db.execute("INSERT INTO instructions (key, image_id, source_id, generator, kind, conversations, created_at) "
                   "VALUES (?, ?, 1, 'import', 'conversation', ?, 'now')",
                   (f"k{i}", 1 if rec.get("image") else None, json.dumps(rec["conversations"])))
    db.commit()
    db.close()
    return ws


SHARED_TOK = None


@pytest.fixture(autouse=True)
def _shared_tok(shared):
    global SHARED_TOK
    SHARED_TOK = lambda name: shared / "tokenizers" / name / "tokenizer.json"  # noqa: E731


def test_tokenize_stage_writes_llava_masks(vlmdata_bin, shared, tmp_path):
    import sqlite3
    records = _llava_records(shared)
    records.append({"id": "bad", "image": "a.jpg", "conversations": [{"from": "human", "value": "no image tag"},
                                                                  {"from": "gpt", "value": "x"}]})
    ws = _workspace_with_instructions(vlmdata_bin, tmp_path, records)
    tok = shared / "tokenizers" / "mistral-v1" / "tokenizer.json"
    args = [vlmdata_bin, "tokenize", "--workspace", str(ws), "--tokenizer", str(tok), "--template", "vicuna_v1",
            "--max-length", "700", "--image-tokens", "576", "--overflow", "truncate", "--jobs", "2", "--json",
            "--sample-per-instruction"]   # each record its own sample (they share the workspace's one image)
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    counts = report["counts"]
    assert counts["tokenized"] == len(records)
    assert counts["error"] == 1
    assert counts["truncated"] > 0  # 700 positions with a 576-position image: long answers are cut
    ref = LLaVA(Tokenizer.from_file(str(tok)))
    db = sqlite3.connect(ws / "catalog.sqlite")
    rows = db.execute("SELECT i.key, t.status, t.input_ids, t.labels, t.n_tokens, t.n_image_tokens, t.n_supervised "
                      "FROM tokenized t JOIN instructions i ON i.id = t.instruction_id ORDER BY i.id").fetchall()
    import struct
    for rec, (key, status, ids_blob, labels_blob, n_tokens, n_image, n_sup) in zip(records, rows, strict=True):
        if rec["id"] == "bad":
            assert status == "error"
            continue
        ids, labels = ref.preprocess("vicuna_v1", rec)
        positions = len(ids) - 1 + 576 if rec.get("image") else len(ids)
        keep = len(ids) if positions <= 700 else len(ids) - (positions - 700)
        got_ids = list(struct.unpack(f"<{len(ids_blob) // 4}i", ids_blob))
        got_labels = list(struct.unpack(f"<{len(labels_blob) // 4}i", labels_blob))
        assert status == ("ok" if keep == len(ids) else "truncated")
        assert got_ids == ids[:keep] and got_labels == labels[:keep], key
        assert n_tokens == keep and n_image == (576 if rec.get("image") else 0)
        assert n_sup == sum(1 for x in labels[:keep] if x != -100)
    db.close()
    # Idempotent: a rerun writes nothing; a changed limit is a new configuration.
    again = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert again["skipped"] and again["counts"]["written"] == 0
    # A run cut short (rows of some instructions missing) is finished by the rerun, the rest kept.
    db = sqlite3.connect(ws / "catalog.sqlite")
    before = db.execute("SELECT instruction_id, input_ids, labels FROM tokenized ORDER BY instruction_id").fetchall()
    db.execute("DELETE FROM tokenized WHERE instruction_id % 3 = 0")
    removed = len(before) - db.execute("SELECT COUNT(*) FROM tokenized").fetchone()[0]
    db.commit()
    db.close()
    resumed = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert resumed["counts"]["written"] == removed > 0
    db = sqlite3.connect(ws / "catalog.sqlite")
    assert db.execute("SELECT instruction_id, input_ids, labels FROM tokenized ORDER BY instruction_id").fetchall() == before
    db.close()
    drop = [a if a != "truncate" else "drop" for a in args]
    dropped = json.loads(subprocess.run(drop, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert dropped["counts"]["dropped"] == counts["truncated"]


def test_train_from_catalog(vlmdata_bin, shared, corpora, tmp_path):
    """`tokenizer train --from-catalog` learns from the workspace's captions and instruction turns."""
    import sqlite3
    records = _llava_records(shared)[:40]
    ws = _workspace_with_instructions(vlmdata_bin, tmp_path, records)
    db = sqlite3.connect(ws / "catalog.sqlite")
    for i, caption in enumerate(corpora["coco"][:3000]):
        db.execute("INSERT INTO captions (image_id, external_id, text) VALUES (1, ?, ?)", (i, caption))
    db.commit()
    db.close()
    out = tmp_path / "trained" / "tokenizer.json"
    r = subprocess.run([vlmdata_bin, "tokenizer", "train", "--workspace", str(ws), "--from-catalog", "--vocab-size", "450",
                        "--out", str(out), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["texts"] == 3000 + sum(len(rec["conversations"]) for rec in records)
    assert info["vocab_size"] == 450
    texts = corpora["coco"][:3000] + [t["value"] for rec in records for t in rec["conversations"]]
    _compare(vlmdata_bin, out, texts + corpora["edge"], tmp_path)
    # The templates' markers and <image> are single special tokens.
    hf = Tokenizer.from_file(str(out))
    assert hf.encode("<image></s><|im_end|>", add_special_tokens=False).ids == [hf.token_to_id(t) for t in ("<image>", "</s>", "<|im_end|>")]
