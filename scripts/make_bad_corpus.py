#!/usr/bin/env python3
"""Writes a corpus of hostile ingest input, with the message each case must produce.

    python scripts/make_bad_corpus.py OUT [--shared ../shared/data] [--bomb-mb 200]

OUT gets:
  images/              good JPEGs (real COCO images) and PNGs, and every kind of bad image file
  coco/captions.json   COCO captions: good records before and after each bad one
  coco/instances.json  COCO instances: boxes outside, negative, 10x, 1e308, zero area, non-finite; unknown category
  images.zip           good members, '../' and absolute names, a deflate bomb
  images.tar.gz        good members, a symbolic link out of the archive, a hard link, a gzip bomb
  llava/records.jsonl  LLaVA records and GPT-4 QA records, with broken lines between good ones
  llava/images/        the LLaVA records' images, including two paths that escape alike
  expected.json        {"good": {...counts...}, "cases": [{"run", "case", "needle"}, ...]}

Each case's needle is a substring of the per-record (or per-image) message `vlmdata ingest ... --json` must list
in its problems; `good` gives the counts of records that must be kept. Tests/parity/test_ingest.py runs it.
"""
import argparse
import io
import json
import pathlib
import shutil
import struct
import tarfile
import zipfile
import zlib

from PIL import Image


def png_bytes(width, height, colour):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png_header(width, height):
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + png_chunk(b"IEND", b""))


def nested(depth):
    return "[" * depth + "]" * depth


class Zeros(io.RawIOBase):
    """A stream of n zero bytes (a bomb's payload), never held in memory."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--shared", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--bomb-mb", type=int, default=200, help="decompressed size of the zip and tar.gz bombs (under the 256 MiB member cap, so the expansion cap stops them)")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    images = out / "images"
    images.mkdir(exist_ok=True)
    cases = []

    def case(run, name, needle):
        cases.append({"run": run, "case": name, "needle": needle})

    # --- images -------------------------------------------------------------------------------------------------
    real = sorted((args.shared / "coco-mini" / "train2017").glob("*.jpg"))[:6]
    jpeg = real[0].read_bytes()
    entries = []  # (file_name, bytes or None, (w, h) the annotation gives)

    def add(name, data, size):
        if data is not None:
            (images / name).write_bytes(data)
        entries.append((name, size))

    for i, p in enumerate(real[:4]):
        w, h = Image.open(p).size
        add(f"good_{i}.jpg", p.read_bytes(), (w, h))
    add("x.jpg", real[4].read_bytes(), Image.open(real[4]).size)  # x.jpg and x.png escape alike
    add("x.png", png_bytes(40, 30, (200, 10, 10)), (40, 30))
    add("a b.jpg", real[5].read_bytes(), Image.open(real[5]).size)  # 'a b' and 'a_b' escape alike
    add("a_b.jpg", png_bytes(32, 32, (10, 200, 10)), None)
    w0, h0 = Image.open(real[0]).size
    add("trunc_header.jpg", jpeg[:120], (w0, h0))
    case("coco", "jpeg cut before its frame header", "trunc_header.jpg: corrupt: JPEG")
    add("trunc_tail.jpg", jpeg[: len(jpeg) * 2 // 3], (w0, h0))
    case("coco", "jpeg cut after its header", "trunc_tail.jpg: corrupt: truncated")
    good_png = png_bytes(24, 24, (1, 2, 3))
    add("trunc.png", good_png[: len(good_png) - 20], (24, 24))
    case("coco", "png cut before IEND", "trunc.png: corrupt: truncated")
    add("bad_ihdr.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, None)
    case("coco", "png without IHDR", "bad_ihdr.png: corrupt: PNG without an IHDR")
    add("empty.jpg", b"", None)
    case("coco", "zero-byte file", "empty.jpg: corrupt: file is empty")
    add("text.jpg", b"this is a text file, not a picture\n", None)
    case("coco", "non-image with an image name", "text.jpg: corrupt: not an image")
    add("huge.png", huge_png_header(100000, 100000), (100000, 100000))
    case("coco", "huge-dimension header", "huge.png: too_large:")
    add("gone.jpg", None, (640, 480))
    case("coco", "missing file", "gone.jpg: missing: no file at")

    # --- COCO captions --------------------------------------------------------------------------------------------
    coco = out / "coco"
    coco.mkdir(exist_ok=True)
    image_records = []
    ids = {}
    for i, (name, size) in enumerate(entries):
        rec = {"id": 100 + i, "file_name": name}
        if size is not None:
            rec["width"], rec["height"] = size
        image_records.append(rec)
        ids[name] = 100 + i
    # A repeated image id naming another file: a per-record problem; the first entry is kept.
    image_records.append({"id": ids["good_0.jpg"], "file_name": "good_1.jpg", "width": 1, "height": 1})
    case("coco", "repeated image id with another file", f"id {ids['good_0.jpg']} is already")
    image_records.append("not an object")
    case("coco", "image entry of the wrong JSON type", "is a string, expected an object")

    raw_caps = []
    cap_id = 1000

    def caption(image, text, raw=None):
        nonlocal cap_id
        cap_id += 1
        raw_caps.append(raw if raw is not None else json.dumps({"id": cap_id, "image_id": ids[image], "caption": text}))

    good_captions = 0
    for name, _ in entries:
        caption(name, f"a photo called {name}")
        good_captions += 1
    caption("good_0.jpg", "", raw=json.dumps({"id": 2001, "image_id": ids["good_0.jpg"], "caption": "x" * 200_000}))
    case("coco", "caption over 64 KiB", "'caption' is longer than 65536 bytes")
    caption("good_1.jpg", "after the long caption"); good_captions += 1
    raw_caps.append('{"id": 2002, "image_id": %d, "caption": "bad \xff byte"}' % ids["good_1.jpg"])
    case("coco", "invalid UTF-8", "invalid UTF-8")
    caption("good_2.jpg", "after the bad byte"); good_captions += 1
    raw_caps.append('{"id": 2003, "image_id": %d, "caption": "deep", "extra": %s}' % (ids["good_2.jpg"], nested(5000)))
    case("coco", "deeply nested JSON", "nesting deeper than")
    caption("good_3.jpg", "after the deep record"); good_captions += 1
    raw_caps.append(json.dumps({"id": 2004, "image_id": str(ids["good_3.jpg"]), "caption": "id as text"}))
    case("coco", "wrong JSON type", "field 'image_id' is a string, expected an integer")
    raw_caps.append(json.dumps({"id": 2005, "image_id": 424242, "caption": "no such image"}))
    case("coco", "caption of an unknown image", "image_id 424242 is not in 'images'")
    caption("good_0.jpg", "the last good caption"); good_captions += 1
    text = '{"info": {}, "images": %s, "annotations": [%s]}' % (json.dumps(image_records), ", ".join(raw_caps))
    (coco / "captions.json").write_bytes(text.encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff"))

    # --- COCO instances -------------------------------------------------------------------------------------------
    gw, gh = Image.open(real[0]).size
    g = ids["good_0.jpg"]
    boxes = []
    kept_objects = clipped_objects = 0

    def box(bbox, category=1, raw=None):
        boxes.append(raw if raw is not None else
                     '{"id": %d, "image_id": %d, "category_id": %d, "bbox": %s, "area": 10, "iscrowd": 0}'
                     % (3000 + len(boxes), g, category, bbox))

    box("[10, 10, 50, 40]"); kept_objects += 1
    box(f"[{gw + 5}, 10, 20, 20]")
    case("instances", "box entirely right of the image", f"outside the {gw}x{gh} image")
    box("[-30, -30, 20, 20]")
    case("instances", "box at negative origin, off the image", "outside the")
    box("[-10, -10, 60, 60]"); kept_objects += 1; clipped_objects += 1
    case("instances", "box at negative origin overlapping the image", "clipped to [0, 0, 50, 50]")
    box(f"[0, 0, {gw * 10}, {gh * 10}]"); kept_objects += 1; clipped_objects += 1
    case("instances", "box ten times the image", f"clipped to [0, 0, {gw}, {gh}]")
    box("[1e308, 1e308, 1e308, 1e308]")
    case("instances", "box at 1e308", "outside the")
    box("[5, 5, 1e999, 10]")
    case("instances", "non-finite box", "not finite")
    box("[5, 5, 0, 10]")
    case("instances", "zero-area box", "zero area")
    box("[5, 5, 10, 10]", category=77)
    case("instances", "unknown category", "category_id 77 is not in 'categories'")
    box(None, raw='{"id": 3999, "image_id": %d, "category_id": 1, "bbox": "0 0 1 1"}' % g)
    case("instances", "bbox of the wrong JSON type", "field 'bbox' must be an array of 4 numbers")
    box("[20, 20, 30, 30]"); kept_objects += 1
    categories = [{"id": 1, "name": "thing", "supercategory": "x"}, {"id": 1, "name": "other", "supercategory": "x"}]
    case("instances", "category id repeated with another name", "category id 1 is already")
    text = '{"images": %s, "annotations": [%s], "categories": %s}' % (
        json.dumps([r for r in image_records if isinstance(r, dict)][: len(entries)]), ", ".join(boxes), json.dumps(categories))
    (coco / "instances.json").write_text(text)

    # --- archives -----------------------------------------------------------------------------------------------
    bomb = args.bomb_mb << 20
    with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for i, p in enumerate(real[:2]):
            z.write(p, f"train/good_{i}.jpg")
        z.writestr("../escape.jpg", jpeg)
        case("zip", "'..' member name", "'../escape.jpg': unsafe name")
        z.writestr("/abs/escape2.jpg", jpeg)
        case("zip", "absolute member name", "'/abs/escape2.jpg': unsafe name")
        with z.open("train/bomb.jpg", "w", force_zip64=True) as f:
            f.write(b"\xff\xd8\xff")
            chunk = bytes(1 << 20)
            for _ in range(args.bomb_mb):
                f.write(chunk)
        case("zip", "deflate bomb", "bomb.jpg: too_large: decompression bomb")
        z.write(real[2], "train/good_2.jpg")
    with tarfile.open(out / "images.tar.gz", "w:gz") as t:
        for i, p in enumerate(real[:2]):
            t.add(p, f"train/good_{i}.jpg")
        link = tarfile.TarInfo("train/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
        case("targz", "symbolic link pointing outside", "link.jpg: missing: member is a symbolic link to '/etc/passwd'")
        hard = tarfile.TarInfo("train/hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "train/good_0.jpg"
        t.addfile(hard)
        case("targz", "hard link", "hard.jpg: missing: member is a hard link to 'train/good_0.jpg'")
        info = tarfile.TarInfo("train/bomb.jpg")
        info.size = bomb
        t.addfile(info, io.BufferedReader(Zeros(bomb)))
        case("targz", "gzip bomb", "bomb.jpg: too_large: decompression bomb")
        t.add(real[2], "train/good_2.jpg")
    archive_images = [{"id": 1 + i, "file_name": n} for i, n in enumerate(
        ["good_0.jpg", "good_1.jpg", "good_2.jpg", "bomb.jpg", "link.jpg", "hard.jpg", "../escape.jpg", "/abs/escape2.jpg"])]
    (coco / "archive_captions.json").write_text(json.dumps({
        "images": archive_images,
        "annotations": [{"id": 1 + i, "image_id": im["id"], "caption": "c"} for i, im in enumerate(archive_images)]}))

    # --- LLaVA JSONL ----------------------------------------------------------------------------------------------
    llava = out / "llava"
    (llava / "images" / "a_b").mkdir(parents=True, exist_ok=True)
    (llava / "images" / "a").mkdir(parents=True, exist_ok=True)
    shutil.copy(real[0], llava / "images" / "a_b" / "c.jpg")
    (llava / "images" / "a" / "b_c.jpg").write_bytes(png_bytes(16, 16, (0, 0, 255)))
    shutil.copy(real[1], llava / "images" / "one.jpg")

    def conv(i, image, text="What is this?"):
        return {"id": i, "image": image, "conversations": [
            {"from": "human", "value": f"<image>\n{text}"}, {"from": "gpt", "value": "An answer."}]}

    lines = [
        json.dumps(conv("r1", "a_b/c.jpg")),
        json.dumps(conv("r2", "a/b_c.jpg")),
        '{"id": "broken", "image": "one.jpg", "conversations": [',
        json.dumps(conv("r3", "one.jpg")),
        '{"id": "utf", "image": "one.jpg", "conversations": [{"from": "human", "value": "<image>\xff"}]}',
        json.dumps(conv("r4", "one.jpg")),
        json.dumps(conv("r1", "one.jpg")),
        json.dumps(conv("r5", "one.jpg", "y" * 100_000)),
        json.dumps({"id": "deep", "image": "one.jpg", "conversations": json.loads(nested(100))}),
        json.dumps({"id": "qa1", "image": "one.jpg", "instruction": "How many?", "output": "Two.", "type": "conv"}),
        json.dumps({"id": "qa1", "image": "one.jpg", "instruction": "Describe it.", "output": "A scene.", "type": "detail"}),
        json.dumps({"id": 7, "image": 7, "conversations": []}),
        json.dumps(conv("r6", "one.jpg")),
    ]
    case("llava", "broken JSON line", "line 3")
    case("llava", "invalid UTF-8 line", "line 5")
    case("llava", "duplicate id with another image", "id 'r1' was already given to line 1 with image 'a_b/c.jpg'")
    case("llava", "instruction over 64 KiB", "'value' is longer than 65536 bytes")
    case("llava", "deeply nested record", "nesting deeper than")
    case("llava", "wrong JSON types", "field 'image' is an integer, expected a string")
    (llava / "records.jsonl").write_bytes("\n".join(lines).encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff") + b"\n")

    expected = {
        "good": {"coco_images_ok": 8, "coco_captions": good_captions, "objects": kept_objects,
                 "objects_clipped": clipped_objects, "archive_images_ok": 3, "llava_instructions": 7,
                 "llava_images": 3},
        "cases": cases,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
