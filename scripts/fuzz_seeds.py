"""Seed corpora for the JSON, tokenizer and image fuzz targets (scripts/fuzz.sh), cut from ../shared/data.

Usage: fuzz_seeds.py SHARED_DATA OUT_DIR   (writes OUT_DIR/{coco,llava,tokenizer,image}/)
Seeds stay small (libFuzzer mutates small inputs far faster): the first records of each real file, small
tokenizer.json files that keep the real ones' structure with a cut vocabulary, small images in many encodings.
"""
import io
import json
import os
import sys

from PIL import Image

shared, out = sys.argv[1:]
for d in ("coco", "llava", "tokenizer", "image"):
    os.makedirs(f"{out}/{d}", exist_ok=True)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# COCO: the first images of each real file with their annotations (polygons and RLE kept) and categories.
for name, path in [("captions", f"{shared}/coco-mini/annotations/captions_train2017.json"),
                   ("instances", f"{shared}/coco-mini/annotations/instances_train2017.json"),
                   ("captions-val", f"{shared}/coco-captions/captions_val2017.json")]:
    data = json.load(open(path))
    for n in (1, 3):
        images = data["images"][:n]
        ids = {i["id"] for i in images}
        cut = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
        cut["images"] = images
        cut["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids][:6]
        if "categories" in data:
            used = {a.get("category_id") for a in cut["annotations"]}
            cut["categories"] = [c for c in data["categories"] if c["id"] in used][:4]
        write(f"{out}/coco/{name}-{n}.json", json.dumps(cut, indent=None if n == 1 else 1))
write(f"{out}/coco/edge-boxes.json", json.dumps({
    "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 8}, {"id": 2, "file_name": "b b.png"}],
    "categories": [{"id": 3, "name": "cat", "supercategory": "animal"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [-2, 1, 20, 3.5], "area": 1.5, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [11, 9, 1, 1], "segmentation": {"counts": "ab", "size": [8, 10]}},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 0, 1e308]},
        {"id": 4, "image_id": 1, "caption": "A cat \u00e9\ud83d\ude00 on a mat."}]}))

# LLaVA: the first records of the pretrain JSON array and of each JSONL file.
pretrain = json.load(open(f"{shared}/llava/pretrain-sample/blip_laion_cc_sbu_first50.json"))
write(f"{out}/llava/pretrain-2.json", json.dumps(pretrain[:2]))
write(f"{out}/llava/pretrain-1-indented.json", json.dumps(pretrain[:1], indent=2, ensure_ascii=False))
for name in ("caps_boxes_coco2014_val_80.jsonl", "coco2014_val_gpt4_qa_30x3.jsonl"):
    lines = open(f"{shared}/llava/{name}").read().splitlines()
    write(f"{out}/llava/{name}", "\n".join(lines[:2]) + "\n")
write(f"{out}/llava/edge.json", json.dumps([
    {"id": 7, "image": "a/b.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "x"}]},
    {"id": "q", "image": "../x.jpg", "instruction": "Describe.", "output": "ok", "type": "detail"},
    {"id": "t", "conversations": [{"from": "human", "value": "hi"}]}]))

# Tokenizers: the real gpt2 and mistral-v1 files with the vocabulary cut to the tokens the first merges need,
# and variants of their pre-tokenizer / normalizer / post-processor sections. Text seeds start with a byte < 0x10.
def cut(path, keep_merges):
    t = json.load(open(path))
    model = t["model"]
    vocab = model["vocab"]
    merges = model["merges"][:keep_merges]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    keep = {tok for tok, i in vocab.items() if i < 300}
    for a, b in pairs:
        keep.update((a, b, a + b))
    keep.update(a["content"] for a in t.get("added_tokens", []))
    ordered = sorted((vocab[tok], tok) for tok in keep if tok in vocab)
    model["vocab"] = {tok: i for i, (_, tok) in enumerate(ordered)}
    model["merges"] = [m for m, (a, b) in zip(merges, pairs) if a in keep and b in keep and a + b in model["vocab"]]
    remap = {old: new for new, (old, _) in enumerate(ordered)}
    t["added_tokens"] = [dict(a, id=remap[a["id"]]) for a in t.get("added_tokens", []) if a["id"] in remap]
    return t

for name in ("gpt2", "mistral-v1"):
    t = cut(f"{shared}/tokenizers/{name}/tokenizer.json", 60)
    write(f"{out}/tokenizer/{name}-cut.json", json.dumps(t, ensure_ascii=False))
    v = json.loads(json.dumps(t))
    v["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True}]}
    v["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+|\\d"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": False}]}
    v["truncation"] = {"direction": "Left", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    v["padding"] = {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": None,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}
    write(f"{out}/tokenizer/{name}-variant.json", json.dumps(v, ensure_ascii=False))
texts = ["A photo of a cat sitting on a laptop.", "<image>\nWhat is in the image? 12,345 items\u2014caf\u00e9 \U0001F600",
         "  leading   spaces\tand\nnewlines  ", "USER: <s>hi</s> [INST] x [/INST]", "\u00ff\u0100 \u0627\u0644\u0639 \u4e2d\u6587"]
for i, text in enumerate(texts):
    write(f"{out}/tokenizer/text-{i}", bytes([i % 16]) + text.encode())
write(f"{out}/tokenizer/text-invalid-utf8", b"\x01ab\xff\xfe\xc3(cd\xe2\x82")

# Images: small crops of the shared photos in the encodings ingest meets.
def save(img, name, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    write(f"{out}/image/{name}", buf.getvalue())

for photo in ("astronaut.png", "rocket.jpg", "camera.png"):
    base = Image.open(f"{shared}/photos/{photo}").convert("RGB").resize((24, 16))
    stem = photo.split(".")[0]
    save(base, f"{stem}.jpg", "JPEG", quality=80)
    save(base, f"{stem}-progressive.jpg", "JPEG", quality=60, progressive=True)
    save(base.convert("L"), f"{stem}-gray.jpg", "JPEG")
    save(base.convert("CMYK"), f"{stem}-cmyk.jpg", "JPEG")
    save(base, f"{stem}.png", "PNG")
    save(base.convert("RGBA"), f"{stem}-rgba.png", "PNG")
    save(base.convert("P", palette=Image.ADAPTIVE, colors=16), f"{stem}-palette.png", "PNG")
    save(base.convert("LA"), f"{stem}-la.png", "PNG")
    save(base.convert("I;16"), f"{stem}-16bit.png", "PNG")
exif = Image.Exif()
exif[0x0112] = 6
save(Image.open(f"{shared}/photos/coffee.png").convert("RGB").resize((12, 20)), "coffee-exif6.jpg", "JPEG", exif=exif.tobytes())
save(Image.new("1", (9, 5), 1), "bilevel.png", "PNG")
