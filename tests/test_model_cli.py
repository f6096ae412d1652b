#!/usr/bin/env python3
"""`llava dump` and `llava run` against the Hugging Face reference of every fixture, from the
image file and the question (template, tokenizer, image decoding and preprocessing included):
pixel_values within 0.02, vision.features, image_features, inputs_embeds and last_logits within
1e-4 relative error, expanded_input_ids and the 16 greedy tokens exact, the streamed text equal
to transformers' decode. Then bad requests: each fails with a clear message."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

LLAVA = os.environ["LLAVA_BIN"]
FIXTURES = os.environ["LLAVA_FIXTURES"]

# (fixture, prompt as given to `llava`, raw mode): the template path for two, raw text for one
CASES = [
    ("tiny-f32", "What is shown in this image?", False),
    ("small-f16", "USER: <image>\nWhat is unusual about this image? ASSISTANT:", True),
    ("tiny-bf16-gelu", "Describe this flower.", False),
]


def read_safetensors(path):
    np_types = {"F32": "<f4", "I64": "<i8", "F16": "<f2", "I32": "<i4"}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=np_types[v["dtype"]]).reshape(v["shape"])
    return out


def rel(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


def llava(*args):
    return subprocess.run([LLAVA, *args], capture_output=True, text=True, timeout=300)


def image_of(case_dir):
    jpg = os.path.join(case_dir, "input.jpg")
    return jpg if os.path.exists(jpg) else os.path.join(case_dir, "image.png")


def check_case(name, prompt, raw, tmp):
    case = os.path.join(FIXTURES, name)
    ref = read_safetensors(os.path.join(case, "ref", "reference.safetensors"))
    info = json.load(open(os.path.join(case, "ref", "reference.json")))
    model = os.path.join(case, "model")
    extra = ["--raw"] if raw else []
    out = os.path.join(tmp, name + ".safetensors")
    r = llava("dump", "-m", model, "-i", image_of(case), "-p", prompt, "-o", out, "-t", "2", *extra)
    assert r.returncode == 0, f"{name}: dump failed: {r.stderr}"
    mine = read_safetensors(out)

    pix = float(np.abs(mine["pixel_values"] - ref["pixel_values"]).max())
    print(f"{name:15s} pixel_values       max abs {pix:.3g}")
    assert pix <= 0.02, f"{name}: pixel_values differ by {pix}"
    assert mine["input_ids"].tolist() == ref["input_ids"].tolist(), f"{name}: input_ids"
    assert mine["expanded_input_ids"].tolist() == ref["expanded_input_ids"].tolist(), f"{name}: expanded ids"
    for t in ("vision.features", "image_features", "inputs_embeds", "last_logits"):
        assert mine[t].shape == ref[t].shape, f"{name}: {t} shape {mine[t].shape} vs {ref[t].shape}"
        e = rel(mine[t], ref[t])
        print(f"{name:15s} {t:18s} rel {e:.3g}")
        assert e <= 1e-4, f"{name}: {t} relative error {e}"

    r = llava("run", "-m", model, "-i", image_of(case), "-p", prompt, "-n", "16", "--json", "-t", "2", *extra)
    assert r.returncode == 0, f"{name}: run failed: {r.stderr}"
    res = json.loads(r.stdout)
    assert res["token_ids"] == info["generated_ids"], f"{name}: {res['token_ids']} != {info['generated_ids']}"
    assert res["text"] == info["generated_text"], f"{name}: {res['text']!r} != {info['generated_text']!r}"
    assert res["finish_reason"] == "length"
    assert res["usage"] == {"prompt_tokens": info["expanded_length"], "completion_tokens": 16}
    for k in ("image_ms", "prefill_ms", "decode_ms"):
        assert res["timings"][k] >= 0
    # streaming mode prints the same text
    r = llava("run", "-m", model, "-i", image_of(case), "-p", prompt, "-n", "16", "-t", "2", *extra)
    assert r.returncode == 0 and r.stdout == info["generated_text"] + "\n", f"{name}: {r.stdout!r}"
    assert "tokens/s" in r.stderr
    # half-precision products (f16 where the CPU has AVX512-FP16, else exact): ~1e-3 relative error
    # on these models, which keeps their 16 greedy tokens (tests/test_model_quant.c measures it)
    r = llava("run", "-m", model, "-i", image_of(case), "-p", prompt, "-n", "16", "--json", "-t", "2",
              "--half", "all", *extra)
    assert r.returncode == 0, f"{name}: run --half failed: {r.stderr}"
    assert json.loads(r.stdout)["token_ids"] == info["generated_ids"], f"{name}: --half all tokens"
    # weights quantized at load: Q8_0 keeps these models' greedy tokens (tests/test_model_quant.c)
    r = llava("run", "-m", model, "-i", image_of(case), "-p", prompt, "-n", "16", "--json", "-t", "2",
              "--quant", "q8_0", *extra)
    assert r.returncode == 0, f"{name}: run --quant failed: {r.stderr}"
    assert json.loads(r.stdout)["token_ids"] == info["generated_ids"], f"{name}: --quant q8_0 tokens"
    # an f16 KV cache: ~1e-4 on these models' logits, the same greedy tokens (test_model_quant.c)
    r = llava("run", "-m", model, "-i", image_of(case), "-p", prompt, "-n", "16", "--json", "-t", "2",
              "--kv-cache", "f16", *extra)
    assert r.returncode == 0, f"{name}: run --kv-cache failed: {r.stderr}"
    assert json.loads(r.stdout)["token_ids"] == info["generated_ids"], f"{name}: --kv-cache f16 tokens"


def expect_failure(args, *needles):
    r = llava(*args)
    assert r.returncode != 0, f"{args}: succeeded"
    assert r.stderr.startswith("llava: "), r.stderr
    for n in needles:
        assert n in r.stderr, f"{args}: {n!r} not in {r.stderr!r}"
    print("rejected:", r.stderr.strip())


def check_bad_requests(tmp):
    case = os.path.join(FIXTURES, "tiny-f32")
    model, image = os.path.join(case, "model"), os.path.join(case, "image.png")
    expect_failure(["run", "-m", model, "-p", "<image>\nWhat is this?"], "1 <image> marker but 0 images")
    expect_failure(["run", "-m", model, "-i", image, "-i", image, "-p", "<image> one marker"],
                   "1 <image> marker but 2 images")
    expect_failure(["run", "-m", model, "-i", "/nonexistent/cat.jpg", "-p", "What?"], "/nonexistent/cat.jpg")
    junk = os.path.join(tmp, "junk.jpg")
    with open(junk, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    expect_failure(["run", "-m", model, "-i", junk, "-p", "What?"], "image 0")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "-n", "5000"], "prompt too long", "4096")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--template", "alpaca"],
                   "unknown template 'alpaca'")
    expect_failure(["run", "-m", "/nonexistent/model", "-i", image, "-p", "What?"], "/nonexistent/model")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--top-p", "2"], "--top-p")
    expect_failure(["dump", "-m", model, "-i", image, "-p", "What?"], "-o")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--half", "vision,"], "--half", "vision,")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--half", "decoder"], "--half", "decoder")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--quant", "q5_k"], "--quant", "q5_k")
    expect_failure(["run", "-m", model, "-i", image, "-p", "What?", "--kv-cache", "q8_0"], "--kv-cache", "q8_0")


def check_default_model():
    """Without -m, run uses the bundled model: the same answer as naming it."""
    bundled = os.path.join(os.path.dirname(FIXTURES), "..", "models", "tiny-llava-shapes")
    image = os.path.join(os.path.dirname(FIXTURES), "..", "examples", "images", "shapes-3.jpg")
    args = ["-i", image, "-p", "How many objects are there?", "-t", "1"]
    named = llava("run", "-m", bundled, *args)
    default = llava("run", *args)
    assert named.returncode == 0 and default.returncode == 0, default.stderr
    assert default.stdout == named.stdout and default.stdout.strip(), (default.stdout, named.stdout)
    print("default model:", default.stdout.strip())


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for name, prompt, raw in CASES:
            check_case(name, prompt, raw, tmp)
        check_bad_requests(tmp)
        check_default_model()
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
