"""How a DataLoader worker hands a batch to the main process: the images in shared-memory buffers the worker
reuses once the main process has let go of them, the small tensors inline in the message.

A DataLoader worker builds a batch's float images straight into shared memory, so that handing the batch to the
main process copies nothing. A fresh shared tensor per batch costs the kernel's allocation and zeroing and a page
fault per 4 KiB on first write: about 13 ms of CPU for LLaVA's 21.7 MB per batch of 16 (BENCHMARKS.md, PyTorch).
Here each worker keeps a few such buffers (slots). A slot's storage ends with a flag, an int64 after the image
bytes: 0 when the slot is free, else the generation number of the batch that holds it.

- In the worker, `Pool.take` gives a free slot big enough (else a new slot, up to the pool's cap; else None, and
  the caller takes a fresh buffer as without a pool) and sets its flag. The batch's images are a `LeasedTensor`
  over the slot.
- When the DataLoader pickles the batch to the main process, `LeasedTensor.__reduce_ex__` sends the plain tensor
  (torch shares its storage, the flag included, as for any tensor) with the flag's offset and the generation.
- In the main process `_rebuild` returns a plain tensor over a storage of its own and registers a finalizer on that
  storage. torch keeps a storage's Python object for the storage's whole life, so the finalizer runs when the last
  tensor, view or numpy array over the batch's images is gone, and only then. It sets the flag back to 0 (if it
  still holds this generation) through its own view of the flag, and the worker may fill the slot again.

A worker never writes into a slot whose flag is set, so a loop that keeps its batches only makes the worker take
fresh buffers. Memory: at most `cap` slots per worker, each the size of the largest batch's images it held. The
slots are dropped when the worker exits (so that torch's file_system sharing unlinks their files).

The small tensors of a batch (ids, labels, masks: about 90 KB each for 16 rows of 700 tokens) are `InlineTensor`s:
pickled as bytes inside the DataLoader's message instead of through torch's shared memory, which costs a new
shared-memory file, a copy and a file-descriptor hand-off per tensor (about 0.4 ms of CPU each, on both sides).
"""
import multiprocessing.util
import os
import weakref

import numpy as np
import torch

__all__ = ["Pool", "LeasedTensor", "InlineTensor", "INLINE_MAX_BYTES", "worker_pool", "pool_stats", "lease_of"]

#: Tensors up to this size travel inline in the message; bigger ones through shared memory, as torch sends them.
INLINE_MAX_BYTES = 1 << 20

_FLAG_ALIGN = 64

# Worker side: this process's pools by cap.
_POOLS = {}
_POOLS_PID = None

# Main side: the lease of each batch storage still alive, by the storage object's id (dropped by its finalizer).
_HELD = {}


def _view(storage, offset, shape, dtype):
    """A tensor of `dtype` and `shape` over `storage` from byte `offset`."""
    size = torch.empty(0, dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(storage, offset // size, tuple(shape))


class Lease:
    """One batch's hold on a pool slot, from `Pool.take` until the batch's `LeasedTensor` is handed out (or
    `cancel`, when building the batch failed)."""

    def __init__(self, pool, slot, generation, tensor):
        self.pool, self.slot, self.generation, self.tensor = pool, slot, generation, tensor
        self.handed_out = False

    def hand_out(self, view):
        """The `LeasedTensor` over `view` (the batch's images: `tensor` or a view of it)."""
        leased = view.as_subclass(LeasedTensor)
        sent = [False]
        leased._vlmdata_lease = (self.pool.flag_offsets[self.slot], self.generation, sent)
        # a batch dropped in the worker without being sent gives its slot back
        weakref.finalize(leased, _drop_unsent, self.pool.flags[self.slot], self.generation, sent).atexit = False
        self.handed_out = True
        return leased

    def cancel(self):
        if not self.handed_out:
            _release(self.pool.flags[self.slot], self.generation)


class Pool:
    """A worker's slots (shared-memory storages, each ending with its flag); see the module's documentation."""

    def __init__(self, cap):
        self.cap = int(cap)
        self.slots = []  # UntypedStorage in shared memory
        self.flags = []  # int64 numpy view [1] of each slot's flag
        self.flag_offsets = []
        self.generation = 0
        self.stats = {"new_slots": 0, "reused": 0, "fresh": 0}

    def take(self, shape, dtype):
        """A `Lease` on a free slot holding `shape` of `dtype`, or None when every slot is held (the caller then
        allocates a fresh buffer)."""
        nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
        free = [i for i in range(len(self.slots)) if self.flags[i][0] == 0]
        fitting = [i for i in free if self.flag_offsets[i] >= nbytes]
        if fitting:
            slot = min(fitting, key=lambda i: self.flag_offsets[i])
            self.stats["reused"] += 1
        elif len(self.slots) < self.cap:
            slot = len(self.slots)
            self.slots.append(None)
            self.flags.append(None)
            self.flag_offsets.append(None)
            self._allocate(slot, nbytes)
        elif free:  # every free slot is too small: replace one
            slot = free[0]
            self._allocate(slot, nbytes)
        else:
            self.stats["fresh"] += 1
            return None
        self.generation += 1
        self.flags[slot][0] = self.generation
        return Lease(self, slot, self.generation, _view(self.slots[slot], 0, shape, dtype))

    def _allocate(self, slot, nbytes):
        offset = (nbytes + _FLAG_ALIGN - 1) // _FLAG_ALIGN * _FLAG_ALIGN
        storage = torch.UntypedStorage._new_shared(offset + _FLAG_ALIGN)
        self.slots[slot] = storage
        self.flags[slot] = _view(storage, offset, (1,), torch.int64).numpy()
        self.flag_offsets[slot] = offset
        self.stats["new_slots"] += 1

    def close(self):
        self.slots, self.flags, self.flag_offsets = [], [], []


def _close_pools():
    for pool in _POOLS.values():
        pool.close()


def worker_pool(cap):
    """This process's pool of `cap` slots (made on first use; a forked child makes its own)."""
    global _POOLS_PID
    if _POOLS_PID != os.getpid():
        _POOLS.clear()
        _POOLS_PID = os.getpid()
        # the slots go at the worker's exit (multiprocessing runs these finalizers before the process ends)
        multiprocessing.util.Finalize(None, _close_pools, exitpriority=0)
    if cap not in _POOLS:
        _POOLS[cap] = Pool(cap)
    return _POOLS[cap]


def pool_stats():
    """{cap: {"new_slots", "reused", "fresh", "slots"}} of this process's pools (worker side)."""
    if _POOLS_PID != os.getpid():
        return {}
    return {cap: dict(pool.stats, slots=len(pool.slots)) for cap, pool in _POOLS.items()}


class LeasedTensor(torch.Tensor):
    """A batch's images in a pool slot, inside the worker. Every operation on it gives a plain tensor (torch
    functions are disabled for the subclass, so it costs nothing); pickling it for the main process sends the
    lease along (see the module's documentation). A second pickle or a copy is a plain copy."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        lease = getattr(self, "_vlmdata_lease", None)
        plain = self.as_subclass(torch.Tensor)
        if lease is None or lease[2][0]:  # sent already: a second copy would not hold the slot
            return (torch.Tensor.clone, (plain,))
        flag_offset, generation, sent = lease
        sent[0] = True
        return (_rebuild, (plain, flag_offset, generation))

    def __deepcopy__(self, memo):
        return self.as_subclass(torch.Tensor).clone()


class InlineTensor(torch.Tensor):
    """A small tensor of a batch, inside the worker: pickled as a numpy array's bytes, it arrives in the main
    process as a plain tensor over memory of its own."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __reduce_ex__(self, protocol):
        return (torch.from_numpy, (self.as_subclass(torch.Tensor).numpy(),))


def _release(flag, generation):
    # only the holder of this generation frees the slot; the worker sets a flag only from 0
    if flag[0] == generation:
        flag[0] = 0


def _drop_unsent(flag, generation, sent):
    if not sent[0]:
        _release(flag, generation)


def _rebuild(tensor, flag_offset, generation):
    """Main process: the batch's images as a plain tensor; the slot is freed when its last view is gone."""
    # the finalizer's own view of the flag keeps the shared mapping until it has run
    flag = _view(tensor.untyped_storage(), flag_offset, (1,), torch.int64).numpy()
    # a storage of its own (over the shared mapping): its finalizer sees every view and numpy array made from the
    # batch, and a tensor sent on to a third process is copied into new shared memory instead of aliasing the slot
    out = torch.from_numpy(tensor.numpy())
    storage = out.untyped_storage()
    key = id(storage)
    _HELD[key] = (flag, generation)
    weakref.finalize(storage, _release_held, flag, generation, key).atexit = False
    return out


def _release_held(flag, generation, key):
    _HELD.pop(key, None)
    _release(flag, generation)


def lease_of(tensor):
    """Main side: (flag, generation) of the batch storage under `tensor` (`flag[0]` is 0 once the worker may reuse
    the slot), or None for a tensor that holds no slot."""
    return _HELD.get(id(tensor.untyped_storage()))
