"""PNG decoding's fast path (libdeflate inflate + our unfiltering) against Pillow, value for value.

8-bit, non-interlaced PNGs are inflated in one libdeflate call and unfiltered by `vlm_png_unfilter`; anything
unusual falls back to libpng. These files force every filter type (None, Sub, Up, Average, Paeth) at every pixel
width the fast path meets (gray 1 byte, gray+alpha 2, RGB 3, RGBA 4, palette 1), split the zlib stream over many
IDAT chunks, and damage the stream in the ways that must fall back (bad Adler-32, trailing data, a short stream, a
bad filter type): each must decode to PIL's pixels or be refused as PIL refuses it.
"""
import json
import struct
import zlib

import numpy as np
from PIL import Image

from conftest import run

COLOR_TYPES = {0: 1, 4: 2, 2: 3, 6: 4, 3: 1}   # PNG colour type -> bytes per pixel at 8 bits


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_row(kind, row, prior, bpp):
    """PNG filter `kind` applied to one row (bytes), given the previous raw row (zeros for the first)."""
    out = bytearray(len(row))
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        predictor = (0, a, b, (a + b) // 2, paeth(a, b, c))[kind]
        out[i] = (x - predictor) & 0xFF
    return bytes([kind]) + bytes(out)


def png_bytes(pixels, color_type, filters, idat_size=97, stream=None, palette=None):
    """An 8-bit PNG of `pixels` [H, W*bpp] uint8, row y filtered with filters[y % len(filters)], the zlib stream
    split into IDAT chunks of `idat_size` bytes (`stream` replaces it when given)."""
    height, row_bytes = pixels.shape
    bpp = COLOR_TYPES[color_type]
    width = row_bytes // bpp
    prior = bytes(row_bytes)
    raw = b""
    for y in range(height):
        row = pixels[y].tobytes()
        raw += filter_row(filters[y % len(filters)], row, prior, bpp)
        prior = row
    data = stream(raw) if stream else zlib.compress(raw, 6)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if color_type == 3:
        body += chunk(b"PLTE", palette)
    for start in range(0, len(data), idat_size):
        body += chunk(b"IDAT", data[start:start + idat_size])
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def cases(tmp_path):
    rng = np.random.default_rng(19)
    files = []

    def add(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        files.append(path)

    # Smooth gradients plus noise, so that every predictor matters (and Paeth picks a, b and c).
    def image(h, w, bpp):
        ys, xs = np.mgrid[0:h, 0:w * bpp]
        return ((ys * 7 + xs * 3 + rng.integers(0, 40, (h, w * bpp))) % 256).astype(np.uint8)

    palette = bytes(rng.integers(0, 256, 3 * 200, dtype=np.uint8))
    for color_type, bpp in COLOR_TYPES.items():
        for kind in range(5):
            pixels = image(23, 37, bpp) if color_type != 3 else rng.integers(0, 200, (23, 37), dtype=np.uint8)
            add(f"ct{color_type}-filter{kind}.png", png_bytes(pixels, color_type, [kind], palette=palette))
        mixed = image(41, 29, bpp) if color_type != 3 else rng.integers(0, 256, (41, 29), dtype=np.uint8)
        add(f"ct{color_type}-mixed.png", png_bytes(mixed, color_type, [4, 0, 3, 1, 2, 4, 4], palette=palette))
    rgb = image(31, 33, 3)
    # One IDAT, or one per byte: the same stream.
    add("one-idat.png", png_bytes(rgb, 2, [4, 1], idat_size=1 << 20))
    add("byte-idats.png", png_bytes(rgb, 2, [4, 1], idat_size=1))
    # Damaged streams: these leave the fast path; PIL's outcome (pixels or refusal) is the reference.
    add("bad-adler.png", png_bytes(rgb, 2, [4], stream=lambda raw: zlib.compress(raw)[:-4] + b"\x00\x00\x00\x00"))
    add("trailing-data.png", png_bytes(rgb, 2, [4], stream=lambda raw: zlib.compress(raw + b"\x01" * 50)))
    add("short-stream.png", png_bytes(rgb, 2, [4], stream=lambda raw: zlib.compress(raw[:-40])))
    add("bad-filter.png", png_bytes(rgb, 2, [4], stream=lambda raw: zlib.compress(raw[:100] + b"\x07" + raw[101:])))
    return files


def test_png_fast_path_matches_pil(vlmdata_bin, tmp_path):
    files = cases(tmp_path)
    out = tmp_path / "out"
    result = run(vlmdata_bin, "preprocess", *files, "--out", out, "--decoded", "--json", check=False)
    assert result.returncode in (0, 1), f"crashed: {result.returncode}\n{result.stderr}"
    records = {json.loads(line)["file"]: json.loads(line) for line in result.stdout.splitlines()}
    decoded, refused = 0, 0
    for path in files:
        record = records[str(path)]
        try:
            with Image.open(path) as im:
                ref = np.asarray(im.convert("RGB"))
        except Exception as error:
            assert "error" in record, f"{path.name}: PIL refuses it ({error!r}) but vlmdata decoded it"
            refused += 1
            continue
        assert "error" not in record, f"{path.name}: PIL decodes it but vlmdata says {record['error']}"
        ours = np.load(out / f"{path.stem}.npy")[0]
        assert ours.shape == ref.shape, path.name
        assert np.array_equal(ours, ref), f"{path.name}: differs from PIL"
        decoded += 1
    # Every filter case decodes; the damaged ones are whatever PIL makes of them, and bad-filter is refused by both.
    assert decoded >= 5 * 5 + 5 + 2
    assert "error" in records[str(tmp_path / "bad-filter.png")]
