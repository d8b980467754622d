"""Crop mode decodes only the JPEG region its kept window reads (libjpeg's jpeg_crop_scanline + jpeg_skip_scanlines,
stopping after the last row needed). The proof that this changes nothing: every JPEG here (coco-mini, the LLaVA
pre-training sample, the photos, and generated kinds: 4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, gray, CMYK, progressive,
odd and tiny sizes, portraits, large photos, EXIF orientations; coco-mini holds 4 files with restart markers) goes
through `vlmdata preprocess --mode crop` twice, once whole (`VLMDATA_FULL_DECODE=1`) and once by region, under
several sizes, filters and pass orders, and the outputs must be equal byte for byte; the generated kinds are also
compared with PIL. Bad files must fail (or not) with the same message either way.
"""
import ctypes
import ctypes.util
import io
import json
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, run
from test_image import PASS_ORDER, max_diff, ref_crop

SOURCES = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))


def shared_jpegs():
    coco = sorted((SHARED / "coco-mini" / "train2017").glob("*.jpg"))
    pretrain = sorted((SHARED / "llava" / "pretrain-sample" / "images").glob("*/*.jpg"))
    photos = sorted((SHARED / "photos").glob("*.jpg"))
    return coco + pretrain + photos


def tj_compress(rgb, subsamp, progressive=False, quality=90):
    """TurboJPEG's tjCompress2 (the library vlmdata links) for subsamplings PIL does not write: 4:4:0 and 4:1:1."""
    lib = ctypes.CDLL(ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0")
    lib.tjInitCompress.restype = ctypes.c_void_p
    handle = lib.tjInitCompress()
    h, w, _ = rgb.shape
    data = np.ascontiguousarray(rgb, dtype=np.uint8)
    out = ctypes.POINTER(ctypes.c_ubyte)()
    size = ctypes.c_ulong(0)
    flags = 16384 if progressive else 0  # TJFLAG_PROGRESSIVE
    rc = lib.tjCompress2(ctypes.c_void_p(handle), data.ctypes.data_as(ctypes.c_void_p), w, 0, h, 0,  # TJPF_RGB
                         ctypes.byref(out), ctypes.byref(size), subsamp, quality, flags)
    assert rc == 0, "tjCompress2 failed"
    blob = ctypes.string_at(out, size.value)
    lib.tjFree(out)
    lib.tjDestroy(ctypes.c_void_p(handle))
    return blob


def grain(im, rng):
    arr = np.asarray(im).astype(np.int16) + rng.normal(0, 4, (im.size[1], im.size[0], 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_variants(out):
    """JPEG kinds besides the shared data's baseline 4:2:0 / 4:4:4 files, with the name saying which."""
    rng = np.random.default_rng(19)
    files = []

    def save(im, name, **kw):
        path = out / name
        im.save(path, **kw)
        files.append(path)

    def write(blob, name):
        path = out / name
        path.write_bytes(blob)
        files.append(path)

    for i, src in enumerate(SOURCES[:10]):
        im = Image.open(src).convert("RGB")
        w, h = im.size
        odd = im.crop((0, 0, (w * 3 // 4) | 1, (h * 5 // 6) | 1))
        for sub, tag in ((0, "444"), (1, "422"), (2, "420")):
            save(im, f"v{i:02d}-{tag}.jpg", quality=88, subsampling=sub)
            save(odd, f"v{i:02d}-{tag}-odd.jpg", quality=88, subsampling=sub)
        save(im, f"v{i:02d}-prog420.jpg", quality=85, progressive=True)
        save(odd, f"v{i:02d}-prog422-odd.jpg", quality=85, progressive=True, subsampling=1)
        save(im.convert("L"), f"v{i:02d}-gray.jpg", quality=90)
        save(odd.convert("L"), f"v{i:02d}-gray-odd.jpg", quality=90)
        save(im.convert("CMYK"), f"v{i:02d}-cmyk.jpg", quality=90)
        save(im.transpose(Image.Transpose.ROTATE_90), f"v{i:02d}-portrait420.jpg", quality=90)
        save(odd.transpose(Image.Transpose.ROTATE_270), f"v{i:02d}-portrait444-odd.jpg", quality=90, subsampling=0)
        exif = Image.Exif()
        exif[0x0112] = 1 + i % 8
        save(im, f"v{i:02d}-exif{1 + i % 8}.jpg", quality=90, exif=exif.tobytes())
        arr = np.asarray(odd)
        write(tj_compress(arr, 4), f"v{i:02d}-440-odd.jpg")
        write(tj_compress(arr, 5), f"v{i:02d}-411-odd.jpg")
        write(tj_compress(np.asarray(im), 4, progressive=True), f"v{i:02d}-prog440.jpg")
    for j, (size, sub) in enumerate([((2000, 1500), 2), ((1500, 2000), 1), ((3001, 999), 2), ((777, 3001), 0)]):
        im = grain(Image.open(SOURCES[j * 5]).convert("RGB").resize(size, Image.BICUBIC), rng)
        save(im, f"large{j}-{size[0]}x{size[1]}.jpg", quality=90, subsampling=sub)
    for size in [(1, 1), (7, 5), (17, 300), (300, 17), (336, 500), (500, 336), (337, 4000)]:
        im = Image.open(SOURCES[len(files) % len(SOURCES)]).convert("RGB").resize(size, Image.BICUBIC)
        save(im, f"tiny-{size[0]}x{size[1]}.jpg", quality=90)
    return files


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return make_variants(tmp_path_factory.mktemp("jpeg-kinds"))


def preprocess_both(bin_path, out, files, *flags):
    """`preprocess --mode crop` whole and by region: ({stem: record} full, {stem: record} region)."""
    results = []
    for key, env in (("full", {"VLMDATA_FULL_DECODE": "1"}), ("region", {})):
        proc = run(bin_path, "preprocess", *files, "--out", out / key, "--json", "--jobs", "2", "--mode", "crop",
                   "--pass-order", PASS_ORDER, *flags, check=False, env={**os.environ, **env})
        records = {}
        for line in proc.stdout.splitlines():
            record = json.loads(line)
            records[pathlib.Path(record["file"]).stem] = record
        assert len(records) == len(files), proc.stderr
        results.append(records)
    return results


CONFIGS = {
    "336-bicubic": [],
    "224-bilinear": ["--image-size", "224", "--patch-size", "16", "--resample", "bilinear"],
    "336-nearest": ["--resample", "nearest"],
    "112-horizontal-first": ["--image-size", "112", "--patch-size", "14", "--pass-order", "horizontal-first"],
    "336-exif-transpose": ["--exif-transpose"],
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_region_decode_equals_whole_decode(vlmdata_bin, tmp_path, variants, config):
    files = shared_jpegs() + variants
    assert len(files) >= 80 + 50 + 3 + 150
    full, region = preprocess_both(vlmdata_bin, tmp_path, files, *CONFIGS[config])
    used = 0
    for stem, record in full.items():
        assert "error" not in record, record
        assert "decoded_region" not in record, f"{stem}: VLMDATA_FULL_DECODE=1 still decoded a region"
        other = region[stem]
        ours = np.load(other["out"][0])
        whole = np.load(record["out"][0])
        assert ours.shape == whole.shape and ours.tobytes() == whole.tobytes(), \
            f"{config} {stem}: region decode {other.get('decoded_region')} differs from the whole decode"
        used += "decoded_region" in other
    # The region path must really run: every image that is not square, not an EXIF rotation being applied and
    # not tiny drops some source pixels (how many of them is printed for the record).
    print(f"{config}: {used} of {len(files)} images decoded by region")
    assert used >= len(files) * 0.7, f"{config}: only {used} of {len(files)} images took the region path"


def test_region_decode_matches_pil(vlmdata_bin, tmp_path, variants):
    _, region = preprocess_both(vlmdata_bin, tmp_path, variants)
    for path in variants:
        record = region[path.stem]
        ref = ref_crop(Image.open(path).convert("RGB"))
        ours = np.load(record["out"][0])[0]
        assert ours.shape == ref.shape, path.name
        assert max_diff(ours, ref) == 0, f"{path.name}: crop differs from PIL (region {record.get('decoded_region')})"


def test_region_decode_bad_files_fail_alike(vlmdata_bin, tmp_path):
    """A region decode stops after its last row, so what a whole decode finds past it must still be found: the
    file ends before its EOI, a marker follows a single scan's data. Corrupt data inside the image gives libjpeg
    warnings, which both ignore (as PIL does): same pixels. Trailing bytes after the EOI change nothing."""
    src = Image.open(SOURCES[3]).convert("RGB")
    baseline = io.BytesIO()
    src.save(baseline, format="JPEG", quality=90)
    progressive = io.BytesIO()
    src.save(progressive, format="JPEG", quality=90, progressive=True)
    cases = {}
    for kind, blob in (("baseline", baseline.getvalue()), ("progressive", progressive.getvalue())):
        assert blob[-2:] == b"\xff\xd9"
        sos = blob.rfind(b"\xff\xda")
        cases[f"{kind}-cut-half"] = blob[:len(blob) // 2]
        cases[f"{kind}-cut-90"] = blob[:len(blob) * 9 // 10]
        cases[f"{kind}-no-eoi"] = blob[:-2]
        cases[f"{kind}-trailing"] = blob + b"\x00" * 64 + b"trailing text"
        cases[f"{kind}-comment-before-eoi"] = blob[:-2] + b"\xff\xfe\x00\x06abcd" + b"\xff\xd9"
        corrupt = bytearray(blob)
        corrupt[sos + (len(blob) - sos) // 3] ^= 0x5A
        cases[f"{kind}-corrupt-data"] = bytes(corrupt)
    # A second start of scan after the single scan of a baseline file.
    blob = baseline.getvalue()
    sos = blob.rfind(b"\xff\xda")
    header = blob[sos:sos + 2 + (blob[sos + 2] << 8 | blob[sos + 3])]
    cases["baseline-second-scan"] = blob[:-2] + header + b"\x12\x34\x56" + b"\xff\xd9"
    cases["baseline-unknown-marker"] = blob[:-2] + b"\xff\x02\x00\x04ab" + b"\xff\xd9"
    files = []
    for name, data in cases.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        files.append(path)
    full, region = preprocess_both(vlmdata_bin, tmp_path, files)
    for name in cases:
        a, b = full[name], region[name]
        if "error" in a:
            assert b.get("error") == a["error"], f"{name}: whole decode {a['error']!r}, region decode {b}"
            continue
        assert "error" not in b, f"{name}: region decode failed where the whole decode did not: {b['error']}"
        assert np.load(a["out"][0]).tobytes() == np.load(b["out"][0]).tobytes(), name
    # What PIL reports is what we report: a cut file is truncated, however much of it is kept.
    for name in ("baseline-cut-half", "baseline-cut-90", "baseline-no-eoi", "progressive-cut-half", "progressive-no-eoi"):
        assert "truncated" in region[name].get("error", ""), f"{name}: {region[name]}"
    for name in ("baseline-trailing", "baseline-corrupt-data", "progressive-trailing"):
        assert "error" not in region[name], region[name]
    # The clean ones did take the region path (so the comparisons above compare two paths).
    assert "decoded_region" in region["baseline-trailing"] and "decoded_region" in region["baseline-corrupt-data"]
