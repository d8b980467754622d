"""`vlmdata view` labels tokens with the tokenizer the samples were made with, found through the tokenize run's
lineage (the catalog stores the tokenizer's sha256, and the run records the path it read): no --tokenizer needed
while that file is still there and unchanged; otherwise the page and the report name the file (path + sha256) to
pass. Before: without --tokenizer, only a tokenizer.json inside the workspace was found, and the note said only
"give --tokenizer"."""
import hashlib
import json
import shutil

from conftest import SHARED, run
from invariants import COCO

GPT2 = SHARED / "tokenizers" / "gpt2" / "tokenizer.json"


def view(bin_path, ws, out, *extra):
    return json.loads(run(bin_path, "view", "--workspace", ws, "--out", out, "--samples", 2, "--quiet", "--json", *extra).stdout)


def test_view_finds_the_tokenizer_the_samples_were_made_with(vlmdata_bin, tmp_path):
    ws, out = tmp_path / "ws", tmp_path / "report"
    tokenizer = tmp_path / "tok" / "tokenizer.json"      # outside the workspace, as a user keeps it
    tokenizer.parent.mkdir()
    shutil.copy(GPT2, tokenizer)
    sha = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    q = ["--workspace", ws, "--quiet"]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", COCO / "annotations" / "captions_train2017.json",
        "--images", COCO / "train2017")
    run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "caption", "--seed", "1")
    run(vlmdata_bin, "patchify", *q, "--image-size", 28, "--patch-size", 14, "--mode", "pad", "--jobs", 1)
    run(vlmdata_bin, "tokenize", *q, "--tokenizer", tokenizer, "--template", "plain", "--image-tokens", "pixels")
    run(vlmdata_bin, "shard", *q)

    found = view(vlmdata_bin, ws, out)
    assert found.get("tokenizer") == str(tokenizer) and found.get("tokenizer_needed", []) == []
    assert f"strings from <code>{tokenizer}</code>" in (out / "index.html").read_text()

    tokenizer.write_bytes(tokenizer.read_bytes() + b"\n")     # still a tokenizer, no longer the samples'
    changed = view(vlmdata_bin, ws, out)
    now = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    assert changed.get("tokenizer") is None
    assert changed["tokenizer_needed"] == [
        f"the samples were tokenized with {tokenizer} (sha256 {sha}), which has changed since (sha256 now {now}); "
        f"give --tokenizer the file whose sha256 is {sha}"]

    tokenizer.unlink()
    text = run(vlmdata_bin, "view", "--workspace", ws, "--out", out, "--samples", 2, "--quiet").stdout
    assert (f"note: token ids are shown, not strings: the samples were tokenized with {tokenizer} (sha256 {sha}), "
            f"which is no longer there; give --tokenizer the file whose sha256 is {sha}") in text
    assert f"sha256 {sha}" in (out / "index.html").read_text()

    given = view(vlmdata_bin, ws, out, "--tokenizer", GPT2)
    assert given.get("tokenizer") == str(GPT2) and given["tokenizer_needed"] == []
