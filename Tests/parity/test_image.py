"""Image parity: vlmdata's decode and preprocessing against PIL, HF CLIPImageProcessor and LLaVA(-NeXT)'s code.

Every image in ../shared/data/coco-mini/train2017 and ../shared/data/photos goes through `vlmdata preprocess`
(the CLI, so the command is tested too) and is compared with the Python reference built from pillow/numpy/
transformers. The uint8 results must be identical (max abs diff 0); normalized CLIP output within 1e-6.
"""
import io
import json
import math
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, run

S = 336
P = 14
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# LLaVA-NeXT's default grid pinpoints (llava-v1.6 configs: image_grid_pinpoints).
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# Pillow 13 runs the vertical resize pass first when the height shrinks much more than the width; older Pillow
# always runs the horizontal pass first. vlmdata follows either (--pass-order); test against the installed one.
PIL_MAJOR = int(Image.__version__.split(".")[0])
PASS_ORDER = "pillow13" if PIL_MAJOR >= 13 else "horizontal-first"


def dataset_images():
    coco = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    photos = sorted(p for p in (SHARED / "photos").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return coco + photos


IMAGES = dataset_images()


def name_of(path):
    return pathlib.Path(path).stem


def preprocess(bin_path, out, images, *flags):
    """Runs `vlmdata preprocess` once over all images; returns {name: json record}."""
    result = run(bin_path, "preprocess", *images, "--out", out, "--json", "--jobs", "2", "--pass-order", PASS_ORDER, *flags)
    records = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        records[name_of(record["file"])] = record
    return records


# ---------------------------------------------------------------- references (PIL, HF, LLaVA)

def ref_crop(im, size=S, resample=Image.BICUBIC):
    """HF CLIPImageProcessor's resize (shortest edge, long side int()) + center_crop, on PIL."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    arr = np.asarray(im.resize((new_w, new_h), resample))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return arr[top:top + size, left:left + size]


def expand2square(pil_img, background_color):
    """llava/mm_utils.py expand2square."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def ref_pad(im, size=S):
    bg = tuple(int(x * 255) for x in CLIP_MEAN)
    return ref_crop(expand2square(im, bg), size)


def ref_squash(im, size=S, resample=Image.BICUBIC):
    return np.asarray(im.resize((size, size), resample))


def select_best_resolution(original_size, possible_resolutions):
    """llava/mm_utils.py select_best_resolution (LLaVA-NeXT)."""
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
                effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)
    return best_fit


def resize_and_pad_image(image, target_resolution):
    """llava/mm_utils.py resize_and_pad_image."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    resized_image = image.resize((new_width, new_height))
    new_image = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    paste_x = (target_width - new_width) // 2
    paste_y = (target_height - new_height) // 2
    new_image.paste(resized_image, (paste_x, paste_y))
    return new_image


def divide_to_patches(image, patch_size):
    patches = []
    width, height = image.size
    for i in range(0, height, patch_size):
        for j in range(0, width, patch_size):
            patches.append(image.crop((j, i, j + patch_size, i + patch_size)))
    return patches


def ref_anyres(im, size=S):
    """llava/mm_utils.py process_anyres_image up to the processor: global view first, then the grid tiles,
    each through the processor's resize + center crop (a no-op on S x S tiles)."""
    best = select_best_resolution(im.size, PINPOINTS)
    padded = resize_and_pad_image(im, best)
    tiles = [im.resize((size, size))] + divide_to_patches(padded, size)
    return np.stack([ref_crop(t, size) for t in tiles]), (best[1] // size, best[0] // size)


def max_diff(a, b):
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# ---------------------------------------------------------------- dataset parity

@pytest.fixture(scope="module")
def outputs(vlmdata_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("image-parity")
    images = [str(p) for p in IMAGES]
    runs = {
        "decoded": ["--decoded"],
        "crop": ["--mode", "crop"],
        "pad": ["--mode", "pad"],
        "squash": ["--mode", "squash"],
        "anyres": ["--mode", "anyres"],
        "squash-bilinear": ["--mode", "squash", "--resample", "bilinear"],
        "crop-nearest": ["--mode", "crop", "--resample", "nearest"],
        "crop-clip": ["--mode", "crop", "--normalize", "clip"],
        "crop-patches": ["--mode", "crop", "--patches"],
        "squash-224": ["--mode", "squash", "--image-size", "224", "--patch-size", "16"],
    }
    records = {}
    for key, flags in runs.items():
        records[key] = preprocess(vlmdata_bin, base / key, images, *flags)
    return base, records


def load(base, key, path):
    return np.load(base / key / f"{name_of(path)}.npy")


def test_dataset_present():
    assert len(IMAGES) >= 80 + 10, f"expected the COCO and photo images in {SHARED}"


def test_decode_identical(outputs):
    base, _ = outputs
    for path in IMAGES:
        ref = np.asarray(Image.open(path).convert("RGB"))
        ours = load(base, "decoded", path)
        assert ours.shape == (1, *ref.shape), path
        assert max_diff(ours[0], ref) == 0, f"{path}: decoded RGB differs from PIL"


@pytest.mark.parametrize("mode,reference", [
    ("crop", ref_crop), ("pad", ref_pad), ("squash", ref_squash),
    ("squash-bilinear", lambda im: ref_squash(im, resample=Image.BILINEAR)),
    ("crop-nearest", lambda im: ref_crop(im, resample=Image.NEAREST)),
    ("squash-224", lambda im: ref_squash(im, size=224)),
])
def test_mode_identical(outputs, mode, reference):
    base, _ = outputs
    worst = 0
    for path in IMAGES:
        ref = reference(Image.open(path).convert("RGB"))
        ours = load(base, mode, path)
        assert ours.dtype == np.uint8 and ours.shape == (1, *ref.shape), path
        worst = max(worst, max_diff(ours[0], ref))
    print(f"{mode}: {len(IMAGES)} images, max abs diff {worst}")
    assert worst == 0


def test_anyres_identical(outputs):
    base, records = outputs
    worst = 0
    for path in IMAGES:
        ref, grid = ref_anyres(Image.open(path).convert("RGB"))
        ours = load(base, "anyres", path)
        assert records["anyres"][name_of(path)]["grid"] == list(grid), f"{path}: grid choice differs from LLaVA-NeXT"
        assert ours.shape == ref.shape, path
        worst = max(worst, max_diff(ours, ref))
    print(f"anyres: max abs diff {worst}")
    assert worst == 0


def test_select_best_resolution_edge_cases(vlmdata_bin, tmp_path):
    """Grid choice on synthetic shapes (square, wide, tall, tiny, extreme) through the CLI."""
    shapes = [(336, 336), (1000, 200), (200, 1000), (30, 20), (700, 350), (350, 700), (1200, 1190), (2000, 300)]
    files = []
    rng = np.random.default_rng(0)
    for w, h in shapes:
        path = tmp_path / f"s{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    records = preprocess(vlmdata_bin, tmp_path / "out", files, "--mode", "anyres")
    for (w, h), path in zip(shapes, files):
        best = select_best_resolution((w, h), PINPOINTS)
        assert records[name_of(path)]["grid"] == [best[1] // S, best[0] // S], (w, h)
        ref, _ = ref_anyres(Image.open(path).convert("RGB"))
        assert max_diff(np.load(tmp_path / "out" / f"{name_of(path)}.npy"), ref) == 0, (w, h)


def test_clip_processor_normalized(outputs):
    from transformers import CLIPImageProcessor
    processor = CLIPImageProcessor(size={"shortest_edge": S}, crop_size=S)
    base, _ = outputs
    worst = 0.0
    for path in IMAGES:
        ref = processor(images=Image.open(path).convert("RGB"), return_tensors="np")["pixel_values"][0]  # [3, S, S]
        ours = load(base, "crop-clip", path)
        assert ours.dtype == np.float32 and ours.shape == (1, S, S, 3), path
        worst = max(worst, float(np.abs(ours[0].transpose(2, 0, 1) - ref).max()))
    print(f"CLIPImageProcessor: max abs diff {worst:.3g}")
    assert worst <= 1e-6


def test_patch_layout(outputs):
    base, records = outputs
    g = S // P
    for path in IMAGES[:10]:
        image = load(base, "crop", path)[0]
        patches = load(base, "crop-patches", path)
        expected = image.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, P * P * 3)
        assert patches.shape == (1, 576, 588)
        assert np.array_equal(patches[0], expected), path


def test_pillow_resize_shortcuts(vlmdata_bin, tmp_path):
    """Same size (copy), one unchanged axis (single pass), upscaling, tall images, odd sizes."""
    rng = np.random.default_rng(1)
    cases = [(336, 336), (336, 500), (500, 336), (100, 80), (13, 7), (3, 400), (2, 900), (1, 1), (337, 335)]
    files = []
    for w, h in cases:
        path = tmp_path / f"r{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    for mode, ref in [("squash", ref_squash), ("crop", ref_crop), ("pad", ref_pad)]:
        preprocess(vlmdata_bin, tmp_path / mode, files, "--mode", mode)
        for path in files:
            ours = np.load(tmp_path / mode / f"{name_of(path)}.npy")[0]
            assert max_diff(ours, ref(Image.open(path).convert("RGB"))) == 0, (mode, path)


# ---------------------------------------------------------------- PNG variants and bad input

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def make_png(width, height, bit_depth, color_type, rows_bytes, interlace=0, extra=b""):
    """A PNG from already-packed rows (filter type 0 added here); interlace=1 takes the Adam7 passes instead."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    raw = b"".join(b"\x00" + row for row in rows_bytes)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def adam7_rows(arr):
    """Adam7 pass rows of an 8-bit array [H, W, C] (each pass's rows, packed, in order)."""
    rows = []
    for x0, y0, dx, dy in ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            rows.extend(sub[r].tobytes() for r in range(sub.shape[0]))
    return rows


def pack_bits(values, depth):
    out = bytearray()
    per = 8 // depth
    for i in range(0, len(values), per):
        b = 0
        for j, v in enumerate(values[i:i + per]):
            b |= int(v) << (8 - depth * (j + 1))
        out.append(b)
    return bytes(out)


def variant_files(tmp_path):
    """Generated inputs: (file, note). Reference decoding is whatever PIL does with each."""
    rng = np.random.default_rng(7)
    files = []

    def add(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        files.append(path)

    coco = (SHARED / "coco-mini" / "train2017" / "000000000790.jpg").read_bytes()
    add("truncated.jpg", coco[: len(coco) // 2])
    add("corrupt.jpg", b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    add("garbage.png", bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    add("empty.jpg", b"")
    add("bomb.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + png_chunk(b"IEND", b""))
    add("truncated_png.png", (SHARED / "photos" / "coffee.png").read_bytes()[:20000])
    add("noeoi.jpg", coco[:-2] if coco.endswith(b"\xff\xd9") else coco)

    base = Image.open(SHARED / "photos" / "chelsea.png").convert("RGB")
    cmyk = tmp_path / "cmyk.jpg"
    base.convert("CMYK").save(cmyk, quality=90)
    files.append(cmyk)
    prog = tmp_path / "progressive.jpg"
    base.save(prog, quality=85, progressive=True)
    files.append(prog)
    gray = tmp_path / "gray.jpg"
    base.convert("L").save(gray, quality=85)
    files.append(gray)
    sub = tmp_path / "subsampling444.jpg"
    base.save(sub, quality=95, subsampling=0)
    files.append(sub)

    arr = np.asarray(base)
    h, w = arr.shape[:2]
    # 16-bit RGB and RGBA (PIL keeps the high byte), 16-bit gray (PIL clamps at 255), 16-bit gray+alpha.
    rgb16 = rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16)
    add("rgb16.png", make_png(50, 40, 16, 2, [rgb16[r].astype(">u2").tobytes() for r in range(40)]))
    rgba16 = rng.integers(0, 65536, (40, 50, 4), dtype=np.uint16)
    add("rgba16.png", make_png(50, 40, 16, 6, [rgba16[r].astype(">u2").tobytes() for r in range(40)]))
    gray16 = rng.integers(0, 1024, (30, 20), dtype=np.uint16)
    add("gray16.png", make_png(20, 30, 16, 0, [gray16[r].astype(">u2").tobytes() for r in range(30)]))
    ga16 = rng.integers(0, 65536, (30, 20, 2), dtype=np.uint16)
    add("ga16.png", make_png(20, 30, 16, 4, [ga16[r].astype(">u2").tobytes() for r in range(30)]))
    # Palette with transparency (tRNS), and a 2-bit palette with indices past the PLTE entries.
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 3
    pal.save(tmp_path / "palette_trns.png", transparency=3)
    files.append(tmp_path / "palette_trns.png")
    idx = rng.integers(0, 4, (17, 23))
    plte = png_chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0]))  # 2 entries; indices 2 and 3 are unset
    add("palette2_short.png", make_png(23, 17, 2, 3, [pack_bits(idx[r], 2) for r in range(17)], extra=plte))
    # Gray 1/2/4-bit, gray+alpha 8-bit, RGBA 8-bit, RGB with tRNS.
    for depth in (1, 2, 4):
        g = rng.integers(0, 1 << depth, (19, 21))
        add(f"gray{depth}.png", make_png(21, 19, depth, 0, [pack_bits(g[r], depth) for r in range(19)]))
    la = np.dstack([np.asarray(base.convert("L")), rng.integers(0, 256, (h, w), dtype=np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    files.append(tmp_path / "la.png")
    rgba = np.dstack([arr, rng.integers(0, 256, (h, w), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    files.append(tmp_path / "rgba.png")
    base.save(tmp_path / "rgb_trns.png", transparency=(10, 20, 30))
    files.append(tmp_path / "rgb_trns.png")
    # Adam7 interlaced: RGB 8-bit, RGBA 8-bit and gray 8-bit, odd sizes.
    add("interlaced_rgb.png", make_png(w, h, 8, 2, adam7_rows(arr), interlace=1))
    small = rng.integers(0, 256, (13, 11, 4), dtype=np.uint8)
    add("interlaced_rgba.png", make_png(11, 13, 8, 6, adam7_rows(small), interlace=1))
    g8 = rng.integers(0, 256, (9, 5, 1), dtype=np.uint8)
    add("interlaced_gray.png", make_png(5, 9, 8, 0, adam7_rows(g8), interlace=1))
    return files


def test_variants_and_bad_input(vlmdata_bin, tmp_path):
    files = variant_files(tmp_path)
    out = tmp_path / "out"
    result = run(vlmdata_bin, "preprocess", *files, "--out", out, "--decoded", "--json", check=False)
    assert result.returncode in (0, 1), f"crashed: {result.returncode}\n{result.stderr}"
    records = {name_of(json.loads(line)["file"]): json.loads(line) for line in result.stdout.splitlines()}
    rejected = []
    for path in files:
        record = records[name_of(path)]
        try:
            with Image.open(path) as im:
                ref = np.asarray(im.convert("RGB"))
        except Exception as error:  # PIL refuses it: so must we, with an error naming the file
            assert "error" in record, f"{path.name}: PIL fails ({error!r}) but vlmdata decoded it"
            assert str(path) in record["error"], record["error"]
            rejected.append(path.name)
            continue
        assert "error" not in record, f"{path.name}: PIL decodes it but vlmdata says {record.get('error')}"
        ours = np.load(out / f"{name_of(path)}.npy")[0]
        assert ours.shape == ref.shape and max_diff(ours, ref) == 0, f"{path.name}: differs from PIL"
    for expected in ("truncated.jpg", "corrupt.jpg", "garbage.png", "empty.jpg", "bomb.png", "truncated_png.png"):
        assert expected in rejected, f"{expected} should be rejected, as PIL rejects it"
    assert "decompression bomb" in records["bomb"]["error"]
    assert "truncated" in records["truncated"]["error"]


def test_cli_rejects_bad_flags(vlmdata_bin, tmp_path):
    image = str(IMAGES[0])
    for flags in (["--image-size", "300", "--patch-size", "14"], ["--mode", "zoom"], ["--normalize", "nope"]):
        result = run(vlmdata_bin, "preprocess", image, "--out", tmp_path, *flags, check=False)
        assert result.returncode != 0 and result.stderr.strip(), flags


# ---------------------------------------------------------------- vlmdata patchify (end to end through the CLI)

def read_pixels(ws, row):
    """The .npy member a pixels row points at, read by byte range and parsed with numpy."""
    shard = pathlib.Path(ws) / "shards" / "pixels" / row["shard"]
    with open(shard, "rb") as f:
        f.seek(row["offset"])
        data = f.read(row["size"])
    return np.load(io.BytesIO(data))


def pixel_rows(ws):
    import sqlite3
    con = sqlite3.connect(pathlib.Path(ws) / "catalog.sqlite")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute(
        "SELECT p.*, ps.name AS shard FROM pixels p LEFT JOIN pixel_shards ps ON ps.id = p.pixel_shard_id ORDER BY p.sha256")]
    shards = con.execute("SELECT COUNT(*) FROM pixel_shards").fetchone()[0]
    con.close()
    return rows, shards


def ingest_coco(bin_path, ws):
    coco = SHARED / "coco-mini"
    run(bin_path, "ingest", "coco", "--workspace", ws, "--captions", coco / "annotations" / "captions_train2017.json",
        "--images", coco / "train2017", "--split", "train2017")


def test_patchify_stage_matches_pil_and_resumes(vlmdata_bin, tmp_path):
    import hashlib
    import signal
    import subprocess
    import time
    ws = tmp_path / "ws"
    ingest_coco(vlmdata_bin, ws)
    flags = ["--workspace", ws, "--mode", "pad", "--pass-order", PASS_ORDER, "--shard-mib", "1", "--jobs", "1"]
    # Kill the first run once a shard has been committed, then run again: every image exactly once.
    proc = subprocess.Popen([vlmdata_bin, "patchify", *map(str, flags), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if pixel_rows(ws)[1] >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    first = json.loads(run(vlmdata_bin, "patchify", *flags, "--json").stdout)
    rows, shards = pixel_rows(ws)
    by_hash = {r["sha256"]: r for r in rows}
    files = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    hashes = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in files}
    assert set(by_hash) == set(hashes), "one pixels row per distinct image"
    assert len(rows) == len(hashes) and all(r["status"] == "ok" for r in rows)
    leftovers = [p.name for p in (ws / "shards" / "pixels").iterdir() if ".tmp-" in p.name]
    assert not leftovers, leftovers
    g = S // P
    for sha, path in list(hashes.items())[::8]:
        ref = ref_pad(Image.open(path).convert("RGB"))
        expected = ref.reshape(g, P, g, P, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, P * P * 3)
        got = read_pixels(ws, by_hash[sha])
        assert got.shape == (1, 576, 588) and np.array_equal(got[0], expected), path
    # Same config again: nothing to do.
    again = json.loads(run(vlmdata_bin, "patchify", *flags, "--json").stdout)
    assert again["skipped"] is True
    assert pixel_rows(ws)[1] == shards


def test_png_output_matches_npy(vlmdata_bin, tmp_path):
    files = [str(SHARED / "photos" / "coffee.png"), str(IMAGES[0])]
    preprocess(vlmdata_bin, tmp_path / "npy", files, "--mode", "anyres")
    preprocess(vlmdata_bin, tmp_path / "png", files, "--mode", "anyres", "--png")
    for path in files:
        tiles = np.load(tmp_path / "npy" / f"{name_of(path)}.npy")
        for k in range(tiles.shape[0]):
            png = np.asarray(Image.open(tmp_path / "png" / f"{name_of(path)}-tile{k}.png").convert("RGB"))
            assert np.array_equal(png, tiles[k]), (path, k)
