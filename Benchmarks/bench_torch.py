#!/usr/bin/env python3
"""PyTorch input pipelines: samples/s into a torch training loop, vlmdata's `StreamingDataset` + `llava_collate`
against `webdataset` + the same collate written in Python, in one run on the same shards.

- Shards: `vlmdata-bench synthetic --count N` then `vlmdata shard` (LLaVA-1.5 sizes: ~600 int32 tokens + labels, uint8 pixels [1, 576, 588],
  a json; some samples text-only, which get a zero image as LLaVA gives them), 32 MB shards.
- Both: `torch.utils.data.DataLoader(batch_size=16, num_workers=2)`; each batch is LLaVA's: input_ids, labels
  (-100 padded), attention_mask and images float32 [16, 3, 336, 336] normalized with CLIP's mean and std.
  The loop touches every tensor (a sum), as a training step's first op would.
- vlmdata: `vlmdata.torch.StreamingDataset(ws, batch_size=16)` (block shuffle, seed 0) with
  `vlmdata.torch.llava_collate(normalize="clip")`.
- webdataset: `wds.WebDataset(shards, shardshuffle=False)` (shards split over the workers), every .npy member
  decoded by `np.load`, and a Python collate: pad, un-patchify, `(x / 255 - mean) / std` in float32.
The page cache is warm for both (a read pass runs first). Medians over --repeat runs. Besides samples/s, the CPU
milliseconds per batch of each side (main process + its DataLoader workers, getrusage), less sensitive to load.

    Benchmarks/bench_torch.py --bin .build/release/vlmdata --work /tmp/bench-torch [--quick] [--json]
"""
import argparse
import glob
import io
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
if "VLMDATA_LIB" not in os.environ:
    os.environ["VLMDATA_LIB"] = str(ROOT / ".build" / "release" / "libVLMDataC.so")

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def wds_sample(sample):
    return {"key": sample["__key__"], "input_ids": np.load(io.BytesIO(sample["input_ids.npy"])),
            "labels": np.load(io.BytesIO(sample["labels.npy"])),
            "pixels": np.load(io.BytesIO(sample["pixels.npy"])) if "pixels.npy" in sample else None}


def python_collate(items):
    """LLaVA's batch, written in Python: pad ids and labels, un-patchify, normalize."""
    import torch

    length = max(i["input_ids"].size for i in items)
    ids = np.zeros((len(items), length), np.int64)
    labels = np.full((len(items), length), -100, np.int64)
    mask = np.zeros((len(items), length), np.int64)
    images = []
    for r, item in enumerate(items):
        n = item["input_ids"].size
        ids[r, :n], labels[r, :n], mask[r, :n] = item["input_ids"], item["labels"], 1
        if item["pixels"] is None:  # text-only: a zero image, as LLaVA
            images.append(None)
            continue
        tiles, count, dim = item["pixels"].shape
        p, g = int(round((dim / 3) ** 0.5)), int(round(count ** 0.5))
        hwc = item["pixels"].reshape(g, g, p, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * p, g * p, 3)
        images.append(((hwc.astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1))
    shape = next(i.shape for i in images if i is not None)
    images = [np.zeros(shape, np.float32) if i is None else i for i in images]
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(mask), "images": torch.from_numpy(np.stack(images)),
            "keys": [i["key"] for i in items]}


def cpu_seconds():
    """CPU seconds of this process and of its reaped children (the DataLoader workers, once they have exited)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def train_loop(loader):
    """Samples/s through the loop, the keys seen, and CPU seconds per sample (main process + workers)."""
    keys = []
    cpu = cpu_seconds()
    start = time.perf_counter()
    check = 0.0
    for batch in loader:
        check += float(batch["images"].sum()) + float(batch["input_ids"].sum()) + float(batch["labels"].sum())
        keys += batch["keys"]
    wall = time.perf_counter() - start
    del batch, loader  # the workers exit (non-persistent), so their CPU is counted
    return len(keys) / wall, keys, (cpu_seconds() - cpu) / len(keys)


def ours(ws, batch, workers):
    from torch.utils.data import DataLoader
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=0, batch_size=batch)
    return train_loop(DataLoader(ds, batch_size=batch, num_workers=workers,
                                 collate_fn=llava_collate(normalize="clip")))


def peer(shards, batch, workers):
    import webdataset as wds
    from torch.utils.data import DataLoader

    ds = wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(wds_sample)
    return train_loop(DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=python_collate))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    # 2,048 samples: an epoch of ours takes ~1.5 s on a quiet machine, so the DataLoader's per-epoch start-up
    # (forking workers, each opening the loader) is not most of what is measured; at 768 it was ~10% of ours.
    n = a.samples or (256 if a.quick else 2048)
    repeat = a.repeat or (1 if a.quick else 3)
    ws = os.path.join(a.work, f"ws-{n}")
    if not glob.glob(os.path.join(ws, "shards", "train-*.tar")):
        bench = os.path.join(os.path.dirname(os.path.abspath(a.bin)), "vlmdata-bench")
        subprocess.run([bench, "synthetic", "--workspace", ws, "--count", str(n)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([a.bin, "shard", "--workspace", ws, "--target-size", "32MB", "--quiet"], check=True)
    shards = sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))
    for path in shards:  # warm the page cache
        with open(path, "rb") as f:
            while f.read(8 << 20):
                pass
    rates = {"vlmdata": [], "webdataset": []}
    cpu = {"vlmdata": [], "webdataset": []}
    result_load = os.getloadavg()[0]
    for _ in range(repeat):
        rate, keys, per_sample = ours(ws, a.batch_size, a.workers)
        rates["vlmdata"].append(rate)
        cpu["vlmdata"].append(per_sample)
        assert sorted(set(keys)) == sorted(keys) and len(keys) >= n, "vlmdata: every sample once (and padding)"
        rate, peer_keys, per_sample = peer(shards, a.batch_size, a.workers)
        rates["webdataset"].append(rate)
        cpu["webdataset"].append(per_sample)
        assert sorted(peer_keys) == sorted(set(keys)), "both read the same samples"
    result = {"samples": n, "batch_size": a.batch_size, "workers": a.workers, "shards": len(shards),
              "vlmdata_samples_per_s": round(statistics.median(rates["vlmdata"]), 1),
              "webdataset_samples_per_s": round(statistics.median(rates["webdataset"]), 1),
              "vlmdata_cpu_ms_per_batch": round(statistics.median(cpu["vlmdata"]) * a.batch_size * 1000, 1),
              "webdataset_cpu_ms_per_batch": round(statistics.median(cpu["webdataset"]) * a.batch_size * 1000, 1),
              "load_average_start": round(result_load, 1)}
    result["ratio"] = round(result["vlmdata_samples_per_s"] / result["webdataset_samples_per_s"], 2)
    result["cpu_ratio"] = round(result["webdataset_cpu_ms_per_batch"] / result["vlmdata_cpu_ms_per_batch"], 2)
    print(f"torch DataLoader ({a.workers} workers, batch {a.batch_size}, images [B, 3, 336, 336] CLIP-normalized), "
          f"{n} samples in {len(shards)} shards:")
    print(f"  vlmdata StreamingDataset + llava_collate : {result['vlmdata_samples_per_s']:8.1f} samples/s")
    print(f"  webdataset + Python collate              : {result['webdataset_samples_per_s']:8.1f} samples/s")
    print(f"  ratio                                    : {result['ratio']:8.2f}x")
    print(f"  CPU ms per batch (main + workers)        : {result['vlmdata_cpu_ms_per_batch']:.1f} vs "
          f"{result['webdataset_cpu_ms_per_batch']:.1f} ({result['cpu_ratio']:.2f}x less)")
    print(f"  load average {os.getloadavg()[0]:.1f} (2 cores shared: ratios, not rates, compare across runs)")
    if a.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
