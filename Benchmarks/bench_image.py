#!/usr/bin/env python3
"""Image pipeline benchmark: vlmdata vs PIL+numpy (and HF CLIPImageProcessor), side by side in one run, per image set.

Image sets (--sets, comma-separated; each held in memory):
  coco      the 80 COCO train2017 JPEGs of ../shared/data/coco-mini (169-640 px a side)
  pretrain  the 50 web JPEGs of LLaVA's pre-training sample, ../shared/data/llava/pretrain-sample (shortest side 336)
  photos    the 10 scikit-image photos of ../shared/data/photos (7 PNGs, 4 of them gray; 3 JPEGs up to 1411 px)
  large     generated once into --work: 2000x1500 and 4000x3000 JPEGs and 2000x1500 PNGs (COCO photos upscaled
            with grain added, so they compress like photos)
  kinds     generated once into --work: coco-mini re-encoded as progressive, gray and CMYK JPEGs, RGB and
            palette PNGs (what web data holds besides baseline YCbCr JPEGs)
Per set and per core count (1 core, all cores):
  decode    bytes -> RGB            (PIL: Image.open(...).convert("RGB").load(); ours: TurboJPEG/libpng, PIL-exact)
  pipeline  decode + crop-mode preprocess (shortest edge 336, center crop 336) + ViT patchify 14 -> uint8 [576, 588]
            (PIL: resize + numpy crop + numpy reshape/transpose; ours: the same pixels, value for value)
            (crop mode decodes only the JPEG region the kept window reads; "whole" is the same pipeline with
            VLMDATA_FULL_DECODE=1, every JPEG decoded whole, as before region decoding)
  bound     our whole decode alone against PIL's whole pipeline: the ratio the pipeline would reach if our resize,
            crop and patchify cost nothing and the whole image were decoded
On coco also: --fast-decode, and CLIPImageProcessor vs ours + --normalize clip.
One-core figures are images per CPU second of the process (both sides), so a loaded machine does not skew them;
all-core figures are images per wall-clock second (one process per core for Python, threads for vlmdata). Ours
runs in-process (`vlmdata preprocess --bench-seconds`), so process start-up is not counted there.

Whole process (--whole, sets replicated to about --whole-images images with distinct bytes):
  `vlmdata patchify` on an ingested workspace (catalog rows, pixel shards, fsync, XXH3-128 per shard) against a Python
  script doing the same work end to end: read each file, sha256, PIL decode, crop 336, numpy patchify, np.save, and
  webdataset.ShardWriter writing the same `SHA256.npy` members (interpreter start-up and imports counted, as ours
  are). The members are compared byte for byte. 1 core: CPU seconds of each process tree; all cores: wall seconds
  (Python: a multiprocessing pool feeding the writer).

    python Benchmarks/bench_image.py --bin .build/release/vlmdata --work /tmp/bench-image [--quick] [--sets coco,photos]
"""
import argparse
import hashlib
import io
import json
import multiprocessing as mp
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
S, P = 336, 14
SETS = ["coco", "pretrain", "photos", "large", "kinds"]


def generate_large(out):
    """2000x1500 and 4000x3000 JPEGs and 2000x1500 PNGs from COCO photos: upscaled, with grain, once."""
    import numpy as np
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".done"
    if marker.exists():
        return
    sources = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    rng = np.random.default_rng(19)
    plan = [((2000, 1500), "jpg", 4), ((1500, 2000), "jpg", 2), ((4000, 3000), "jpg", 2), ((2000, 1500), "png", 2)]
    k = 0
    for size, ext, count in plan:
        for _ in range(count):
            im = Image.open(sources[k * 7 % len(sources)]).convert("RGB").resize(size, Image.BICUBIC)
            arr = np.asarray(im).astype(np.int16) + rng.normal(0, 4, (size[1], size[0], 3)).astype(np.int16)
            im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
            name = out / f"large-{k:02d}-{size[0]}x{size[1]}.{ext}"
            im.save(name, quality=90) if ext == "jpg" else im.save(name)
            k += 1
    marker.write_text("ok\n")


def generate_kinds(out):
    """coco-mini photos re-encoded as progressive, gray and CMYK JPEGs, RGB and palette PNGs, once."""
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    marker = out / ".done"
    if marker.exists():
        return
    sources = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    for i, src in enumerate(sources[:40]):
        im = Image.open(src).convert("RGB")
        kind = i % 5
        if kind == 0:
            im.save(out / f"{i:02d}-progressive.jpg", quality=90, progressive=True)
        elif kind == 1:
            im.convert("L").save(out / f"{i:02d}-gray.jpg", quality=90)
        elif kind == 2:
            im.convert("CMYK").save(out / f"{i:02d}-cmyk.jpg", quality=90)
        elif kind == 3:
            im.save(out / f"{i:02d}-rgb.png")
        else:
            im.convert("P", palette=Image.ADAPTIVE).save(out / f"{i:02d}-palette.png")
    marker.write_text("ok\n")


def set_files(name, work):
    if name == "coco":
        return sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    if name == "pretrain":
        return sorted((SHARED / "llava" / "pretrain-sample" / "images").glob("*/*.jpg"))
    if name == "photos":
        return sorted(p for p in (SHARED / "photos").iterdir() if p.suffix in (".png", ".jpg"))
    if name == "large":
        generate_large(work / "large")
        return sorted(p for p in (work / "large").iterdir() if p.suffix in (".png", ".jpg"))
    if name == "kinds":
        generate_kinds(work / "kinds")
        return sorted(p for p in (work / "kinds").iterdir() if p.suffix in (".png", ".jpg"))
    raise SystemExit(f"unknown set {name!r}; sets: {', '.join(SETS)}")


def describe(files):
    from PIL import Image
    sizes = [Image.open(f).size for f in files]
    pixels = sum(w * h for w, h in sizes) / len(sizes)
    return f"{len(files)} files, {pixels / 1e6:.2f} Mpx mean, {min(min(s) for s in sizes)}-{max(max(s) for s in sizes)} px a side"


# ---------------------------------------------------------------- Python peers (run inside worker processes)

def pil_decode(blob):
    from PIL import Image
    im = Image.open(io.BytesIO(blob)).convert("RGB")
    im.load()
    return im


def pil_pipeline(blob):
    import numpy as np
    from PIL import Image
    im = pil_decode(blob)
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(S * long / short)
    nw, nh = (S, new_long) if w <= h else (new_long, S)
    arr = np.asarray(im.resize((nw, nh), Image.BICUBIC))
    top, left = (nh - S) // 2, (nw - S) // 2
    arr = arr[top:top + S, left:left + S]
    g = S // P
    return np.ascontiguousarray(arr.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, P * P * 3))


_processor = None


def clip_pipeline(blob):
    global _processor
    if _processor is None:
        import logging
        logging.disable(logging.WARNING)
        from transformers import CLIPImageProcessor
        _processor = CLIPImageProcessor(size={"shortest_edge": S}, crop_size=S)
    return _processor(images=pil_decode(blob), return_tensors="np")["pixel_values"]


KINDS = {"decode": pil_decode, "pipeline": pil_pipeline, "clip": clip_pipeline}


def _worker(args):
    kind, blobs, seconds, offset = args
    fn = KINDS[kind]
    fn(blobs[0])  # warm-up (imports, processor construction)
    done, i = 0, offset
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn(blobs[i % len(blobs)])
        done += 1
        i += 1
    return done, time.perf_counter() - start, time.process_time() - cpu_start


def python_rate(kind, blobs, seconds, procs):
    """Images per second: per CPU second on one core (robust on a shared machine), per wall second on all cores."""
    if procs == 1:
        done, elapsed, cpu = _worker((kind, blobs, seconds, 0))
        return done / cpu
    with mp.get_context("fork").Pool(procs) as pool:
        results = pool.map(_worker, [(kind, blobs, seconds, k * 7) for k in range(procs)])
    return sum(r[0] for r in results) / max(r[1] for r in results)


# ---------------------------------------------------------------- ours

def ours_rates(bin_path, files, seconds, jobs, *flags, env=None):
    out = subprocess.run([bin_path, "preprocess", *map(str, files), "--bench-seconds", str(seconds), "--jobs", str(jobs), *flags],
                         capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    record = json.loads(out.stdout.strip().splitlines()[-1])
    if jobs == 1:   # per CPU second, as the one-core Python figures
        return record["decode_per_cpu_s"], record["pipeline_per_cpu_s"]
    return record["decode_per_s"], record["pipeline_per_s"]


def in_process(args, name, files, cores):
    """Rows for one set: (core label, what, peer img/s, ours img/s)."""
    blobs = [f.read_bytes() for f in files]
    extras = name == "coco" and not args.no_extras
    rows = []
    for label, procs in (("1 core", 1), (f"{cores} cores", cores)):
        peer = {"decode": [], "pipeline": [], "clip": []}
        ours = {"decode": [], "pipeline": [], "whole_pipeline": [], "fast_pipeline": [], "clip": []}
        for _ in range(args.repeats):
            for kind in (("decode", "pipeline", "clip") if extras else ("decode", "pipeline")):
                peer[kind].append(python_rate(kind, blobs, args.seconds, procs))
            d, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop")
            ours["decode"].append(d)
            ours["pipeline"].append(p)
            # The same pipeline decoding every JPEG whole (crop mode otherwise decodes only the region it reads).
            _, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop", env={"VLMDATA_FULL_DECODE": "1"})
            ours["whole_pipeline"].append(p)
            if extras:
                _, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop", "--fast-decode")
                ours["fast_pipeline"].append(p)
                _, p = ours_rates(args.bin, files, args.seconds, procs, "--mode", "crop", "--normalize", "clip")
                ours["clip"].append(p)
        r = {k: statistics.median(v) for k, v in peer.items() if v}
        o = {k: statistics.median(v) for k, v in ours.items() if v}
        rows.append((label, "decode (exact)", r["decode"], o["decode"]))
        rows.append((label, "decode+crop+patchify vs PIL+numpy", r["pipeline"], o["pipeline"]))
        rows.append((label, "same, ours decoding JPEGs whole", r["pipeline"], o["whole_pipeline"]))
        rows.append((label, "bound: our whole decode vs PIL pipeline", r["pipeline"], o["decode"]))
        if extras:
            rows.append((label, "decode+crop+patchify (--fast-decode)", r["pipeline"], o["fast_pipeline"]))
            rows.append((label, "CLIPImageProcessor vs ours + normalize", r["clip"], o["clip"]))
    return rows


# ---------------------------------------------------------------- whole process: vlmdata patchify vs a Python script

PEER_SCRIPT = r"""
import hashlib, io, json, sys, time
start = time.perf_counter()
import numpy as np
import webdataset as wds
from PIL import Image
S, P = 336, 14

def patches(path):
    blob = open(path, "rb").read()
    key = hashlib.sha256(blob).hexdigest()
    im = Image.open(io.BytesIO(blob)).convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nw, nh = (S, int(S * long / short)) if w <= h else (int(S * long / short), S)
    arr = np.asarray(im.resize((nw, nh), Image.BICUBIC))
    top, left = (nh - S) // 2, (nw - S) // 2
    arr = arr[top:top + S, left:left + S]
    g = S // P
    arr = np.ascontiguousarray(arr.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(1, g * g, P * P * 3))
    out = io.BytesIO()
    np.save(out, arr)
    return key, out.getvalue()

if __name__ == "__main__":
    files, out_dir, procs = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    with wds.ShardWriter(out_dir + "/pixels-%06d.tar", maxsize=256 << 20, maxcount=10**9, verbose=0) as sink:
        if procs == 1:
            results = map(patches, files)
        else:
            import multiprocessing as mp
            pool = mp.get_context("fork").Pool(procs)
            results = pool.imap(patches, files, chunksize=4)
        for key, npy in results:
            sink.write({"__key__": key, "npy": npy})
"""


def whole_set(args, name, files, work):
    """Replicates a set to about --whole-images files with distinct bytes (a trailing byte after the image data, which
    both decoders ignore), ingests them once (untimed) as a LLaVA file, and returns (template workspace, file list)."""
    copies = max(1, round(args.whole_images / len(files)))
    root = work / f"whole-{name}-{copies}x"
    images = root / "images"
    listing = root / "files.json"
    template = root / "template"
    if not (template / "catalog.sqlite").exists():
        shutil.rmtree(root, ignore_errors=True)
        images.mkdir(parents=True)
        records, paths = [], []
        for c in range(copies):
            for f in files:
                target = images / f"{c:03d}-{f.name}"
                target.write_bytes(f.read_bytes() + f"copy {c}".encode())
                records.append({"id": target.stem, "image": target.name,
                                "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                                  {"from": "gpt", "value": "A picture."}]})
                paths.append(str(target))
        (root / "records.json").write_text(json.dumps(records))
        listing.write_text(json.dumps(paths))
        subprocess.run([args.bin, "ingest", "llava", "--workspace", str(template), "--quiet", "--json", str(root / "records.json"),
                        "--images", str(images)], check=True, stdout=subprocess.DEVNULL)
    return template, listing, len(json.loads(listing.read_text()))


def timed_child(cmd):
    """(wall seconds, CPU seconds of the child's process tree) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare_members(ours_dir, peer_dir, limit=50):
    """The first `limit` members of Python's shards must equal ours byte for byte (same SHA256.npy names)."""
    ours = {}
    for tar in sorted(pathlib.Path(ours_dir).glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                ours[m.name] = (tar, m.name)
    checked = 0
    for tar in sorted(pathlib.Path(peer_dir).glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                if checked >= limit:
                    return checked
                if m.name not in ours:
                    raise SystemExit(f"whole-process check: {m.name} from the Python shards is missing from ours")
                with tarfile.open(ours[m.name][0]) as o:
                    if o.extractfile(m.name).read() != t.extractfile(m).read():
                        raise SystemExit(f"whole-process check: {m.name} differs between ours and Python's")
                checked += 1
    if checked == 0:
        raise SystemExit("whole-process check: no member compared")
    return checked


def whole_process(args, name, files, work, cores):
    template, listing, count = whole_set(args, name, files, work)
    script = work / "peer_patchify.py"
    script.write_text(PEER_SCRIPT)
    rows = []
    for label, jobs in (("1 core", 1), (f"{cores} cores", cores)):
        ours_t, peer_t = [], []
        for r in range(args.repeats):
            ws = template.parent / "run"
            shutil.rmtree(ws, ignore_errors=True)
            shutil.copytree(template, ws)
            ours_t.append(timed_child([args.bin, "patchify", "--workspace", str(ws), "--quiet", "--jobs", str(jobs)]))
            peer_dir = template.parent / "peer"
            shutil.rmtree(peer_dir, ignore_errors=True)
            peer_dir.mkdir()
            peer_t.append(timed_child([sys.executable, str(script), str(listing), str(peer_dir), str(jobs)]))
            if r == 0:
                compare_members(ws / "shards" / "pixels", peer_dir)
        pick = 1 if jobs == 1 else 0        # 1 core: CPU seconds; all cores: wall seconds
        o = statistics.median(t[pick] for t in ours_t)
        p = statistics.median(t[pick] for t in peer_t)
        rows.append((label, f"patchify, {count} images ({'CPU' if pick else 'wall'} s)", count / p, count / o))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(ROOT / ".build" / "release" / "vlmdata"))
    ap.add_argument("--work", default="/tmp/vlmdata-bench-image")
    ap.add_argument("--sets", default=",".join(SETS), help=f"in-process image sets, comma-separated ({', '.join(SETS)})")
    ap.add_argument("--whole", default="coco,pretrain,photos", help="sets for the whole-process patchify comparison ('' for none)")
    ap.add_argument("--whole-images", type=int, default=300, help="images per whole-process set (the set replicated)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-extras", action="store_true", help="skip --fast-decode and CLIPImageProcessor on coco")
    ap.add_argument("--quick", action="store_true", help="1 s per measurement, 1 repeat")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats = 1.0, 1
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    import PIL
    import transformers
    print(f"cores: {cores}; {args.seconds:g} s x {args.repeats} repeats per figure; Pillow {PIL.__version__}, "
          f"transformers {transformers.__version__}; load average {os.getloadavg()[0]:.1f}")
    results = {}
    header = f"{'set':9} {'':9} {'what':44} {'PIL/HF img/s':>13} {'vlmdata img/s':>14} {'ratio':>7}"

    def show(name, rows):
        for label, what, peer, ours in rows:
            print(f"{name:9} {label:9} {what:44} {peer:13.1f} {ours:14.1f} {ours / peer:6.2f}x", flush=True)
            results[f"{name}: {label}: {what}"] = {"peer": peer, "ours": ours, "ratio": ours / peer}

    sets = [s for s in args.sets.split(",") if s]
    whole = [s for s in args.whole.split(",") if s]
    for name in sets:
        files = set_files(name, work)
        print(f"\n{name}: {describe(files)}")
        print(header)
        show(name, in_process(args, name, files, cores))
    if whole:
        print("\nwhole process: vlmdata patchify vs PIL + numpy + webdataset.ShardWriter writing the same members")
        print(header.replace("img/s", "img/s"))
        for name in whole:
            show(name, whole_process(args, name, set_files(name, work), work, cores))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
