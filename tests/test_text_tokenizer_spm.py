"""The tokenizer against a second, independent reference: Debian's sentencepiece with the
original LLaMA tokenizer.model, on 2000 seeded random strings (words of the model card, runs of
spaces, newlines and tabs, and code points from many scripts, emoji and astral planes). The
legacy llava tokenizer.json is built from that model, so without added-token text the ids must
be the same. Runs `llava tokenize --jsonl --no-bos` once over all strings."""
import json
import os
import random
import subprocess
import sys

import sentencepiece as spm

LLAVA = os.environ.get("LLAVA_BIN", "build/llava")
DATA = os.environ.get("LLAVA_TEST_DATA", os.path.join(os.path.dirname(__file__), "data"))
MODEL = os.path.join(DATA, "llava-1.5-7b-hf")

RANGES = [(0x21, 0x7E), (0xA0, 0x2FF), (0x300, 0x36F), (0x370, 0x52F), (0x600, 0x6FF),
          (0x900, 0x97F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]
SPACES = [" ", "  ", "   ", "\n", "\n\n", "\t", " \n ", "\r\n"]
ADDED = ["<s>", "</s>", "<image>", "<unk>", "<pad>"]


def random_text(rng, words):
    parts = []
    for _ in range(rng.randint(1, 30)):
        r = rng.random()
        if r < 0.5:
            parts.append(rng.choice(words))
        elif r < 0.7:
            parts.append(rng.choice(SPACES))
        else:
            lo, hi = rng.choice(RANGES)
            c = rng.randint(lo, hi)
            parts.append(chr(c if not 0xD800 <= c <= 0xDFFF else 0x41))
    return "".join(parts)


def main():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(MODEL, "tokenizer.model"))
    with open(os.path.join(MODEL, "model_card_README.md"), encoding="utf-8") as f:
        words = f.read().split()
    rng = random.Random(20240611)
    texts = [""]
    while len(texts) < 2000:
        t = random_text(rng, words)
        # sentencepiece knows no added tokens and stops at NUL.
        if not any(a in t for a in ADDED) and "\0" not in t:
            texts.append(t)
    stdin = "".join(json.dumps(t) + "\n" for t in texts).encode()
    r = subprocess.run([LLAVA, "tokenize", "-m", MODEL, "--jsonl", "--no-bos", "--file", "-"],
                       input=stdin, capture_output=True)
    if r.returncode != 0:
        print(r.stderr.decode(), file=sys.stderr)
        return 1
    lines = r.stdout.decode().split("\n")
    bad = 0
    for i, t in enumerate(texts):
        ours = [int(x) for x in lines[i].split()]
        ref = sp.encode(t)
        if ours != ref:
            bad += 1
            if bad <= 5:
                print(f"MISMATCH {t!r}\n  sentencepiece {ref}\n  llava         {ours}")
    print(f"{len(texts)} strings, {bad} mismatches with sentencepiece {spm.__version__}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
