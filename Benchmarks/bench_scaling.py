#!/usr/bin/env python3
"""Cost growth: every stage's time against the number of images, which should grow linearly.

For each size N it makes N synthetic 96 px shapes (`vlmdata synth shapes`), then runs the pipeline in a fresh
workspace, one stage at a time: ingest coco, gen-instructions, tokenize, patchify, shard, stream (one epoch,
keys only). Each stage is timed on its own (wall seconds, CPU seconds of the child, peak RSS of the child).
The table prints seconds per 1,000 images per stage; the last column compares the largest size with the
smallest: growth = (s/1k at the largest N) / (s/1k at the smallest N). Linear cost is growth ~1.0; the
target is growth <= 1.25 from 2,500 to 40,000 images.

    Benchmarks/bench_scaling.py --bin .build/release/vlmdata --work /tmp/bench-scaling [--quick] [--sizes 2500,5000]

--quick runs 2,500 / 5,000 / 10,000 (a shared machine); the default (what `make bench` runs) is 2,500 / 10,000 /
40,000; `--sizes 2500,5000,10000,20000,40000` gives every doubling.
Preprocessing is LLaVA-1.5's pad mode at a 112 px tile (64 image tokens) and the instructions are one caption and
one grounding question per image (`--kinds all` for every kind): at 40,000 images that is 80,000 samples and
about 3.5 GB of shards, where 336 px tiles and every kind would write ~106 GB.
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
TOKENIZER = HERE.parent.parent / "shared" / "data" / "tokenizers" / "gpt2" / "tokenizer.json"
# LLaVA-1.5's pad mode (boxes in the padded square), at a 112 px tile: about 8 samples per image each carry
# their pixels, so 336 px tiles would write ~106 GB of shards at 40,000 images; 112 px writes ~13 GB. The
# per-image work every stage does is the same apart from the pixel bytes copied.
IMAGE_SIZE, PATCH_SIZE = 112, 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
# Two instruction kinds per image by default (one caption, one grounding: text and boxes), so the 40,000-image
# run fits a shared machine; `--kinds all` makes the seven kinds (about 8 samples per image).
DEFAULT_KINDS = "caption,grounding"
STAGES = ["ingest", "gen-instructions", "tokenize", "patchify", "shard", "stream"]


def timed(cmd):
    """Runs cmd; returns (wall seconds, child CPU seconds, peak RSS MiB of this child)."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far; measure in a fresh interpreter per stage.
    wrapper = [sys.executable, "-c", (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "sys.stderr.write('\\nRSS %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(r.returncode)\n")] + [str(c) for c in cmd]
    out = subprocess.run(wrapper, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"failed ({out.returncode}): {' '.join(map(str, cmd))}")
    rss = int(out.stderr.strip().rsplit("RSS ", 1)[1]) / 1024
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return seconds, cpu, rss


def run_size(bin_path, work, n, tokenizer, keep=False, kinds=DEFAULT_KINDS, stages=STAGES, reuse=False):
    data = work / f"shapes-{n}"
    if not (data / "annotations" / "captions_train.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([str(c) for c in [bin_path, "synth", "shapes", "--count", n, "--size", 96, "--out", data, "--quiet"]],
                       check=True, stdout=subprocess.DEVNULL)
    ws = work / f"ws-{n}"
    # --reuse: a workspace kept by an earlier --keep run that got through every stage before the first one asked
    # for is used as it is (e.g. `--stages stream` measures only the loader, on the same shards each time).
    reusing = reuse and (ws / "catalog.sqlite").exists()
    if not reusing:
        shutil.rmtree(ws, ignore_errors=True)
    q = ["--workspace", ws, "--quiet"]
    commands = {
        "ingest": [bin_path, "ingest", "coco", *q, "--captions", data / "annotations" / "captions_train.json",
                   "--instances", data / "annotations" / "instances_train.json", "--images", data / "train",
                   "--split", "train"],
        "gen-instructions": [bin_path, "gen-instructions", *q, "--box-frame", "pad",
                             *([] if kinds == "all" else ["--kinds", kinds])],
        "tokenize": [bin_path, "tokenize", *q, "--tokenizer", tokenizer, "--template", "vicuna_v1",
                     "--image-tokens", IMAGE_TOKENS],
        "patchify": [bin_path, "patchify", *q, "--jobs", 1, "--mode", "pad", "--image-size", IMAGE_SIZE,
                     "--patch-size", PATCH_SIZE],
        "shard": [bin_path, "shard", *q, "--target-size", "64MB"],
        "stream": [bin_path, "stream", *q, "--workers", 0],
    }
    results = {}
    last = max(STAGES.index(s) for s in stages)
    for stage in STAGES[:last + 1]:
        if stage in stages:
            results[stage] = timed(commands[stage])
        elif not reusing:
            timed(commands[stage])  # a stage the asked-for ones need: run, not reported
    if not keep:
        shutil.rmtree(ws, ignore_errors=True)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="")
    ap.add_argument("--tokenizer", default=str(TOKENIZER))
    ap.add_argument("--keep", action="store_true", help="keep the workspaces (WORK/ws-N) for profiling")
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="stages to measure and report (those before them run unmeasured; default: all)")
    ap.add_argument("--reuse", action="store_true",
                    help="use WORK/ws-N as an earlier --keep run left it, running only the --stages asked for")
    ap.add_argument("--kinds", default=DEFAULT_KINDS, help=f"template kinds (default {DEFAULT_KINDS}; 'all': every kind)")
    a = ap.parse_args()
    stages = [s for s in STAGES if s in a.stages.split(",")]
    unknown = set(a.stages.split(",")) - set(STAGES)
    if unknown or not stages:
        ap.error(f"--stages takes a comma-separated list of {', '.join(STAGES)}; not {', '.join(sorted(unknown)) or 'empty'}")
    sizes = [int(s) for s in a.sizes.split(",") if s] or ([2500, 5000, 10000] if a.quick else [2500, 10000, 40000])
    work = pathlib.Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    table = {}
    for n in sizes:
        table[n] = run_size(a.bin, work, n, a.tokenizer, a.keep or a.reuse, a.kinds, stages, a.reuse)
        line = "  ".join(f"{s} {table[n][s][0]:.2f}s" for s in stages)
        print(f"{n:>6} images: {line}", flush=True)

    print(f"\n{'images':<17}" + "".join(f"{n:>32}" for n in sizes) + f"{'growth':>21}")
    print(f"{'stage':<17}" + "".join(f"{'s':>8}{'s/1k':>8}{'cpu/1k':>8}{'MiB':>8}" for _ in sizes)
          + f"{'wall':>7}{'cpu':>7}{'RSS':>7}")
    worst_cpu, worst_wall, worst_rss = (0.0, ""), (0.0, ""), (0.0, "")
    for stage in stages:
        cells, wall_k, cpu_k, rss_mib = "", [], [], []
        for n in sizes:
            seconds, cpu, rss = table[n][stage]
            wall_k.append(seconds / n * 1000)
            cpu_k.append(cpu / n * 1000)
            rss_mib.append(rss)
            cells += f"{seconds:>8.2f}{wall_k[-1]:>8.2f}{cpu_k[-1]:>8.2f}{rss:>8.0f}"
        growth = [k[-1] / k[0] if k[0] > 0 else float("nan") for k in (wall_k, cpu_k, rss_mib)]
        worst_wall = max(worst_wall, (growth[0], stage))
        worst_cpu = max(worst_cpu, (growth[1], stage))
        worst_rss = max(worst_rss, (growth[2], stage))
        print(f"{stage:<17}{cells}{growth[0]:>7.2f}{growth[1]:>7.2f}{growth[2]:>7.2f}")
    print(f"\ngrowth: time = (seconds per 1,000 images at {sizes[-1]:,}) / (at {sizes[0]:,}), linear is 1.00, target <= 1.25; "
          f"RSS = peak RSS at {sizes[-1]:,} / at {sizes[0]:,}, target <= 1.5.")
    print("(wall time on a busy machine also grows with waiting for the cores; CPU time does not)")
    print(f"scaling {sizes[0]:,} -> {sizes[-1]:,} images: worst CPU growth {worst_cpu[0]:.2f} ({worst_cpu[1]}), "
          f"worst wall growth {worst_wall[0]:.2f} ({worst_wall[1]}), worst RSS growth {worst_rss[0]:.2f} ({worst_rss[1]}); "
          f"load average {os.getloadavg()[0]:.1f}")
    if a.json:
        print(json.dumps({str(n): {s: dict(zip(("seconds", "cpu", "rss_mib"), v)) for s, v in r.items()}
                          for n, r in table.items()}))


if __name__ == "__main__":
    main()
