"""DataLoader workers hand batches to the main process (vlmdata._handoff): the images of a batch built in a worker's
reusable shared-memory buffer must never change while the main process holds any view of them; the buffer is
reused only once the main process has let go; the small tensors arrive inline as plain tensors."""
import gc
import os
import sys

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
    assert len(out) == N and sum(v is None for v in out.values()) < N // 2
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
