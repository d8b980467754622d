"""Progress on stderr: on a terminal one bar redrawn in place (count, rate, ETA), coloured unless NO_COLOR;
otherwise plain periodic lines with the same numbers and no escape codes; nothing with --quiet."""
import os
import pty
import re
import subprocess

from conftest import SHARED, run

SGR = re.compile(r"\x1b\[[0-9;]*m")


def ingest_args(bin_path, ws):
    return [str(bin_path), "ingest", "coco", "--workspace", str(ws),
            "--captions", str(SHARED / "coco-mini/annotations/captions_train2017.json"),
            "--images", str(SHARED / "coco-mini/train2017")]


def patchify_args(bin_path, ws, size):
    return [str(bin_path), "patchify", "--workspace", str(ws), "--image-size", str(size), "--patch-size", "14"]


def on_terminal(args, env):
    """Runs with stderr on a pseudo-terminal; returns what the terminal received."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert process.wait() == 0
    os.close(leader)
    return out.decode("utf-8", "replace")


def test_plain_lines_off_a_terminal_and_none_with_quiet(vlmdata_bin, tmp_path):
    ws = tmp_path / "ws"
    run(vlmdata_bin, *ingest_args(vlmdata_bin, ws)[1:], "--quiet")
    env = dict(os.environ, VLMDATA_PROGRESS_INTERVAL="0")
    result = subprocess.run(patchify_args(vlmdata_bin, ws, 56), capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("patchify ")]
    # One line per image at interval 0, each with count, percent, rate and ETA; the last says 80/80.
    assert len(lines) >= 40
    assert all(re.fullmatch(r"patchify \d+/80 \d+% \d+/s ETA (\d+s|\d+m\d\ds|--)", l) for l in lines), lines[:3]
    assert lines[-1].startswith("patchify 80/80 100%")
    assert "\x1b" not in result.stderr and "\r" not in result.stderr
    assert re.search(r"^patchify: .*\(\d+s\)$", result.stderr, re.M)
    # shard: a moving count although all 80 samples go into one shard.
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--kinds", "caption", "--quiet")
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--quiet", "--tokenizer", SHARED / "tokenizers/mistral-v1/tokenizer.json",
        "--template", "plain", "--image-tokens", "pixels")
    sharded = subprocess.run([str(vlmdata_bin), "shard", "--workspace", str(ws)], capture_output=True, text=True, env=env)
    assert sharded.returncode == 0, sharded.stderr
    lines = [l for l in sharded.stderr.splitlines() if l.startswith("shard ")]
    assert len(lines) >= 40 and lines[-1].startswith("shard 80/80 100%"), sharded.stderr
    assert re.search(r"^shard: 80 samples in 1 shards written", sharded.stderr, re.M)
    quiet = subprocess.run(patchify_args(vlmdata_bin, ws, 84) + ["--quiet"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_a_bar_on_a_terminal_coloured_unless_no_color(vlmdata_bin, tmp_path):
    ws = tmp_path / "ws"
    run(vlmdata_bin, *ingest_args(vlmdata_bin, ws)[1:], "--quiet")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    coloured = on_terminal(patchify_args(vlmdata_bin, ws, 56), env)
    assert re.search(r"\r\x1b\[2Kpatchify \[", coloured)
    assert re.search(r"\] 80/80 100% \d+/s ETA ", SGR.sub("", coloured))
    assert SGR.search(coloured)
    plain = on_terminal(patchify_args(vlmdata_bin, ws, 84), dict(env, NO_COLOR="1"))
    assert re.search(r"\r\x1b\[2Kpatchify \[#+", plain)
    assert not SGR.search(plain)
