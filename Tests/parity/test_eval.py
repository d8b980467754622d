"""`vlmdata eval` against the benchmarks' own scoring logic, and the leakage guarantee end to end.

POPE scoring is compared with a verbatim run of LLaVA's published `llava/eval/eval_pope.py`
(github.com/haotian-liu/LLaVA, commit 4241f08c6368f1c5bb28dc7c8be6cb19713e324a, Apache-2.0) on the same files.
"""
import contextlib
import io
import json
import os
import random
import re
import shutil
import sqlite3

import pytest

from conftest import run


# ---- verbatim: haotian-liu/LLaVA llava/eval/eval_pope.py (the __main__ block wrapped in a function) ----
def eval_pope(answers, label_file):
    label_list = [json.loads(q)['label'] for q in open(label_file, 'r')]

    for answer in answers:
        text = answer['text']

        # Only keep the first sentence
        if text.find('.') != -1:
            text = text.split('.')[0]

        text = text.replace(',', '')
        words = text.split(' ')
        if 'No' in words or 'not' in words or 'no' in words:
            answer['text'] = 'no'
        else:
            answer['text'] = 'yes'

    for i in range(len(label_list)):
        if label_list[i] == 'no':
            label_list[i] = 0
        else:
            label_list[i] = 1

    pred_list = []
    for answer in answers:
        if answer['text'] == 'no':
            pred_list.append(0)
        else:
            pred_list.append(1)

    pos = 1
    neg = 0
    yes_ratio = pred_list.count(1) / len(pred_list)

    TP, TN, FP, FN = 0, 0, 0, 0
    for pred, label in zip(pred_list, label_list):
        if pred == pos and label == pos:
            TP += 1
        elif pred == pos and label == neg:
            FP += 1
        elif pred == neg and label == neg:
            TN += 1
        elif pred == neg and label == pos:
            FN += 1

    print('TP\tFP\tTN\tFN\t')
    print('{}\t{}\t{}\t{}'.format(TP, FP, TN, FN))

    precision = float(TP) / float(TP + FP)
    recall = float(TP) / float(TP + FN)
    f1 = 2*precision*recall / (precision + recall)
    acc = (TP + TN) / (TP + TN + FP + FN)
    print('Accuracy: {}'.format(acc))
    print('Precision: {}'.format(precision))
    print('Recall: {}'.format(recall))
    print('F1 score: {}'.format(f1))
    print('Yes ratio: {}'.format(yes_ratio))
    print('%.3f, %.3f, %.3f, %.3f, %.3f' % (f1, acc, precision, recall, yes_ratio) )


def eval_pope_main(annotation_dir, question_file, result_file):
    questions = [json.loads(line) for line in open(question_file)]
    questions = {question['question_id']: question for question in questions}
    answers = [json.loads(q) for q in open(result_file)]
    for file in os.listdir(annotation_dir):
        assert file.startswith('coco_pope_')
        assert file.endswith('.json')
        category = file[10:-5]
        cur_answers = [x for x in answers if questions[x['question_id']]['category'] == category]
        print('Category: {}, # samples: {}'.format(category, len(cur_answers)))
        eval_pope(cur_answers, os.path.join(annotation_dir, file))
        print("====================================")
# ---- end of verbatim code ----


def parse_eval_pope_output(text):
    """{category: {tp, fp, tn, fn, accuracy, precision, recall, f1, yes_ratio}} from eval_pope_main's printout."""
    out = {}
    for block in text.split("====================================")[:-1]:
        category = re.search(r"Category: (\w+)", block).group(1)
        lines = block.strip().splitlines()
        tp, fp, tn, fn = map(int, lines[lines.index("TP\tFP\tTN\tFN\t") + 1].split("\t"))
        get = lambda name: float(re.search(rf"{name}: ([0-9.e-]+)", block).group(1))
        out[category] = dict(tp=tp, fp=fp, tn=tn, fn=fn, accuracy=get("Accuracy"), precision=get("Precision"),
                             recall=get("Recall"), f1=get("F1 score"), yes_ratio=get("Yes ratio"))
    return out


@pytest.fixture(scope="module")
def mini(vlmdata_bin, shared, tmp_path_factory):
    """A workspace with coco-mini ingested as split `mini`."""
    ws = str(tmp_path_factory.mktemp("eval") / "ws")
    coco = shared / "coco-mini"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", coco / "annotations" / "captions_train2017.json",
        "--instances", coco / "annotations" / "instances_train2017.json", "--images", coco / "train2017",
        "--split", "mini", "--quiet")
    return ws


# Answers a real model gives: bare words, trailing explanations, negations, odd casing, empty text.
PHRASINGS = ["Yes", "No", "yes", "no", "Yes, there is.", "No, there is not.", "There is no {o} in the image.",
             "I do not see one.", "Yes. But it is not clear.", "NO", "Nope", "", "Not really, no.", "yes,no",
             "There is a {o}, yes.", "No.\nThere is none.", "Definitely not", "I think so"]


def test_pope_scores_equal_eval_pope(vlmdata_bin, mini, tmp_path):
    out = tmp_path / "pope"
    run(vlmdata_bin, "eval", "build", "--workspace", mini, "--kind", "pope", "--split", "mini", "--count", "25",
        "--seed", "7", "--out", out, "--quiet")
    questions = [json.loads(line) for line in open(out / "questions.jsonl")]
    rng = random.Random(1)
    answers = tmp_path / "answers.jsonl"
    with open(answers, "w") as f:
        for q in questions:
            obj = re.search(r"Is there an? (.+) in the image\?", q["text"]).group(1)
            f.write(json.dumps({"question_id": q["question_id"], "prompt": q["text"],
                                "text": rng.choice(PHRASINGS).format(o=obj), "model_id": "test"}) + "\n")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        eval_pope_main(str(out / "coco_pope"), str(out / "questions.jsonl"), str(answers))
    expected = parse_eval_pope_output(printed.getvalue())
    assert set(expected) == {"random", "popular", "adversarial"}

    report = json.loads(run(vlmdata_bin, "eval", "score", "--set", out, "--answers", answers, "--json").stdout)
    ours = {row["name"]: row for row in report["categories"]}
    assert report["missing"] == 0 and report["questions"] == 25 * 6 * 3
    for category, want in expected.items():
        got = ours[category]["metrics"]
        assert ours[category]["n"] == 150
        for name in ("tp", "fp", "tn", "fn"):
            assert got[name] == want[name], (category, name)
        for name in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            assert got[name] == pytest.approx(want[name], abs=1e-12), (category, name)
    # The phrasings make every cell of the confusion matrix non-empty.
    assert all(want[c] > 0 for want in expected.values() for c in ("tp", "fp", "tn", "fn"))


def test_mmbench_tsv_reads_as_vlmevalkit_reads_it(vlmdata_bin, mini, tmp_path):
    """VLMEvalKit loads its TSVs with pandas.read_csv(sep="\\t"); the csv module reads the same cells."""
    import base64
    import csv
    out = tmp_path / "mmb"
    run(vlmdata_bin, "eval", "build", "--workspace", mini, "--kind", "mmbench", "--split", "mini", "--count", "10",
        "--out", out, "--quiet")
    csv.field_size_limit(1 << 30)   # the base64 images are longer than csv's default cell limit
    with open(out / "mmbench.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    keys = [json.loads(line) for line in open(out / "answer_key.jsonl")]
    assert list(rows[0].keys()) == ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]
    assert len(rows) == len(keys)
    # VLMEvalKit's circular copies: index % 1e6 is the group; each group has all 4 rotations.
    groups = {}
    for row in rows:
        groups.setdefault(int(row["index"]) % 1_000_000, []).append(row)
    assert all(len(g) == 4 and sorted(r["answer"] for r in g) == ["A", "B", "C", "D"] for g in groups.values())
    assert all(len({r[r["answer"]] for r in g}) == 1 for g in groups.values())
    assert base64.b64decode(rows[0]["image"])[:2] == b"\xff\xd8"   # a JPEG


def test_score_reports_missing_answers_on_the_cli(vlmdata_bin, mini, tmp_path):
    out = tmp_path / "mme"
    run(vlmdata_bin, "eval", "build", "--workspace", mini, "--kind", "mme", "--split", "mini", "--count", "6",
        "--out", out, "--quiet")
    keys = [json.loads(line) for line in open(out / "answer_key.jsonl")]
    answers = tmp_path / "a.jsonl"
    with open(answers, "w") as f:
        for k in keys[1:]:
            f.write(json.dumps({"question_id": k["question_id"], "text": k["label"].capitalize() + "."}) + "\n")
    result = run(vlmdata_bin, "eval", "score", "--set", out, "--answers", answers)
    assert f"missing question ids: {keys[0]['question_id']}" in result.stdout
    report = json.loads(run(vlmdata_bin, "eval", "score", "--set", out, "--answers", answers, "--json").stdout)
    # 11 of 12 right; the image with the missing answer loses acc+.
    assert report["overall"]["metrics"]["acc"] == pytest.approx(11 / 12)
    assert report["overall"]["metrics"]["acc_plus"] == pytest.approx(5 / 6)


def test_shard_leaves_eval_images_out_and_check_finds_a_planted_overlap(vlmdata_bin, shared, tmp_path):
    ws = str(tmp_path / "ws")
    coco = shared / "coco-mini"
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", coco / "annotations" / "captions_train2017.json",
        "--instances", coco / "annotations" / "instances_train2017.json", "--images", coco / "train2017",
        "--split", "mini", "--quiet")
    run(vlmdata_bin, "eval", "build", "--workspace", ws, "--kind", "pope", "--split", "mini", "--count", "10",
        "--out", tmp_path / "pope", "--quiet")
    held = sorted({json.loads(line)["image"] for line in open(tmp_path / "pope" / "answer_key.jsonl")})
    # Plant the same bytes under another name, in another split.
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(coco / "train2017" / held[0], dup / "renamed_copy.jpg")
    from PIL import Image
    width, height = Image.open(dup / "renamed_copy.jpg").size
    (dup / "captions.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "renamed_copy.jpg", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A copy of an evaluation image."}]}))
    run(vlmdata_bin, "ingest", "coco", "--workspace", ws, "--captions", dup / "captions.json", "--images", dup,
        "--split", "dup", "--quiet")
    run(vlmdata_bin, "gen-instructions", "--workspace", ws, "--generator", "templates", "--kinds", "caption", "--quiet")
    run(vlmdata_bin, "tokenize", "--workspace", ws, "--tokenizer", shared / "tokenizers" / "gpt2" / "tokenizer.json",
        "--template", "plain", "--image-tokens", "4", "--quiet")
    run(vlmdata_bin, "patchify", "--workspace", ws, "--image-size", "28", "--patch-size", "14", "--mode", "pad", "--quiet")

    report = json.loads(run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "1MB", "--json", "--quiet").stdout)
    db = sqlite3.connect(os.path.join(ws, "catalog.sqlite"))
    held_sha = {row[0] for row in db.execute("SELECT sha256 FROM eval_images")}
    sharded = {row[0] for row in db.execute("""
        SELECT img.sha256 FROM samples s JOIN instructions i ON i.id = s.instruction_id JOIN images img ON img.id = i.image_id""")}
    per_image = db.execute("""SELECT COUNT(*) FROM instructions i JOIN images img ON img.id = i.image_id
                              WHERE img.sha256 IN (SELECT sha256 FROM eval_images)""").fetchone()[0]
    db.close()
    assert len(held_sha) == 10 and not (held_sha & sharded)
    assert report["counts"]["skipped_eval_image"] == per_image   # the 10 images and the renamed copy
    assert report["counts"]["samples"] > 0
    clean = run(vlmdata_bin, "eval", "check", "--workspace", ws, "--json")
    assert json.loads(clean.stdout)["overlaps"] == []

    run(vlmdata_bin, "shard", "--workspace", ws, "--target-size", "1MB", "--allow-eval-images", "--quiet")
    leaky = run(vlmdata_bin, "eval", "check", "--workspace", ws, "--json", check=False)
    assert leaky.returncode == 1
    found = json.loads(leaky.stdout)
    assert found["overlap_images"] == 10
    renamed = [o for o in found["overlaps"] if o["train_image"].startswith("dup_")]
    assert len(renamed) == 1 and renamed[0]["eval_image"] == "mini_" + held[0].rsplit(".", 1)[0]
    assert "leak: sample" in run(vlmdata_bin, "eval", "check", "--workspace", ws, check=False).stdout


def _part(vlmdata_bin, shared, ws, part, name, out, stages=True, plant=None):
    """coco-mini as part PART of 2 with an eval set NAME built from it, then (with `stages`) sharded; `plant` is a
    folder with one more image (split `dup`, ingested whole) to shard with it."""
    coco = shared / "coco-mini"
    q, p = ["--workspace", ws, "--quiet"], ["--part", part]
    run(vlmdata_bin, "ingest", "coco", *q, "--captions", coco / "annotations" / "captions_train2017.json",
        "--instances", coco / "annotations" / "instances_train2017.json", "--images", coco / "train2017",
        "--split", "mini", *p)
    run(vlmdata_bin, "eval", "build", *q, "--kind", "pope", "--split", "mini", "--count", "5", "--name", name, "--out", out)
    if plant:
        run(vlmdata_bin, "ingest", "coco", *q, "--captions", plant / "captions.json", "--images", plant, "--split", "dup", *p)
    if stages:
        run(vlmdata_bin, "gen-instructions", *q, "--generator", "templates", "--kinds", "caption", *p)
        run(vlmdata_bin, "tokenize", *q, "--tokenizer", shared / "tokenizers" / "gpt2" / "tokenizer.json",
            "--template", "plain", "--image-tokens", "4", *p)
        run(vlmdata_bin, "patchify", *q, "--image-size", "28", "--patch-size", "14", "--mode", "pad", *p)
        run(vlmdata_bin, "shard", *q, "--target-size", "1MB", *p)
    with sqlite3.connect(os.path.join(ws, "catalog.sqlite")) as db:
        return {row[0] for row in db.execute("SELECT sha256 FROM eval_images")}


def test_catalog_merge_carries_eval_sets_and_the_merged_check_sees_across_parts(vlmdata_bin, shared, tmp_path):
    # Part 0's set holds an image whose bytes part 1 also has, under another name: part 1 cannot know, so its shard
    # holds the copy; only the merged catalog, with both parts' sets, can name that leak. (The key dup_renamed_copy
    # falls in part 1 of 2: FNV-1a 64 of it is odd.)
    held0 = _part(vlmdata_bin, shared, str(tmp_path / "part0"), "0/2", "pope-part0", tmp_path / "pope0")
    keys = [json.loads(line) for line in open(tmp_path / "pope0" / "answer_key.jsonl")]
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(shared / "coco-mini" / "train2017" / keys[0]["image"], dup / "renamed_copy.jpg")
    from PIL import Image
    width, height = Image.open(dup / "renamed_copy.jpg").size
    (dup / "captions.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "renamed_copy.jpg", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "caption": "A copy of an evaluation image."}]}))
    held1 = _part(vlmdata_bin, shared, str(tmp_path / "part1"), "1/2", "pope-part1", tmp_path / "pope1", plant=dup)
    held = held0 | held1
    assert len(held) == 10
    merged = str(tmp_path / "merged")
    report = json.loads(run(vlmdata_bin, "catalog", "merge", merged, str(tmp_path / "part0"), str(tmp_path / "part1"),
                            "--json", "--quiet").stdout)
    assert report["counts"]["eval_sets"] == 2 and report["counts"]["eval_images"] == 10
    with sqlite3.connect(os.path.join(merged, "catalog.sqlite")) as db:
        sets = db.execute("""SELECT s.name, s.kind, COUNT(*) FROM eval_sets s JOIN eval_images e ON e.eval_set_id = s.id
                             JOIN images i ON i.id = e.image_id AND i.sha256 = e.sha256 GROUP BY s.id ORDER BY s.name""").fetchall()
        merged_held = {row[0] for row in db.execute("SELECT sha256 FROM eval_images")}
        sharded = {row[0]: row[1] for row in db.execute("""SELECT img.sha256, img.key FROM samples s JOIN instructions i
                                                   ON i.id = s.instruction_id JOIN images img ON img.id = i.image_id""")}
    assert sets == [("pope-part0", "pope", 5), ("pope-part1", "pope", 5)]
    assert merged_held == held and len(sharded) > 20
    # every part left its own set's images out; the one eval image in a training shard is the planted copy
    assert [key for sha, key in sharded.items() if sha in held] == ["dup_renamed_copy"]
    found = run(vlmdata_bin, "eval", "check", "--workspace", merged, "--json", check=False)
    assert found.returncode == 1
    overlaps = json.loads(found.stdout)["overlaps"]
    assert [(o["eval_set"], o["train_image"]) for o in overlaps] == [("pope-part0", "dup_renamed_copy")]


def test_catalog_merge_refuses_one_set_name_for_two_parts_sets(vlmdata_bin, shared, tmp_path):
    parts = []
    for i in range(2):
        ws = str(tmp_path / f"part{i}")
        _part(vlmdata_bin, shared, ws, f"{i}/2", "pope", tmp_path / f"part{i}-pope", stages=False)
        parts.append(ws)
    merged = str(tmp_path / "merged")
    failed = run(vlmdata_bin, "catalog", "merge", merged, *parts, "--quiet", check=False)
    assert failed.returncode != 0 and "eval sets pope" in failed.stderr and "distinct --name" in failed.stderr


class _JudgeHandler:
    """A loopback OpenAI-compatible judge: the answer "Choice number N" means the N-th option."""
    requests = 0


def _judge_server():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            _JudgeHandler.requests += 1
            prompt = body["messages"][-1]["content"]
            words = ["one", "two", "three", "four"]
            said = re.search(r"Answer: Choice number (\w+)", prompt)
            letter = "ABCD"[words.index(said.group(1))] if said and said.group(1) in words else "Z"
            reply = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": letter}}],
                                "usage": {"prompt_tokens": 10, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_mmbench_llm_judge_is_asked_only_when_rules_fail_and_is_cached(vlmdata_bin, mini, tmp_path):
    out = tmp_path / "mmb-judge"   # set names (the folder's name) are unique per workspace
    run(vlmdata_bin, "eval", "build", "--workspace", mini, "--kind", "mmbench", "--split", "mini", "--count", "3",
        "--out", out, "--quiet")
    keys = [json.loads(line) for line in open(out / "answer_key.jsonl")]
    answers = tmp_path / "a.jsonl"
    words = ["one", "two", "three", "four"]
    with open(answers, "w") as f:
        for k in keys:
            # Rotation 0 answers with the letter (the rules read it); the others only in words the rules cannot read.
            text = k["answer"] if k["rotation"] == 0 else "Choice number " + words["ABCD".index(k["answer"])]
            f.write(json.dumps({"question_id": k["question_id"], "text": text}) + "\n")
    server = _judge_server()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        plain = json.loads(run(vlmdata_bin, "eval", "score", "--set", out, "--answers", answers, "--json").stdout)
        judged_rotations = len(keys) - len(keys) // 4
        assert plain["unparsed"] == judged_rotations and plain["overall"]["metrics"]["circular_accuracy"] == 0
        ws = str(tmp_path / "judge-ws")
        args = ["eval", "score", "--workspace", ws, "--set", out, "--answers", answers, "--json", "--judge", "llm",
                "--judge-url", url, "--judge-model", "judge-test"]
        judged = json.loads(run(vlmdata_bin, *args).stdout)
        assert judged["judged"] == judged_rotations and judged["unparsed"] == 0
        assert judged["overall"]["metrics"]["circular_accuracy"] == 1.0
        assert _JudgeHandler.requests == judged_rotations
        again = json.loads(run(vlmdata_bin, *args).stdout)
        assert again["judged"] == judged_rotations and _JudgeHandler.requests == judged_rotations   # all from the cache
        budget = json.loads(run(vlmdata_bin, *[a if a != ws else str(tmp_path / "ws2") for a in args],
                                "--judge-max-requests", "2").stdout)
        assert budget["judged"] == 2 and budget["unparsed"] == judged_rotations - 2
        assert _JudgeHandler.requests == judged_rotations + 2
    finally:
        server.shutdown()


# ---- eval build as a stage value (issue 12): a pipeline file builds a set; lineage; an unchanged rerun skips ----

def test_eval_build_runs_from_a_pipeline_file_with_lineage(vlmdata_bin, shared, tmp_path):
    coco = shared / "coco-mini"
    ws, out = tmp_path / "ws", tmp_path / "sets" / "pope"
    pipeline = tmp_path / "eval.yaml"
    pipeline.write_text(f"""workspace: {ws}
stages:
  - stage: ingest coco
    captions: {coco / "annotations" / "captions_train2017.json"}
    instances: {coco / "annotations" / "instances_train2017.json"}
    images: {coco / "train2017"}
    split: mini
  - stage: eval build
    kind: pope
    split: mini
    count: 10
    seed: 7
    pope_sampling: [random, adversarial]
    out: {out}
""")
    first = [json.loads(line) for line in run(vlmdata_bin, "run", pipeline, "--json", "--quiet").stdout.splitlines()]
    build = first[-1]
    assert build["stage"] == "eval build" and not build["skipped"]
    assert build["counts"]["images"] == 10 and build["counts"]["questions"] == len(open(out / "questions.jsonl").readlines())
    assert build["counts"]["questions.random"] + build["counts"]["questions.adversarial"] == build["counts"]["questions"]
    assert sorted(os.listdir(out / "coco_pope")) == ["coco_pope_adversarial.json", "coco_pope_random.json"]
    assert build["run"]["name"] == "pope:pope"
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        assert db.execute("SELECT name, kind, split, questions FROM eval_sets").fetchall() == [
            ("pope", "pope", "mini", build["counts"]["questions"])]
        (inputs,) = db.execute("SELECT inputs FROM runs WHERE stage = 'eval build' AND status = 'done'").fetchone()
        (ingest,) = db.execute("SELECT id FROM runs WHERE stage = 'ingest coco' AND status = 'done'").fetchone()
    assert json.loads(inputs) == [ingest]
    questions = (out / "questions.jsonl").read_bytes()

    again = json.loads(run(vlmdata_bin, "run", pipeline, "--json", "--quiet").stdout.splitlines()[-1])
    assert again["skipped"] and again["run"]["id"] == build["run"]["id"]
    shutil.rmtree(out)      # the set's files are outside the catalog: gone, the stage builds them again
    rebuilt = json.loads(run(vlmdata_bin, "run", pipeline, "--json", "--quiet").stdout.splitlines()[-1])
    assert not rebuilt["skipped"] and (out / "questions.jsonl").read_bytes() == questions

    # The CLI is the same stage: same config, same run.
    cli = json.loads(run(vlmdata_bin, "eval", "build", "--workspace", ws, "--kind", "pope", "--split", "mini", "--count", "10",
                         "--seed", "7", "--pope-sampling", "random", "--pope-sampling", "adversarial", "--out", out,
                         "--json", "--quiet").stdout)
    assert cli["skipped"] and cli["run"]["id"] == rebuilt["run"]["id"]


def test_eval_build_keys_are_checked_before_anything_runs(vlmdata_bin, tmp_path):
    pipeline = tmp_path / "bad.yaml"
    pipeline.write_text(f"""workspace: {tmp_path / "ws"}
stages:
  - stage: eval build
    kind: popee
    split: mini
    out: {tmp_path / "set"}
    colour: red
""")
    result = run(vlmdata_bin, "run", pipeline, "--dry-run", check=False)
    assert result.returncode == 1
    assert "colour" in result.stderr and "pope_sampling" in result.stderr, result.stderr
    assert not (tmp_path / "ws").exists()
