"""Ingest benchmark: `vlmdata ingest coco` against Python json.load + sqlite3.executemany into the same tables.

Both sides ingest captions_val2017.json (5,000 images without files, 25,014 captions) into a fresh catalog with the
same schema; each is run --repeat times and the median wall time is compared. Then both ingest a generated
instances file of about 450 MB (COCO train2017's size) and their peak RSS is reported.
"""
import argparse
import json
import pathlib
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

PY_PEER = r'''
import json, sqlite3, sys, resource, datetime
schema, ann, db = sys.argv[1], sys.argv[2], sys.argv[3]
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=WAL")
con.executescript(open(schema).read())
doc = json.load(open(ann))
con.execute("INSERT INTO sources (kind, name, uri, fingerprint, created_at) VALUES ('coco', 's', ?, '', ?)",
            (ann, datetime.datetime.now().isoformat()))
images = doc["images"]
con.executemany("INSERT INTO images (source_id, key, external_id, file_name, width, height, status) VALUES (1, ?, ?, ?, ?, ?, 'missing')",
                [("s_" + im["file_name"].rsplit(".", 1)[0], im["id"], im["file_name"], im["width"], im["height"]) for im in images])
rows = dict(con.execute("SELECT external_id, id FROM images"))
cats = doc.get("categories") or []
con.executemany("INSERT INTO categories (source_id, external_id, name, supercategory) VALUES (1, ?, ?, ?)",
                [(c["id"], c["name"], c.get("supercategory")) for c in cats])
crow = dict(con.execute("SELECT external_id, id FROM categories"))
anns = doc["annotations"]
if anns and "caption" in anns[0]:
    con.executemany("INSERT INTO captions (image_id, external_id, text) VALUES (?, ?, ?)",
                    [(rows[a["image_id"]], a["id"], a["caption"]) for a in anns])
else:
    con.executemany("INSERT INTO objects (image_id, category_id, external_id, x, y, w, h, area, iscrowd) VALUES (?,?,?,?,?,?,?,?,?)",
                    [(rows[a["image_id"]], crow[a["category_id"]], a["id"], *a["bbox"], a["area"], a["iscrowd"]) for a in anns])
con.commit()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
'''


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd):
    """(wall seconds, CPU seconds: user + system) of one run of cmd."""
    cpu = children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - cpu


def peak_rss_kib(cmd):
    """Runs cmd and returns its peak RSS in KiB (from wait4's rusage)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = __import__("os").wait4(p.pid, 0)
    assert status == 0, cmd
    return usage.ru_maxrss


def make_big_instances(path, target_mb):
    """A COCO-shaped instances file: 118k images, polygons sized so the file reaches target_mb."""
    rng = random.Random(0)
    n_images = 118_287
    with open(path, "w") as f:
        f.write('{"info": {"description": "generated"}, "images": [')
        for i in range(n_images):
            f.write(("," if i else "") + json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480}))
        f.write('], "annotations": [')
        aid = 0
        while f.tell() < target_mb * 1_000_000:
            aid += 1
            poly = [round(rng.uniform(0, 640), 2) for _ in range(40)]
            f.write(("," if aid > 1 else "") + json.dumps({
                "id": aid, "image_id": rng.randint(1, n_images), "category_id": rng.randint(1, 80), "iscrowd": 0,
                "segmentation": [poly], "area": 1234.5, "bbox": [10.0, 20.0, 30.5, 40.25]}))
        f.write('], "categories": [')
        f.write(",".join(json.dumps({"id": c, "name": f"cat{c}", "supercategory": "s"}) for c in range(1, 81)))
        f.write("]}")
    return aid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default=str(ROOT / "bench-work" / "ingest"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=450)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.repeat, a.big_mb = 2, 40
    work = pathlib.Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    schema = ROOT / "Schemas" / "catalog.sql"
    caps = SHARED / "coco-captions" / "captions_val2017.json"
    peer = work / "peer.py"
    peer.write_text(PY_PEER)

    ours, theirs = [], []
    for r in range(a.repeat):
        for d in ["ours.ws", "peer.sqlite", "peer.sqlite-wal", "peer.sqlite-shm"]:
            subprocess.run(["rm", "-rf", str(work / d)])
        ours.append(timed([a.bin, "ingest", "coco", "--workspace", str(work / "ours.ws"), "--captions", str(caps), "--split", "s", "--quiet"]))
        theirs.append(timed([sys.executable, str(peer), str(schema), str(caps), str(work / "peer.sqlite")]))
    mo, mt = statistics.median(w for w, _ in ours), statistics.median(w for w, _ in theirs)
    co, ct = statistics.median(c for _, c in ours), statistics.median(c for _, c in theirs)
    print(f"ingest captions_val2017.json (5,000 images, 25,014 captions), median of {a.repeat}, load average {__import__('os').getloadavg()[0]:.1f}:")
    print(f"  vlmdata ingest coco        {mo:7.3f} s   ({25014 / mo:9.0f} captions/s)   cpu {co:6.3f} s")
    print(f"  python json+executemany    {mt:7.3f} s   ({25014 / mt:9.0f} captions/s)   cpu {ct:6.3f} s")
    print(f"  ratio (python / vlmdata)   {mt / mo:7.2f}x   cpu {ct / co:5.2f}x")

    big = work / f"instances_big_{a.big_mb}.json"
    if not big.exists():
        n = make_big_instances(big, a.big_mb)
        print(f"generated {big.name}: {big.stat().st_size / 1e6:.0f} MB, {n} annotations")
    for d in ["big.ws", "big.sqlite", "big.sqlite-wal", "big.sqlite-shm"]:
        subprocess.run(["rm", "-rf", str(work / d)])
    t0 = time.perf_counter()
    rss_ours = peak_rss_kib([a.bin, "ingest", "coco", "--workspace", str(work / "big.ws"), "--instances", str(big), "--split", "s", "--quiet"])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    rss_peer = peak_rss_kib([sys.executable, str(peer), str(schema), str(big), str(work / "big.sqlite")])
    t_peer = time.perf_counter() - t0
    print(f"ingest of a generated {big.stat().st_size / 1e6:.0f} MB instances file:")
    print(f"  vlmdata ingest coco        peak RSS {rss_ours / 1024:8.0f} MiB   {t_ours:6.1f} s")
    print(f"  python json+executemany    peak RSS {rss_peer / 1024:8.0f} MiB   {t_peer:6.1f} s")
    print(f"  RSS ratio (python / vlmdata) {rss_peer / rss_ours:5.1f}x")


if __name__ == "__main__":
    main()
