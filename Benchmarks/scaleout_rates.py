"""Per-core rates of the build stages, for the scale-out estimate in docs/scale-out.md.

Makes a COCO-style set of R x 80 distinct images from ../shared/data/coco-mini (copy c > 0 re-encoded at JPEG
quality 95 - c, so every copy has its own bytes; captions and boxes copied with new ids), then runs the stages of
Pipelines/coco-mini.yaml one command at a time under /usr/bin/time -v, each with --json. A stage's per-core rate is
its items divided by its CPU seconds (user + system): the figure that extrapolates to cores elsewhere, whatever else
ran on this machine at the time. Wall seconds are printed too.

Usage: python Benchmarks/scaleout_rates.py --bin .build/release/vlmdata [--copies 8] [--work bench-work/scaleout]
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco-mini"
TOKENIZER = ROOT.parent / "shared" / "data" / "tokenizers" / "mistral-v1" / "tokenizer.json"


def replicate(out, copies):
    """COCO captions/instances files and an image folder with `copies` distinct copies of every coco-mini image."""
    images = out / "images"
    images.mkdir(parents=True)
    captions = json.loads((COCO / "annotations" / "captions_train2017.json").read_text())
    instances = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    offset = 10 ** 7
    for name, doc in (("captions", captions), ("instances", instances)):
        new_images, new_annotations = [], []
        for c in range(copies):
            for image in doc["images"]:
                new_images.append(dict(image, id=image["id"] + c * offset, file_name=f"c{c}_{image['file_name']}"))
            for ann in doc["annotations"]:
                new_annotations.append(dict(ann, id=ann["id"] + c * offset, image_id=ann["image_id"] + c * offset))
        doc["images"], doc["annotations"] = new_images, new_annotations
        (out / f"{name}.json").write_text(json.dumps(doc))
    for source in sorted((COCO / "train2017").iterdir()):
        for c in range(copies):
            target = images / f"c{c}_{source.name}"
            if c == 0:
                shutil.copyfile(source, target)
            else:
                Image.open(source).convert("RGB").save(target, quality=95 - c)


def timed(bin_path, args):
    """(the --json report, cpu seconds, wall seconds, max RSS MB) of one vlmdata command."""
    result = subprocess.run(["/usr/bin/time", "-v", bin_path, *map(str, args), "--json", "--quiet"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"vlmdata {' '.join(map(str, args))} failed:\n{result.stderr}")

    def field(name):
        return re.search(rf"{re.escape(name)}: (\S+)", result.stderr).group(1)

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
    cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
    return json.loads(result.stdout.strip().splitlines()[-1]), cpu, seconds, int(field("Maximum resident set size (kbytes)")) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--work", default=str(ROOT / "bench-work" / "scaleout"))
    a = ap.parse_args()
    work = pathlib.Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    replicate(work / "data", a.copies)
    ws = ["--workspace", work / "ws"]
    stages = [
        ("ingest", "images", ["ingest", "coco", *ws, "--captions", work / "data" / "captions.json",
                              "--instances", work / "data" / "instances.json", "--images", work / "data" / "images",
                              "--split", "train2017"]),
        ("gen-instructions", "instructions", ["gen-instructions", *ws, "--generator", "templates", "--kinds",
                                              "caption,detail,grounding,count,yesno", "--seed", 1, "--box-frame", "pad"]),
        ("tokenize", "tokenized", ["tokenize", *ws, "--tokenizer", TOKENIZER, "--template", "vicuna_v1",
                                   "--max-length", 2048]),
        ("patchify", "pixels", ["patchify", *ws, "--image-size", 336, "--patch-size", 14, "--mode", "pad"]),
        ("shard", "samples", ["shard", *ws, "--target-size", "64MB"]),
    ]
    rows = []
    for name, unit, args in stages:
        report, cpu, wall, rss = timed(a.bin, args)
        count = report["counts"][unit]
        extra = {"bytes": report["counts"]["bytes"]} if "bytes" in report["counts"] else {}
        rows.append(dict(stage=name, unit=unit, items=count, cpu_s=round(cpu, 2), wall_s=round(wall, 2),
                         per_core_per_s=round(count / cpu, 1) if cpu > 0 else None, max_rss_mb=round(rss), **extra))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"copies": a.copies, "images": 80 * a.copies, "cores": os.cpu_count(), "stages": rows}))


if __name__ == "__main__":
    main()
