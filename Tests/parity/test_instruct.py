"""gen-instructions and export llava end to end: truth against the COCO JSON, the LLaVA schema, the ingest llava
round trip, byte-identical seeds, and the LLM cache surviving a SIGKILL (against Tests/support/llm_server.py)."""
import hashlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import jsonschema
import pytest

from conftest import ROOT, run

COCO = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco-mini"
SCHEMA = json.loads((ROOT / "Schemas" / "instruction.schema.json").read_text())
SERVER = ROOT / "Tests" / "support" / "llm_server.py"


def ingest(bin_path, ws):
    run(bin_path, "ingest", "coco", "--workspace", ws, "--quiet", "--split", "train2017",
        "--captions", COCO / "annotations" / "captions_train2017.json",
        "--instances", COCO / "annotations" / "instances_train2017.json", "--images", COCO / "train2017")


def rows(ws, sql, *args):
    db = sqlite3.connect(f"file:{ws}/catalog.sqlite?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def templated(vlmdata_bin, tmp_path_factory):
    ws = tmp_path_factory.mktemp("tpl") / "ws"
    ingest(vlmdata_bin, ws)
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", "--seed", "4", "--per-image", "2", "--circular")
    return ws


def test_templates_answer_true_to_the_coco_json(templated):
    instances = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    by_image = {}
    for a in instances["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = {i["id"]: i for i in instances["images"]}
    checked = {"yesno": 0, "count": 0, "rec": 0, "region": 0}
    yes = no = 0
    for kind, meta, conv, ext in rows(templated, """
            SELECT i.kind, i.meta, i.conversations, m.external_id FROM instructions i JOIN images m ON m.id = i.image_id
            WHERE i.generator = 'templates'"""):
        meta, conv, anns, image = json.loads(meta), json.loads(conv), by_image.get(ext, []), images[ext]
        if kind == "mcq":
            present = {names[a["category_id"]] for a in anns}
            letter = conv[1]["value"]
            assert meta["options"]["ABCD".index(letter)] == meta["answer"]
            if meta["question"] == "presence":
                assert [o for o in meta["options"] if o in present] == [meta["answer"]]
            else:
                assert int(meta["answer"]) == sum(names[a["category_id"]] == meta["category"] for a in anns)
            continue
        items = meta["turns"] if kind == "multiturn" else [meta]
        answers = [conv[2 * i + 1]["value"] for i in range(len(items))]
        for item, answer in zip(items, answers):
            if item["type"] == "yesno":
                present = any(names[a["category_id"]] == item["category"] for a in anns)
                assert answer == ("Yes" if present else "No")
                if kind == "yesno":
                    yes, no = yes + present, no + (not present)
                checked["yesno"] += 1
            elif item["type"] == "count":
                same = [a for a in anns if names[a["category_id"]] == item["category"]]
                assert not any(a["iscrowd"] for a in same) and item["count"] == len(same)
                checked["count"] += 1
            elif item["type"] in ("rec", "region"):
                a = next(a for a in anns if a["id"] == item["object_id"])
                x, y, w, h = a["bbox"]
                W, H = image["width"], image["height"]
                box = [round(min(max(v, 0), 1), 2) for v in (x / W, y / H, (x + w) / W, (y + h) / H)]
                assert all(abs(p - q) < 0.0051 for p, q in zip(box, item["box"])), (box, item["box"])
                assert not a["iscrowd"] and names[a["category_id"]] == item["category"]
                if item["type"] == "rec":
                    assert answer == "[" + ", ".join(f"{v:.2f}" for v in item["box"]) + "]"
                checked[item["type"]] += 1
    assert all(n > 0 for n in checked.values()), checked
    assert abs(yes - no) / (yes + no) <= 0.05


def test_export_is_valid_llava_and_round_trips(vlmdata_bin, templated, tmp_path):
    out = tmp_path / "llava.json"
    run(vlmdata_bin, "export", "llava", "--workspace", templated, "--out", out, "--image-root", COCO / "train2017", "--quiet",
        "--per-instruction")
    records = json.loads(out.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(records)
    total = rows(templated, "SELECT COUNT(*) FROM instructions")[0][0]
    assert len(records) == total > 1000
    for record in records:
        assert (COCO / "train2017" / record["image"]).is_file()
        values = [t["value"] for t in record["conversations"]]
        assert values[0].count("<image>") == 1 and sum(v.count("<image>") for v in values) == 1
    only = tmp_path / "captions.json"
    run(vlmdata_bin, "export", "llava", "--workspace", templated, "--out", only, "--kinds", "caption,yesno", "--quiet",
        "--per-instruction")
    kinds = {r["id"].split("-tpl-")[1].split("-")[0] for r in json.loads(only.read_text())}
    assert kinds == {"caption", "yesno"}

    ws2 = tmp_path / "rt"
    run(vlmdata_bin, "ingest", "llava", "--workspace", ws2, "--json", out, "--images", COCO / "train2017",
        "--split", "rt", "--quiet")
    back = {key: json.loads(conv) for key, conv in rows(ws2, "SELECT key, conversations FROM instructions")}
    assert len(back) == len(records)
    for record in records:
        assert back["rt_" + record["id"]] == record["conversations"]
    images = dict(rows(ws2, "SELECT file_name, status FROM images"))
    assert set(images.values()) == {"ok"} and set(images) == {r["image"] for r in records}


def test_the_same_seed_gives_the_same_bytes(vlmdata_bin, tmp_path):
    outputs = []
    for name, seed in (("a", "9"), ("b", "9"), ("c", "10")):
        ws = tmp_path / name
        ingest(vlmdata_bin, ws)
        run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", "--seed", seed, "--per-image", "2", "--circular")
        run(vlmdata_bin, "export", "llava", "--workspace", ws, "--out", tmp_path / f"{name}.json", "--quiet")
        outputs.append((tmp_path / f"{name}.json").read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_bad_flags_fail_with_a_sentence(vlmdata_bin, tmp_path):
    result = run(vlmdata_bin, "gen-instructions", "--workspace", tmp_path, "--generator", "llm", "--model", "m", check=False)
    assert result.returncode != 0 and "--base-url" in result.stderr
    result = run(vlmdata_bin, "gen-instructions", "--workspace", tmp_path, "--kinds", "caption,poem", check=False)
    assert result.returncode != 0 and "poem" in result.stderr


class Server:
    def __init__(self, *args):
        self.process = subprocess.Popen([sys.executable, str(SERVER), "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = int(self.process.stdout.readline().split()[1])
        self.base = f"http://127.0.0.1:{self.port}"

    def stats(self):
        import urllib.request
        return json.loads(urllib.request.urlopen(self.base + "/admin/stats").read())

    def stop(self):
        self.process.kill()
        self.process.wait()


def test_llm_rerun_after_sigkill_requests_only_uncached_prompts(vlmdata_bin, tmp_path):
    key = "sk-parity-SECRET-424242"
    server = Server("--latency", "0.1", "--require-key", key)
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        args = [vlmdata_bin, "gen-instructions", "--workspace", ws, "--generator", "llm", "--base-url",
                server.base + "/v1", "--model", "test-model", "--concurrency", "4", "--quiet"]
        env = dict(os.environ, OPENAI_API_KEY=key)
        process = subprocess.Popen(list(map(str, args)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        done = 0
        while time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
            try:
                done = rows(ws, "SELECT COUNT(*) FROM llm_calls")[0][0]
            except sqlite3.OperationalError:
                continue
            if done >= 40:
                break
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = rows(ws, "SELECT COUNT(*) FROM llm_calls")[0][0]
        assert 40 <= killed_at < 240, killed_at
        # The server's key for a prompt: sha256 of the canonical `messages` (Tests/support/llm_server.py).
        cached_at_kill = {hashlib.sha256(json.dumps(json.loads(body)["messages"], sort_keys=True,
                                                    separators=(",", ":")).encode()).hexdigest()
                          for (body,) in rows(ws, "SELECT request FROM llm_calls")}

        result = run(*args, "--json", env=env)
        report = json.loads(result.stdout)
        assert report["counts"]["cached"] == killed_at
        assert report["counts"]["ok"] + killed_at == 240 and report["counts"]["failed"] == 0

        stats = server.stats()
        answered = stats["by_prompt"]
        assert len(answered) == 240 and set(answered.values()) <= {1, 2}
        # Requests in flight at the kill were sent again: those the server saw the client die on (`abandoned`), and
        # those answered just before the kill whose reply the client never got to store. Never a cached one, and at
        # most one per worker.
        answered_twice = {key for key, n in answered.items() if n == 2}
        assert not answered_twice & cached_at_kill
        resent = sum(stats["received_by_prompt"].values()) - 240
        assert resent == stats["abandoned"] + len(answered_twice) <= 4
        assert rows(ws, "SELECT COUNT(*) FROM instructions WHERE generator = 'llm'")[0][0] == 240
        assert key.encode() not in (ws / "catalog.sqlite").read_bytes()
        stats_out = run(vlmdata_bin, "stats", "--workspace", ws, "--json").stdout
        assert json.loads(stats_out)["llm_calls"]["ok"] == 240
    finally:
        server.stop()


def test_llm_budget_stops_cleanly(vlmdata_bin, tmp_path):
    server = Server()
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        base = [vlmdata_bin, "gen-instructions", "--workspace", ws, "--generator", "llm", "--base-url",
                server.base + "/v1", "--model", "m", "--kinds", "detail", "--no-auth", "--quiet", "--json"]
        first = json.loads(run(*base, "--max-requests", "10").stdout)
        assert first["counts"]["requests_sent"] == 10 and first["counts"]["skipped"] == 70
        assert any("stopped" in p for p in first["problems"])
        rest = json.loads(run(*base).stdout)
        assert rest["counts"]["cached"] == 10 and rest["counts"]["ok"] == 70
        assert set(server.stats()["by_prompt"].values()) == {1}
    finally:
        server.stop()


# -- regression tests for the reported LLM findings (issue 12 case 9, issue 18 finding 2) ---------------------------

KEY = "sk-parity-ECHOED-0a1b2c3d4e5f"


def llm_args(bin_path, ws, base, *extra):
    return [bin_path, "gen-instructions", "--workspace", ws, "--generator", "llm", "--base-url", base + "/v1",
            "--model", "m", "--quiet", *extra]


def no_key_env():
    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}


def closed_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_without_a_key_sends_nothing_unless_no_auth(vlmdata_bin, tmp_path):
    server = Server()
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        args = llm_args(vlmdata_bin, ws, server.base, "--kinds", "detail", "--limit", "2", "--json")
        refused = run(*args, check=False, env=no_key_env())
        assert refused.returncode != 0
        assert "OPENAI_API_KEY" in refused.stderr and server.base + "/v1" in refused.stderr
        assert server.stats()["total"] == 0
        allowed = run(*args, "--no-auth", env=no_key_env())
        assert json.loads(allowed.stdout)["counts"]["ok"] == 2
        assert server.stats()["auth_seen"] == 0
    finally:
        server.stop()


@pytest.mark.parametrize("failure", ["all-5xx", "closed-port"])
def test_llm_run_where_every_request_fails_exits_nonzero_without_the_key(vlmdata_bin, tmp_path, failure):
    server = Server("--echo-auth", "--fault", "status:503:100000") if failure == "all-5xx" else None
    base = server.base if server else f"http://127.0.0.1:{closed_port()}"
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        result = run(*llm_args(vlmdata_bin, ws, base, "--kinds", "detail", "--limit", "3", "--max-retries", "1",
                               "--json"), check=False, env=dict(os.environ, OPENAI_API_KEY=KEY))
        assert result.returncode != 0, result.stdout
        report = json.loads(result.stdout)
        assert report["counts"]["failed"] == 3 and report["counts"]["ok"] == 0
        expected = "HTTP 503" if server else "network"
        assert any(p.startswith("3 requests failed") and expected in p for p in report["problems"]), report["problems"]
        assert "failed" in result.stderr
        assert KEY not in result.stdout + result.stderr and "Bearer" not in result.stdout + result.stderr
        reasons = [r for (r,) in rows(ws, "SELECT reason FROM llm_calls")]
        assert len(reasons) == 3 and all(expected in r and KEY not in r and "Bearer" not in r for r in reasons)
        data = (ws / "catalog.sqlite").read_bytes()
        wal = ws / "catalog.sqlite-wal"
        assert KEY.encode() not in data + (wal.read_bytes() if wal.exists() else b"")
    finally:
        if server:
            server.stop()


def test_llm_max_tokens_is_never_exceeded(vlmdata_bin, tmp_path):
    server = Server("--latency", "0.05")
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        args = llm_args(vlmdata_bin, ws, server.base, "--concurrency", "8", "--json")
        too_small = run(*args, "--max-tokens", "2000", check=False, env=dict(os.environ, OPENAI_API_KEY=KEY))
        assert too_small.returncode != 0 and "--max-tokens 2000" in too_small.stderr
        assert server.stats()["total"] == 0
        report = json.loads(run(*args, "--max-tokens", "30000", env=dict(os.environ, OPENAI_API_KEY=KEY)).stdout)
        used = report["counts"]["prompt_tokens"] + report["counts"]["completion_tokens"]
        assert report["counts"]["ok"] >= 4 and used <= 30000, report["counts"]
        assert rows(ws, "SELECT SUM(prompt_tokens + completion_tokens) FROM llm_calls")[0][0] <= 30000
        assert any("token budget" in p for p in report["problems"])
    finally:
        server.stop()


def test_llm_rejections_are_counted_with_examples(vlmdata_bin, tmp_path):
    server = Server("--fault", "wrong_kind:5")
    try:
        ws = tmp_path / "ws"
        ingest(vlmdata_bin, ws)
        report = json.loads(run(*llm_args(vlmdata_bin, ws, server.base, "--kinds", "detail", "--limit", "8",
                                          "--json"), env=dict(os.environ, OPENAI_API_KEY=KEY)).stdout)
        assert report["counts"]["rejected"] == 5 and report["counts"]["ok"] == 3
        assert report["counts"]["rejected_wrong_kind"] == 5
        problem = next(p for p in report["problems"] if p.startswith("5 replies rejected"))
        assert "wrong_kind" in problem and "e.g. train2017_" in problem
        assert rows(ws, "SELECT COUNT(*) FROM instructions WHERE generator = 'llm'")[0][0] == 3
    finally:
        server.stop()
