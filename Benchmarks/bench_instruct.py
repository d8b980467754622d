#!/usr/bin/env python3
"""LLM generator throughput against the loopback test server: requests/s at concurrency K with server latency L,
against the ideal K / L, side by side with a Python thread-pool client (the way LLaVA-style generation scripts call
the OpenAI API) sending the same request bodies.

    Benchmarks/bench_instruct.py --bin .build/release/vlmdata --work bench-work/instruct [--quick]

Throughput is measured on the server's clock: from the first chat request received to the last reply sent.
"""
import argparse
import concurrent.futures
import json
import pathlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco-mini"
SERVER = ROOT / "Tests" / "support" / "llm_server.py"


class Server:
    def __init__(self, latency):
        self.process = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", "--latency", str(latency)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.base = f"http://127.0.0.1:{int(self.process.stdout.readline().split()[1])}"

    def call(self, path, data=None):
        request = urllib.request.Request(self.base + path, data=data, method="POST" if data is not None else "GET")
        return json.loads(urllib.request.urlopen(request).read())

    def stop(self):
        self.process.kill()
        self.process.wait()


def ours(bin_path, ws, server, k, model):
    server.call("/admin/reset", b"")
    subprocess.run([bin_path, "gen-instructions", "--workspace", str(ws), "--generator", "llm", "--base-url",
                    server.base + "/v1", "--model", model, "--concurrency", str(k), "--quiet", "--json"],
                   check=True, capture_output=True)
    stats = server.call("/admin/stats")
    return sum(stats["by_prompt"].values()), stats["window_seconds"]


def peer(bodies, server, k):
    """A thread pool of K workers posting the bodies with urllib (one connection per request)."""
    server.call("/admin/reset", b"")

    def post(body):
        request = urllib.request.Request(server.base + "/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        for attempt in range(5):  # a reset under many fresh connections is retried, as a real client would
            try:
                return json.loads(urllib.request.urlopen(request, timeout=60).read())
            except (ConnectionError, urllib.error.URLError):
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError("peer request failed 5 times")

    with concurrent.futures.ThreadPoolExecutor(k) as pool:
        list(pool.map(post, bodies))
    stats = server.call("/admin/stats")
    return sum(stats["by_prompt"].values()), stats["window_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=str(ROOT / ".build" / "release" / "vlmdata"))
    parser.add_argument("--work", default=str(ROOT / "bench-work" / "instruct"))
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ks = [int(k) for k in args.concurrency.split(",")]
    if args.quick:
        ks, args.repeat = [4, 16], 1
    work = pathlib.Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    base_ws = work / "base"
    subprocess.run([args.bin, "ingest", "coco", "--workspace", str(base_ws), "--quiet", "--split", "train2017",
                    "--captions", str(COCO / "annotations" / "captions_train2017.json"),
                    "--instances", str(COCO / "annotations" / "instances_train2017.json"),
                    "--images", str(COCO / "train2017")], check=True, capture_output=True)
    server = Server(args.latency)
    print(f"server latency {args.latency:.3f} s; 80 coco-mini images x 3 kinds = 240 requests per run; "
          f"median of {args.repeat}")
    print(f"{'K':>4} {'ideal r/s':>10} {'ours r/s':>10} {'ours/ideal':>11} {'peer r/s':>10} {'ours/peer':>10}")
    results = []
    try:
        for k in ks:
            ours_rates, peer_rates = [], []
            for rep in range(args.repeat):
                ws = work / f"k{k}-{rep}"
                shutil.copytree(base_ws, ws)
                n, window = ours(args.bin, ws, server, k, f"bench-k{k}-r{rep}")
                ours_rates.append(n / window)
                db = sqlite3.connect(ws / "catalog.sqlite")
                bodies = [row[0].encode() for row in db.execute("SELECT request FROM llm_calls ORDER BY request_hash")]
                db.close()
                n, window = peer(bodies, server, k)
                peer_rates.append(n / window)
                shutil.rmtree(ws)
            ideal = k / args.latency
            o, p = statistics.median(ours_rates), statistics.median(peer_rates)
            results.append({"k": k, "ideal": ideal, "ours": o, "peer": p})
            print(f"{k:>4} {ideal:>10.1f} {o:>10.1f} {o / ideal:>10.1%} {p:>10.1f} {o / p:>10.2f}")
    finally:
        server.stop()
    worst = min(r["ours"] / r["ideal"] for r in results)
    print(f"lowest ours/ideal: {worst:.1%} (goal >= 90%)")


if __name__ == "__main__":
    main()
