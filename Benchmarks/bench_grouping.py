"""Shard bytes per image: grouped samples (one multi-turn sample per image, the default) against one sample per
instruction (`tokenize --sample-per-instruction`, the layout before issue 19), on the instruct recipe's settings
(coco-mini, every template kind, vicuna_v1 on mistral-v1, CLIP-336 pad pixels).

The peer is the stored pixels themselves: grouped shards should approach one copy of the pixels per image.
Prints, per layout: samples, shard bytes, bytes per image, and its ratio to the pixel bytes per image; then the
ratio line the summary table takes.

Usage: python Benchmarks/bench_grouping.py --bin .build/release/vlmdata --work bench-work/grouping [--quick]
"""
import argparse
import json
import pathlib
import shutil
import sqlite3
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
KINDS = "caption,detail,grounding,count,yesno,mcq,multiturn"


def run(*args):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))}\n{out.stderr}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    coco = SHARED / "coco-mini"
    tok = SHARED / "tokenizers" / "mistral-v1" / "tokenizer.json"
    base = work / "base"
    q = ["--workspace", base, "--quiet"]
    run(a.bin, "ingest", "coco", *q, "--captions", coco / "annotations" / "captions_train2017.json",
        "--instances", coco / "annotations" / "instances_train2017.json", "--images", coco / "train2017")
    run(a.bin, "gen-instructions", *q, "--generator", "templates", "--kinds", KINDS, "--seed", "1", "--box-frame", "pad")
    run(a.bin, "patchify", *q, "--image-size", 336, "--patch-size", 14, "--mode", "pad", "--jobs", 2)
    with sqlite3.connect(base / "catalog.sqlite") as db:
        images, pixel_bytes = db.execute("SELECT COUNT(*), SUM(size) FROM pixels WHERE status = 'ok'").fetchone()
        instructions = db.execute("SELECT COUNT(*) FROM instructions").fetchone()[0]
    per_pixel = pixel_bytes / images
    print(f"coco-mini: {images} images, {instructions} instructions ({instructions / images:.1f} per image), "
          f"pixels {per_pixel / 1e6:.3f} MB per image (uint8 npy)")
    results = {}
    for layout, extra in (("grouped", []), ("per-instruction", ["--sample-per-instruction"])):
        ws = work / layout
        shutil.copytree(base, ws)
        w = ["--workspace", ws, "--quiet"]
        start = time.monotonic()
        tokenized = json.loads(run(a.bin, "tokenize", *w, "--tokenizer", tok, "--template", "vicuna_v1", "--max-length", 2048,
                                   "--image-tokens", "pixels", "--json", *extra).strip().splitlines()[-1])
        tokenize_s = time.monotonic() - start
        start = time.monotonic()
        report = json.loads(run(a.bin, "shard", *w, "--json").strip().splitlines()[-1])
        shard_s = time.monotonic() - start
        samples, nbytes = report["counts"]["samples"], report["counts"]["bytes"]
        results[layout] = nbytes / images
        print(f"{layout:16s} samples {samples:5d}  shard bytes {nbytes / 1e6:8.1f} MB  per image {nbytes / images / 1e6:6.3f} MB"
              f"  = {nbytes / images / per_pixel:5.2f}x the pixels  (tokenize {tokenize_s:.1f} s"
              f"{', ' + str(tokenized['counts']['ok']) + ' samples' if layout == 'grouped' else ''}; shard {shard_s:.1f} s)")
    print(f"ratio: shard bytes per image, per-instruction / grouped = {results['per-instruction'] / results['grouped']:.2f}x; "
          f"grouped = {results['grouped'] / per_pixel:.3f}x the pixel bytes (goal: approach 1x)")


if __name__ == "__main__":
    main()
