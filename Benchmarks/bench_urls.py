"""URL ingest benchmark: `vlmdata ingest urls` against img2dataset (PyPI) on the same list, same server, same concurrency.

The server is Debian's nginx with the echo module (`libnginx-mod-http-echo`): every `/img/N.jpg` request waits 20 ms
(`echo_sleep`, a timer, no thread held) and is then served from disk by an internal redirect. 2,000 distinct JPEG
files (the 50 LLaVA sample images, each made distinct by a trailing counter after its end marker). Before the
clients run, `wrk` (a separate C load generator) measures what the server answers at the bench's concurrency and at
8x it, and nginx's own CPU time is read during every client run: the server is shown not to be the bound.

Both clients write files: vlmdata into its content-addressed blob store plus the catalog (once with fsync of every
blob, as it ships, and once with --no-fsync, to show what durability costs), img2dataset as "files" output with
resize_mode=no and skip_reencode (it still decodes every image once with OpenCV to read its size). The runs
alternate (vlmdata, vlmdata --no-fsync, img2dataset) `--runs` times; medians are reported. Figures: images/s (ok
images over wall time), img2dataset's own download-loop time (its stats' `duration`, without its ~20 s of imports
and worker start-up), CPU seconds (user + sys of the process tree), and peak RSS of the process tree (sampled every
20 ms).
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # albumentations (an img2dataset dependency) asks PyPI on import
SHARED = ROOT.parent / "shared" / "data"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
NEEDS = "apt-get install nginx-light libnginx-mod-http-echo wrk (make bench installs them)"


def make_docroot(root, count):
    """count distinct JPEG files under root/img/: the sample images with a counter after the end marker."""
    images = sorted((SHARED / "llava" / "pretrain-sample" / "images").rglob("*.jpg"))
    (root / "img").mkdir(parents=True)
    names = []
    for i in range(count):
        name = f"{i:06d}.jpg"
        (root / "img" / name).write_bytes(images[i % len(images)].read_bytes() + f"\x00{i:06d}".encode())
        names.append(name)
    return names


def nginx_binary():
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise SystemExit(f"bench_urls: nginx is missing: {NEEDS}")


def start_nginx(docroot, work, latency):
    """nginx on a free loopback port, 2 workers, `latency` seconds added to every /img/ request. Returns
    (base URL, pid file)."""
    import socket
    if not os.path.exists(ECHO_MODULE):
        raise SystemExit(f"bench_urls: {ECHO_MODULE} is missing: {NEEDS}")
    work.mkdir(parents=True)
    (work / "logs").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = "user root;" if os.getuid() == 0 else ""
    (work / "nginx.conf").write_text(f"""
load_module {ECHO_MODULE};
{user}
worker_processes 2;
daemon on;
pid {work}/nginx.pid;
error_log {work}/logs/error.log;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        location /img/ {{ echo_sleep {latency:.3f}; echo_exec /files$uri; }}
        location /files/ {{ internal; alias {docroot}/; }}
    }}
}}
""")
    subprocess.run([nginx_binary(), "-p", str(work), "-c", str(work / "nginx.conf"), "-e", str(work / "logs" / "error.log")],
                   check=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return base, work / "nginx.pid"


def stop_nginx(pidfile):
    if pidfile.exists():
        subprocess.run(["kill", pidfile.read_text().strip()], check=False)


def cpu_seconds(pids):
    """User + system seconds used so far by these processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def nginx_workers(pidfile, count=2):
    """The worker processes' ids (waits for the master to start them)."""
    for _ in range(100):
        master = pidfile.read_text().strip() if pidfile.exists() else ""
        if master:
            out = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True).stdout.split()
            if len(out) >= count:
                return [int(p) for p in out]
        time.sleep(0.05)
    raise SystemExit(f"bench_urls: nginx did not start {count} workers (see {pidfile.parent}/logs/error.log)")


def wrk(url, connections, seconds=2):
    """Requests/s wrk reaches against url with this many keep-alive connections."""
    if not shutil.which("wrk"):
        raise SystemExit(f"bench_urls: wrk is missing: {NEEDS}")
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("Requests/sec:"))
    latency = next((l.split()[1] for l in out.splitlines() if l.strip().startswith("Latency")), "?")
    return float(line.split()[1]), latency


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except OSError:
                pass
    found, stack = [], [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(children.get(p, []))
    return found


def tree_rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            pass
    return total


def measure(cmd, env=None):
    """Wall seconds, peak process-tree RSS (KiB), CPU seconds (user + sys of the process and the children it
    waited for) and stdout of cmd (output goes to files: no pipe can fill)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss_kib(tree(proc.pid)))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.stderr.write(err.read().decode()[-3000:])
            raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
        return wall, peak, usage.ru_utime + usage.ru_stime, out.read().decode()


IMG2DATASET = r'''
import sys
from img2dataset import download
listing, out, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
download(url_list=listing, input_format="tsv", url_col="url", caption_col="caption", output_format="files",
         output_folder=out, processes_count=1, thread_count=concurrency, resize_mode="no", skip_reencode=True,
         number_sample_per_shard=100000, timeout=20, retries=0, enable_wandb=False, distributor="multiprocessing",
         disallowed_header_directives=["noai", "noimageai"])
'''


# Every run writes into a folder of its own, all removed at the end: a folder removed just before a run would make
# ext4 search past its not yet committed free inodes (`recently_deleted`) for every new file, which costs whichever
# side runs next, and more without fsync (nothing commits the journal).
def run_vlmdata(a, work, listing, count, fsync, server_pids, run):
    ws = work / f"vlmdata-ws-{'fsync' if fsync else 'nofsync'}-{run}"
    before = cpu_seconds(server_pids)
    cmd = [a.bin, "ingest", "urls", "--workspace", str(ws), "--quiet", "--json", str(listing),
           "--concurrency", str(a.concurrency), "--per-host", str(a.concurrency), "--retries", "0"]
    if not fsync:
        cmd.append("--no-fsync")
    wall, rss, cpu, out = measure(cmd)
    ok = json.loads(out)["counts"]["ok"]
    if ok != count:
        raise SystemExit(f"vlmdata fetched {ok} of {count} images")
    return {"wall": wall, "rate": ok / wall, "rss": rss / 1024, "cpu": cpu, "server_cpu": cpu_seconds(server_pids) - before}


def run_img2dataset(a, work, listing, count, server_pids, run):
    out_dir = work / f"img2dataset-out-{run}"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    before = cpu_seconds(server_pids)
    wall, rss, cpu, _ = measure([sys.executable, "-c", IMG2DATASET, str(listing), str(out_dir), str(a.concurrency)], env=env)
    ok = len(list(out_dir.rglob("*.jpg")))
    if ok != count:
        raise SystemExit(f"img2dataset fetched {ok} of {count} images")
    # img2dataset's own timing of its download loop, without its start-up (imports, the worker process).
    loop = sum(json.loads(p.read_text())["duration"] for p in out_dir.glob("*_stats.json"))
    return {"wall": wall, "rate": ok / wall, "loop": loop, "loop_rate": ok / loop, "rss": rss / 1024, "cpu": cpu,
            "server_cpu": cpu_seconds(server_pids) - before}


def median(runs, field):
    return statistics.median(r[field] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each side; medians are reported")
    ap.add_argument("--no-peer", action="store_true", help="vlmdata alone (with and without fsync)")
    a = ap.parse_args()
    count = 500 if a.quick else a.count
    runs = 1 if a.quick else a.runs
    work = pathlib.Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    have_peer = not a.no_peer
    if have_peer:
        try:
            import img2dataset  # noqa: F401
        except ImportError:
            have_peer = False
            print("img2dataset is not installed (pip install -r Benchmarks/requirements.txt): vlmdata alone")

    docroot = work / "docroot"
    names = make_docroot(docroot, count)
    base, pidfile = start_nginx(docroot, work / "nginx", a.latency)
    try:
        listing = work / "list.tsv"
        listing.write_text("url\tcaption\n" + "".join(f"{base}/img/{n}\tcaption {i}\n" for i, n in enumerate(names)))
        server_pids = nginx_workers(pidfile)
        probe = f"{base}/img/{names[0]}"
        bound = a.concurrency / a.latency
        at_c, lat_c = wrk(probe, a.concurrency)
        at_8c, lat_8c = wrk(probe, 8 * a.concurrency)
        print(f"server: nginx + echo_sleep {a.latency * 1000:.0f} ms, 2 workers; wrk: {at_c:.0f} req/s at "
              f"{a.concurrency} connections (mean latency {lat_c}; latency bound {bound:.0f}/s), {at_8c:.0f} req/s at "
              f"{8 * a.concurrency} (mean latency {lat_8c})", flush=True)

        ours, unsynced, theirs = [], [], []
        for i in range(runs):
            ours.append(run_vlmdata(a, work, listing, count, True, server_pids, i))
            unsynced.append(run_vlmdata(a, work, listing, count, False, server_pids, i))
            if have_peer:
                theirs.append(run_img2dataset(a, work, listing, count, server_pids, i))
            line = (f"run {i + 1}: vlmdata {ours[-1]['rate']:.0f}/s ({ours[-1]['cpu']:.2f} CPU-s), "
                    f"--no-fsync {unsynced[-1]['rate']:.0f}/s ({unsynced[-1]['cpu']:.2f} CPU-s)")
            if theirs:
                line += (f", img2dataset {theirs[-1]['rate']:.0f}/s end to end, {theirs[-1]['loop_rate']:.0f}/s in its "
                         f"loop ({theirs[-1]['cpu']:.1f} CPU-s)")
            print(line, flush=True)

        def report(name, runs_):
            print(f"{name}: {count} ok in {median(runs_, 'wall'):.2f} s = {median(runs_, 'rate'):.0f} images/s, "
                  f"{median(runs_, 'cpu'):.2f} CPU-s, peak RSS {median(runs_, 'rss'):.0f} MiB, server CPU "
                  f"{median(runs_, 'server_cpu'):.2f} s (medians of {len(runs_)})")
        report("vlmdata ingest urls", ours)
        report("vlmdata ingest urls --no-fsync", unsynced)
        fastest = max(median(ours, "rate"), median(unsynced, "rate"))
        print(f"fsync of every blob: {median(ours, 'rate'):.0f} vs {median(unsynced, 'rate'):.0f} images/s without "
              f"({median(ours, 'rate') / median(unsynced, 'rate'):.2f}x the rate), {median(ours, 'cpu'):.2f} vs "
              f"{median(unsynced, 'cpu'):.2f} CPU-s")
        if theirs:
            report("img2dataset", theirs)
            print(f"img2dataset, its own download loop: {median(theirs, 'loop'):.2f} s = {median(theirs, 'loop_rate'):.0f} images/s")
            fastest = max(fastest, median(theirs, "loop_rate"))
        print(f"server headroom: wrk reached {at_8c:.0f} req/s, {at_8c / fastest:.1f}x the fastest client "
              f"({fastest:.0f}/s){'' if at_8c >= 5 * fastest else ' -- under 5x: the server may bound the clients'}; "
              f"at {a.concurrency} connections it reached {at_c:.0f} req/s ({at_c / fastest:.1f}x)")
        if theirs:
            ours_rate = median(ours, "rate")
            print(f"ratio: {ours_rate / median(theirs, 'rate'):.2f}x images/s end to end, "
                  f"{ours_rate / median(theirs, 'loop_rate'):.2f}x against its download loop alone; "
                  f"{median(ours, 'rss') / max(median(theirs, 'rss'), 1):.2f}x peak RSS; "
                  f"{median(ours, 'cpu') / median(theirs, 'cpu'):.2f}x CPU-s (concurrency {a.concurrency}, "
                  f"{a.latency * 1000:.0f} ms added latency, {count} URLs, medians of {runs}, load {os.getloadavg()[0]:.1f})")
    finally:
        stop_nginx(pidfile)
        for output in [*work.glob("vlmdata-ws-*"), *work.glob("img2dataset-out-*")]:
            shutil.rmtree(output, ignore_errors=True)


if __name__ == "__main__":
    main()
