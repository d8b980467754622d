#!/usr/bin/env python3
"""Shard writing: `vlmdata shard` against Python `webdataset.ShardWriter` on the same samples.

Both write the same N samples (uint8 pixels [1, 576, 588], ~600 int32 tokens + labels, a json) into
~256 MB tar shards. vlmdata's time is the whole command: planning from the catalog, reading token blobs
from SQLite and pixel npy bytes from the pixel shard, writing, fsync, the XXH3 of every member and the
XXH3-128 of every shard, and the index transaction (sha256 only with `shard --sha256`: `--with-sha256` adds a
line for it). webdataset's time is only its write loop over samples already decoded into numpy
arrays in memory (it does not fsync or index). Runs alternate; medians over --repeat runs.

    Benchmarks/bench_shard.py --bin .build/release/vlmdata --work /tmp/bench-shard [--quick]
"""
import argparse
import glob
import io
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

import numpy as np


def clear_shards(ws):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        db.execute("DELETE FROM sample_parts")
        db.execute("DELETE FROM samples")
        db.execute("DELETE FROM shards")
        db.execute("DELETE FROM runs WHERE stage = 'shard'")
    for path in glob.glob(os.path.join(ws, "shards", "*.tar")) + glob.glob(os.path.join(ws, "shards", ".*.tar.tmp-*")):
        os.unlink(path)


def load_samples(ws):
    """The samples as a Python user would hand them to ShardWriter: numpy arrays and a metadata dict."""
    db = sqlite3.connect(os.path.join(ws, "catalog.sqlite"))
    rows = db.execute("""
        SELECT i.key, i.conversations, t.input_ids, t.labels, t.n_tokens, t.n_supervised, ps.name, p.offset, p.size
        FROM tokenized t JOIN instructions i ON i.id = t.instruction_id
        LEFT JOIN images img ON img.id = i.image_id LEFT JOIN pixels p ON p.sha256 = img.sha256
        LEFT JOIN pixel_shards ps ON ps.id = p.pixel_shard_id ORDER BY i.key""").fetchall()
    files = {}
    samples = []
    for key, conv, ids, labels, n_tokens, n_sup, shard, offset, size in rows:
        sample = {
            "__key__": key,
            "json": {"key": key, "conversations": json.loads(conv), "tokens": n_tokens, "supervised": n_sup},
            "input_ids.npy": np.frombuffer(ids, dtype="<i4"),
            "labels.npy": np.frombuffer(labels, dtype="<i4"),
        }
        if shard is not None:
            f = files.setdefault(shard, open(os.path.join(ws, "shards", "pixels", shard), "rb"))
            f.seek(offset)
            sample["pixels.npy"] = np.load(io.BytesIO(f.read(size)))
        samples.append(sample)
    return samples


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ours(bin_path, ws, *extra):
    clear_shards(ws)
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run([bin_path, "shard", "--workspace", ws, "--target-size", "256MB", "--quiet", *extra], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    return seconds, size, children_cpu() - cpu


def run_peer(samples, out_dir):
    import webdataset as wds

    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cpu = time.process_time()
    start = time.perf_counter()
    with wds.ShardWriter(os.path.join(out_dir, "train-%06d.tar"), maxsize=256e6, maxcount=10**9, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out_dir, "*.tar")))
    return seconds, size, cpu


def run_disk_floor(out_dir, size):
    """What the disk itself sustains for a durable write of `size` bytes: 4 MiB O_DIRECT writes, then fsync."""
    import mmap

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "floor.bin")
    chunk = mmap.mmap(-1, 4 << 20)   # page-aligned, as O_DIRECT needs
    chunk.write(os.urandom(4 << 20))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0), 0o644)
    try:
        start = time.perf_counter()
        written = 0
        while written < size:
            written += os.write(fd, chunk)
        os.fsync(fd)
        return time.perf_counter() - start, written
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 samples, one run each")
    parser.add_argument("--with-sha256", action="store_true", help="also time `shard --sha256` (sha256 of every shard)")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.repeat = 300, 1
    ws = os.path.join(args.work, f"ws-{args.samples}")
    os.makedirs(args.work, exist_ok=True)
    bench = os.path.join(os.path.dirname(os.path.abspath(args.bin)), "vlmdata-bench")
    subprocess.run([bench, "synthetic", "--workspace", ws, "--count", str(args.samples)], check=True, stdout=subprocess.DEVNULL)
    samples = load_samples(ws)
    ours, peer, floor, hashed = [], [], [], []
    for _ in range(args.repeat):
        ours.append(run_ours(args.bin, ws))
        if args.with_sha256:
            hashed.append(run_ours(args.bin, ws, "--sha256"))
        peer.append(run_peer(samples, os.path.join(args.work, "peer")))
        floor.append(run_disk_floor(os.path.join(args.work, "floor"), ours[-1][1]))
    n = len(samples)

    def summary(name, runs):
        t = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        size = runs[0][1]
        print(f"{name:<24} wall {t:7.3f} s {n / t:8.0f} samples/s {size / t / 1e6:6.0f} MB/s | "
              f"cpu {cpu:6.3f} s {n / cpu:8.0f} samples/s  ({size / 1e6:.0f} MB)")
        return t, cpu

    print(f"shard writing: {n} samples (pixels [1, 576, 588] uint8 on {n - n // 10}, ~600 tokens), "
          f"{args.repeat} run(s) each, medians; {os.cpu_count()} cores")
    print(f"load average {os.getloadavg()[0]:.1f}; work folder {args.work}")
    t_ours, cpu_ours = summary("vlmdata shard", ours)
    t_peer, cpu_peer = summary("webdataset.ShardWriter", peer)
    print(f"ratio (webdataset / vlmdata): wall {t_peer / t_ours:.2f}x, cpu {cpu_peer / cpu_ours:.2f}x")
    if hashed:
        t_hashed, cpu_hashed = summary("vlmdata shard --sha256", hashed)
        print(f"ratio (webdataset / vlmdata --sha256): wall {t_peer / t_hashed:.2f}x, cpu {cpu_peer / cpu_hashed:.2f}x")
    # Shards are fsynced before they are indexed, so the disk's durable write rate bounds our wall time;
    # webdataset leaves its bytes in the page cache.
    t_floor = statistics.median(f[0] for f in floor)
    size = ours[0][1]
    print(f"disk floor: {size / 1e6:.0f} MB in 4 MiB O_DIRECT writes + fsync: {t_floor:.3f} s ({size / t_floor / 1e6:.0f} MB/s); "
          f"vlmdata runs at {t_floor / t_ours * 100:.0f}% of it")
    # The best wall ratio any writer that fsyncs could show here: webdataset's wall over the disk floor. The goal
    # (5x) is judged against it: above the ceiling it cannot be met on this disk without dropping the fsync.
    ceiling = t_peer / t_floor
    print(f"ceiling with fsync on this disk (webdataset wall / disk floor): {ceiling:.2f}x; "
          f"measured {t_peer / t_ours:.2f}x = {t_peer / t_ours / ceiling * 100:.0f}% of the ceiling")
    print(f"shard: wall {t_peer / t_ours:.2f}x webdataset.ShardWriter (ceiling {ceiling:.2f}x with fsync on this disk; goal 5x), "
          f"cpu {cpu_peer / cpu_ours:.2f}x; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
