#!/usr/bin/env python3
"""Crash harness: every writing stage is SIGKILLed at seeded random points, run again, and compared with a clean run.

For each stage (ingest, gen-instructions, tokenize, patchify, shard) the harness takes the workspace as it was before
that stage in a clean run, starts the stage, kills it with SIGKILL after a random delay (seeded; spread over the
stage's clean duration, so kills land before, during and after its writes), runs it again to completion and then
requires:

- the rerun exits 0;
- a canonical dump of the catalog equals the clean run's (every table but `runs`, whose rows record the killed
  attempts; row ids, foreign-key ids and timestamps left out, rows sorted), and `PRAGMA integrity_check` is ok;
- every file under `shards/` (pixel and training shards) has the clean run's sha256, and no temporary file is left;
- `vlmdata verify --deep` passes.

    scripts/crashtest.py --bin .build/release/vlmdata --kills 10 --seed 1      # make crashtest
    scripts/crashtest.py --bin ... --kills 2 --images 16                       # the bounded run in make test

Exits 0 when every trial passed; prints one line per trial and a summary (`--json` for one JSON object).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

STAGES = ["ingest", "gen-instructions", "tokenize", "patchify", "shard"]


def stage_args(stage, ws, base):
    """The command line of one writing stage of the small pipeline (the demo pipeline's parameters, smaller)."""
    shapes = os.path.join(base, "shapes")
    return {
        "ingest": ["ingest", "coco", "--captions", f"{shapes}/annotations/captions_train.json",
                   "--instances", f"{shapes}/annotations/instances_train.json", "--images", f"{shapes}/train",
                   "--split", "shapes"],
        "gen-instructions": ["gen-instructions", "--generator", "templates",
                             "--kinds", "caption,detail,grounding,count,yesno,mcq,multiturn", "--seed", "1",
                             "--box-frame", "pad"],  # the frame of the pad-mode pixels below
        "tokenize": ["tokenize", "--tokenizer", os.path.join(base, "tokenizer.json"), "--template", "vicuna_v1",
                     "--image-tokens", "16", "--max-length", "512", "--overflow", "truncate"],
        "patchify": ["patchify", "--image-size", "64", "--patch-size", "16", "--mode", "pad"],
        "shard": ["shard", "--target-size", "60KB", "--jobs", "2"],
    }[stage] + ["--workspace", ws, "--quiet"]


def run(bin_path, args, check=True):
    result = subprocess.run([bin_path, *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"vlmdata {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def canonical_dump(ws):
    """Every catalog table but `runs`, without row ids, foreign-key ids and timestamps, rows sorted."""
    db = sqlite3.connect(f"file:{os.path.join(ws, 'catalog.sqlite')}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{ws}: integrity_check failed"
        dump = {}
        tables = [t for (t,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' AND name NOT LIKE 'grdb%' "
            "AND name != 'runs' ORDER BY name")]
        for table in tables:
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")
                       if c[1] != "id" and not c[1].endswith("_id") and not c[1].endswith("_at")]
            rows = db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            dump[table] = (columns, sorted(rows, key=repr))
        return dump
    finally:
        db.close()


def shard_files(ws):
    """sha256 of every file under shards/, by relative path; and the temporary files found."""
    hashes, temporary = {}, []
    root = os.path.join(ws, "shards")
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if ".tmp" in name:
                temporary.append(rel)
                continue
            with open(path, "rb") as f:
                hashes[rel] = hashlib.sha256(f.read()).hexdigest()
    return hashes, sorted(temporary)


def differences(expected, actual):
    out = []
    for table in sorted(set(expected) | set(actual)):
        if expected.get(table) != actual.get(table):
            e, a = expected.get(table, ([], []))[1], actual.get(table, ([], []))[1]
            out.append(f"table {table}: {len(a)} rows, clean run {len(e)}"
                       + (f"; first differing row {next((x for x in a if x not in e), None)!r}" if len(a) == len(e) else ""))
    return out


def build_reference(bin_path, base, images):
    """The clean run: the workspace after each stage, and each stage's duration."""
    run(bin_path, ["synth", "shapes", "--count", str(images), "--seed", "1", "--size", "64",
                   "--out", os.path.join(base, "shapes"), "--quiet"])
    snapshots = {}
    durations = {}
    ws = os.path.join(base, "clean")
    os.makedirs(ws)
    previous = os.path.join(base, "before-ingest")
    shutil.copytree(ws, previous)
    snapshots["before-ingest"] = previous
    for stage in STAGES:
        if stage == "tokenize":
            run(bin_path, ["tokenizer", "train", "--vocab-size", "600", "--from-catalog",
                           "--out", os.path.join(base, "tokenizer.json"), "--workspace", ws, "--quiet"])
        start = time.monotonic()
        run(bin_path, stage_args(stage, ws, base))
        durations[stage] = time.monotonic() - start
        snap = os.path.join(base, f"after-{stage}")
        shutil.copytree(ws, snap)
        snapshots[f"after-{stage}"] = snap
    return snapshots, durations


def trial(bin_path, base, stage, before, after, delay, number):
    ws = os.path.join(base, f"trial-{stage}-{number}")
    shutil.copytree(before, ws)
    proc = subprocess.Popen([bin_path, *stage_args(stage, ws, base)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    problems = []
    rerun = run(bin_path, stage_args(stage, ws, base), check=False)
    if rerun.returncode != 0:
        problems.append(f"rerun exited {rerun.returncode}: {rerun.stderr.strip()[-400:]}")
    else:
        problems += differences(canonical_dump(after), canonical_dump(ws))
        expected_files, _ = shard_files(after)
        files, temporary = shard_files(ws)
        if temporary:
            problems.append(f"temporary files left: {temporary}")
        for rel in sorted(set(expected_files) | set(files)):
            if expected_files.get(rel) != files.get(rel):
                problems.append(f"shards/{rel}: " + ("missing" if rel not in files else
                                                     "not in the clean run" if rel not in expected_files else
                                                     "bytes differ from the clean run"))
        if stage == "shard":
            verify = run(bin_path, ["verify", "--deep", "--workspace", ws], check=False)
            if verify.returncode != 0:
                problems.append(f"verify --deep: {verify.stdout.strip()[-400:]}")
    shutil.rmtree(ws, ignore_errors=True)
    return {"stage": stage, "trial": number, "delay_s": round(delay, 3), "killed": killed, "problems": problems}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=".build/release/vlmdata", help="the vlmdata binary")
    parser.add_argument("--kills", type=int, default=10, help="kills per stage")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill delays")
    parser.add_argument("--images", type=int, default=40, help="synthetic images in the pipeline")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to kill")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args()
    bin_path = os.path.abspath(args.bin)
    stages = [s for s in args.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {STAGES}")
    base = tempfile.mkdtemp(prefix="vlmdata-crashtest-")
    rng = random.Random(args.seed)
    results = []
    try:
        snapshots, durations = build_reference(bin_path, base, args.images)
        for i, stage in enumerate(STAGES):
            if stage not in stages:
                continue
            before = snapshots["before-ingest" if i == 0 else f"after-{STAGES[i - 1]}"]
            after = snapshots[f"after-{stage}"]
            for n in range(args.kills):
                # Spread over the clean duration (plus the start-up before it), a few past the end on purpose.
                delay = rng.uniform(0.0, durations[stage] * 1.2 + 0.02)
                result = trial(bin_path, base, stage, before, after, delay, n)
                results.append(result)
                status = "ok" if not result["problems"] else "FAILED: " + "; ".join(result["problems"])
                if not args.json:
                    print(f"crashtest {stage} #{n}: kill after {result['delay_s']}s"
                          f"{'' if result['killed'] else ' (had finished)'}: {status}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    failed = [r for r in results if r["problems"]]
    killed = sum(r["killed"] for r in results)
    summary = {"trials": len(results), "killed_mid_run": killed, "failed": len(failed), "seed": args.seed,
               "stages": stages, "failures": failed}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(f"crashtest: {len(results)} trials ({killed} killed mid-run), {len(results) - len(failed)} passed, "
              f"{len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
