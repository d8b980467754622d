#!/usr/bin/env python3
"""The streaming loader: an epoch of `vlmdata` (read + decode every sample, in-process, `vlmdata-bench loader`)
against Python `webdataset` reading and decoding the same npy members, and against a raw sequential read of
the shard bytes, single core and all cores, on the same shards.

- Shards: `vlmdata-bench synthetic --count N` then `vlmdata shard` (LLaVA-1.5 sizes: ~600 int32 tokens + labels, uint8 pixels
  [1, 576, 588], a json), about 64 MB each.
- vlmdata: one epoch in block-shuffled order (seed 0), `--workers 0` (one core: decode on the consuming thread)
  and `--workers <cores>`; figures are in-process (no process start-up).
- webdataset: `wds.WebDataset(shards, shardshuffle=False)` with every .npy member decoded by `np.load`
  (input_ids, labels, pixels); one process, then one process per core, each over its share of the shards
  (what DataLoader workers do with `split_by_worker`).
- raw: every shard file read sequentially in 4 MiB chunks (one process; all cores: one process per core).
The page cache is warm for everyone (a raw pass runs first). MB/s counts the samples' bytes in the shards.
Medians over --repeat runs.

    Benchmarks/bench_loader.py --bin .build/release/vlmdata --work /tmp/bench-loader [--quick]
"""
import argparse
import glob
import io
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

import numpy as np


def sample_bytes(ws):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return db.execute("SELECT COUNT(*), SUM(size) FROM samples").fetchone()


def raw_read(paths):
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while True:
                chunk = f.read(4 << 20)
                if not chunk:
                    break
                total += len(chunk)
    return total


def wds_epoch(paths):
    import webdataset as wds

    n = 0
    check = 0
    for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
        ids = np.load(io.BytesIO(sample["input_ids.npy"]))
        labels = np.load(io.BytesIO(sample["labels.npy"]))
        if "pixels.npy" in sample:
            pixels = np.load(io.BytesIO(sample["pixels.npy"]))
            check += int(pixels.flat[-1])
        json.loads(sample["json"])
        check += int(ids[0]) + int(labels[-1])
        n += 1
    return n


def parallel(fn, paths, procs):
    parts = [paths[i::procs] for i in range(procs)]
    with mp.get_context("fork").Pool(procs) as pool:
        return sum(pool.map(fn, parts))


def timed(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_bin(bin_path):
    """`vlmdata-bench` (fixtures and in-process benchmarks), built beside vlmdata by `make bench`."""
    return os.path.join(os.path.dirname(os.path.abspath(bin_path)), "vlmdata-bench")


def ours(bin_path, ws, workers, repeat):
    out = subprocess.run([bench_bin(bin_path), "loader", "--workspace", ws, "--workers", str(workers),
                          "--repeats", str(repeat), "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int)
    ap.add_argument("--repeat", type=int)
    a = ap.parse_args()
    count = a.samples or (300 if a.quick else 1500)
    repeat = a.repeat or (1 if a.quick else 3)
    cores = os.cpu_count() or 1
    ws = os.path.join(a.work, "ws")
    marker = os.path.join(a.work, f"made-{count}")
    if not os.path.exists(marker):
        shutil.rmtree(a.work, ignore_errors=True)
        os.makedirs(a.work)
        subprocess.run([bench_bin(a.bin), "synthetic", "--workspace", ws, "--count", str(count)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([a.bin, "shard", "--workspace", ws, "--target-size", "64MB", "--quiet"], check=True)
        open(marker, "w").close()
    paths = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    n, nbytes = sample_bytes(ws)
    print(f"{n} samples, {len(paths)} shards, {nbytes / 1e6:.0f} MB of samples; {cores} cores; warm page cache; "
          f"medians of {repeat}; load average {os.getloadavg()[0]:.1f}")
    raw_read(paths)  # warm the page cache

    rows = []
    for label, procs, workers in (("1 core", 1, 0), (f"{cores} cores", cores, cores)):
        raw_t, raw_b = timed(lambda: raw_read(paths) if procs == 1 else parallel(raw_read, paths, procs), repeat)
        wds_t, wds_n = timed(lambda: wds_epoch(paths) if procs == 1 else parallel(wds_epoch, paths, procs), repeat)
        assert wds_n == n, (wds_n, n)
        o = ours(a.bin, ws, workers, repeat)
        assert o["samples"] == n, o
        rows.append((label, o, wds_t, raw_t, raw_b))
        print(f"\n{label}:")
        print(f"  vlmdata loader   {o['samples_per_s']:10.0f} samples/s  {o['mb_per_s']:8.0f} MB/s  "
              f"(epoch {o['epoch_seconds']:.3f} s, workers={workers})")
        print(f"  webdataset+numpy {n / wds_t:10.0f} samples/s  {nbytes / wds_t / 1e6:8.0f} MB/s  (epoch {wds_t:.3f} s)")
        print(f"  raw read         {n / raw_t:10.0f} samples/s  {raw_b / raw_t / 1e6:8.0f} MB/s  (epoch {raw_t:.3f} s)")
        print(f"  vlmdata / webdataset = {wds_t / o['epoch_seconds']:.2f}x   "
              f"vlmdata / raw read = {(nbytes / o['epoch_seconds']) / (raw_b / raw_t) * 100:.0f}%")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}; vlmdata hands batches over whole "
          f"(`vlmdata-bench loader --per-sample` times next(), one sample copied out at a time)")
    o = rows[0][1]
    print(f"\nshuffle quality (block shuffle, block 1024, 8 partitions): mean displacement "
          f"{o['shuffle_mean_displacement']:.3f} of the dataset (uniform: 0.333), adjacency "
          f"{o['shuffle_adjacency']:.4f} (none: 1.0)")


if __name__ == "__main__":
    main()
