#!/usr/bin/env python3
"""Image pipeline benchmark: vlmdata vs PIL+numpy vs HF CLIPImageProcessor, side by side in one run.

Workload: the 80 COCO train2017 JPEGs of ../shared/data/coco-mini (169-640 px a side), held in memory.
  decode    bytes -> RGB            (PIL: Image.open(...).convert("RGB").load(); ours: TurboJPEG, PIL-exact)
  pipeline  decode + crop-mode preprocess (shortest edge 336, center crop 336) + ViT patchify 14 -> uint8 [576, 588]
            (PIL: resize + numpy crop + numpy reshape/transpose; ours: the same pixels, value for value)
  clip      decode + CLIPImageProcessor(size 336, crop 336) -> normalized float32; ours: pipeline + --normalize clip
Each is timed for --seconds per repeat, on one core and on all cores (one process per core for Python; threads
for vlmdata), and the median images/s of --repeats runs is reported with ours/peer ratios. One-core figures are
images per CPU second of the process (both sides), so a loaded machine does not skew them; all-core figures are
images per wall-clock second. Our side runs
in-process (`vlmdata preprocess --bench-seconds`), so process start-up is not counted.

    python Benchmarks/bench_image.py --bin .build/release/vlmdata --work /tmp/bench-image [--quick]
"""
import argparse
import io
import json
import multiprocessing as mp
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
S, P = 336, 14


def load_blobs():
    files = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    return [str(f) for f in files], [f.read_bytes() for f in files]


# ---------------------------------------------------------------- Python peers (run inside worker processes)

def pil_decode(blob):
    from PIL import Image
    im = Image.open(io.BytesIO(blob)).convert("RGB")
    im.load()
    return im


def pil_pipeline(blob):
    import numpy as np
    from PIL import Image
    im = pil_decode(blob)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(S * long / short)
    nw, nh = (S, new_long) if w <= h else (new_long, S)
    arr = np.asarray(im.resize((nw, nh), Image.BICUBIC))
    top, left = (nh - S) // 2, (nw - S) // 2
    arr = arr[top:top + S, left:left + S]
    g = S // P
    return np.ascontiguousarray(arr.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, P * P * 3))


_processor = None


def clip_pipeline(blob):
    global _processor
    if _processor is None:
        import logging
        logging.disable(logging.WARNING)
        from transformers import CLIPImageProcessor
        _processor = CLIPImageProcessor(size={"shortest_edge": S}, crop_size=S)
    return _processor(images=pil_decode(blob), return_tensors="np")["pixel_values"]


KINDS = {"decode": pil_decode, "pipeline": pil_pipeline, "clip": clip_pipeline}


def _worker(args):
    kind, blobs, seconds, offset = args
    fn = KINDS[kind]
    fn(blobs[0])  # warm-up (imports, processor construction)
    done, i = 0, offset
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn(blobs[i % len(blobs)])
        done += 1
        i += 1
    return done, time.perf_counter() - start, time.process_time() - cpu_start


def python_rate(kind, blobs, seconds, procs):
    """Images per second: per CPU second on one core (robust on a shared machine), per wall second on all cores."""
    if procs == 1:
        done, elapsed, cpu = _worker((kind, blobs, seconds, 0))
        return done / cpu
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_worker, [(kind, blobs, seconds, k * 7) for k in range(procs)])
    return sum(r[0] for r in results) / max(r[1] for r in results)


# ---------------------------------------------------------------- ours

def ours_rates(bin_path, files, seconds, jobs, *flags):
    out = subprocess.run([bin_path, "preprocess", *files, "--bench-seconds", str(seconds), "--jobs", str(jobs), *flags],
                         capture_output=True, text=True, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    if jobs == 1:   # per CPU second, as the one-core Python figures
        return record["decode_per_cpu_s"], record["pipeline_per_cpu_s"]
    return record["decode_per_s"], record["pipeline_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "vlmdata"))
    ap.add_argument("--work", default="/tmp/vlmdata-bench-image")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 s per measurement, 1 repeat")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    os.makedirs(args.work, exist_ok=True)
    files, blobs = load_blobs()
    cores = os.cpu_count() or 1
    import PIL
    import transformers
    print(f"images: {len(files)} COCO JPEGs from {SHARED / 'coco-mini'}; cores: {cores}; "
          f"{args.seconds:g} s x {args.repeats} repeats per figure; Pillow {PIL.__version__}, transformers {transformers.__version__}")

    rows = []
    for label, procs in (("1 core", 1), (f"{cores} cores", cores)):
        med = lambda xs: statistics.median(xs)
        peer = {k: [] for k in KINDS}
        ours = {"decode": [], "pipeline": [], "fast_decode": [], "fast_pipeline": [], "clip": []}
        for _ in range(args.repeats):
            for kind in KINDS:
                peer[kind].append(python_rate(kind, blobs, args.seconds, procs))
            d, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop")
            ours["decode"].append(d)
            ours["pipeline"].append(p)
            d, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop", "--fast-decode")
            ours["fast_decode"].append(d)
            ours["fast_pipeline"].append(p)
            _, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop", "--normalize", "clip")
            ours["clip"].append(p)
        r = {k: med(v) for k, v in peer.items()}
        o = {k: med(v) for k, v in ours.items()}
        rows.append((label, r, o))

    print()
    print(f"{'':9} {'what':42} {'PIL/HF img/s':>13} {'vlmdata img/s':>14} {'ratio':>7}")
    results = {}
    for label, r, o in rows:
        lines = [
            ("decode (exact)", r["decode"], o["decode"]),
            ("decode (--fast-decode, DCT-scaled)", r["decode"], o["fast_decode"]),
            ("decode+crop+patchify vs PIL+numpy (exact)", r["pipeline"], o["pipeline"]),
            ("decode+crop+patchify (--fast-decode)", r["pipeline"], o["fast_pipeline"]),
            ("CLIPImageProcessor vs ours + normalize", r["clip"], o["clip"]),
        ]
        for what, peer_rate, our_rate in lines:
            print(f"{label:9} {what:42} {peer_rate:13.1f} {our_rate:14.1f} {our_rate / peer_rate:6.2f}x")
            results[f"{label}: {what}"] = {"peer": peer_rate, "ours": our_rate, "ratio": our_rate / peer_rate}
        overhead = o["decode"] / o["pipeline"] - 1
        print(f"{label:9} {'(ours: preprocess+patchify add ' + format(overhead * 100, '.0f') + '% to decode)':42}")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
