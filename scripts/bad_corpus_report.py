#!/usr/bin/env python3
"""Runs ingest on the bad-input corpus (scripts/make_bad_corpus.py) and prints each case's outcome, for RELIABILITY.md.

    python scripts/bad_corpus_report.py --bin .build/release/vlmdata [--bomb-mb 200] [--json]

For every case: the run it belongs to, whether a problem naming it was reported, and that problem (shortened);
then the counts of good records kept against the corpus' expectations and each run's exit status. Exit 0 when
every case was reported and every good count matches. Tests/parity/test_ingest.py asserts the same.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def ingest(binary, *args):
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    return json.loads(r.stdout), r.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=str(ROOT / ".build/release/vlmdata"))
    ap.add_argument("--bomb-mb", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        out = tmp / "corpus"
        subprocess.run([sys.executable, ROOT / "scripts/make_bad_corpus.py", out, "--bomb-mb", str(args.bomb_mb)], check=True)
        expected = json.loads((out / "expected.json").read_text())
        runs = {}
        runs["coco"] = runs["instances"] = ingest(args.bin, "ingest", "coco", "--workspace", tmp / "coco", "--captions",
                                                   out / "coco/captions.json", "--instances", out / "coco/instances.json",
                                                   "--images", out / "images", "--split", "bad", "--json", "--quiet")
        for name, archive in [("zip", "images.zip"), ("targz", "images.tar.gz")]:
            runs[name] = ingest(args.bin, "ingest", "coco", "--workspace", tmp / name, "--captions",
                                out / "coco/archive_captions.json", "--images", out / archive, "--json", "--quiet")
        runs["llava"] = ingest(args.bin, "ingest", "llava", "--workspace", tmp / "llava", "--json", out / "llava/records.jsonl",
                               "--images", out / "llava/images", "--json-report", "--quiet")
        cases = []
        for case in expected["cases"]:
            report, _ = runs[case["run"]]
            hit = next((p for p in report["problems"] if case["needle"] in p), None)
            hit = hit and hit.replace(f"{out}/", "").replace(f"{tmp}/", "")   # paths relative to the corpus
            cases.append({"run": case["run"], "case": case["case"], "reported": hit is not None, "problem": hit})
        good = expected["good"]
        coco, llava = runs["coco"][0]["counts"], runs["llava"][0]["counts"]
        kept = {
            "coco_images_ok": (coco["images_ok"], good["coco_images_ok"]),
            "coco_captions": (coco["captions"], good["coco_captions"]),
            "objects": (coco["objects"], good["objects"]),
            "objects_clipped": (coco["objects_clipped"], good["objects_clipped"]),
            "zip_images_ok": (runs["zip"][0]["counts"]["images_ok"], good["archive_images_ok"]),
            "targz_images_ok": (runs["targz"][0]["counts"]["images_ok"], good["archive_images_ok"]),
            "llava_instructions": (llava["instructions"], good["llava_instructions"]),
            "llava_images": (llava["images"], good["llava_images"]),
        }
        exits = {name: code for name, (_, code) in runs.items()}
    ok = all(c["reported"] for c in cases) and all(a == b for a, b in kept.values())
    if args.json:
        print(json.dumps({"cases": cases, "kept": kept, "exits": exits, "ok": ok}, indent=1))
    else:
        print("| run | case | reported as |")
        print("|---|---|---|")
        for c in cases:
            problem = (c["problem"] or "NOT REPORTED").replace("|", "\\|")
            print(f'| {c["run"]} | {c["case"]} | {problem[:140] + ("…" if len(problem) > 140 else "")} |')
        print()
        for name, (got, want) in kept.items():
            print(f"{name}: kept {got}, expected {want}")
        print(f"exit codes: {exits}")
        print(f"{len(cases)} cases, {sum(c['reported'] for c in cases)} reported; good counts {'match' if ok else 'DIFFER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
