"""URL ingest benchmark: `vlmdata ingest urls` against img2dataset (PyPI) on the same list, same server, same concurrency.

2,000 distinct JPEG URLs (the 50 LLaVA sample images, each made distinct by a trailing counter after its end
marker) served from memory by a loopback asyncio server that adds 20 ms before every reply. Both sides write
files: vlmdata into its content-addressed blob store plus the catalog, img2dataset as "files" output with
resize_mode=no and skip_reencode (so neither decodes nor re-encodes pixels). Reported: images/s (ok images over
wall time) and peak RSS of the whole process tree (sampled every 20 ms), and the ratios.
"""
import argparse
import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # albumentations (an img2dataset dependency) asks PyPI on import
SHARED = ROOT.parent / "shared" / "data"


def make_bodies(count):
    images = sorted((SHARED / "llava" / "pretrain-sample" / "images").rglob("*.jpg"))
    bodies = {}
    for i in range(count):
        data = images[i % len(images)].read_bytes()
        bodies[f"/img/{i:06d}.jpg"] = data + f"\x00{i:06d}".encode()
    return bodies


def serve(bodies, latency, port):
    """A keep-alive HTTP/1.1 server on 127.0.0.1:port that waits `latency` seconds before each reply (one process
    of several sharing the port through SO_REUSEPORT)."""
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
                await asyncio.sleep(latency)
                body = bodies.get(path)
                if body is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(body))
                    writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024, reuse_port=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_servers(bodies, latency, processes=2):
    """The server in `processes` forked processes on one free port, away from this process's RSS sampling."""
    import multiprocessing
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=serve, args=(bodies, latency, port), daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return port, procs


def tree_rss_kib(pid):
    """Resident KiB of pid and all its descendants."""
    total = 0
    try:
        children = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    children.setdefault(int(fields[1]), []).append(int(entry))
                except OSError:
                    pass
        stack = [pid]
        while stack:
            p = stack.pop()
            try:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
            except OSError:
                pass
            stack.extend(children.get(p, []))
    except OSError:
        pass
    return total


def measure(cmd, env=None):
    """Wall seconds, peak process-tree RSS (KiB) and stdout of cmd (output goes to files: no pipe can fill)."""
    import tempfile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss_kib(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.stderr.write(err.read().decode()[-3000:])
            raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
        return wall, peak, out.read().decode()


IMG2DATASET = r'''
import sys
from img2dataset import download
listing, out, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
download(url_list=listing, input_format="tsv", url_col="url", caption_col="caption", output_format="files",
         output_folder=out, processes_count=1, thread_count=concurrency, resize_mode="no", skip_reencode=True,
         number_sample_per_shard=100000, timeout=20, retries=0, enable_wandb=False, distributor="multiprocessing",
         disallowed_header_directives=["noai", "noimageai"])
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02)
    a = ap.parse_args()
    count = 500 if a.quick else a.count
    work = pathlib.Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        import img2dataset  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False
        print("img2dataset is not installed (pip install -r Benchmarks/requirements.txt): vlmdata alone")

    bodies = make_bodies(count)
    port, servers = start_servers(bodies, a.latency)
    base = f"http://127.0.0.1:{port}"
    listing = work / "list.tsv"
    listing.write_text("url\tcaption\n" + "".join(f"{base}{p}\tcaption {i}\n" for i, p in enumerate(sorted(bodies))))

    ws = work / "vlmdata-ws"
    wall, rss, out = measure([a.bin, "ingest", "urls", "--workspace", str(ws), "--quiet", "--json", str(listing),
                              "--concurrency", str(a.concurrency), "--per-host", str(a.concurrency), "--retries", "0"])
    ok = json.loads(out)["counts"]["ok"]
    ours = ok / wall
    print(f"vlmdata ingest urls: {ok}/{count} ok in {wall:.2f} s = {ours:.0f} images/s, peak RSS {rss / 1024:.0f} MiB")
    if ok != count:
        raise SystemExit("vlmdata did not fetch every image")
    if not have_peer:
        for p in servers:
            p.terminate()
        return
    out_dir = work / "img2dataset-out"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    wall2, rss2, _ = measure([sys.executable, "-c", IMG2DATASET, str(listing), str(out_dir), str(a.concurrency)], env=env)
    ok2 = len(list(out_dir.rglob("*.jpg")))
    theirs = ok2 / wall2
    print(f"img2dataset:         {ok2}/{count} ok in {wall2:.2f} s = {theirs:.0f} images/s, peak RSS {rss2 / 1024:.0f} MiB")
    # img2dataset's own timing of its download loop, without its start-up (imports, the worker process).
    inner = sum(json.loads(p.read_text())["duration"] for p in out_dir.glob("*_stats.json"))
    print(f"img2dataset, its own download time: {inner:.2f} s = {ok2 / inner:.0f} images/s")
    print(f"ratio: {ours / theirs:.2f}x images/s end to end, {ours / (ok2 / inner):.2f}x against its download loop alone; "
          f"{rss / max(rss2, 1):.2f}x peak RSS (concurrency {a.concurrency}, {a.latency * 1000:.0f} ms added latency, {count} URLs)")
    for p in servers:
        p.terminate()


if __name__ == "__main__":
    main()
