"""S3 end to end against an S3-compatible server on loopback (moto's server mode, with IAM authentication on so
every request's SigV4 signature is checked): `shard --upload` (single PUT and multipart, rerun uploads only what
is missing), `catalog publish`, an epoch streamed from S3 through a cache smaller than the dataset equal to the
local epoch (keys, and bytes through the C ABI), GETs counted (each shard fetched once per epoch with a cache of
two shards), four ranks as torchrun launches them, `show` of a remote sample, and the bad input: wrong secret,
missing bucket/object, throttled upload retried, killed upload leaves no half object and is redone."""
import glob
import hashlib
import http.client
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import ROOT, run, synthetic

boto3 = pytest.importorskip("boto3")
botocore = pytest.importorskip("botocore")

SMALL = ["--tokens", "40", "--patches", "16", "--patch-dim", "48"]
# the shard layout; every later `shard --upload` on the workspace repeats it (other settings would re-shard)
LAYOUT = ["--max-samples", "12"]
BIG_LAYOUT = ["--target-size", "6MB"]
N = 96
BUCKET = "vlmdata-test"
MOTO = ROOT / ".venv" / "bin" / "moto_server"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto_server on loopback; its first 3 requests (creating an IAM user, its key and policy) are not
    authenticated, every later one is checked against that key."""
    if not MOTO.exists():
        pytest.fail("moto is not installed: .venv/bin/pip install -r scripts/requirements.txt")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3"))
    try:
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="trainer")
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        iam.put_user_policy(UserName="trainer", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        creds = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                 "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket=BUCKET)
        yield {"endpoint": endpoint, "port": port, "env": creds, "s3": s3}
    finally:
        proc.kill()
        proc.wait()
        log.close()


def s3_env(moto, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("RANK", "WORLD_SIZE")}
    env.update(moto["env"])
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ws(vlmdata_bin, bench_bin, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("s3") / "ws")
    synthetic(bench_bin, path, N, *SMALL)
    run(vlmdata_bin, "shard", "--workspace", path, *LAYOUT, "--quiet")
    return path


def shard_files(ws):
    return sorted(glob.glob(os.path.join(ws, "shards", "train-*.tar")))


def keys_of(result):
    return result.stdout.split()


def json_line(stderr):
    return json.loads([line for line in stderr.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def published(vlmdata_bin, ws, moto):
    """The workspace uploaded to s3://BUCKET/ds and its index published."""
    result = run(vlmdata_bin, "shard", "--workspace", ws, *LAYOUT, "--upload", f"s3://{BUCKET}/ds", "--json", "--quiet",
                 env=s3_env(moto))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    out = run(vlmdata_bin, "catalog", "publish", "--workspace", ws, f"s3://{BUCKET}/ds/", "--json", env=s3_env(moto))
    return {"upload": report, "index": json.loads(out.stdout)["index_url"]}


def test_upload_puts_every_shard_and_a_rerun_only_what_is_missing(vlmdata_bin, ws, moto, published):
    shards = shard_files(ws)
    assert published["upload"]["counts"]["uploaded"] == len(shards) > 3
    s3 = moto["s3"]
    for path in shards:
        name = os.path.basename(path)
        body = s3.get_object(Bucket=BUCKET, Key=f"ds/shards/{name}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(open(path, "rb").read()).hexdigest()
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        urls = dict(db.execute("SELECT name, url FROM shards"))
    assert urls == {os.path.basename(p): f"s3://{BUCKET}/ds/shards/{os.path.basename(p)}" for p in shards}
    assert published["index"] == f"s3://{BUCKET}/ds/index.sqlite"

    again = json.loads(run(vlmdata_bin, "shard", "--workspace", ws, *LAYOUT, "--upload", f"s3://{BUCKET}/ds", "--json",
                           "--quiet", env=s3_env(moto)).stdout.strip().splitlines()[-1])
    assert again["counts"]["uploaded"] == 0 and again["counts"]["already_present"] == len(shards)
    s3.delete_object(Bucket=BUCKET, Key=f"ds/shards/{os.path.basename(shards[1])}")
    s3.put_object(Bucket=BUCKET, Key=f"ds/shards/{os.path.basename(shards[2])}", Body=b"stale bytes")
    third = json.loads(run(vlmdata_bin, "shard", "--workspace", ws, *LAYOUT, "--upload", f"s3://{BUCKET}/ds", "--json",
                           "--quiet", env=s3_env(moto)).stdout.strip().splitlines()[-1])
    assert third["counts"]["uploaded"] == 2 and third["counts"]["already_present"] == len(shards) - 2


def test_epoch_from_s3_with_a_small_cache_equals_local(vlmdata_bin, ws, moto, published, tmp_path):
    shards = shard_files(ws)
    biggest = max(os.path.getsize(s) for s in shards)
    total = sum(os.path.getsize(s) for s in shards)
    cap = 3 * biggest
    assert cap < total
    local = keys_of(run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 4, "--quiet"))
    result = run(vlmdata_bin, "stream", "--index", published["index"], "--seed", 4, "--cache-dir", tmp_path / "c",
                 "--cache-size", cap, "--json", env=s3_env(moto))
    assert keys_of(result) == local
    counts = json_line(result.stderr)
    assert counts["http_gets"] >= len(shards) and counts["bytes_fetched"] >= total
    held = sum(p.stat().st_size for p in (tmp_path / "c").iterdir() if p.is_file())
    assert held <= cap
    # a --workspace that is an index URL means the same
    again = run(vlmdata_bin, "stream", "--workspace", published["index"], "--seed", 4, "--quiet",
                "--cache-dir", tmp_path / "c2", "--cache-size", cap, env=s3_env(moto))
    assert keys_of(again) == local


def test_each_shard_is_fetched_once_per_epoch_with_a_cache_of_two_shards(vlmdata_bin, ws, moto, published, tmp_path):
    shards = shard_files(ws)
    biggest = max(os.path.getsize(s) for s in shards)
    args = ["stream", "--index", published["index"], "--seed", 9, "--shuffle", "shard", "--partitions", 1, "--json",
            "--cache-dir", tmp_path / "c", "--cache-size", 2 * biggest]
    result = run(vlmdata_bin, *args, env=s3_env(moto))
    counts = json_line(result.stderr)
    assert counts["shard_fetches"] == len(shards)
    assert counts["http_gets"] == len(shards), counts
    assert counts["cache_hits"] == N - len(shards)
    assert counts["bytes_fetched"] == sum(os.path.getsize(s) for s in shards)
    assert "warning" not in result.stderr
    # one shard of cache with two decode threads: a warning, and still the right keys
    small = run(vlmdata_bin, "stream", "--index", published["index"], "--seed", 9, "--shuffle", "shard", "--partitions", 1, "--quiet",
                "--cache-dir", tmp_path / "c1", "--cache-size", biggest, env=s3_env(moto))
    assert "smaller than the prefetch window" in small.stderr
    assert keys_of(small) == keys_of(result)


def test_four_ranks_as_torchrun_launches_them_cover_the_epoch_once(vlmdata_bin, ws, moto, published, tmp_path):
    procs = []
    for rank in range(4):
        env = s3_env(moto, RANK=str(rank), WORLD_SIZE="4", LOCAL_RANK=str(rank))
        procs.append(subprocess.Popen([vlmdata_bin, "stream", "--index", published["index"], "--seed", "3", "--quiet",
                                       "--cache-dir", str(tmp_path / f"rank-{rank}"), "--cache-size", "10MB"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    parts = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        parts.append(out.split())
    assert all(len(p) == N // 4 for p in parts)
    union = [k for p in parts for k in p]
    assert len(set(union)) == N == len(union)
    local = set(keys_of(run(vlmdata_bin, "stream", "--workspace", ws, "--seed", 3, "--quiet")))
    assert set(union) == local


def test_c_abi_reads_the_same_bytes_from_the_index_url(vlmdata_bin, ws, moto, published, tmp_path, monkeypatch):
    lib = os.environ.get("VLMDATA_LIB", str(ROOT / ".build" / "release" / "libVLMDataC.so"))
    assert os.path.exists(lib), f"build the library first: swift build -c release --product VLMDataC ({lib})"
    monkeypatch.setenv("VLMDATA_LIB", lib)
    for name, value in s3_env(moto).items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    import sys
    sys.path.insert(0, str(ROOT / "python"))
    import numpy as np
    from vlmdata.loader import Loader

    def samples(source, **kw):
        loader = Loader(source, seed=5, **kw)
        out = [(s["key"], s["input_ids"].tobytes(), s["labels"].tobytes(),
                None if s["pixels"] is None else np.ascontiguousarray(s["pixels"]).tobytes()) for s in loader.stream()]
        loader.close()
        return out

    local = samples(ws)
    remote = samples(published["index"], cache_dir=str(tmp_path / "abi"), cache_bytes=3 * max(map(os.path.getsize, shard_files(ws))))
    assert len(local) == N and remote == local


def test_show_reads_a_sample_through_the_index_url(vlmdata_bin, ws, moto, published, tmp_path):
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        key = db.execute("SELECT key FROM samples ORDER BY key LIMIT 1 OFFSET 40").fetchone()[0]
    local = json.loads(run(vlmdata_bin, "show", "--workspace", ws, key, "--json").stdout)
    remote = json.loads(run(vlmdata_bin, "show", "--index", published["index"], key, "--json",
                            "--cache-dir", tmp_path / "show", env=s3_env(moto)).stdout)
    assert remote == local


def test_wrong_secret_is_one_clear_authentication_error(vlmdata_bin, moto, published, tmp_path):
    secret = "Wrong+Secret/Value0123456789abcdefghijkl"
    result = run(vlmdata_bin, "stream", "--index", published["index"], "--cache-dir", tmp_path / "c", check=False,
                 env=s3_env(moto, AWS_SECRET_ACCESS_KEY=secret))
    assert result.returncode != 0
    assert "SignatureDoesNotMatch" in result.stderr and "refused the credentials" in result.stderr
    assert published["index"] in result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert len([l for l in result.stderr.splitlines() if l.strip()]) == 1, result.stderr


def test_missing_bucket_or_object_is_not_found_naming_the_url(vlmdata_bin, moto, published, tmp_path):
    for url in (f"s3://no-such-bucket-here/ds/index.sqlite", f"s3://{BUCKET}/nothing/index.sqlite"):
        result = run(vlmdata_bin, "stream", "--index", url, "--cache-dir", tmp_path / "c", check=False, env=s3_env(moto))
        assert result.returncode != 0
        assert url in result.stderr and "not found" in result.stderr.lower(), result.stderr
    missing_shard = run(vlmdata_bin, "show", "--index", f"s3://{BUCKET}/nothing/index.sqlite", "k", check=False,
                        env=s3_env(moto))
    assert missing_shard.returncode != 0 and "NoSuchKey" in missing_shard.stderr


class FaultProxy:
    """Forwards to moto, answering 503 SlowDown to the first `slowdowns` PUTs, and holding forever any request
    for part number `hang_part` of a multipart upload (so the client can be killed mid-upload)."""

    def __init__(self, target_port):
        self.slowdowns = 0
        self.hang_part = None
        self.fail_part = None
        self.seen = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.seen.append((self.command, self.path))
                if self.command == "PUT" and proxy.slowdowns > 0:
                    proxy.slowdowns -= 1
                    return self.reply(503, b"<?xml version='1.0'?><Error><Code>SlowDown</Code>"
                                      b"<Message>Please reduce your request rate.</Message></Error>")
                if proxy.hang_part and f"partNumber={proxy.hang_part}&" in self.path:
                    time.sleep(600)
                if proxy.fail_part and f"partNumber={proxy.fail_part}&" in self.path:
                    return self.reply(500, b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def reply(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(moto):
    p = FaultProxy(moto["port"])
    yield p
    p.close()


@pytest.fixture(scope="module")
def big_ws(vlmdata_bin, bench_bin, tmp_path_factory):
    """Two shards of about 7 MB: uploaded in 5 MiB parts (multipart)."""
    path = str(tmp_path_factory.mktemp("s3big") / "ws")
    synthetic(bench_bin, path, 40, "--tokens", "40")
    run(vlmdata_bin, "shard", "--workspace", path, *BIG_LAYOUT, "--quiet")
    return path


def test_throttled_upload_retries(vlmdata_bin, ws, moto, proxy):
    proxy.slowdowns = 3
    env = s3_env(moto, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    result = run(vlmdata_bin, "shard", "--workspace", ws, *LAYOUT, "--upload", f"s3://{BUCKET}/throttled", "--json", "--quiet",
                 env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["counts"]["uploaded"] == len(shard_files(ws))
    assert proxy.slowdowns == 0
    assert report["counts"]["upload_requests"] >= 3 + 2 * len(shard_files(ws))


def test_multipart_upload_and_a_failed_one_leaves_no_half_object(vlmdata_bin, big_ws, moto, proxy):
    shards = shard_files(big_ws)
    multipart = [s for s in shards if os.path.getsize(s) > 5 << 20]
    assert len(multipart) >= 2
    s3 = moto["s3"]
    env = s3_env(moto, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", VLMDATA_S3_ATTEMPTS="2")
    proxy.fail_part = 2
    failed = run(vlmdata_bin, "shard", "--workspace", big_ws, *BIG_LAYOUT, "--upload", f"s3://{BUCKET}/big", "--part-size", "5MiB",
                 "--quiet", check=False, env=env)
    assert failed.returncode != 0 and "UploadPart 2" in failed.stderr and "InternalError" in failed.stderr
    name = os.path.basename(shards[0])
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key=f"big/shards/{name}")
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="big/").get("Uploads", []) == []

    proxy.fail_part = None
    result = run(vlmdata_bin, "shard", "--workspace", big_ws, *BIG_LAYOUT, "--upload", f"s3://{BUCKET}/big", "--part-size", "5MiB",
                 "--json", "--quiet", env=env)
    assert json.loads(result.stdout.strip().splitlines()[-1])["counts"]["uploaded"] == len(shards)
    for path in shards:
        head = s3.head_object(Bucket=BUCKET, Key=f"big/shards/{os.path.basename(path)}")
        assert head["ContentLength"] == os.path.getsize(path)
        assert head["ETag"].strip('"').endswith("-2") == (path in multipart)
        body = s3.get_object(Bucket=BUCKET, Key=f"big/shards/{os.path.basename(path)}")["Body"].read()
        assert body == open(path, "rb").read()


def test_killed_upload_leaves_no_half_object_and_is_redone(vlmdata_bin, big_ws, moto, proxy):
    s3 = moto["s3"]
    env = s3_env(moto, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    proxy.hang_part = 2
    proc = subprocess.Popen([vlmdata_bin, "shard", "--workspace", big_ws, *BIG_LAYOUT, "--upload", f"s3://{BUCKET}/killed",
                             "--part-size", "5MiB", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not any("partNumber=2&" in path for _, path in proxy.seen) and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    first = os.path.basename(shard_files(big_ws)[0])
    with pytest.raises(botocore.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key=f"killed/shards/{first}")
    assert len(s3.list_multipart_uploads(Bucket=BUCKET, Prefix="killed/").get("Uploads", [])) == 1

    proxy.hang_part = None
    result = run(vlmdata_bin, "shard", "--workspace", big_ws, *BIG_LAYOUT, "--upload", f"s3://{BUCKET}/killed", "--part-size", "5MiB",
                 "--json", "--quiet", env=env)
    counts = json.loads(result.stdout.strip().splitlines()[-1])["counts"]
    assert counts["uploaded"] == len(shard_files(big_ws)) and counts["aborted_stale_uploads"] == 1
    assert s3.list_multipart_uploads(Bucket=BUCKET, Prefix="killed/").get("Uploads", []) == []
    body = s3.get_object(Bucket=BUCKET, Key=f"killed/shards/{first}")["Body"].read()
    assert body == open(shard_files(big_ws)[0], "rb").read()


def test_a_pipeline_file_uploads_through_the_shard_stage(vlmdata_bin, bench_bin, moto, tmp_path):
    """`upload:` and `part_size:` are shard Stage keys (the CLI's --upload/--part-size set the same keys), so a
    pipeline file uploads: every shard lands under the prefix with its bytes, the index records each URL, a
    `catalog publish` stage puts the index beside them, and a rerun uploads nothing. A part size under S3's 5 MiB
    is refused before anything runs."""
    ws = str(tmp_path / "ws")
    synthetic(bench_bin, ws, 40, *SMALL)
    pipeline = tmp_path / "upload.yaml"
    body = f"""workspace: {ws}
stages:
  - stage: shard
    max_samples: 12
    upload: s3://{BUCKET}/pipeline
    part_size: PART
  - stage: verify
  - stage: catalog publish
    to: s3://{BUCKET}/pipeline/
"""
    pipeline.write_text(body.replace("PART", "1MiB"))
    refused = run(vlmdata_bin, "run", pipeline, "--dry-run", check=False, env=s3_env(moto))
    assert refused.returncode == 1 and "part_size" in refused.stderr and "5MiB" in refused.stderr, refused.stderr
    pipeline.write_text(body.replace("PART", "5MiB"))
    reports = [json.loads(line) for line in run(vlmdata_bin, "run", pipeline, "--json", "--quiet", env=s3_env(moto)).stdout.splitlines()]
    shard = next(r for r in reports if r["stage"] == "shard")
    shards = shard_files(ws)
    assert len(shards) > 1 and shard["counts"]["uploaded"] == len(shards) and shard["counts"]["already_present"] == 0
    s3 = moto["s3"]
    for path in shards:
        name = os.path.basename(path)
        body_bytes = s3.get_object(Bucket=BUCKET, Key=f"pipeline/shards/{name}")["Body"].read()
        assert body_bytes == open(path, "rb").read()
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        urls = dict(db.execute("SELECT name, url FROM shards"))
        configs = [c for (c,) in db.execute("SELECT config FROM runs WHERE stage = 'shard' AND status = 'done'")]
    assert urls == {os.path.basename(p): f"s3://{BUCKET}/pipeline/shards/{os.path.basename(p)}" for p in shards}
    assert configs and all("s3://" not in c for c in configs)     # where shards go is not part of what they are
    published = next(r for r in reports if r["stage"] == "catalog publish")
    index = s3.get_object(Bucket=BUCKET, Key="pipeline/index.sqlite")["Body"].read()
    assert len(index) == published["counts"]["bytes"] and index.startswith(b"SQLite format 3")
    again = next(json.loads(line) for line in run(vlmdata_bin, "run", pipeline, "--json", "--quiet", env=s3_env(moto)).stdout.splitlines()
                 if json.loads(line)["stage"] == "shard")
    assert again["counts"]["uploaded"] == 0 and again["counts"]["already_present"] == len(shards)
