#!/usr/bin/env python3
"""A loopback HTTP server that misbehaves on purpose, for `ingest urls` tests and benchmarks.

    python url_fault_server.py DOCROOT PORTFILE [--latency SECONDS]

Binds 127.0.0.1 on a free port, writes the port to PORTFILE, and serves until killed:
  /file/PATH          DOCROOT/PATH (after --latency seconds), image/jpeg or image/png by suffix
  /status/CODE        that status with a short body
  /redirect/N/PATH    a chain of N redirects ending at /file/PATH
  /loop               a redirect to itself
  /to-file            a redirect to file:///etc/passwd
  /trickle            an image/jpeg body of one byte every 0.4 s (never stalls, never ends in time)
  /stall              image/jpeg headers, then nothing
  /endless            an image/jpeg body without end (no Content-Length)
  /html               an HTML page served as image/jpeg
  /truncated/PATH     the first half of DOCROOT/PATH as image/jpeg
  /noai/PATH          DOCROOT/PATH with `X-Robots-Tag: noai`
  /slow/SECONDS/PATH  DOCROOT/PATH after SECONDS
  /__requests         how many requests it has answered (this one not counted), as text
Only loopback; never another address.
"""
import argparse
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = 0
COUNT_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    docroot = "."
    latency = 0.0

    def log_message(self, *args):
        pass

    def send_body(self, code, body, content_type="image/jpeg", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def read_file(self, rel):
        path = os.path.normpath(os.path.join(self.docroot, rel))
        if not path.startswith(os.path.abspath(self.docroot)) or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def serve_file(self, rel, headers=(), transform=None):
        body = self.read_file(rel)
        if body is None:
            return self.send_body(404, b"not found", "text/plain")
        if transform:
            body = transform(body)
        kind = "image/png" if rel.endswith(".png") else "image/jpeg"
        self.send_body(200, body, kind, headers)

    def do_GET(self):
        global COUNT
        path = self.path.split("?", 1)[0]
        if path == "/__requests":
            with COUNT_LOCK:
                n = COUNT
            return self.send_body(200, str(n).encode(), "text/plain")
        with COUNT_LOCK:
            COUNT += 1
        parts = path.lstrip("/").split("/")
        head, rest = parts[0], "/".join(parts[1:])
        try:
            if head == "file":
                if self.latency:
                    time.sleep(self.latency)
                return self.serve_file(rest)
            if head == "status":
                return self.send_body(int(parts[1]), b"error page", "text/html")
            if head == "redirect":
                n = int(parts[1])
                target = "/".join(parts[2:])
                return self.redirect(f"/redirect/{n - 1}/{target}" if n > 1 else f"/file/{target}")
            if head == "loop":
                return self.redirect("/loop")
            if head == "to-file":
                return self.redirect("file:///etc/passwd")
            if head == "html":
                return self.send_body(200, b"<!doctype html><html><body>not an image</body></html>", "image/jpeg")
            if head == "truncated":
                return self.serve_file(rest, transform=lambda b: b[: len(b) // 2])
            if head == "noai":
                return self.serve_file(rest, headers=[("X-Robots-Tag", "noai")])
            if head == "slow":
                time.sleep(float(parts[1]))
                return self.serve_file("/".join(parts[2:]))
            if head in ("trickle", "stall", "endless"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                if head != "endless":
                    self.send_header("Content-Length", "1000000")
                self.end_headers()
                if head == "stall":
                    time.sleep(60)
                    return
                block = b"\xff" * (1 if head == "trickle" else 65536)
                deadline = time.time() + 60
                while time.time() < deadline:
                    self.wfile.write(block)
                    self.wfile.flush()
                    if head == "trickle":
                        time.sleep(0.4)
                return
            return self.send_body(404, b"no such route", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("docroot")
    ap.add_argument("portfile")
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    Handler.docroot = os.path.abspath(args.docroot)
    Handler.latency = args.latency
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 256
    tmp = args.portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, args.portfile)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
