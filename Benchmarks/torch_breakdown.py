"""Where the CPU time of a torch batch goes, vlmdata against webdataset + the Python collate of bench_torch.py:
each step timed with time.process_time in one process, both sides alternated, medians (ms per batch of 16,
images float32 [16, 3, 336, 336]). Usage: python Benchmarks/torch_breakdown.py WORKSPACE (a bench_torch.py ws)."""
import os, sys, time, glob, statistics, io
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
shards = sorted(glob.glob(ws + "/shards/*.tar"))
def shm_alloc(shape, dtype):
    elem = torch.empty(0, dtype=torch.float32)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape).numpy()
res = {k: [] for k in ("ours collate+fill into a reused (warm) buffer", "ours read", "ours shm alloc", "ours collate+fill", "peer read", "peer collate", "peer share_memory_ (transfer copy)", "main: receive+sum")}
L = Loader(ws, seed=0, batch_size=B)
for rep in range(3):
    st = L.stream(0, chunk=B, threads=0)
    while True:
        s = T(); b = st.next_batch(B); e = T()
        if not b: break
        res["ours read"].append(e - s)
        s = T(); out = shm_alloc((B, 3, 336, 336), np.float32); e = T(); res["ours shm alloc"].append(e - s)
        s = T(); llava_collate_numpy(b, normalize="clip", alloc=lambda shape, dtype: out); e = T(); res["ours collate+fill"].append(e - s)
        s = T(); llava_collate_numpy(b, normalize="clip", alloc=lambda shape, dtype: out); e = T(); res["ours collate+fill into a reused (warm) buffer"].append(e - s)
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
for k, v in res.items():
    print(f"{k:40s} {statistics.median(v)*1000:7.2f} ms/batch")
print("load", os.getloadavg()[0])
