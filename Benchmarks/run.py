"""`make bench`: runs every Benchmarks/bench_*.py side by side with its peer, one after another, in one run.

Usage: python Benchmarks/run.py --bin .build/release/vlmdata [--quick] [--only ingest,text,...]

The benchmarks' fixtures and in-process timers are `vlmdata-bench`, built beside `--bin` (`make bench` builds both).
"""
import argparse
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    only = {s for s in a.only.split(",") if s}
    bench = pathlib.Path(a.bin).resolve().parent / "vlmdata-bench"
    if not bench.exists():
        sys.exit(f"run.py: {bench} is missing; build it with `swift build -c release --product vlmdata-bench` (make bench does)")
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        area = script.stem.removeprefix("bench_")
        if only and area not in only:
            continue
        print(f"\n=== {area} ({script.name}) ===", flush=True)
        cmd = [sys.executable, str(script), "--bin", str(pathlib.Path(a.bin).resolve()),
               "--work", str(HERE.parent / "bench-work" / area)]
        if a.quick:
            cmd.append("--quick")
        start = time.time()
        if subprocess.run(cmd).returncode != 0:
            failed.append(area)
        print(f"--- {area}: {time.time() - start:.0f} s", flush=True)
    if failed:
        print("benchmarks that failed: " + ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
