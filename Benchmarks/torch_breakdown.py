"""Where the CPU time of a torch batch goes, vlmdata against webdataset + the Python collate of bench_torch.py
(ms per batch of 16, images float32 [16, 3, 336, 336]), both sides alternated, medians:
1. each step timed with time.process_time in one process;
2. end to end: DataLoader(2 workers) epochs into bench_torch's loop, CPU of the main process and of the workers
   (getrusage of the reaped children), for vlmdata with the workers' buffer pool (vlmdata._handoff), without it
   (pool=0, a fresh shared-memory buffer per batch), and webdataset.
Usage: python Benchmarks/torch_breakdown.py WORKSPACE (a bench_torch.py ws) [--repeat N]."""
import os, sys, time, glob, statistics, io, resource
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python")); sys.path.insert(0, os.path.join(ROOT, "Benchmarks"))
os.environ.setdefault("VLMDATA_LIB", os.path.join(ROOT, ".build", "release", "libVLMDataC.so"))
import numpy as np, torch
torch.set_num_threads(1)
import bench_torch as bt
from vlmdata.loader import Loader
from vlmdata.collate import llava_collate_numpy
import webdataset as wds
T = time.process_time
ws = sys.argv[1]; B = 16
REPEAT = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
shards = sorted(glob.glob(ws + "/shards/*.tar"))
def shm_alloc(shape, dtype):
    elem = torch.empty(0, dtype=torch.float32)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape).numpy()
from vlmdata import _handoff
pool = _handoff.Pool(1)
def pooled(shape, dtype):
    lease = pool.take(shape, torch.float32); lease.cancel()  # taken and given back: what a reused slot costs
    return lease.tensor.numpy()
res = {k: [] for k in ("ours read", "ours shm alloc", "ours collate+fill", "ours collate+fill into a reused (warm) buffer", "ours collate+fill into a pool slot (take + fill)", "peer read", "peer collate", "peer share_memory_ (transfer copy)", "main: receive+sum")}
L = Loader(ws, seed=0, batch_size=B)
for rep in range(REPEAT):
    st = L.stream(0, chunk=B, threads=0)
    while True:
        s = T(); b = st.next_batch(B); e = T()
        if not b: break
        res["ours read"].append(e - s)
        s = T(); out = shm_alloc((B, 3, 336, 336), np.float32); e = T(); res["ours shm alloc"].append(e - s)
        s = T(); llava_collate_numpy(b, normalize="clip", alloc=lambda shape, dtype: out); e = T(); res["ours collate+fill"].append(e - s)
        s = T(); llava_collate_numpy(b, normalize="clip", alloc=lambda shape, dtype: out); e = T(); res["ours collate+fill into a reused (warm) buffer"].append(e - s)
        s = T(); llava_collate_numpy(b, normalize="clip", alloc=pooled); e = T(); res["ours collate+fill into a pool slot (take + fill)"].append(e - s)
    it = iter(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    while True:
        s = T(); items = []
        for _ in range(B):
            try: items.append(bt.wds_sample(next(it)))
            except StopIteration: break
        e = T()
        if not items: break
        res["peer read"].append(e - s)
        s = T(); batch = bt.python_collate(items); e = T(); res["peer collate"].append(e - s)
        s = T(); batch["images"].share_memory_(); e = T(); res["peer share_memory_ (transfer copy)"].append(e - s)
        # main side: map the shared tensor in a fresh view and sum it (what the training loop does)
        s = T(); float(batch["images"].sum()); e = T(); res["main: receive+sum"].append(e - s)
print("1. steps, CPU ms per batch (one process):")
for k, v in res.items():
    print(f"  {k:48s} {statistics.median(v)*1000:7.2f}")
print("  load", round(os.getloadavg()[0], 1))

# 2. end to end through DataLoader workers
from torch.utils.data import DataLoader
from vlmdata.torch import StreamingDataset, llava_collate
torch.set_num_threads(torch.get_num_threads())
def cpu():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime
def epoch(make):
    dl = make()
    (m0, w0), t0, batches = cpu(), time.perf_counter(), 0
    for batch in dl:  # bench_torch's loop
        float(batch["images"].sum()) + float(batch["input_ids"].sum()) + float(batch["labels"].sum())
        batches += 1
    del batch, dl
    wall = time.perf_counter() - t0
    m1, w1 = cpu()
    return wall / batches * 1000, (m1 - m0) / batches * 1000, (w1 - w0) / batches * 1000
sides = {
    "vlmdata, pool of 5 per worker": lambda: DataLoader(StreamingDataset(ws, seed=0, batch_size=B), batch_size=B, num_workers=2, collate_fn=llava_collate(normalize="clip")),
    "vlmdata, pool=0 (fresh buffer per batch)": lambda: DataLoader(StreamingDataset(ws, seed=0, batch_size=B), batch_size=B, num_workers=2, collate_fn=llava_collate(normalize="clip", pool=0)),
    "webdataset + Python collate": lambda: DataLoader(wds.WebDataset(shards, shardshuffle=False, empty_check=False).map(bt.wds_sample), batch_size=B, num_workers=2, collate_fn=bt.python_collate),
}
e2e = {k: [] for k in sides}
for rep in range(REPEAT):
    for k, make in sides.items():
        e2e[k].append(epoch(make))
print("2. DataLoader(2 workers), ms per batch: wall, CPU of the main process, CPU of the workers, CPU total")
for k, v in e2e.items():
    wall, main, workers = (statistics.median(x[i] for x in v) for i in range(3))
    print(f"  {k:42s} wall {wall:6.2f}  main {main:6.2f}  workers {workers:6.2f}  total {main + workers:6.2f}")
print("  load", round(os.getloadavg()[0], 1))
