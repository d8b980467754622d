"""`vlmdata view`: the static report page rendered in Debian's headless chromium (DevTools protocol): no console
errors or failed loads, no network, the expected sample cards with their images loaded, and each card's image equal
to the stored patches un-patchified; tokens, boxes, counts and histograms checked against the shards and catalog."""
import html
import io
import json
import re
import sqlite3
import tarfile

import numpy as np
import pytest
from PIL import Image

from chromium import Browser, chromium_path
from conftest import ROOT, SHARED, run

SAMPLES = 6
pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (make deps installs it)")


@pytest.fixture(scope="module")
def report(vlmdata_bin, tmp_path_factory):
    base = tmp_path_factory.mktemp("view")
    ws, out = base / "ws", base / "report"
    run(vlmdata_bin, "run", ROOT / "Pipelines" / "coco-llava-instruct.yaml", "--workspace", ws, "--quiet",
        "--set", f"data={SHARED / 'coco-mini'}", "--set", f"tokenizer={SHARED / 'tokenizers/mistral-v1/tokenizer.json'}",
        "--set", "kinds=caption,grounding")
    # A train-smoke loss curve beside the data, as `make demo` leaves it (its numbers are this test's own).
    (ws / "train-smoke").mkdir()
    losses = [4.0 * 0.97 ** i + 0.5 for i in range(60)]
    (ws / "train-smoke" / "loss-curve.csv").write_text(
        "step,loss,grad_norm,lr\n" + "".join(f"{i},{v},1.0,0.001\n" for i, v in enumerate(losses)))
    summary = json.loads(run(vlmdata_bin, "view", "--workspace", ws, "--out", out, "--samples", SAMPLES,
                             "--seed", 3, "--tokenizer", SHARED / "tokenizers/mistral-v1/tokenizer.json", "--json").stdout)
    return {"ws": ws, "out": out, "summary": summary, "page": (out / "index.html").read_text(), "losses": losses}


@pytest.fixture(scope="module")
def browser(report):
    b = Browser()
    try:
        b.open((report["out"] / "index.html").resolve().as_uri())
        yield b
    finally:
        b.close()


def stored_pixels(ws, key):
    """The sample's pixels npy read from its shard through the catalog index (offset, size)."""
    db = sqlite3.connect(ws / "catalog.sqlite")
    path, = db.execute("SELECT s.path FROM samples x JOIN shards s ON s.id = x.shard_id WHERE x.key = ?", (key,)).fetchone()
    with tarfile.open(ws / path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.startswith(key + ".")}
    return (np.load(io.BytesIO(members[key + ".pixels.npy"])), np.load(io.BytesIO(members[key + ".labels.npy"])),
            np.load(io.BytesIO(members[key + ".input_ids.npy"])), json.loads(members[key + ".json"]))


def unpatchify(pixels):
    tiles, patches, dim = pixels.shape
    p, g = int(round((dim // 3) ** 0.5)), int(round(patches ** 0.5))
    return pixels.reshape(tiles, g, g, p, p, 3).transpose(1, 3, 0, 2, 4, 5).reshape(g * p, tiles * g * p, 3)


def card_keys(page):
    return re.findall(r'<section class="sample" id="([^"]+)"', page)


def test_the_page_renders_in_chromium_with_every_image_loaded(report, browser, tmp_path):
    assert browser.errors() == []
    # Opened from disk, it asks for nothing but its own files.
    assert all(url.startswith("file://") for url in browser.requests()), browser.requests()
    assert "<script" not in report["page"] and "http://" not in report["page"] and "https://" not in report["page"]
    assert browser.evaluate("document.querySelectorAll('.sample').length") == SAMPLES
    images = browser.evaluate("Array.from(document.querySelectorAll('.sample img'))"
                              ".map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == SAMPLES
    for src, complete, width, height in images:
        assert complete and width == 336 and height == 336, (src, complete, width, height)
    shot = browser.screenshot(tmp_path / "view.png")
    with Image.open(shot) as picture:
        assert picture.width >= 1000 and picture.height > 1000
        # Not a blank page: the screenshot holds the images' colours.
        assert len(picture.convert("RGB").getcolors(1 << 20) or []) > 1000


def test_each_card_image_equals_the_stored_patches(report):
    keys = card_keys(report["page"])
    assert len(keys) == SAMPLES and report["summary"]["images_written"] == SAMPLES
    assert report["summary"]["tokenizer"].endswith("mistral-v1/tokenizer.json")
    padded = 0
    for key in keys:
        pixels, _, _, meta = stored_pixels(report["ws"], key)
        with Image.open(report["out"] / "images" / f"{key}.png") as png:
            shown = np.asarray(png.convert("RGB"))
        assert shown.shape == (336, 336, 3)
        assert np.array_equal(shown, unpatchify(pixels)), key
        w, h = meta["image_size"]
        if w >= 1.1 * h:
            # LLaVA-1.5's expand2square: a wide image sits in a square padded above and below with the CLIP mean.
            assert (shown[0] == [122, 116, 104]).all() and (shown[-1] == [122, 116, 104]).all(), key
            padded += 1
    assert padded > 0


def test_tokens_are_coloured_by_label_with_their_strings_on_hover(report, browser):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(SHARED / "tokenizers/mistral-v1/tokenizer.json"))
    for key in card_keys(report["page"]):
        _, labels, input_ids, meta = stored_pixels(report["ws"], key)
        tokens = browser.evaluate(f"Array.from(document.getElementById('{key}').querySelectorAll('.tok'))"
                                  ".map(t => [t.className, t.title])")
        expected = ["tok i" if i == -200 else "tok m" if l == -100 else "tok s" for i, l in zip(input_ids, labels)]
        assert [c for c, _ in tokens] == expected, key
        assert sum(c == "tok s" for c, _ in tokens) == meta["supervised"] > 0
        for (cls, title), token_id in zip(tokens, input_ids):
            if token_id != -200:
                assert title.startswith(tokenizer.id_to_token(int(token_id)) + " · id " + str(token_id)), (key, title)


def test_boxes_named_by_the_conversation_are_drawn_in_the_pixel_frame(report, browser):
    drawn = 0
    for key in card_keys(report["page"]):
        _, _, _, meta = stored_pixels(report["ws"], key)
        text = " ".join(turn["value"] for turn in meta["conversations"])
        boxes = [list(map(float, m)) for m in re.findall(r"\[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]", text)]
        rects = browser.evaluate(f"Array.from(document.getElementById('{key}').querySelectorAll('rect.box'))"
                                 ".map(r => ['x','y','width','height'].map(a => parseFloat(r.getAttribute(a))))")
        assert len(rects) == len(boxes), key
        if boxes:
            assert meta["box_frame"] == "pad"
        for (x1, y1, x2, y2), (x, y, w, h) in zip(boxes, rects):
            assert (x, y, w, h) == pytest.approx((x1 * 336, y1 * 336, (x2 - x1) * 336, (y2 - y1) * 336), abs=0.01)
        drawn += len(boxes)
    # The draw is seeded: this one holds grounding samples.
    assert drawn > 0


def test_counts_and_histograms_match_the_catalog(report):
    page = report["page"]
    db = sqlite3.connect(report["ws"] / "catalog.sqlite")
    tables = dict(re.findall(r"<tr><td>([a-z_0-9]+)</td><td class=\"n\">(\d+)</td></tr>",
                             page.split('id="tables"')[1].split("</table>")[0]))
    assert tables and all(int(n) == db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t, n in tables.items())
    assert int(tables["samples"]) == report["summary"]["samples_total"]
    problems = page.split('id="problems"')[1].split("</table>")[0]
    assert "image missing" in problems and "tokenized truncated" in problems
    charts = re.findall(r'<svg class="chart".*?</svg>', page, re.S)
    assert len(charts) == 6   # five histograms and the loss curve
    samples = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    tokens_chart = next(c for c in charts if "tokens per sample" in c)
    assert sum(int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title>", tokens_chart)) == samples
    per_image = next(c for c in charts if "instructions per image" in c)
    images = db.execute("SELECT COUNT(DISTINCT image_id) FROM instructions").fetchone()[0]
    assert sum(int(n) for n in re.findall(r"<title>[^<]*: (\d+)</title>", per_image)) == images
    loss = next(c for c in charts if "loss" in html.unescape(c).split("</text>")[0])
    assert f"{report['losses'][0]:.3f}" in loss
    assert report["summary"]["loss_curve"].endswith("train-smoke/loss-curve.csv")


def test_the_same_seed_draws_the_same_cards_and_bad_input_is_named(vlmdata_bin, report, tmp_path):
    again = json.loads(run(vlmdata_bin, "view", "--workspace", report["ws"], "--out", tmp_path / "again",
                           "--samples", SAMPLES, "--seed", 3, "--json").stdout)
    assert card_keys((tmp_path / "again" / "index.html").read_text()) == card_keys(report["page"])
    assert again["samples_shown"] == SAMPLES
    missing = run(vlmdata_bin, "view", "--workspace", tmp_path / "nothing", check=False)
    assert missing.returncode == 1 and "catalog.sqlite" in missing.stderr and "no catalog" in missing.stderr


def test_anyres_tiles_sit_side_by_side_with_boxes_on_the_base_view(vlmdata_bin, tmp_path):
    ws, out = tmp_path / "ws", tmp_path / "report"
    coco = SHARED / "coco-mini"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--quiet", "--images", coco / "train2017",
        "--captions", coco / "annotations/captions_train2017.json", "--instances", coco / "annotations/instances_train2017.json")
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--quiet", "--kinds", "grounding", "--box-frame", "original")
    run(vlmdata_bin, "patchify", "--workspace", ws, "--quiet", "--mode", "anyres", "--image-size", 56, "--patch-size", 14)
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--quiet", "--tokenizer", SHARED / "tokenizers/mistral-v1/tokenizer.json",
        "--template", "vicuna_v1", "--image-tokens", "pixels")
    run(vlmdata_bin, "shard", "--workspace", ws, "--quiet")
    run(vlmdata_bin, "view", "--workspace", ws, "--out", out, "--samples", 4, "--seed", 1, "--quiet")
    page = (out / "index.html").read_text()
    keys = card_keys(page)
    assert len(keys) == 4
    browser = Browser()
    try:
        browser.open((out / "index.html").resolve().as_uri())
        assert browser.errors() == []
        for key in keys:
            pixels, _, _, meta = stored_pixels(ws, key)
            tiles = pixels.shape[0]
            assert tiles >= 3 and meta["grid"] and tiles == 1 + meta["grid"][0] * meta["grid"][1]
            with Image.open(out / "images" / f"{key}.png") as png:
                shown = np.asarray(png.convert("RGB"))
            assert shown.shape == (56, tiles * 56, 3) and np.array_equal(shown, unpatchify(pixels))
            size = browser.evaluate(f"(i => [i.naturalWidth, i.naturalHeight])(document.getElementById('{key}').querySelector('img'))")
            assert size == [tiles * 56, 56]
            rects = browser.evaluate(f"Array.from(document.getElementById('{key}').querySelectorAll('rect.box'))"
                                     ".map(r => parseFloat(r.getAttribute('x')) + parseFloat(r.getAttribute('width')))")
            assert rects and all(right <= 56.01 for right in rects)   # in the base view, tile 0
    finally:
        browser.close()
