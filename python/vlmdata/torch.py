"""PyTorch: `StreamingDataset` (an IterableDataset over vlmdata's loader) and `llava_collate`.

    ds = StreamingDataset("vlmdata-work/demo", seed=0, batch_size=8)
    dl = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=llava_collate(normalize="clip", pad_token_id=0))
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in dl:
            ...
            state = ds.state_dict(position=batch["position"])   # exact mid-epoch resume, any world size
"""
import os

import numpy as np
import torch
import torch.utils.data

from . import _handoff
from ._handoff import InlineTensor, worker_pool
from .collate import llava_collate_numpy
from .loader import Loader
from .loader import topology as _topology

__all__ = ["StreamingDataset", "llava_collate", "topology"]


def topology(rank=None, world_size=None):
    """(rank, world size): the given values win; then torch.distributed when initialized; else the launcher's
    environment as the library reads it (torchrun's $RANK / $WORLD_SIZE, Slurm's $SLURM_PROCID / $SLURM_NTASKS),
    else (0, 1). Inconsistent values raise VLMDataError."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank() if rank is None else rank
        world_size = dist.get_world_size() if world_size is None else world_size
    found_rank, found_world, _ = _topology(rank, world_size)
    return found_rank, found_world


class StreamingDataset(torch.utils.data.IterableDataset):
    """This rank's samples of an epoch, in exactly `vlmdata stream`'s order for the same settings.

    The rank and world size come from torch.distributed (or $RANK / $WORLD_SIZE); inside a DataLoader, worker k of
    K takes the rank's chunks of `batch_size` samples k, k + K, ...: give the DataLoader the same `batch_size` and
    its batches arrive in the rank's order. `mix` mixes workspaces (`{dir: "weight:3", ...}`), `pack` packs whole
    samples into rows of that many model positions (the dataset then yields rows; with DataLoader workers each
    worker packs its own share). `max_length` drops samples longer than that many tokens (counted, never cut).

    `state_dict(position=batch["position"])` is where a restart continues, on any world size (elastic);
    `load_state_dict` makes the next iteration continue there.
    """

    def __init__(self, source=None, *, seed=0, shuffle="block", mix=None, pack=None, pack_rows=8, max_length=None,
                 batch_size=1, drop_last=False, block_size=None, partitions=None, rank=None, world_size=None,
                 threads=None, prefetch=32, urls=None, cache_dir=None, on_missing="error", epoch_size=None):
        super().__init__()
        if source is None and not mix:
            raise ValueError("give a workspace (source) or mix")
        self.rank, self.world_size = topology(rank, world_size)
        self.settings = dict(source=source, mix=mix, urls=urls, cache_dir=cache_dir, seed=seed, shuffle=shuffle,
                             block_size=block_size, partitions=partitions, rank=self.rank, world_size=self.world_size,
                             batch_size=batch_size, drop_last=drop_last, on_missing=on_missing, epoch_size=epoch_size)
        self.batch_size = int(batch_size)
        self.pack = pack
        self.pack_rows = pack_rows
        self.max_length = max_length
        self.threads = threads
        self.prefetch = prefetch
        self.epoch = 0
        self.resume = None
        self.position = 0  # rank samples consumed, as seen by iteration in this process
        self.dropped_long = 0
        self._loader = None

    def loader(self):
        """The loader (opened once per process: DataLoader workers open their own)."""
        if self._loader is None or self._loader_pid != os.getpid():
            settings = dict(self.settings)
            if settings.get("urls"):
                # the HTTP cache folder belongs to one process (a lock): one per DataLoader worker
                info = torch.utils.data.get_worker_info()
                base = settings.get("cache_dir") or os.path.join(os.fspath(settings["source"]), "cache",
                                                                 f"rank-{self.rank}")
                settings["cache_dir"] = os.path.join(base, "main" if info is None else f"worker-{info.id}")
            self._loader = Loader(**settings)
            self._loader_pid = os.getpid()
        return self._loader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loader"] = None
        return state

    def set_epoch(self, epoch):
        """The epoch the next iteration runs. A loaded state for that epoch is kept (the iteration resumes it)."""
        if self.resume is None or self.resume["epoch"] != epoch:
            self.resume = None
        self.epoch = int(epoch)
        self.position = 0

    def __len__(self):
        """This rank's samples in the epoch (from the loaded state on, when one is loaded)."""
        return self.loader().plan(self.epoch, self.resume)["rank_samples"]

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        threads = 2 if self.threads is None else self.threads
        stream = self.loader().stream(self.epoch, self.resume, worker=worker, workers=workers,
                                      chunk=self.batch_size, threads=threads, prefetch=self.prefetch, pack=self.pack,
                                      pack_rows=self.pack_rows)
        try:
            for item in stream:
                self.position = max(self.position, item["position"])
                if self.max_length is not None and item["input_ids"].size > self.max_length:
                    self.dropped_long += 1
                    continue
                yield item
        finally:
            stream.close()

    def state_dict(self, position=None):
        """Where a restart continues once this rank has consumed `position` samples of the epoch's stream
        (`batch["position"]` of the last batch used; default: what this process iterated, exact with
        num_workers=0). Ranks are taken to advance in lockstep."""
        taken = self.position if position is None else int(position)
        return {"loader_state": self.loader().state(taken, self.epoch, self.resume)}

    def load_state_dict(self, state):
        """The next iteration continues from `state` (saved on any world size); `epoch` becomes its epoch."""
        self.resume = dict(state["loader_state"])
        self.epoch = int(self.resume["epoch"])
        self.position = 0


def _tensor(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return [torch.from_numpy(v) for v in value]
    return value


def _inline(value):
    if isinstance(value, list):
        return [_inline(v) for v in value]
    if isinstance(value, torch.Tensor) and value.nbytes <= _handoff.INLINE_MAX_BYTES:
        return value.as_subclass(InlineTensor)
    return value


def llava_collate(image="pixel_values", normalize="clip", pad_token_id=0, pad_to_multiple_of=1, pool=5):
    """A DataLoader `collate_fn` giving LLaVA's batch: `input_ids`, `labels` (-100 ignored, -200 the image),
    `attention_mask`, `position_ids`, `images` float32 `[B, 3, S, S]` normalized as `CLIPImageProcessor` (or
    `[B, tiles, 3, S, S]` for anyres, or the patches with `image="patches"`); packed rows add `cu_seqlens` and
    `segment_ids`. See `vlmdata.collate.llava_collate_numpy`.

    In a DataLoader worker the images are written straight into shared memory, as torch's default_collate does,
    so handing the batch to the main process copies nothing. Each worker reuses up to `pool` such buffers: one
    comes back once the main process has dropped every tensor, view and numpy array over that batch's images
    (`vlmdata._handoff`); while all are held the worker takes fresh ones. `pool=0`: a fresh buffer per batch."""
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
        raise ValueError(f"llava_collate: pool must be a whole number of buffers >= 0 (0: none), not {pool!r}")

    def collate(items):
        in_worker = torch.utils.data.get_worker_info() is not None
        held = []  # (tensor, lease or None) of the images buffer in shared memory

        def alloc(shape, dtype_name):
            dtype = torch.from_numpy(np.empty(0, dtype_name)).dtype
            nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
            shared = in_worker and nbytes > _handoff.INLINE_MAX_BYTES
            lease = worker_pool(pool).take(shape, dtype) if shared and pool > 0 else None
            if lease is not None:
                tensor = lease.tensor
            elif shared:  # allocated in shared memory at once (share_memory_() would copy)
                tensor = torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, tuple(shape))
            else:
                return np.empty(shape, np.dtype(dtype_name))
            held.append((tensor, lease))
            return tensor.numpy()

        try:
            batch = llava_collate_numpy(items, image=image, normalize=normalize, pad_token_id=pad_token_id,
                                        pad_to_multiple_of=pad_to_multiple_of, alloc=alloc)
            out = {name: _tensor(value) for name, value in batch.items()}
            if in_worker:  # the small tensors travel inside the message (vlmdata._handoff)
                out = {name: _inline(value) for name, value in out.items()}
            images = batch["images"]
            if held and isinstance(images, np.ndarray) and np.shares_memory(images, held[0][0].numpy()):
                tensor, lease = held[0]
                view = tensor.view(images.shape)
                out["images"] = view if lease is None else lease.hand_out(view)
            return out
        finally:
            for _, lease in held:
                if lease is not None:
                    lease.cancel()
    return collate
