"""The streaming loader from Python, numpy only: `Loader` opens a workspace (or a mixture, or shard URLs) through
libVLMDataC.so; its streams yield samples (or packed rows) as dicts of numpy arrays in `vlmdata stream`'s order."""
import ctypes
import json
import os

import numpy as np

from ._lib import BatchBuffers, BatchInfo, PlanInfo, StreamOptions, check, lib

_ERR = 4096


def _err():
    return ctypes.create_string_buffer(_ERR)


def _state_text(state):
    if state is None:
        return None
    if isinstance(state, (str, bytes, os.PathLike)) and not str(state).lstrip().startswith("{"):
        with open(state) as f:
            state = json.load(f)
    if isinstance(state, (str, bytes)):
        state = json.loads(state)
    return json.dumps(state, sort_keys=True).encode()


def topology(rank=None, world_size=None):
    """(rank, world size, local rank) as a loader opened with these values takes them: the given ones win, the rest
    come from torchrun's $RANK/$WORLD_SIZE/$LOCAL_RANK, else Slurm's $SLURM_PROCID/$SLURM_NTASKS/$SLURM_LOCALID,
    else (0, 1, 0). Inconsistent values raise VLMDataError naming where each came from."""
    out, err = (ctypes.c_int64 * 3)(), _err()
    check(lib().vlmdata_topology(-1 if rank is None else int(rank), -1 if world_size is None else int(world_size),
                                 out, err, _ERR), err)
    return out[0], out[1], out[2]


def _mix_entries(mix):
    """[(dir, "weight", 3.0), ...] or {dir: "weight:3"} or ["dir=weight:3"] (as `vlmdata stream --mix`)."""
    if isinstance(mix, dict):
        mix = [f"{d}={p}" for d, p in mix.items()]
    entries = []
    for item in mix:
        if isinstance(item, str):
            d, _, spec = item.rpartition("=")
            policy, _, value = spec.partition(":")
            if not d or not value:
                raise ValueError(f"mix entry {item!r} must be DIR=weight:W, DIR=repeat:R or DIR=choose:N")
            item = (d, policy, value)
        d, policy, value = item
        entries.append({"workspace": os.fspath(d), "policy": policy, "value": float(value)})
    return entries


class Loader:
    """A loader over a workspace's training shards (or a mixture of workspaces, or the workspace's shards at URLs).

    Order settings are `vlmdata stream`'s: `seed`, `shuffle` ("none", "shard", "block"), `block_size`,
    `partitions`, `drop_last`; `batch_size` makes every rank's share a multiple of it. `rank` and `world_size`
    default to $RANK and $WORLD_SIZE (or 0 of 1). `resume` (a state dict, JSON text or file) supplies the order
    settings not given, as `vlmdata stream --resume` does.
    """

    def __init__(self, source=None, *, mix=None, urls=None, shard_list=None, cache_dir=None, cache_bytes=None,
                 seed=None, shuffle=None, block_size=None, partitions=None, group_megabatch=None, rank=None,
                 world_size=None, batch_size=1, drop_last=False, on_missing="error", epoch_size=None, resume=None):
        config = {"batch_size": int(batch_size), "drop_last": bool(drop_last), "on_missing": on_missing}
        if source is not None:
            config["workspace"] = os.fspath(source)
        if mix:
            config["mix"] = _mix_entries(mix)
        if urls:
            config["urls"] = [urls] if isinstance(urls, str) else list(urls)
        optional = {"shard_list": shard_list, "cache_dir": cache_dir, "cache_bytes": cache_bytes, "seed": seed,
                    "shuffle": shuffle, "block_size": block_size, "partitions": partitions,
                    "group_megabatch": group_megabatch, "rank": rank, "world_size": world_size,
                    "epoch_size": epoch_size}
        for name, value in optional.items():
            if value is not None:
                config[name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        if resume is not None:
            config["resume"] = json.loads(_state_text(resume))
        self.config = config
        self._lib = lib()
        handle = ctypes.c_void_p()
        err = _err()
        check(self._lib.vlmdata_loader_open(json.dumps(config).encode(), ctypes.byref(handle), err, _ERR), err)
        self._handle = handle

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.vlmdata_loader_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def plan(self, epoch=0, resume=None):
        """{"epoch_samples", "rank_samples", "epoch", "consumed", "world_size", "rank"} of the stream (epoch, resume)."""
        info, err = PlanInfo(), _err()
        check(self._lib.vlmdata_loader_plan(self._handle, int(epoch), _state_text(resume), ctypes.byref(info), err, _ERR), err)
        return {name: getattr(info, name) for name, _ in PlanInfo._fields_}

    def state(self, rank_taken, epoch=0, resume=None):
        """The resume state (a dict, as `vlmdata stream --save-state` writes) once this rank has consumed
        `rank_taken` samples of the stream (epoch, resume) starts."""
        err, needed = _err(), ctypes.c_size_t(0)
        buffer = ctypes.create_string_buffer(4096)
        code = self._lib.vlmdata_loader_state(self._handle, int(epoch), _state_text(resume), int(rank_taken), buffer,
                                              len(buffer), ctypes.byref(needed), err, _ERR)
        if code == -1:
            buffer = ctypes.create_string_buffer(needed.value)
            code = self._lib.vlmdata_loader_state(self._handle, int(epoch), _state_text(resume), int(rank_taken),
                                                  buffer, len(buffer), ctypes.byref(needed), err, _ERR)
        check(code, err)
        return json.loads(buffer.value.decode())

    def stream(self, epoch=0, resume=None, *, worker=0, workers=1, chunk=1, threads=2, prefetch=32, pack=None,
               pack_rows=8):
        """This rank's stream of `epoch` (or continuing `resume`); `worker` of `workers` takes chunks of `chunk`
        samples round-robin. With `pack` (model positions), it yields packed rows of whole samples."""
        return Stream(self, epoch, resume, worker=worker, workers=workers, chunk=chunk, threads=threads,
                      prefetch=prefetch, pack=pack, pack_rows=pack_rows)


class Stream:
    """Samples (dicts of numpy arrays) of one worker's share of a rank's stream, in order. Iterate it, or call
    `next_batch(n)` for lists of up to n samples (one packed row when packing)."""

    def __init__(self, loader, epoch, resume, *, worker, workers, chunk, threads, prefetch, pack, pack_rows):
        self.loader = loader
        self.packing = bool(pack)
        self.skipped = 0
        self.overlong = 0
        self._lib = loader._lib
        options = StreamOptions(epoch=int(epoch), worker=int(worker), workers=int(workers), chunk=int(chunk),
                                threads=int(threads), prefetch=int(prefetch), pack_context=int(pack or 0),
                                pack_rows=int(pack_rows))
        handle, err = ctypes.c_void_p(), _err()
        check(self._lib.vlmdata_stream_open(loader._handle, ctypes.byref(options), _state_text(resume),
                                            ctypes.byref(handle), err, _ERR), err)
        self._handle = handle
        self._chunk = max(1, int(chunk))

    def close(self):
        if getattr(self, "_handle", None):
            self._lib.vlmdata_stream_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def next_batch(self, max_samples):
        """Up to `max_samples` samples (a list of dicts), or one packed row; [] at the end."""
        info, err = BatchInfo(), _err()
        check(self._lib.vlmdata_stream_next(self._handle, int(max_samples), ctypes.byref(info), err, _ERR), err)
        self.skipped, self.overlong = info.skipped, info.overlong
        n = info.samples
        if n == 0:
            return []
        ids = np.empty(info.tokens, np.int32)
        labels = np.empty(info.tokens, np.int32)
        token_offsets = np.empty(n + 1, np.int64)
        pixels = np.empty(info.pixel_bytes, np.uint8)
        pixel_offsets = np.empty(n + 1, np.int64)
        shapes = np.empty((n, 3), np.int64)
        image_tokens = np.empty(n, np.int64)
        indices = np.empty(n, np.int64)
        is_pad = np.empty(n, np.uint8)
        datasets = np.empty(n, np.int64)
        keys = ctypes.create_string_buffer(max(1, info.key_bytes))
        meta = np.empty(info.meta_bytes, np.uint8)
        meta_offsets = np.empty(n + 1, np.int64)

        def ptr(a):
            return a.ctypes.data if a.size else None

        buffers = BatchBuffers(ptr(ids), ptr(labels), ptr(token_offsets), ptr(pixels), ptr(pixel_offsets),
                               ptr(shapes), ptr(image_tokens), ptr(indices), ptr(is_pad), ptr(datasets),
                               ctypes.addressof(keys), ptr(meta), ptr(meta_offsets))
        check(self._lib.vlmdata_stream_copy(self._handle, ctypes.byref(buffers), err, _ERR), err)
        names = keys.raw[:info.key_bytes].split(b"\0")[:n]
        samples = []
        for i in range(n):
            t0, t1 = token_offsets[i], token_offsets[i + 1]
            p0, p1 = pixel_offsets[i], pixel_offsets[i + 1]
            tiles, patches, dim = (int(v) for v in shapes[i])
            samples.append({
                "key": names[i].decode(),
                "input_ids": ids[t0:t1],
                "labels": labels[t0:t1],
                "pixels": pixels[p0:p1].reshape(tiles, patches, dim) if p1 > p0 else None,
                "image_tokens": int(image_tokens[i]),
                "index": int(indices[i]),
                "is_pad": bool(is_pad[i]),
                "dataset": int(datasets[i]),
                "json": bytes(meta[meta_offsets[i]:meta_offsets[i + 1]]),
                # the rank's samples consumed once this one is used: its index + 1; a packed row counts every
                # sample handed to the packer
                "position": int(info.rank_taken) if self.packing else int(indices[i]) + 1,
            })
        return samples

    def __iter__(self):
        """Samples one by one; with packing, packed rows (see `pack_row`)."""
        while True:
            batch = self.next_batch(self._chunk)
            if not batch:
                self.close()
                return
            if self.packing:
                yield pack_row(batch)
            else:
                yield from batch


def pack_row(samples):
    """One packed row of whole samples, as the Swift collator lays it out: ids and labels concatenated (each
    segment's first label -100 when the row holds several), `position_ids` restarting per segment."""
    several = len(samples) > 1
    labels = []
    for s in samples:
        l = s["labels"].copy()
        if several and l.size:
            l[0] = -100
        labels.append(l)
    return {
        "keys": [s["key"] for s in samples],
        "segments": [int(s["input_ids"].size) for s in samples],
        "input_ids": np.concatenate([s["input_ids"] for s in samples]),
        "labels": np.concatenate(labels),
        "position_ids": np.concatenate([np.arange(s["input_ids"].size, dtype=np.int32) for s in samples]),
        "pixels": [s["pixels"] for s in samples if s["pixels"] is not None],
        "image_tokens": [s["image_tokens"] for s in samples],
        "index": [s["index"] for s in samples],
        "is_pad": [s["is_pad"] for s in samples],
        "position": max(s["position"] for s in samples),
    }
