"""An independent Python implementation of LLaVA's prompt building and label masking (llava/conversation.py,
llava/mm_utils.py tokenizer_image_token, llava/train/train.py preprocess_multimodal / preprocess_v1 /
preprocess_llama_2 / preprocess_mpt / preprocess_plain), on a HF `tokenizers.Tokenizer` (the fast tokenizer)."""

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAMA2_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content that "
                 "the user provides, and assist the user with a variety of tasks using natural language.")
CHATML_SYSTEM = "<|im_start|>system\nAnswer the questions."


class LLaVA:
    def __init__(self, tok, legacy=True, model_max_length=2048):
        self.tok = tok
        self.legacy = legacy
        self.model_max_length = model_max_length
        empty = tok.encode("").ids
        self.bos = empty[0] if empty else None
        unk = tok.get_vocab().get("<unk>") if tok.model.__class__.__name__ == "BPE" and getattr(tok.model, "unk_token", None) else None
        self.pad = unk

    def ids(self, text):
        return self.tok.encode(text).ids

    def tokenizer_image_token(self, prompt):
        chunks = [self.ids(c) for c in prompt.split("<image>")]
        out = []
        offset = 0
        if chunks and chunks[0] and chunks[0][0] == self.bos:
            offset = 1
            out.append(chunks[0][0])
        sep = [IMAGE_TOKEN_INDEX] * (offset + 1)
        seq = [e for sub in zip(chunks, [sep] * len(chunks)) for e in sub][:-1]
        for x in seq:
            out.extend(x[offset:])
        return out

    @staticmethod
    def preprocess_multimodal(turns):
        out = []
        for t in turns:
            v = t["value"]
            if "<image>" in v:
                v = v.replace("<image>", "").strip()
                v = "<image>\n" + v
                v = v.strip()
            out.append({"from": t["from"], "value": v})
        return out

    @staticmethod
    def prompt(template, turns):
        if template == "vicuna_v1":
            seps = [" ", "</s>"]
            ret = VICUNA_SYSTEM + seps[0]
            for i, t in enumerate(turns):
                role = "USER" if t["from"] == "human" else "ASSISTANT"
                ret += (role + ": " + t["value"] + seps[i % 2]) if t["value"] else role + ":"
            return ret
        if template == "llama_2":
            ret = ""
            for i, t in enumerate(turns):
                m = t["value"]
                if not m:
                    continue
                if i == 0:
                    m = f"<<SYS>>\n{LLAMA2_SYSTEM}\n<</SYS>>\n\n" + m
                ret += ("<s>" + f"[INST] {m} [/INST]") if i % 2 == 0 else (" " + m + " " + "</s>")
            return ret.lstrip("<s>")
        if template == "chatml":
            ret = CHATML_SYSTEM + "<|im_end|>"
            for t in turns:
                role = "<|im_start|>user\n" if t["from"] == "human" else "<|im_start|>assistant\n"
                ret += (role + t["value"] + "<|im_end|>") if t["value"] else role
            return ret
        raise ValueError(template)

    @staticmethod
    def _set(target, start, stop):
        target[start:stop] = [IGNORE_INDEX] * len(target[start:stop])

    def preprocess(self, template, record):
        has_image = "image" in record and record["image"] is not None
        turns = record["conversations"]
        if turns[0]["from"] != "human":
            turns = turns[1:]
        if has_image:
            turns = self.preprocess_multimodal(turns)
        tok = self.tokenizer_image_token if has_image else self.ids
        if template == "plain":
            assert len(turns) == 2 and "<image>" in turns[0]["value"]
            text = "<image>" + turns[1]["value"] + "\n"
            input_ids = self.tokenizer_image_token(text)
            target = list(input_ids)
            self._set(target, 0, len(self.tokenizer_image_token("<image>")))
            return input_ids, target
        conversation = self.prompt(template, turns)
        input_ids = tok(conversation)
        target = list(input_ids)
        total_len = sum(1 for x in input_ids if x != self.pad)
        if template in ("vicuna_v1", "llama_2"):
            sep = " ASSISTANT: " if template == "vicuna_v1" else "[/INST] "
            rounds = conversation.split("</s>")
            cur_len = 1
            self._set(target, 0, cur_len)
            for i, rou in enumerate(rounds):
                if rou == "":
                    break
                parts = rou.split(sep)
                if len(parts) != 2:
                    break
                parts[0] += sep
                round_len = len(tok(rou))
                instruction_len = len(tok(parts[0])) - 2
                if template == "vicuna_v1" and i != 0 and not self.legacy:
                    round_len -= 1
                    instruction_len -= 1
                self._set(target, cur_len, cur_len + instruction_len)
                cur_len += round_len
        else:  # chatml: preprocess_mpt
            sep = "<|im_end|>" + "<|im_start|>assistant\n"
            rounds = conversation.split("<|im_end|>")
            re_rounds = ["<|im_end|>".join(rounds[:3])]
            for idx in range(3, len(rounds), 2):
                re_rounds.append("<|im_end|>".join(rounds[idx:idx + 2]))
            cur_len = 0
            for i, rou in enumerate(re_rounds):
                if rou == "":
                    break
                parts = rou.split(sep)
                if len(parts) != 2:
                    break
                parts[0] += sep
                round_len = len(tok(rou))
                instruction_len = len(tok(parts[0])) - 1
                if i != 0 and self.legacy:
                    round_len += 1
                    instruction_len += 1
                self._set(target, cur_len, cur_len + instruction_len)
                cur_len += round_len
        self._set(target, cur_len, len(target))
        if cur_len < self.model_max_length and cur_len != total_len:
            target = [IGNORE_INDEX] * len(target)
        return input_ids, target
