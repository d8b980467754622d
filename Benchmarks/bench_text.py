#!/usr/bin/env python3
"""Single-thread encode throughput: vlmdata vs HF `tokenizers` vs `tiktoken` on the 25,014 COCO val2017 captions.

    Benchmarks/bench_text.py --bin .build/release/vlmdata --work /tmp/bench-text [--quick]

ours: `vlmdata-bench tokenize` times encoding in-process (tokenizer load and process start excluded; a fresh
per-word cache each pass, so the first words pay for their misses). The CLI's end-to-end `tokenizer encode` wall time
is printed too. HF: `Tokenizer.encode_batch` with Rayon limited to one thread. tiktoken: an `Encoding` built from the
GPT-2 tokenizer.json (ranks = ids of the byte strings, GPT-2's split pattern), `encode_ordinary` per caption.
Every side encodes without special tokens, and the ids are checked equal before timing.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_decoder():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def tiktoken_gpt2(path):
    import tiktoken
    data = json.loads(pathlib.Path(path).read_text())
    dec = byte_decoder()
    ranks = {}
    for token, rank in data["model"]["vocab"].items():
        if token == "<|endoftext|>":
            continue
        ranks[bytes(dec[c] for c in token)] = rank
    return tiktoken.Encoding("gpt2-from-json", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=str(ROOT / ".build" / "release" / "vlmdata"))
    parser.add_argument("--work", default="/tmp/vlmdata-bench-text")
    parser.add_argument("--quick", action="store_true", help="fewer passes")
    args = parser.parse_args()
    from tokenizers import Tokenizer

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    captions = [a["caption"].replace("\n", " ") for a in
                json.loads((SHARED / "coco-captions" / "captions_val2017.json").read_text())["annotations"]]
    lines = work / "captions.txt"
    lines.write_text("".join(c + "\n" for c in captions), encoding="utf-8")
    nbytes = sum(len(c.encode()) for c in captions)
    repeats = 3 if args.quick else 7
    print(f"corpus: {len(captions)} COCO val2017 captions, {nbytes / 1e6:.2f} MB; median of {repeats} passes, one thread")

    results = []
    for name in ("gpt2", "mistral-v1"):
        path = SHARED / "tokenizers" / name / "tokenizer.json"
        hf = Tokenizer.from_file(str(path))
        expected = [e.ids for e in hf.encode_batch(captions, add_special_tokens=False)]
        out = subprocess.run([args.bin, "tokenizer", "encode", "--tokenizer", str(path), "--lines", str(lines), "--no-special"],
                             capture_output=True, text=True, check=True)
        ours_ids = [json.loads(l) for l in out.stdout.splitlines()]
        assert ours_ids == expected, f"{name}: ids differ from HF"
        row = {"tokenizer": name}
        row["hf"] = median_time(lambda: hf.encode_batch(captions, add_special_tokens=False), repeats)
        bench = subprocess.run([os.path.join(os.path.dirname(os.path.abspath(args.bin)), "vlmdata-bench"), "tokenize", "--tokenizer", str(path), "--lines", str(lines),
                                "--repeats", str(repeats)], capture_output=True, text=True, check=True)
        row["ours"] = json.loads(bench.stdout)["seconds"]
        row["ours_cli"] = median_time(lambda: subprocess.run(
            [args.bin, "tokenizer", "encode", "--tokenizer", str(path), "--lines", str(lines), "--no-special"],
            capture_output=True, check=True), max(1, repeats // 2))
        if name == "gpt2":
            enc = tiktoken_gpt2(path)
            assert [enc.encode_ordinary(c) for c in captions] == expected, "tiktoken ids differ from HF"
            row["tiktoken"] = median_time(lambda: [enc.encode_ordinary(c) for c in captions], repeats)
        results.append(row)

    print(f"{'tokenizer':<12} {'side':<26} {'seconds':>9} {'MB/s':>8} {'vs HF':>7} {'vs tiktoken':>12}")
    for row in results:
        sides = [("HF tokenizers (1 thread)", row["hf"])]
        if "tiktoken" in row:
            sides.append(("tiktoken", row["tiktoken"]))
        sides.append(("vlmdata (in-process)", row["ours"]))
        sides.append(("vlmdata CLI (end to end)", row["ours_cli"]))
        for side, seconds in sides:
            vs_tt = f"{row['tiktoken'] / seconds:.2f}x" if "tiktoken" in row else "-"
            print(f"{row['tokenizer']:<12} {side:<26} {seconds:9.3f} {nbytes / seconds / 1e6:8.2f} "
                  f"{row['hf'] / seconds:6.2f}x {vs_tt:>12}")
    (work / "results.json").write_text(json.dumps({"bytes": nbytes, "captions": len(captions), "results": results}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
