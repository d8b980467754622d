"""`vlmdata ingest urls` against real servers on loopback: Debian's nginx serving image files and a small fault
server (Tests/support/url_fault_server.py). Every fault gets its status, good images are stored once, a rerun sends
no request, --retry-failed retries only failures, and a SIGKILL mid-run then a rerun equals a clean run."""
import gzip
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SHARED, run

NGINX_SCRIPT = ROOT / "Tests" / "support" / "nginx_loopback.sh"
FAULT_SERVER = ROOT / "Tests" / "support" / "url_fault_server.py"
SAMPLE = SHARED / "llava" / "pretrain-sample"


def rows(ws, sql, *args):
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def docroot(tmp_path_factory):
    """The 50 sample JPEGs and three PNG photos, under one folder both servers serve."""
    root = tmp_path_factory.mktemp("docroot")
    for image in sorted((SAMPLE / "images").rglob("*.jpg")):
        shutil.copy(image, root / image.name)
    for name in ["brick.png", "camera.png", "coffee.png"]:
        shutil.copy(SHARED / "photos" / name, root / name)
    return root


@pytest.fixture(scope="module")
def nginx(docroot, tmp_path_factory):
    if not (os.path.exists("/usr/sbin/nginx") or shutil.which("nginx")):
        pytest.skip("nginx is not installed (make deps installs nginx-light)")
    work = tmp_path_factory.mktemp("nginx")
    port = subprocess.run(["sh", str(NGINX_SCRIPT), "start", str(docroot), str(work)],
                          capture_output=True, text=True, check=True).stdout.strip()
    yield f"http://127.0.0.1:{port}", work / "logs" / "access.log"
    subprocess.run(["sh", str(NGINX_SCRIPT), "stop", str(work)], check=False)


@pytest.fixture(scope="module")
def faults(docroot, tmp_path_factory):
    portfile = tmp_path_factory.mktemp("faults") / "port"
    proc = subprocess.Popen([sys.executable, str(FAULT_SERVER), str(docroot), str(portfile)])
    for _ in range(100):
        if portfile.exists():
            break
        time.sleep(0.05)
    base = f"http://127.0.0.1:{portfile.read_text()}"
    yield base
    proc.terminate()
    proc.wait(timeout=10)


def fault_requests(faults):
    import urllib.request
    with urllib.request.urlopen(f"{faults}/__requests") as r:
        return int(r.read())


def nginx_requests(log):
    return len(log.read_text().splitlines()) if log.exists() else 0


def jpgs(docroot):
    return sorted(p.name for p in docroot.glob("*.jpg"))


def fault_list(nginx_base, faults, docroot):
    """(url, caption, expected status) for every case the issue names."""
    j = jpgs(docroot)
    return [
        (f"{nginx_base}/{j[0]}", "a good jpeg", "ok"),
        (f"{nginx_base}/{j[1]}", "another good jpeg, with a comma", "ok"),
        (f"{nginx_base}/brick.png", "a good png", "ok"),
        (f"{nginx_base}/missing.jpg", "not there", "http_error"),
        (f"{faults}/status/500", "server error", "http_error"),
        (f"{faults}/redirect/3/{j[2]}", "three redirects", "ok"),
        (f"{faults}/loop", "redirect loop", "redirect_loop"),
        (f"{faults}/trickle", "slow trickle", "timeout"),
        (f"{faults}/stall", "stalled", "stalled"),
        (f"{faults}/endless", "endless body", "too_large"),
        (f"{faults}/html", "html as image/jpeg", "not_image"),
        (f"{faults}/truncated/{j[3]}", "truncated jpeg", "decode_error"),
        (f"{faults}/noai/{j[4]}", "opted out", "opted_out"),
        (f"{nginx_base}/{j[0]}", "the first URL again", "duplicate"),
        ("http://127.0.0.1:1/x.jpg", "unreachable port", "connect_error"),
        ("http://nonexistent.invalid/x.jpg", "a name that cannot resolve (RFC 6761)", "dns_error"),
        ("file:///etc/passwd", "a file URL", "refused"),
        (f"{faults}/to-file", "redirect to file://", "refused"),
        (f"{faults}/file/{j[0]}", "same bytes, another URL", "ok"),
    ]


def csv_field(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def write_csv(path, cases, extra_lines=b""):
    body = "url,caption\n" + "".join(f"{csv_field(u)},{csv_field(c)}\n" for u, c, _ in cases)
    path.write_bytes(body.encode() + extra_lines)


FAST = ["--timeout", "3s", "--stall", "1s", "--max-bytes", "1MB", "--retries", "0", "--concurrency", "16"]


def ingest(vlmdata_bin, ws, *args, check=True):
    return run(vlmdata_bin, "ingest", "urls", "--workspace", ws, "--quiet", "--json", *args, check=check)


@pytest.fixture(scope="module")
def fault_run(vlmdata_bin, nginx, faults, docroot, tmp_path_factory):
    nginx_base, log = nginx
    tmp = tmp_path_factory.mktemp("faultrun")
    cases = fault_list(nginx_base, faults, docroot)
    listing = tmp / "list.csv"
    # Three malformed lines after the good ones: bad quoting, no URL, invalid UTF-8.
    write_csv(listing, cases, b'"http://x/1.jpg,unterminated\n,no url here\n' + f"{nginx_base}/{jpgs(docroot)[5]},caf\xe9\n".encode("latin-1"))
    ws = tmp / "ws"
    result = ingest(vlmdata_bin, ws, listing, "--split", "web", *FAST)
    return cases, listing, ws, result


def test_every_fault_gets_its_status(fault_run):
    cases, listing, ws, result = fault_run
    got = dict(rows(ws, "SELECT line, status FROM urls"))
    for line, (url, _, expected) in enumerate(cases, start=2):
        assert got.get(line) == expected, f"line {line} {url}: {got.get(line)} != {expected}"
    report = json.loads(result.stdout)
    assert report["counts"]["ok"] == 5
    # The malformed lines are named by file and line on stderr and skipped.
    n = len(cases) + 1
    for line in (n + 1, n + 2, n + 3):
        assert f"{listing}" in result.stderr and f"line {line}" in result.stderr, result.stderr
    assert "not valid UTF-8" in result.stderr
    assert "file:///etc/passwd" in result.stderr


def test_dns_error_is_quick_and_does_not_depend_on_the_resolver(vlmdata_bin, tmp_path):
    """A name that does not resolve is `dns_error` whether the resolver says so (NXDOMAIN) or never answers: the
    connect deadline bounds the lookup, and a lookup cut short by it is still a DNS failure, not a `timeout`. With a
    1 ms deadline the lookup is almost always cut short, so both paths are exercised here on any machine."""
    listing = tmp_path / "dns.tsv"
    listing.write_text("url\tcaption\n" + "".join(f"http://host{i}.nonexistent.invalid/x.jpg\tcaption {i}\n" for i in range(4)))
    for timeout in ("1ms", "3s"):
        ws = tmp_path / f"ws-{timeout}"
        start = time.monotonic()
        ingest(vlmdata_bin, ws, listing, "--timeout", timeout, "--retries", "1")
        elapsed = time.monotonic() - start
        got = rows(ws, "SELECT status, error FROM urls ORDER BY line")
        assert [s for s, _ in got] == ["dns_error"] * 4, got
        assert all("resolv" in e.lower() for _, e in got), got
        assert elapsed < 15, f"{elapsed:.1f} s for 4 names that do not resolve (--timeout {timeout})"


def syscalls(trace):
    """(kind, paths) of each fsync and rename in an `strace -f -y` log, in the order they finished."""
    import re
    events, pending = [], {}
    for line in trace.read_text().splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if "<unfinished ...>" in rest:
            pending[pid] = rest
            continue
        if "resumed>" in rest:
            rest = pending.pop(pid, "").replace("<unfinished ...>", "") + rest.split("resumed>", 1)[1]
        if not rest.rstrip().endswith("= 0"):
            continue
        if rest.startswith("fsync("):
            events.append(("fsync", re.findall(r"<([^>]*)>", rest)[:1]))
        elif rest.startswith("rename"):
            events.append(("rename", re.findall(r'"([^"]*)"', rest)))
    return events


def test_every_image_file_is_fsynced_before_its_rename_and_its_folder_after(vlmdata_bin, nginx, docroot, tmp_path):
    """Durability: each body is fsynced under its temporary name, renamed, then its folder is fsynced (and blobs/,
    once its 256 folders are made), all before the run reports success; --no-fsync does none of it."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    nginx_base, _ = nginx
    listing = tmp_path / "list.tsv"
    listing.write_text("url\tcaption\n" + "".join(f"{nginx_base}/{name}\tcaption {name}\n" for name in jpgs(docroot)[:8]))
    for sync in (True, False):
        ws = tmp_path / f"ws-{sync}"
        trace = tmp_path / f"trace-{sync}.txt"
        subprocess.run([strace, "-f", "-qq", "-y", "-e", "trace=fsync,rename,renameat,renameat2", "-o", trace,
                        vlmdata_bin, "ingest", "urls", "--workspace", ws, "--quiet", listing,
                        *([] if sync else ["--no-fsync"])], check=True, capture_output=True)
        blobs = sorted(str(p.resolve()) for p in (ws / "blobs").rglob("*.jpg"))
        assert len(blobs) == 8 and rows(ws, "SELECT COUNT(*) FROM urls WHERE status = 'ok'") == [(8,)]
        events = syscalls(trace)
        renames = {paths[1]: i for i, (kind, paths) in enumerate(events) if kind == "rename" and len(paths) == 2}
        synced = [(i, paths[0]) for i, (kind, paths) in enumerate(events) if kind == "fsync" and paths]
        for blob in blobs:
            assert blob in renames, f"{blob} was not renamed into place"
            r = renames[blob]
            source = events[r][1][0]
            before = [p for i, p in synced if i < r and p == source]
            after = [p for i, p in synced if i > r and p == os.path.dirname(blob)]
            if sync:
                assert before, f"{source} was not fsynced before its rename to {blob}"
                assert after, f"{os.path.dirname(blob)} was not fsynced after {blob} was renamed into it"
            else:
                assert not before and not after
        if sync:
            assert str((ws / "blobs").resolve()) in {p for _, p in synced}, "the folder holding the new ab/ folders"


def test_good_images_are_stored_once_and_usable(fault_run):
    _, _, ws, _ = fault_run
    ok = rows(ws, "SELECT sha256, width, height, http_status, final_url, attempts FROM urls WHERE status = 'ok'")
    shas = {r[0] for r in ok}
    assert len(ok) == 5 and len(shas) == 4          # two URLs of the same bytes share one file
    blobs = [p for p in (ws / "blobs").rglob("*") if p.is_file()]
    assert sorted(p.stem for p in blobs) == sorted(shas)
    for sha, w, h, code, final, attempts in ok:
        assert w > 0 and h > 0 and code == 200 and attempts == 1
    redirected = rows(ws, "SELECT final_url FROM urls WHERE url LIKE '%/redirect/3/%'")[0][0]
    assert "/file/" in redirected
    # Images and captions exactly like COCO's: one ok image row per ok URL with its caption.
    images = rows(ws, "SELECT images.key, images.location, images.sha256, captions.text FROM images "
                      "JOIN captions ON captions.image_id = images.id WHERE images.status = 'ok'")
    assert len(images) == 5
    for key, location, sha, text in images:
        assert key.startswith("web_") and pathlib.Path(location).exists() and sha in location
    import hashlib
    for p in blobs:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.stem
    assert rows(ws, "SELECT error FROM urls WHERE status = 'duplicate'")[0][0].startswith("same URL as web_")


def test_stats_json_has_urls(vlmdata_bin, fault_run):
    cases, _, ws, _ = fault_run
    stats = json.loads(run(vlmdata_bin, "stats", "--workspace", ws, "--json").stdout)["urls"]
    assert stats["total"] == len(cases) and stats["ok"] == 5
    assert stats["failed"]["http_error"] == 2 and stats["failed"]["refused"] == 2
    assert sum(stats["failed"].values()) == len(cases) - 5


def test_rerun_sends_no_request_and_retry_failed_retries_only_failures(vlmdata_bin, nginx, faults, fault_run):
    cases, listing, ws, _ = fault_run
    _, log = nginx
    before = (fault_requests(faults), nginx_requests(log))
    report = json.loads(ingest(vlmdata_bin, ws, listing, "--split", "web", *FAST).stdout)
    assert report["counts"]["fetched"] == 0 and report["counts"]["already_done"] == len(cases)
    assert (fault_requests(faults), nginx_requests(log)) == before

    report = json.loads(ingest(vlmdata_bin, ws, listing, "--split", "web", *FAST,
                               "--retry-failed", "--retry-status", "http_error").stdout)
    assert report["counts"]["fetched"] == 2                      # the 404 and the 500, nothing else
    assert (fault_requests(faults) - before[0], nginx_requests(log) - before[1]) == (1, 1)
    assert sorted(r[0] for r in rows(ws, "SELECT attempts FROM urls WHERE status = 'http_error'")) == [2, 2]

    before = fault_requests(faults)
    report = json.loads(ingest(vlmdata_bin, ws, listing, "--split", "web", *FAST, "--retry-failed").stdout)
    failed = sum(1 for _, _, s in cases if s not in ("ok", "duplicate", "refused"))
    assert report["counts"]["fetched"] == failed
    assert dict(rows(ws, "SELECT status, COUNT(*) FROM urls GROUP BY status"))["ok"] == 5


def dump(ws):
    """The catalog's content, independent of commit order."""
    urls = rows(ws, "SELECT key, url, caption, line, status, http_status, final_url, bytes, width, height, sha256 "
                    "FROM urls ORDER BY key")
    images = rows(ws, "SELECT key, file_name, sha256, byte_size, width, height, format, status FROM images ORDER BY key")
    captions = rows(ws, "SELECT images.key, captions.text FROM captions JOIN images ON images.id = captions.image_id "
                        "ORDER BY images.key")
    blobs = sorted(str(p.relative_to(ws / "blobs")) for p in (ws / "blobs").rglob("*") if p.is_file())
    return urls, images, captions, blobs


def test_sigkill_mid_run_then_rerun_equals_clean_run(vlmdata_bin, faults, docroot, tmp_path):
    j = jpgs(docroot)
    listing = tmp_path / "slow.tsv.gz"
    with gzip.open(listing, "wt") as f:
        f.write("url\tcaption\n")
        for i in range(48):
            f.write(f"{faults}/slow/0.4/{j[i % len(j)]}?n={i}\tcaption {i}\n")
    args = ["--split", "slow", "--concurrency", "6", "--timeout", "10s", "--retries", "0"]
    clean = tmp_path / "clean"
    ingest(vlmdata_bin, clean, listing, *args)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([vlmdata_bin, "ingest", "urls", "--workspace", killed, "--quiet", listing, *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        time.sleep(0.2)
        if (killed / "catalog.sqlite").exists() and rows(killed, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'urls'")[0][0]:
            if 6 <= rows(killed, "SELECT COUNT(*) FROM urls")[0][0] < 40:
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = rows(killed, "SELECT COUNT(*) FROM urls")[0][0]
    assert 0 < done < 48, f"killed after {done} of 48 results: not mid-run"
    report = json.loads(ingest(vlmdata_bin, killed, listing, *args).stdout)
    assert report["counts"]["already_done"] == done and report["counts"]["fetched"] == 48 - done
    assert dump(killed) == dump(clean)
    assert not any((killed / "blobs" / "tmp").iterdir())


def test_list_formats_and_parquet_advice(vlmdata_bin, nginx, docroot, tmp_path):
    nginx_base, _ = nginx
    j = jpgs(docroot)
    jl = tmp_path / "list.jsonl"
    jl.write_text("".join(json.dumps({"id": f"k{i}", "image_url": f"{nginx_base}/{j[i]}", "text": f"cap {i}"}) + "\n"
                          for i in range(3)) + "[1, 2]\n")
    ws = tmp_path / "ws"
    result = ingest(vlmdata_bin, ws, jl, "--url-col", "image_url", "--caption-col", "text", "--key-col", "id",
                    "--split", "jl")
    assert sorted(r[0] for r in rows(ws, "SELECT key FROM urls WHERE status = 'ok'")) == ["jl_k0", "jl_k1", "jl_k2"]
    assert f"{jl}" in result.stderr and "line 4" in result.stderr and "not a JSON object" in result.stderr
    pq = tmp_path / "list.parquet"
    pq.write_bytes(b"PAR1")
    bad = ingest(vlmdata_bin, ws, pq, check=False)
    assert bad.returncode != 0 and "pyarrow" in bad.stderr
    try:
        import pyarrow  # noqa: F401  (installed with the benchmarks' img2dataset; the docs' one-liner needs it)
    except ImportError:
        pyarrow = None
    if pyarrow is not None:
        import pyarrow as pa
        import pyarrow.parquet as pqm
        pqm.write_table(pa.table({"url": [f"{nginx_base}/{j[7]}"], "caption": ["from parquet"]}), pq)
        line = next(l for l in (ROOT / "docs" / "urls.md").read_text().splitlines() if "import pyarrow.parquet" in l)
        command = line.strip().replace("LIST.parquet", str(pq)).replace("LIST.csv", str(tmp_path / "from-parquet.csv"))
        subprocess.run(command.replace("python ", f"{sys.executable} ", 1), shell=True, check=True)
        ingest(vlmdata_bin, ws, tmp_path / "from-parquet.csv", "--split", "pq")
        assert rows(ws, "SELECT status, caption FROM urls WHERE key LIKE 'pq_%'") == [("ok", "from parquet")]
    part = [json.loads(ingest(vlmdata_bin, tmp_path / f"p{i}", jl, "--url-col", "image_url", "--key-col", "id",
                              "--split", "jl", "--part", f"{i}/2").stdout)["counts"]["listed"] for i in range(2)]
    assert sum(part) == 3
    # The parts merged: every record's urls row (status, image) is in the merged catalog, as in one workspace.
    merged = tmp_path / "merged"
    run(vlmdata_bin, "catalog", "merge", merged, tmp_path / "p0", tmp_path / "p1")
    assert rows(merged, "SELECT u.key, u.status, i.key FROM urls u JOIN images i ON i.id = u.image_id ORDER BY u.key") == \
        [("jl_k0", "ok", "jl_k0"), ("jl_k1", "ok", "jl_k1"), ("jl_k2", "ok", "jl_k2")]
    stats = json.loads(run(vlmdata_bin, "stats", "--workspace", merged, "--json").stdout)
    assert stats["urls"]["total"] == 3 and stats["urls"]["ok"] == 3


def test_llava_pretrain_recipe_from_a_url_list(vlmdata_bin, nginx, docroot, tmp_path):
    """Pipelines/llava-pretrain.yaml on the 50 sample images served by nginx: plain pre-training samples."""
    nginx_base, _ = nginx
    records = json.loads((SAMPLE / "blip_laion_cc_sbu_first50.json").read_text())
    listing = tmp_path / "pretrain-urls.tsv"
    listing.write_text("url\tcaption\n" + "".join(
        f"{nginx_base}/{pathlib.Path(r['image']).name}\t{r['conversations'][1]['value']}\n" for r in records))
    ws = tmp_path / "ws"
    run(vlmdata_bin, "run", ROOT / "Pipelines" / "llava-pretrain.yaml", "--workspace", ws, "--quiet",
        "--set", f"list={listing}", "--set", f"tokenizer={SHARED / 'tokenizers' / 'mistral-v1' / 'tokenizer.json'}",
        cwd=ROOT)
    stats = json.loads(run(vlmdata_bin, "stats", "--workspace", ws, "--json").stdout)
    assert stats["urls"] == {"total": 50, "ok": 50, "failed": {}}
    assert stats["samples"] == 50 and stats["instructions_by_kind"] == {"caption": 50}
    # Only the caption is supervised: the prompt is not in the plain template at all.
    sup = rows(ws, "SELECT n_supervised, n_tokens FROM tokenized")
    assert all(0 < s < n for s, n in sup)
