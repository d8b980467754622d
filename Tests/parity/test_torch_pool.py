"""DataLoader workers hand batches to the main process (vlmdata._handoff): the images of a batch built in a worker's
reusable shared-memory buffer must never change while the main process holds any view of them; the buffer is
reused only once the main process has let go; the small tensors arrive inline as plain tensors."""
import gc
import json
import os
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run, synthetic

sys.path.insert(0, str(ROOT / "python"))
LIB = os.environ.get("VLMDATA_LIB", str(ROOT / ".build" / "release" / "libVLMDataC.so"))
os.environ["VLMDATA_LIB"] = LIB

N = 48  # LLaVA-1.5 sizes: float images [B, 3, 336, 336], 1.35 MiB per row
B = 4
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)[:, None, None]
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)[:, None, None]


@pytest.fixture(scope="module")
def ws(vlmdata_bin, bench_bin, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("torch-pool") / "ws")
    synthetic(bench_bin, path, N)
    run(vlmdata_bin, "shard", "--workspace", path, "--target-size", "8MB", "--quiet")
    return path


@pytest.fixture(scope="module")
def expected(ws):
    """Every sample's float image recomputed from its uint8 patches with numpy alone, as HF's CLIPImageProcessor
    computes it (rescale in float64, cast, normalize in float32); None for a text-only sample."""
    import vlmdata

    out = {}
    for s in vlmdata.Loader(ws).stream(0):
        if s["pixels"] is None:
            out[s["key"]] = None
            continue
        tiles, count, dim = s["pixels"].shape
        p, g = int(round((dim / 3) ** 0.5)), int(round(count ** 0.5))
        chw = s["pixels"][0].reshape(g, g, p, p, 3).transpose(4, 0, 2, 1, 3).reshape(3, g * p, g * p)
        out[s["key"]] = ((chw.astype(np.float64) * (1 / 255)).astype(np.float32) - MEAN) / STD
    assert len(out) == N and 0 < sum(v is None for v in out.values()) < N // 2
    return out


def check_batch(batch, expected):
    images = batch["images"].numpy()
    assert images.shape[1:] == (3, 336, 336)
    for row, key in enumerate(batch["keys"]):
        want = expected[key]
        if want is None:
            assert not images[row].any(), f"{key}: a text-only row must be zeros"
        else:
            assert np.array_equal(images[row], want), f"{key}: images changed after the batch was received"


@pytest.mark.parametrize("strategy", ["file_descriptor", "file_system"])
def test_every_kept_batch_of_two_workers_equals_an_independent_recomputation(ws, expected, strategy):
    """The loop keeps every batch (and a view and a numpy array of some) over two epochs of persistent workers,
    then checks each against numpy: a worker that wrote into a buffer the main process still holds would show."""
    import torch
    import torch.multiprocessing
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy(strategy)
    try:
        ds = StreamingDataset(ws, seed=4, batch_size=B)
        dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2, persistent_workers=True,
                                         collate_fn=llava_collate(normalize="clip"))
        kept, views = [], []
        for epoch in range(2):
            ds.set_epoch(epoch)
            for i, batch in enumerate(dl):
                kept.append(batch)
                if i % 3 == 0:  # a view and a numpy array outliving their batch
                    views.append((batch["keys"][-1], batch["images"][-1], batch["images"][-1].numpy()))
                    kept.pop()
        del dl, batch
        gc.collect()
        assert sum(len(b["keys"]) for b in kept) + len(views) * B == 2 * N
        for batch in kept:
            check_batch(batch, expected)
        for key, view, array in views:
            want = expected[key]
            assert np.array_equal(view.numpy(), array)
            assert (not array.any()) if want is None else np.array_equal(array, want), key
    finally:
        torch.multiprocessing.set_sharing_strategy(before)


def with_pool_stats(inner):
    """A collate that adds the worker's pid and pool counters to each batch (vlmdata._handoff.pool_stats)."""
    def collate(items):
        from vlmdata import _handoff

        batch = inner(items)
        batch["pool"] = (os.getpid(), _handoff.pool_stats())
        return batch
    return collate


def last_stats(batches, cap):
    """{worker pid: its pool counters as of its last batch} (batches made by that worker counted too)."""
    out = {}
    for batch in batches:
        pid, stats = batch["pool"]
        out[pid] = dict(stats[cap], made=out.get(pid, {}).get("made", 0) + 1)
    return out


def test_a_loop_that_drops_its_batches_reuses_the_buffers(ws, expected):
    """Two epochs of persistent workers, every batch dropped after use: each worker makes at most `pool` buffers and
    fills them again; no fresh buffer is needed."""
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=5, batch_size=B)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2, persistent_workers=True,
                                     collate_fn=with_pool_stats(llava_collate(normalize="clip", pool=5)))
    summaries = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        for batch in dl:
            check_batch(batch, expected)
            summaries.append({"pool": batch["pool"]})
    del dl, batch
    stats = last_stats(summaries, 5)
    assert len(stats) == 2 and sum(s["made"] for s in stats.values()) == 2 * N // B
    for pid, s in stats.items():
        assert s["fresh"] == 0 and 1 <= s["new_slots"] == s["slots"] <= 5, (pid, s)
        assert s["reused"] == s["made"] - s["new_slots"] >= s["made"] - 5, (pid, s)


def test_a_loop_that_keeps_every_batch_gets_fresh_buffers_past_the_cap(ws, expected):
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=6, batch_size=B)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2,
                                     collate_fn=with_pool_stats(llava_collate(normalize="clip", pool=2)))
    kept = list(dl)
    del dl
    gc.collect()
    for batch in kept:
        check_batch(batch, expected)
    for pid, s in last_stats(kept, 2).items():
        assert (s["new_slots"], s["reused"], s["fresh"]) == (2, 0, s["made"] - 2), (pid, s)


def test_a_buffer_comes_back_only_once_the_main_process_dropped_every_view(ws, expected):
    """The slot's flag stays set while a view or a numpy array of the batch's images lives; the small tensors are
    plain tensors of their own, which do not hold the slot."""
    import torch
    import torch.utils.data
    from vlmdata import _handoff
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=7, batch_size=B)
    it = iter(torch.utils.data.DataLoader(ds, batch_size=B, num_workers=1, collate_fn=llava_collate(normalize="clip")))
    batch = next(it)
    check_batch(batch, expected)
    assert all(type(v) is torch.Tensor for v in batch.values() if isinstance(v, torch.Tensor))
    flag, generation = _handoff.lease_of(batch["images"])
    assert _handoff.lease_of(batch["input_ids"]) is None and flag[0] == generation
    ids, view, array = batch["input_ids"], batch["images"][1:3].transpose(2, 3), batch["images"][0].numpy()
    del batch
    gc.collect()
    assert flag[0] == generation
    del view
    gc.collect()
    assert flag[0] == generation
    del array
    assert flag[0] == 0 and _handoff.lease_of(ids) is None and ids.shape[0] == B
    for batch in it:
        check_batch(batch, expected)


def test_without_workers_the_batch_is_plain_tensors(ws, expected):
    import torch
    import torch.utils.data
    from vlmdata import _handoff
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=8, batch_size=B)
    for batch in torch.utils.data.DataLoader(ds, batch_size=B, num_workers=0, collate_fn=llava_collate()):
        check_batch(batch, expected)
        assert all(type(v) is torch.Tensor for v in batch.values() if isinstance(v, torch.Tensor))
        assert _handoff.lease_of(batch["images"]) is None and not batch["images"].is_shared()
    assert _handoff.pool_stats() == {}
    for bad in (-1, "5", 2.5, None):
        with pytest.raises(ValueError, match=f"pool must be a whole number of buffers >= 0 \\(0: none\\), not {bad!r}"):
            llava_collate(pool=bad)


def test_pin_memory_and_packed_rows_of_varying_image_counts(ws, expected):
    """Packed batches hold a varying number of images, so buffers of several sizes are taken and reused; half the
    batches are kept to the end. (pin_memory=True: this CPU-only torch turns pinning off with a warning.)"""
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    # two samples per row (1,180 positions each); a worker's 12 rows come in batches of 5, 5 and 2 rows
    ds = StreamingDataset(ws, seed=9, batch_size=B, pack=2400, pack_rows=2)
    dl = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, pin_memory=True,
                                     collate_fn=with_pool_stats(llava_collate(normalize="clip", pool=3)))
    kept, seen, shapes = [], [], set()
    with pytest.warns(UserWarning, match="pin"):
        for i, batch in enumerate(dl):
            if i % 2 == 0:
                kept.append(batch)
            seen.append({"pool": batch["pool"]})
            shapes.add(tuple(batch["images"].shape))
    del dl, batch
    gc.collect()
    assert len(shapes) >= 2 and sum(s["made"] for s in last_stats(seen, 3).values()) == len(seen)
    for batch in kept:
        want = [expected[k] for k in batch["keys"] if expected[k] is not None]
        assert batch["images"].shape[0] == len(want)
        for image, w in zip(batch["images"].numpy(), want):
            assert np.array_equal(image, w)


def test_leases_pickle_once_and_copies_are_plain(tmp_path):
    """The protocol without a DataLoader: a leased tensor pickled for another process holds the slot until the
    rebuilt tensor dies; a second pickle, a deepcopy and a lease dropped unsent do not hold it; a free slot big
    enough is reused, a too-small one replaced at the cap, and with every slot held the pool gives none."""
    import copy
    from multiprocessing.reduction import ForkingPickler

    import torch
    import torch.multiprocessing  # torch's reductions for ForkingPickler
    from vlmdata import _handoff

    pool = _handoff.Pool(2)
    lease = pool.take((4, 8), torch.float32)
    lease.tensor.copy_(torch.arange(32, dtype=torch.float32).view(4, 8))
    leased = lease.hand_out(lease.tensor)
    message = ForkingPickler.dumps({"images": leased})
    again = ForkingPickler.loads(ForkingPickler.dumps(leased))
    clone = copy.deepcopy(leased)
    received = ForkingPickler.loads(message)["images"]
    assert type(received) is type(again) is type(clone) is torch.Tensor
    assert torch.equal(received, torch.arange(32, dtype=torch.float32).view(4, 8)) and torch.equal(again, received)
    assert _handoff.lease_of(again) is None and _handoff.lease_of(clone) is None
    assert _handoff.lease_of(received)[1] == 1 and pool.flags[0][0] == 1
    del leased, again, clone
    gc.collect()
    assert pool.flags[0][0] == 1  # the received tensor still holds it
    mapped = received.data_ptr()
    ForkingPickler.dumps(received)  # sent on to a third process: torch moves it into new shared memory first
    assert received.data_ptr() != mapped and torch.equal(received, torch.arange(32, dtype=torch.float32).view(4, 8))
    del received
    gc.collect()
    assert pool.flags[0][0] == 0
    small = pool.take((2, 8), torch.float32)  # reuses slot 0 (64 of its 128 bytes)
    assert small.slot == 0 and pool.stats == {"new_slots": 1, "reused": 1, "fresh": 0}
    unsent = small.hand_out(small.tensor)
    del unsent
    gc.collect()
    assert pool.flags[0][0] == 0  # dropped in the worker without being sent
    held = [pool.take((4, 8), torch.float32), pool.take((4, 8), torch.float32)]
    assert [h.slot for h in held] == [0, 1] and pool.take((1,), torch.float32) is None
    for h in held:
        h.cancel()
    bigger = pool.take((64, 8), torch.float32)  # both free slots too small, the pool full: one is replaced
    assert bigger.slot == 0 and pool.flag_offsets[0] == 64 * 8 * 4 and len(pool.slots) == 2


def test_no_shared_memory_file_outlives_the_loop_or_the_process(ws, tmp_path):
    """file_system sharing: torch names each shared-memory file /dev/shm/torch_PID_...; once the loop is over and
    its batches dropped, none is left of the workers (their buffers and flags), nor of anyone after exit."""
    import subprocess
    import textwrap

    script = textwrap.dedent(f"""
        import gc, json, os, sys
        sys.path.insert(0, {str(ROOT / "python")!r})
        sys.path.insert(0, {str(ROOT / "Tests" / "parity")!r})
        import torch.multiprocessing, torch.utils.data
        torch.multiprocessing.set_sharing_strategy("file_system")
        from vlmdata.torch import StreamingDataset, llava_collate
        from test_torch_pool import with_pool_stats
        ds = StreamingDataset({ws!r}, seed=10, batch_size={B})
        dl = torch.utils.data.DataLoader(ds, batch_size={B}, num_workers=2,
                                         collate_fn=with_pool_stats(llava_collate(normalize="clip")))
        pids, during = set(), 0
        for batch in dl:
            pids.add(batch["pool"][0])
            during = max(during, sum(f.startswith("torch_") for f in os.listdir("/dev/shm")))
        del dl, batch
        gc.collect()
        left = [f for f in os.listdir("/dev/shm") if any(f.startswith(f"torch_{{p}}_") for p in pids)]
        print(json.dumps([sorted(pids), during, left, os.getpid()]))
    """)
    path = tmp_path / "shm.py"
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pids, during, left, main_pid = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(pids) == 2 and during >= 2 and left == []
    for _ in range(100):  # torch_shm_manager unlinks what is left of a process after it exits
        after = [f for f in os.listdir("/dev/shm") if any(f.startswith(f"torch_{p}_") for p in pids + [main_pid])]
        if not after:
            break
        time.sleep(0.1)
    assert after == []
