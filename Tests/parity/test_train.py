"""End-to-end learning gate: `vlmdata train-smoke` builds synthetic shapes with every stage, trains RefVLM from the
streaming loader and must answer colour, shape and side from the pixels; the image-blind control must not.

Runs the release binary (VLMDATA_BIN) with its default settings, as `make test` and CI do. Timing is reported, and
gated only by train-smoke itself at 4 minutes of training (the issue's noisy-machine limit).
"""
import csv
import json
import os

import pytest

from conftest import run


def smoke(vlmdata_bin, workspace, *extra):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    result = run(vlmdata_bin, "train-smoke", "--json", "--quiet", "--workspace", workspace, *extra, check=False, env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return result, report


def test_train_smoke_sees_the_image(vlmdata_bin, tmp_path):
    result, report = smoke(vlmdata_bin, tmp_path / "seeing")
    print(result.stdout)
    acc = report["accuracy"]
    assert acc["colour"] >= 0.95 and acc["side"] >= 0.85 and acc["shape"] >= 0.75, report
    assert result.returncode == 0 and report["passed"]
    assert report["steps"] == 2000 and report["eval_images"] >= 400
    assert report["final_loss"] < report["initial_loss"] / 4
    # the loss curve is written, one row per step
    with open(report["loss_curve_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2000 and float(rows[0]["loss"]) == pytest.approx(report["initial_loss"])
    assert open(report["loss_curve_svg"]).read().startswith("<svg")
    # the report on disk matches the JSON line
    assert json.load(open(os.path.join(report["workspace"], "train-smoke.json")))["accuracy"] == acc


def test_train_smoke_blind_control_stays_at_chance(vlmdata_bin, tmp_path):
    result, report = smoke(vlmdata_bin, tmp_path / "blind", "--blind")
    print(result.stdout)
    for attr in ("colour", "shape", "side"):
        assert report["accuracy"][attr] <= report["chance"][attr] + 0.10, (attr, report)
    assert result.returncode == 0 and report["passed"] and report["blind"]


def test_train_smoke_fails_its_gate_when_undertrained(vlmdata_bin, tmp_path):
    # 20 steps cannot learn shapes: the gate must fail with exit code 1 (and still write its report)
    result, report = smoke(vlmdata_bin, tmp_path / "short", "--steps", "20", "--train-images", "256", "--eval-images", "50")
    assert result.returncode == 1 and not report["passed"]
    assert any(not g["passed"] for g in report["gates"])


def test_train_smoke_rejects_bad_options(vlmdata_bin):
    result = run(vlmdata_bin, "train-smoke", "--projector", "qformer", check=False)
    assert result.returncode != 0 and "linear or mlp2x_gelu" in result.stderr
