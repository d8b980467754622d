"""PyTorch (and numpy) from vlmdata's loader through libVLMDataC.so: the order `vlmdata stream` gives, over ranks and
DataLoader workers; exact resume in a fresh process; elastic resume; packing; LLaVA's labels; images equal to
HF's CLIPImageProcessor on the original JPEGs; clear errors; the C header against the library; the example trainer.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, SHARED, run, synthetic

sys.path.insert(0, str(ROOT / "python"))
LIB = os.environ.get("VLMDATA_LIB", str(ROOT / ".build" / "release" / "libVLMDataC.so"))
os.environ["VLMDATA_LIB"] = LIB

SMALL = ["--tokens", "40", "--patches", "16", "--patch-dim", "48"]
N = 160
B = 4


@pytest.fixture(scope="module", autouse=True)
def library():
    assert pathlib.Path(LIB).exists(), f"build the library first: swift build -c release --product VLMDataC ({LIB})"


@pytest.fixture(scope="module")
def ws(vlmdata_bin, bench_bin, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("torch") / "ws")
    synthetic(bench_bin, path, N, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", path, "--target-size", "30KB", "--quiet")
    return path


def cli_keys(bin_path, ws, *args):
    return run(bin_path, "stream", "--workspace", ws, "--quiet", *map(str, args)).stdout.split()


def cli_batches(bin_path, ws, *args):
    """Keys of each batch line of `vlmdata stream --batch-size ...`."""
    out = run(bin_path, "stream", "--workspace", ws, "--quiet", *map(str, args)).stdout
    return [line.split("keys=")[1].split(",") for line in out.splitlines() if "keys=" in line]


def loader_keys(dl):
    keys = []
    for batch in dl:
        keys += batch["keys"]
    return keys


def test_numpy_stream_is_the_cli_order_with_the_swift_loaders_arrays(vlmdata_bin, ws):
    import vlmdata

    loader = vlmdata.Loader(ws, seed=3)
    samples = list(loader.stream(0, threads=2, chunk=5))
    assert [s["key"] for s in samples] == cli_keys(vlmdata_bin, ws, "--seed", 3)
    assert [s["index"] for s in samples] == list(range(N))
    for s in samples[:: N // 8]:
        shown = json.loads(run(vlmdata_bin, "show", "--workspace", ws, s["key"], "--json").stdout)
        assert s["input_ids"].tolist() == shown["input_ids"] and s["labels"].tolist() == shown["labels"]
        assert json.loads(s["json"])["key"] == s["key"]
        if shown["pixels_shape"] is None:  # a text-only sample
            assert s["pixels"] is None and -200 not in shown["input_ids"]
        else:
            assert s["pixels"].shape == tuple(shown["pixels_shape"]) == (1, 16, 48) and s["pixels"].dtype == np.uint8
    # the same order with decoding on the calling thread, another epoch differs
    assert [s["key"] for s in loader.stream(0, threads=0)] == [s["key"] for s in samples]
    assert [s["key"] for s in loader.stream(1)] == cli_keys(vlmdata_bin, ws, "--seed", 3, "--epoch", 1)


def test_labels_and_ids_are_the_shards_arrays(ws):
    """The loader's arrays are the npy members of the tar (read with webdataset), LLaVA's -100/-200 conventions."""
    import glob
    import io

    import webdataset as wds
    import vlmdata

    members = {}
    for s in wds.WebDataset(sorted(glob.glob(os.path.join(ws, "shards", "*.tar"))), shardshuffle=False):
        members[s["__key__"]] = s
    keys = []
    for s in vlmdata.Loader(ws, shuffle="none").stream(0, chunk=8):
        m = members[s["key"]]
        assert np.array_equal(s["input_ids"], np.load(io.BytesIO(m["input_ids.npy"])))
        assert np.array_equal(s["labels"], np.load(io.BytesIO(m["labels.npy"])))
        if "pixels.npy" in m:
            assert np.array_equal(s["pixels"], np.load(io.BytesIO(m["pixels.npy"])))
        else:
            assert s["pixels"] is None and -200 not in s["input_ids"]
        assert (s["labels"][s["input_ids"] == -200] == -100).all()
        keys.append(s["key"])
    assert keys == list(members)  # shuffle "none" is webdataset's order


def test_two_ranks_two_workers_match_the_cli_and_cover_every_sample_once(vlmdata_bin, ws):
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    seen = []
    for rank in range(2):
        ds = StreamingDataset(ws, seed=1, rank=rank, world_size=2, batch_size=B)
        dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2,
                                         collate_fn=llava_collate(image="patches", normalize=None))
        keys = loader_keys(dl)
        expected = [k for batch in cli_batches(vlmdata_bin, ws, "--seed", 1, "--rank", rank, "--world-size", 2,
                                               "--batch-size", B) for k in batch]
        assert keys == expected
        assert len(ds) == N // 2
        seen += keys
    assert len(seen) == len(set(seen)) == N


def test_rank_and_world_size_come_from_torch_distributed(vlmdata_bin, ws, tmp_path):
    """Two processes in a gloo group (file rendezvous, no network) get their ranks' keys with no rank given."""
    script = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(ROOT / "python")!r})
        for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
            os.environ.pop(name, None)
        import torch.distributed as dist
        import torch.utils.data
        from vlmdata.torch import StreamingDataset, llava_collate
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path / 'rendezvous'}", rank=rank, world_size=2)
        ds = StreamingDataset({ws!r}, seed=12, batch_size={B})
        keys = [k for b in torch.utils.data.DataLoader(ds, batch_size={B}, num_workers=2,
                                                       collate_fn=llava_collate(image="patches")) for k in b["keys"]]
        print(json.dumps([ds.rank, ds.world_size, keys]))
        dist.destroy_process_group()
    """)
    path = tmp_path / "ranks.py"
    path.write_text(script)
    procs = [subprocess.Popen([sys.executable, str(path), str(r)], stdout=subprocess.PIPE, text=True) for r in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    for rank, (got_rank, world, keys) in enumerate(outs):
        assert (got_rank, world) == (rank, 2)
        assert keys == [k for b in cli_batches(vlmdata_bin, ws, "--seed", 12, "--rank", rank, "--world-size", 2,
                                               "--batch-size", B) for k in b]


def test_collate_gives_llavas_batch(ws):
    import torch
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    ds = StreamingDataset(ws, seed=2, batch_size=B)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, collate_fn=llava_collate(pad_token_id=7))
    samples = {s["key"]: s for s in __import__("vlmdata").Loader(ws).stream(0)}
    batch = next(iter(dl))
    assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape[0] == B
    assert batch["images"].shape == (B, 3, 16, 16) and batch["images"].dtype == torch.float32
    for r, key in enumerate(batch["keys"]):
        s = samples[key]
        n = s["input_ids"].size
        assert batch["input_ids"][r, :n].tolist() == s["input_ids"].tolist()
        assert (batch["input_ids"][r, n:] == 7).all() and (batch["labels"][r, n:] == -100).all()
        assert batch["labels"][r, :n].tolist() == s["labels"].tolist()
        assert batch["attention_mask"][r].sum() == n
        assert (batch["input_ids"][r] == -200).sum() == (s["pixels"] is not None)
        if s["pixels"] is None:
            assert (batch["images"][r] == 0).all()
    assert batch["position"] == B


def test_state_dict_resumes_exactly_in_a_fresh_process(ws, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "python")!r})
        import torch.utils.data
        from vlmdata.torch import StreamingDataset, llava_collate
        mode, state_file = sys.argv[1], sys.argv[2]
        ds = StreamingDataset({ws!r}, seed=9, batch_size={B})
        if mode == "resume":
            ds.load_state_dict(json.load(open(state_file)))
        dl = torch.utils.data.DataLoader(ds, batch_size={B}, num_workers=2, collate_fn=llava_collate())
        keys = []
        for step, batch in enumerate(dl):
            keys += batch["keys"]
            if mode == "head" and step == 6:
                json.dump(ds.state_dict(position=batch["position"]), open(state_file, "w"))
                break
        print(json.dumps(keys))
    """)
    path = tmp_path / "resume.py"
    path.write_text(script)
    state = tmp_path / "state.json"

    def keys(mode):
        out = subprocess.run([sys.executable, str(path), mode, str(state)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    full = keys("full")
    head = keys("head")
    tail = keys("resume")
    assert len(head) == 7 * B
    assert head + tail == full
    saved = json.load(open(state))["loader_state"]
    assert saved["epoch"] == 0 and saved["consumed"] == 7 * B and saved["seed"] == 9


def test_elastic_two_ranks_to_three_loses_and_repeats_nothing(vlmdata_bin, ws, tmp_path):
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    before, states = [], []
    for rank in range(2):
        ds = StreamingDataset(ws, seed=4, rank=rank, world_size=2, batch_size=B)
        dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=0, collate_fn=llava_collate(image="patches"))
        for step, batch in enumerate(dl):
            before += batch["keys"]
            if step == 4:
                states.append(ds.state_dict())
                assert ds.state_dict(position=batch["position"]) == states[-1]
                break
    assert states[0] == states[1] and states[0]["loader_state"]["consumed"] == 2 * 5 * B
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(states[0]["loader_state"]))
    after = []
    for rank in range(3):
        ds = StreamingDataset(ws, seed=4, rank=rank, world_size=3, batch_size=B)
        ds.load_state_dict(states[0])
        dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2, collate_fn=llava_collate(image="patches"))
        keys = loader_keys(dl)
        assert keys == [k for b in cli_batches(vlmdata_bin, ws, "--resume", state_file, "--rank", rank,
                                               "--world-size", 3, "--batch-size", B) for k in b]
        after += keys
    assert len(before + after) == len(set(before + after)) == N


def test_packed_rows_match_the_cli_and_isolate_segments(vlmdata_bin, ws):
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    context = 150
    ds = StreamingDataset(ws, seed=5, pack=context, pack_rows=4)
    dl = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=llava_collate(image="patches"))
    batches = list(dl)
    expected = cli_batches(vlmdata_bin, ws, "--seed", 5, "--batch-size", 3, "--pack", context, "--pack-rows", 4)
    assert [b["keys"] for b in batches] == expected
    samples = {s["key"]: s for s in __import__("vlmdata").Loader(ws).stream(0)}
    for batch in batches:
        cu = batch["cu_seqlens"].tolist()
        lengths = [samples[k]["input_ids"].size for k in batch["keys"]]
        assert cu == list(np.cumsum([0] + lengths))
        assert batch["images"].shape[0] == sum(samples[k]["pixels"] is not None for k in batch["keys"])
        for r in range(batch["input_ids"].shape[0]):
            segs = batch["segment_ids"][r]
            for s in range(1, int(segs.max()) + 1):
                where = (segs == s).nonzero().flatten()
                assert batch["position_ids"][r, where].tolist() == list(range(len(where)))
                if segs.max() > 1:
                    assert batch["labels"][r, where[0]] == -100


def test_mixture_rank_from_the_environment_and_max_length(vlmdata_bin, bench_bin, ws, tmp_path, monkeypatch):
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    other = str(tmp_path / "other")
    synthetic(bench_bin, other, 50, "--tokens", "70", "--patches", "16", "--patch-dim", "48")
    run(vlmdata_bin, "shard", "--workspace", other, "--quiet")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = StreamingDataset(mix={ws: "weight:3", other: "weight:1"}, seed=8, epoch_size=120)
    assert (ds.rank, ds.world_size) == (1, 2)
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, collate_fn=llava_collate(image="patches"))
    keys = loader_keys(dl)
    assert keys == cli_keys(vlmdata_bin, ws, "--mix", f"{ws}=weight:3", "--mix", f"{other}=weight:1", "--seed", 8,
                            "--epoch-size", 120, "--rank", 1, "--world-size", 2)
    assert len(keys) == 60
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    lengths = sorted(s["input_ids"].size for s in __import__("vlmdata").Loader(ws).stream(0))
    limit = lengths[N // 2]
    short = StreamingDataset(ws, seed=8, max_length=limit)
    kept = list(short)
    assert all(s["input_ids"].size <= limit for s in kept)
    assert short.dropped_long == sum(1 for n in lengths if n > limit) and len(kept) + short.dropped_long == N


@pytest.fixture(scope="module")
def clip_ws(vlmdata_bin, tmp_path_factory):
    ws = str(tmp_path_factory.mktemp("clip") / "ws")
    coco = SHARED / "coco-mini"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", coco / "annotations" / "captions_train2017.json",
        "--images", coco / "train2017", "--quiet")
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--kinds", "caption", "--quiet")
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", SHARED / "tokenizers" / "gpt2" / "tokenizer.json",
        "--template", "plain", "--quiet")
    run(vlmdata_bin, "patchify", "--workspace", ws, "--mode", "crop", "--image-size", 336, "--patch-size", 14, "--quiet")
    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "20MB", "--quiet")
    return ws


def test_images_equal_clip_image_processor_on_the_original_jpegs(clip_ws):
    """Both ways to the float images (the library's one pass with VLMImage's tables, and numpy's) against HF."""
    from PIL import Image
    from transformers import CLIPImageProcessor
    import vlmdata

    processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size=336, do_center_crop=True)
    worst, count = {True: 0.0, False: 0.0}, 0
    for items in iter(lambda stream=vlmdata.Loader(clip_ws, seed=0).stream(0, chunk=8): stream.next_batch(8), []):
        refs = [processor(images=Image.open(SHARED / "coco-mini" / "train2017" / json.loads(i["json"])["image_file"])
                          .convert("RGB"), return_tensors="np")["pixel_values"][0] for i in items]
        for fused in (True, False):
            images = vlmdata.llava_collate_numpy(items, normalize="clip", fused=fused)["images"]
            assert images.shape == (len(items), 3, 336, 336) and images.dtype == np.float32
            worst[fused] = max([worst[fused]] + [float(np.abs(a - r).max()) for a, r in zip(images, refs)])
        count += len(items)
    print(f"CLIPImageProcessor on {count} JPEGs: max abs diff {worst[True]:.3g} (library), {worst[False]:.3g} (numpy)")
    assert count == 80 and worst[True] <= 1e-6 and worst[False] <= 1e-6


def test_siglip_patches_and_packed_images_agree_between_library_and_numpy(ws):
    import vlmdata

    items = vlmdata.Loader(ws, seed=6).stream(0).next_batch(12)
    for normalize in ("clip", "siglip", "imagenet"):
        a = vlmdata.llava_collate_numpy(items, normalize=normalize, fused=True)["images"]
        b = vlmdata.llava_collate_numpy(items, normalize=normalize, fused=False)["images"]
        assert a.shape == b.shape == (12, 3, 16, 16) and np.array_equal(a, b)
    patches = vlmdata.llava_collate_numpy(items, image="patches", normalize=None)["images"]
    with_pixels = [i for i in items if i["pixels"] is not None]
    assert patches.dtype == np.uint8 and patches.shape == (12, 16, 48)
    rows = vlmdata.Loader(ws, seed=6).stream(0, pack=150)
    packed = [rows.next_batch(1) for _ in range(3)]
    from vlmdata.loader import pack_row
    a = vlmdata.llava_collate_numpy([pack_row(r) for r in packed], fused=True)["images"]
    b = vlmdata.llava_collate_numpy([pack_row(r) for r in packed], fused=False)["images"]
    assert np.array_equal(a, b) and a.shape[0] == sum(i["pixels"] is not None for r in packed for i in r)
    assert len(with_pixels) >= 1


def test_a_batchs_images_in_one_call_equal_each_image_and_zeros_for_text_rows():
    """vlmdata_images_fill (the collate's one call per batch) writes what vlmdata_patches_to_image writes per image,
    zeros for a NULL row (a text-only sample), and names a bad normalization."""
    import ctypes

    from vlmdata._lib import VLMDataError, check, lib

    rng = np.random.default_rng(5)
    patches = [rng.integers(0, 256, (2, 16, 48), dtype=np.uint8) for _ in range(3)]
    rows = [patches[0], None, patches[1], patches[2]]
    out = np.full((4, 2, 3, 16, 16), np.nan, np.float32)
    pointers = (ctypes.c_void_p * 4)(*[None if p is None else p.ctypes.data for p in rows])
    err = ctypes.create_string_buffer(1024)
    check(lib().vlmdata_images_fill(pointers, 4, 2, 16, 48, b"clip", out.ctypes.data, err, len(err)), err)
    for i, p in enumerate(rows):
        if p is None:
            assert not out[i].any()
            continue
        one = np.empty((2, 3, 16, 16), np.float32)
        check(lib().vlmdata_patches_to_image(p.ctypes.data, 2, 16, 48, b"clip", one.ctypes.data, err, len(err)), err)
        assert np.array_equal(out[i], one)
    code = lib().vlmdata_images_fill(pointers, 4, 2, 16, 48, b"clipp", out.ctypes.data, err, len(err))
    with pytest.raises(VLMDataError, match="normalize.*clipp"):
        check(code, err)


def test_anyres_images_keep_their_tiles(vlmdata_bin, tmp_path):
    """LLaVA-NeXT anyres: `images` is [B, tiles, 3, S, S], each tile the shard's patches un-patchified and normalized."""
    import vlmdata
    from vlmdata.collate import normalize_pixels, unpatchify

    ws = str(tmp_path / "anyres")
    coco = SHARED / "coco-mini"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", coco / "annotations" / "captions_train2017.json",
        "--images", coco / "train2017", "--quiet")
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--kinds", "caption", "--quiet")
    # Anyres images take as many positions as their stored tiles give: patchify first, then count from the pixels.
    run(vlmdata_bin, "patchify", "--workspace", ws, "--mode", "anyres", "--image-size", 28, "--patch-size", 14, "--quiet")
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", SHARED / "tokenizers" / "gpt2" / "tokenizer.json",
        "--template", "plain", "--image-tokens", "pixels", "--quiet")
    run(vlmdata_bin, "shard", "--workspace", ws, "--quiet")
    items = vlmdata.Loader(ws).stream(0).next_batch(8)
    tiles = items[0]["pixels"].shape[0]
    assert tiles > 1
    for fused in (True, False):
        images = vlmdata.llava_collate_numpy(items, normalize="siglip", fused=fused)["images"]
        assert images.shape == (8, tiles, 3, 28, 28)
        for got, item in zip(images, items):
            assert np.array_equal(got, normalize_pixels(unpatchify(item["pixels"]), "siglip"))
    assert vlmdata.llava_collate_numpy(items, image="patches", normalize=None)["images"].shape == (8, tiles, 4, 588)


def test_bad_input_is_a_clear_error_and_skip_keeps_the_rest(ws, tmp_path):
    import glob
    import vlmdata

    with pytest.raises(vlmdata.VLMDataError) as e:
        vlmdata.Loader(tmp_path / "nowhere")
    assert e.value.code == 2 and "catalog.sqlite" in str(e.value)
    with pytest.raises(vlmdata.VLMDataError) as e:
        vlmdata.Loader(ws, shuffle="sideways")
    assert e.value.code == 6 and "sideways" in str(e.value)
    other = vlmdata.Loader(ws, seed=1).state(8)
    other["fingerprint"] = "0" * 64
    with pytest.raises(vlmdata.VLMDataError) as e:
        vlmdata.Loader(ws, seed=1).stream(0, resume=other)
    assert e.value.code == 5 and "fingerprint" in str(e.value)

    broken = str(tmp_path / "broken")
    shutil.copytree(ws, broken)
    shards = sorted(glob.glob(os.path.join(broken, "shards", "train-*.tar")))
    victim = shards[1]
    os.remove(victim)
    full = [s["key"] for s in vlmdata.Loader(ws, shuffle="none").stream(0)]
    before = []
    with pytest.raises(vlmdata.VLMDataError) as e:
        for s in vlmdata.Loader(broken, shuffle="none").stream(0, chunk=64):
            before.append(s["key"])
    assert e.value.code == 2 and os.path.basename(victim) in str(e.value)
    assert before and before == full[:len(before)]  # the samples read before the missing shard are delivered
    stream = vlmdata.Loader(broken, shuffle="none", on_missing="skip").stream(0, chunk=8)
    keys = [s["key"] for s in stream]
    assert stream.skipped > 0 and len(keys) == N - stream.skipped
    assert keys == [k for k in full if k in set(keys)] and keys[0] == full[0] and keys[-1] == full[-1]


@pytest.fixture()
def nginx(ws, tmp_path):
    if not (os.path.exists("/usr/sbin/nginx") or shutil.which("nginx")):
        pytest.skip("nginx is not installed (make deps installs nginx-light)")
    script = ROOT / "Tests" / "support" / "nginx_loopback.sh"
    work = tmp_path / "nginx"
    port = subprocess.run(["sh", str(script), "start", os.path.join(ws, "shards"), str(work)],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout.strip()
    yield f"http://127.0.0.1:{port}"
    subprocess.run(["sh", str(script), "stop", str(work)], check=False)


def test_http_shards_through_dataloader_workers(vlmdata_bin, ws, nginx, tmp_path):
    """Shards over HTTP: each DataLoader worker keeps its own cache folder (a cache belongs to one process)."""
    import glob
    import torch.utils.data
    from vlmdata.torch import StreamingDataset, llava_collate

    last = len(glob.glob(os.path.join(ws, "shards", "train-*.tar"))) - 1
    cache = tmp_path / "cache"
    ds = StreamingDataset(ws, seed=4, batch_size=B, urls=f"{nginx}/train-{{000000..{last:06d}}}.tar", cache_dir=cache)
    dl = torch.utils.data.DataLoader(ds, batch_size=B, num_workers=2, collate_fn=llava_collate(image="patches"))
    assert loader_keys(dl) == [k for b in cli_batches(vlmdata_bin, ws, "--seed", 4, "--batch-size", B) for k in b]
    assert {"worker-0", "worker-1"} <= {p.name for p in cache.iterdir()}


def test_c_header_matches_the_library(ws, tmp_path):
    """A C program built against include/vlmdata.h streams the same keys as Python."""
    import vlmdata

    source = tmp_path / "keys.c"
    source.write_text(textwrap.dedent("""
        #include <stdio.h>
        #include <stdlib.h>
        #include "vlmdata.h"
        int main(int argc, char **argv) {
            char err[1024], config[4096];
            snprintf(config, sizeof config, "{\\"workspace\\": \\"%s\\", \\"seed\\": 11}", argv[1]);
            vlmdata_loader *loader;
            if (vlmdata_loader_open(config, &loader, err, sizeof err)) { fprintf(stderr, "%s\\n", err); return 1; }
            vlmdata_stream_options o = {0, 0, 1, 1, 1, 8, 0, 8};
            vlmdata_stream *stream;
            if (vlmdata_stream_open(loader, &o, NULL, &stream, err, sizeof err)) { fprintf(stderr, "%s\\n", err); return 1; }
            vlmdata_batch_info info;
            while (vlmdata_stream_next(stream, 3, &info, err, sizeof err) == 0 && info.samples > 0) {
                char *keys = malloc(info.key_bytes);
                vlmdata_batch_buffers b = {0};
                b.keys = keys;
                if (vlmdata_stream_copy(stream, &b, err, sizeof err)) { fprintf(stderr, "%s\\n", err); return 1; }
                for (char *k = keys; k < keys + info.key_bytes; k += strlen(k) + 1) printf("%s\\n", k);
                free(keys);
            }
            vlmdata_stream_free(stream);
            vlmdata_loader_free(loader);
            return vlmdata_abi_version() == VLMDATA_ABI_VERSION ? 0 : 2;
        }
    """).replace("#include <stdlib.h>", "#include <stdlib.h>\n#include <string.h>"))
    exe = tmp_path / "keys"
    lib = pathlib.Path(LIB)
    subprocess.run(["cc", "-Wall", "-Werror", "-I", str(ROOT / "include"), str(source), "-o", str(exe),
                    "-L", str(lib.parent), "-lVLMDataC", f"-Wl,-rpath,{lib.parent}"], check=True)
    out = subprocess.run([str(exe), ws], capture_output=True, text=True, check=True).stdout.split()
    assert out == [s["key"] for s in vlmdata.Loader(ws, seed=11).stream(0)]


def test_example_trains_to_its_gates(vlmdata_bin, tmp_path):
    env = dict(os.environ, VLMDATA_BIN=vlmdata_bin, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "train_llava_tiny.py"), "--workspace",
                             str(tmp_path / "tiny"), "--json"], capture_output=True, text=True, env=env, timeout=600)
    print(result.stderr[-3000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(report)
    assert result.returncode == 0 and report["passed"], report
    assert report["accuracy"]["colour"] >= 0.8 and report["accuracy"]["side"] >= 0.8
    assert report["train_seconds"] < 120
