"""Edge-case texts for the tokenizer parity tests (imported by test_text.py and the benchmark)."""
import json
import pathlib

EDGE_TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "\t",
    "a",
    "Hello world",
    " Hello world",
    "Hello  world",
    "Hello   world   ",
    "   leading and trailing   ",
    "tabs\tand\t\ttabs\t",
    "new\nline\n\nand\n\n\nmore\n",
    "\r\nwindows\r\nline\r\n",
    "mixed \t\n \n\t  whitespace \u00a0nbsp\u3000ideographic\u2009thin\u200bzero-width",
    "It's, isn't, we're, they've, I'm, we'll, he'd; IT'S WE'RE THEY'VE I'M WE'LL HE'D",
    "'s 't 're 've 'm 'll 'd ''s '' ' s",
    "don\u2019t curly quotes \u201cquoted\u201d",
    "Numbers 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 1e10 0x1F",
    "Unicode digits \u0661\u0662\u0663 \u0967\u0968 \u2460\u2461 \u00bd \u2167",
    "\u4e2d\u6587\u6587\u672c\uff0c\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0647\u0630\u0627 \u0646\u0635 \u0639\u0631\u0628\u064a.",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "Emoji \U0001F600\U0001F44D\U0001F3FD \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
    "\U0001F44B\U0001F3FB\U0001F44B\U0001F3FC\U0001F44B\U0001F3FD\U0001F44B\U0001F3FE\U0001F44B\U0001F3FF waves",
    "\U0001F3F3\ufe0f\u200d\U0001F308 flag \U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5 \u2764\ufe0f",
    "combining: e\u0301 a\u0300 o\u0308 n\u0303 \u1e9b\u0323 Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e",
    "precomposed: \u00e9 \u00e0 \u00f6 \u00f1 \ufb01 \u2126 \u212b \u00c5",
    "control \u0000 null \u0001\u0002\u0003 bell \u0007 esc \u001b[31m del \u007f c1 \u0085 \u0080",
    "supercalifragilisticexpialidocious" * 4,
    "a" * 300,
    "ab" * 200 + " " + "xyz" * 150,
    "\u4e2d" * 200,
    "https://example.com/path?query=1&b=2#frag user@example.com",
    "def f(x):\n    return x ** 2  # comment\n\n\tif x: pass",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "a <|endoftext|> b <|endoftext|><|endoftext|> c",
    "<s> hello </s> <unk> </s><s>",
    "<s>",
    "text </s>",
    "<image>\nWhat is in the picture?",
    "USER: <image>\nDescribe it. ASSISTANT: A cat.</s>USER: More? ASSISTANT: No.</s>",
    "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "\u2581 metaspace char \u2581\u2581 in text",
    "\u0120 byte-level char \u010a in text",
    "\ufffd replacement char",
    "Mixed\u4e2d\u6587English\u65e5\u672c\u8a9e123abc!!!",
    "ALL CAPS SHOUTING AND MiXeD CaSe \u0130stanbul \u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2 \u1e9e stra\u00dfe",
    "punctuation!!! ??? ... --- ___ *** ((())) [[[]]] {{{}}} <<<>>> @@@ ###",
    "   \n   \n",
    "end with space ",
    "end with newline\n",
    "\u00a0\u00a0leading nbsp",
    "\u3000\u3000ideographic spaces\u3000",
    "ſ long s and 'ſ and 'S and 'T 'Re 'LL",
    "A photo of 2 dogs, 3 cats & 1 bird (approx. 10:30am).",
    "x" + " " * 20 + "y",
    "vertical\u000btab form\u000cfeed next\u0085line sep\u2028para\u2029 ogham\u1680space mongolian\u180evowel",
    "a\u000b\u000bb \u0085\u0085 c",
    "\t\t\tindented\n\t\t\t\tmore",
]


def llava_texts(shared):
    """Every string value of the conversations / instruction fields in ../shared/data/llava."""
    texts = []
    root = pathlib.Path(shared) / "llava"
    for path in sorted(root.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            for key in ("instruction", "output", "text", "caption"):
                if isinstance(record.get(key), str):
                    texts.append(record[key])
            for key in ("captions",):
                if isinstance(record.get(key), list):
                    texts.extend(x for x in record[key] if isinstance(x, str))
            for turn in record.get("conversations", []) or []:
                texts.append(turn["value"])
            if "instances" in record:
                texts.append(json.dumps(record["instances"]))
                texts.extend(f"{i['category']}: {i['bbox']}" for i in record["instances"])
    for path in sorted(root.glob("pretrain-sample/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for record in data:
            for turn in record.get("conversations", []):
                texts.append(turn["value"])
    return texts


def coco_captions(shared):
    data = json.loads((pathlib.Path(shared) / "coco-captions" / "captions_val2017.json").read_text(encoding="utf-8"))
    return [a["caption"] for a in data["annotations"]]
