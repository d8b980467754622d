#!/usr/bin/env python3
"""A loopback OpenAI-compatible server for tests and benchmarks (standard library only).

It answers `POST /v1/chat/completions` deterministically from the prompt, the way a model imitating the few-shot
examples would: the reply has the shape of the last assistant message in the request (several `Question:`/`===`/
`Answer:` blocks, one block, or a paragraph; or the same JSON keys in JSON mode) and its text is built from the
captions and objects in the last user message.

Faults are injected on request, either with `--fault SPEC` at start-up or by `POST /admin/faults` with
`{"kind": ..., "count": n, "match": "substring of the request body", ...}`; the first rule whose `match` occurs in the
request body (and whose count is left) applies. Kinds:

  429                 status 429 with `Retry-After: <retry_after>` (and `retry-after-ms` when given)
  insufficient_quota  status 429, error type/code `insufficient_quota` (a client must not retry it)
  500 / 503 / 400 / 401 / 404 / status:N   that status with an OpenAI-style error body
  stall               sleep `stall` seconds (default 30) before answering
  disconnect          close the connection without an answer
  malformed           status 200 with a truncated JSON body
  empty_choice        status 200 with `"choices": []`
  refusal             status 200 with a refusal as the message content
  truncated           status 200 with finish_reason "length"
  echo_key            status 200 with a usable reply that quotes the request's API key (the Authorization header
                      without "Bearer ") in its text, as a model echoing its input might
  wrong_kind          status 200 with a reply of the other shape: `Question:`/`Answer:` blocks where a paragraph is
                      expected (detail), a paragraph where blocks are expected (conversation, complex)

A rule with `"echo_auth": true` (or `--echo-auth` for every rule) makes an error reply (429, 5xx, 4xx) quote the
request's `Authorization` header in its error message, as some proxies do.

`GET /admin/stats` returns request counts: `total` and `by_status` over every request received, `received_by_prompt`
(every chat request, per sha256 of the canonical `messages`), `by_prompt` (chat requests answered with a reply
to a client that was still connected; a request whose client died while it was being answered, e.g. killed
midway, is counted in `abandoned` instead), `auth_seen`, `window_seconds` from the first chat request received to
the last reply sent (the benchmark's clock, the same for every client), and `client_gap_ms` (mean, median and p90 of the
time between a reply and the next request on the same keep-alive connection: the client's own overhead per call,
scheduling included) beside `service_ms` (mean, median and p90 of the time from reading a chat request to having sent its
reply, the added latency included: what the server itself takes per call).
`POST /admin/reset` clears counts and faults.

Plain endpoints for HTTP client tests: `GET|HEAD /bytes/N` (deterministic bytes, honours `Range`), `ANY /echo`
(returns method, path, headers and body as JSON), `GET /status/N?retry_after=S&retry_after_ms=M`,
`GET /redirect?to=PATH`, `GET /slow?seconds=S`, `GET /drip?bytes=N&delay=S` (a body that trickles).

Start: `llm_server.py --port 0 [--latency 0.05] [--require-key KEY] [--fault 429:2] [--echo-auth]`; the first stdout line is
`PORT <n>`.
"""
import _thread
import argparse
import base64
import hashlib
import json
import re
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def pattern_bytes(n, start=0):
    """Deterministic content for /bytes: byte i is (i * 31 + 7) mod 251."""
    return bytes(((i * 31 + 7) % 251) for i in range(start, start + n))


def prompt_hash(messages):
    return hashlib.sha256(json.dumps(messages, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_symbolic(text):
    """Captions (lines before the first blank line) and objects (`name: [x1, y1, x2, y2]` lines)."""
    captions, objects = [], []
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"^(.+?):\s*\[([-0-9., ]+)\]$", line)
        if match:
            objects.append((match.group(1).strip(), [float(v) for v in match.group(2).split(",")]))
        elif line:
            captions.append(line)
    return captions, objects


def describe_objects(objects):
    counts = {}
    for name, _ in objects:
        counts[name] = counts.get(name, 0) + 1
    parts = []
    for name, n in sorted(counts.items()):
        parts.append(f"{n} {name}" + ("s" if n > 1 and not name.endswith("s") else "") if n > 1 else f"a {name}")
    if not parts:
        return "no clearly outlined objects"
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def reply_pairs(captions, objects, n):
    """n question/answer pairs built from the prompt's facts."""
    first = captions[0] if captions else "an everyday scene"
    pairs = [
        ("What is happening in the image?", first.rstrip(".") + "."),
        ("Which objects can be seen in the image?", f"The image shows {describe_objects(objects)}."),
    ]
    if objects:
        name, box = objects[0]
        side = "left" if (box[0] + box[2]) / 2 < 0.5 else "right"
        pairs.append((f"Where is the {name} in the picture?", f"The {name} is on the {side} side of the picture."))
    else:
        pairs.append(("Is the scene busy?", "No, the scene shows no clearly outlined objects."))
    while len(pairs) < n:
        k = len(pairs)
        caption = captions[k % len(captions)] if captions else first
        pairs.append((f"What else can be said about the scene ({k})?", caption.rstrip(".") + "."))
    return pairs[:n]


def build_reply(body):
    """The assistant content imitating the last assistant example, and whether JSON mode was asked for."""
    messages = body.get("messages") or []
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    if isinstance(user, list):
        user = " ".join(part.get("text", "") for part in user if isinstance(part, dict))
    example = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    captions, objects = parse_symbolic(user)
    json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    if json_mode:
        try:
            shape = json.loads(example)
        except (ValueError, TypeError):
            shape = {}
        if "description" in shape:
            return json.dumps({"description": detail_paragraph(captions, objects)})
        n = len(shape.get("qa", [])) or 2
        return json.dumps({"qa": [{"question": q, "answer": a} for q, a in reply_pairs(captions, objects, n)]})
    n = example.count("Question:")
    if n == 0:
        return detail_paragraph(captions, objects)
    return "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in reply_pairs(captions, objects, n))


def wrong_kind_reply(body):
    """A reply of the shape the request did not ask for: blocks for a paragraph, a paragraph for blocks."""
    messages = body.get("messages") or []
    user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    example = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    captions, objects = parse_symbolic(user)
    if "Question:" in example or '"qa"' in example:
        return detail_paragraph(captions, objects)
    return "\n===\n".join(f"Question:\n{q}\n===\nAnswer:\n{a}" for q, a in reply_pairs(captions, objects, 2))


def detail_paragraph(captions, objects):
    first = captions[0].rstrip(".") if captions else "An everyday scene"
    rest = " ".join(c.rstrip(".") + "." for c in captions[1:3])
    return f"{first}. {rest} In the scene there are {describe_objects(objects)}.".replace("  ", " ").strip()


class State:
    def __init__(self, latency, require_key, faults, echo_auth=False):
        self.lock = threading.Lock()
        self.latency = latency
        self.require_key = require_key
        self.echo_auth = echo_auth
        self.faults = list(faults)
        self.reset_counts()

    def reset_counts(self):
        self.total = 0
        self.by_status = {}
        self.by_prompt = {}
        self.received_by_prompt = {}
        self.abandoned = 0
        self.auth_seen = 0
        self.first_at = None
        self.last_at = None
        self.gaps = []
        self.services = []

    def take_fault(self, raw_body):
        with self.lock:
            for rule in self.faults:
                if rule.get("count", 1) <= 0:
                    continue
                match = rule.get("match")
                if match and match not in raw_body:
                    continue
                rule["count"] = rule.get("count", 1) - 1
                return dict(rule)
        return None

    def record(self, key, status, authorized):
        with self.lock:
            self.total += 1
            self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
            if key is not None:
                self.received_by_prompt[key] = self.received_by_prompt.get(key, 0) + 1
                if self.first_at is None:
                    self.first_at = time.monotonic()
            if authorized:
                self.auth_seen += 1

    def answered(self, key):
        with self.lock:
            self.by_prompt[key] = self.by_prompt.get(key, 0) + 1
            self.last_at = time.monotonic()

    def gap(self, seconds):
        with self.lock:
            self.gaps.append(seconds)

    def service(self, seconds):
        with self.lock:
            self.services.append(seconds)

    @staticmethod
    def summary(values):
        if not values:
            return None
        values = sorted(values)
        return {"n": len(values), "mean": sum(values) / len(values) * 1000, "median": values[len(values) // 2] * 1000,
                "p90": values[int(len(values) * 0.9)] * 1000}

    def abandon(self):
        with self.lock:
            self.abandoned += 1


def parse_fault_spec(spec):
    """`KIND[:COUNT[:MATCH]]`, e.g. `429:2`, `stall:1:zebra`, `status:503:3`."""
    parts = spec.split(":")
    if parts[0] == "status":
        kind, rest = f"status:{parts[1]}", parts[2:]
    else:
        kind, rest = parts[0], parts[1:]
    rule = {"kind": kind, "count": int(rest[0]) if rest else 1}
    if len(rest) > 1:
        rule["match"] = ":".join(rest[1:])
    return rule


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llm-test-server/1"
    # Headers and body go out in separate writes; without TCP_NODELAY a keep-alive client waits out its delayed ACK
    # (40 ms) on every reply, as no production server would make it.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet
        pass

    @property
    def state(self):
        return self.server.state

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, body=b"", content_type="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- plain endpoints -------------------------------------------------------------------------------------
    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def route(self):
        url = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if path == "/v1/chat/completions" and self.command == "POST":
            return self.chat()
        if path == "/admin/stats":
            with self.state.lock:
                return self.send(200, {"total": self.state.total, "by_status": self.state.by_status,
                                       "by_prompt": self.state.by_prompt,
                                       "received_by_prompt": self.state.received_by_prompt,
                                       "abandoned": self.state.abandoned, "auth_seen": self.state.auth_seen,
                                       "window_seconds": (self.state.last_at - self.state.first_at)
                                       if self.state.last_at is not None else None,
                                       "client_gap_ms": self.state.summary(self.state.gaps),
                                       "service_ms": self.state.summary(self.state.services)})
        if path == "/admin/reset":
            with self.state.lock:
                self.state.reset_counts()
                self.state.faults = []
            return self.send(200, {"ok": True})
        if path == "/admin/faults" and self.command == "POST":
            rules = json.loads(self.read_body() or b"[]")
            with self.state.lock:
                self.state.faults.extend(rules if isinstance(rules, list) else [rules])
            return self.send(200, {"ok": True})
        if path.startswith("/bytes/"):
            return self.bytes_endpoint(int(path.split("/")[2]))
        if path == "/echo":
            body = self.read_body()
            return self.send(200, {"method": self.command, "path": self.path,
                                   "headers": {k.lower(): v for k, v in self.headers.items()},
                                   "body": base64.b64encode(body).decode()})
        if path.startswith("/status/"):
            self.read_body()
            status = int(path.split("/")[2])
            headers = {}
            if "retry_after" in query:
                headers["Retry-After"] = query["retry_after"]
            if "retry_after_ms" in query:
                headers["retry-after-ms"] = query["retry_after_ms"]
            return self.send(status, f"status {status}", "text/plain", headers)
        if path == "/redirect":
            return self.send(302, b"", "text/plain", {"Location": query.get("to", "/bytes/16")})
        if path == "/slow":
            time.sleep(float(query.get("seconds", "1")))
            return self.send(200, "slow", "text/plain")
        if path == "/drip":
            n, delay = int(query.get("bytes", "4")), float(query.get("delay", "1"))
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for i in range(n):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(delay)
            return None
        return self.send(404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

    def bytes_endpoint(self, n):
        data = pattern_bytes(n)
        header = self.headers.get("Range")
        if not header:
            return self.send(200, data, "application/octet-stream", {"Accept-Ranges": "bytes"})
        match = re.match(r"bytes=(\d*)-(\d*)$", header.strip())
        if not match or (match.group(1) == "" and match.group(2) == ""):
            return self.send(416, b"", "text/plain", {"Content-Range": f"bytes */{n}"})
        if match.group(1) == "":  # suffix range
            start, end = max(0, n - int(match.group(2))), n - 1
        else:
            start = int(match.group(1))
            end = min(int(match.group(2)), n - 1) if match.group(2) else n - 1
        if start >= n or start > end:
            return self.send(416, b"", "text/plain", {"Content-Range": f"bytes */{n}"})
        return self.send(206, data[start:end + 1], "application/octet-stream",
                         {"Content-Range": f"bytes {start}-{end}/{n}", "Accept-Ranges": "bytes"})

    def peer_closed(self):
        """True when the client has gone (its end of the socket is closed), so an answer would reach nobody."""
        import select
        import socket
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- chat completions ------------------------------------------------------------------------------------
    def error_body(self, message, kind, code=None):
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def error_message(self, message, fault):
        """`message`, quoting the request's Authorization header when the fault (or the server) says so."""
        if self.state.echo_auth or (fault or {}).get("echo_auth"):
            return f"{message} (request had Authorization: {self.headers.get('Authorization', '')})"
        return message

    def chat(self):
        started_at = time.monotonic()
        replied_at = getattr(self, "replied_at", None)
        if replied_at is not None:
            self.state.gap(time.monotonic() - replied_at)
        raw = self.read_body()
        text = raw.decode("utf-8", "replace")
        authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        try:
            body = json.loads(text)
            key = prompt_hash(body.get("messages"))
        except ValueError:
            self.state.record(None, 400, authorized)
            return self.send(400, self.error_body("request body is not JSON", "invalid_request_error"))
        if self.state.require_key and self.headers.get("Authorization") != f"Bearer {self.state.require_key}":
            self.state.record(key, 401, authorized)
            return self.send(401, self.error_body(self.error_message("Incorrect API key provided.", None),
                                                  "invalid_request_error", "invalid_api_key"))
        fault = self.state.take_fault(text)
        kind = fault["kind"] if fault else None
        if self.state.latency > 0:
            time.sleep(self.state.latency)
        if kind == "stall":
            time.sleep(float(fault.get("stall", 30)))
        if kind == "disconnect":
            self.state.record(key, 0, authorized)
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if kind == "429":
            headers = {"Retry-After": str(fault.get("retry_after", 1))}
            if "retry_after_ms" in fault:
                headers["retry-after-ms"] = str(fault["retry_after_ms"])
            self.state.record(key, 429, authorized)
            return self.send(429, self.error_body(self.error_message("Rate limit reached for requests", fault),
                                                  "requests", "rate_limit_exceeded"), headers=headers)
        if kind == "insufficient_quota":
            self.state.record(key, 429, authorized)
            return self.send(429, self.error_body("You exceeded your current quota.", "insufficient_quota",
                                                  "insufficient_quota"))
        if kind and (kind.isdigit() or kind.startswith("status:")):
            status = int(kind.split(":")[-1])
            self.state.record(key, status, authorized)
            return self.send(status, self.error_body(self.error_message(f"injected status {status}", fault),
                                                     "server_error"))
        content = build_reply(body)
        finish = "stop"
        if kind == "refusal":
            content = "I'm sorry, but I can't help with that request."
        elif kind == "truncated":
            content, finish = content[: max(1, len(content) // 2)], "length"
        elif kind == "echo_key":
            secret = self.headers.get("Authorization", "").removeprefix("Bearer ").strip() or "no-key-sent"
            content = content.replace(".", f" (the sign reads {secret}).", 1)
        elif kind == "wrong_kind":
            content = wrong_kind_reply(body)
        reply = {
            "id": "chatcmpl-" + key[:24], "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4,
                      "total_tokens": len(text) // 4 + len(content) // 4},
        }
        if kind == "empty_choice":
            reply["choices"] = []
        self.state.record(key, 200, authorized)
        if self.peer_closed():
            self.state.abandon()
            self.close_connection = True
            return None
        if kind not in ("malformed", "empty_choice"):
            self.state.answered(key)
        if kind == "malformed":
            data = json.dumps(reply).encode()
            return self.send(200, data[: len(data) // 2])
        self.send(200, reply)
        self.replied_at = time.monotonic()
        self.state.service(self.replied_at - started_at)
        return None


class Server(ThreadingHTTPServer):
    """One thread per connection, started without waiting for it to run: `Thread.start()` blocks the accept loop
    until the new thread is scheduled, which on a loaded machine spreads the first requests of 64 connections over
    seconds (no production server sets up connections one at a time like that)."""
    daemon_threads = True
    request_queue_size = 256

    def process_request(self, request, client_address):
        _thread.start_new_thread(self.process_request_thread, (request, client_address))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat answer")
    parser.add_argument("--require-key", default=None, help="answer 401 unless `Authorization: Bearer KEY`")
    parser.add_argument("--fault", action="append", default=[], help="KIND[:COUNT[:MATCH]], repeatable")
    parser.add_argument("--echo-auth", action="store_true",
                        help="error replies quote the request's Authorization header")
    args = parser.parse_args()
    # A parent may spawn us from a thread that blocks signals (Swift's Dispatch workers do): unblock them so
    # SIGTERM/SIGINT stop the server.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    server = Server((args.host, args.port), Handler)
    server.state = State(args.latency, args.require_key, [parse_fault_spec(s) for s in args.fault], args.echo_auth)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
