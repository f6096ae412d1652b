"""`llava info` against the fixtures: every figure it prints is recomputed here from the files
(config.json, spec.json and the safetensors header read with the standard library), and broken
folders give exit code 1 with a message naming the file and the fault."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

BIN = os.environ["LLAVA_BIN"]
FIX = os.environ["LLAVA_FIXTURES"]
DATA = os.environ["LLAVA_TEST_DATA"]
SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(*args):
    p = subprocess.run([BIN, "info", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


for case in ("tiny-f32", "small-f16", "tiny-bf16-gelu"):
    model = os.path.join(FIX, case, "model")
    spec = json.load(open(os.path.join(FIX, case, "spec.json")))
    h = header(os.path.join(model, "model.safetensors"))
    rc, out, err = run("-m", model, "--json")
    check(rc == 0, f"{case}: exit {rc}, stderr {err}")
    info = json.loads(out)
    sv, st = spec["vision"], spec["text"]
    check(info["architecture"] == "LlavaForConditionalGeneration", f"{case}: architecture")
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
              "patch_size"):
        check(info["vision"][k] == sv[k], f"{case}: vision {k} {info['vision'][k]} != {sv[k]}")
    check(info["vision"]["hidden_act"] == sv["hidden_act"], f"{case}: vision act")
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
              "max_position_embeddings"):
        check(info["text"][k] == st[k], f"{case}: text {k} {info['text'][k]} != {st[k]}")
    check(info["text"]["rope_theta"] == st["rope_theta"], f"{case}: rope_theta")
    vocab = h["language_model.model.embed_tokens.weight"]["shape"][0]
    check(info["text"]["vocab_size"] == vocab, f"{case}: vocab {info['text']['vocab_size']} != {vocab}")
    check(info["image_tokens"] == (sv["image_size"] // sv["patch_size"]) ** 2, f"{case}: image tokens")
    check(info["tensors"] == len(h), f"{case}: tensor count {info['tensors']} != {len(h)}")
    total = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in h.values())
    check(info["total_bytes"] == total, f"{case}: total bytes {info['total_bytes']} != {total}")
    counts = {}
    for v in h.values():
        counts[v["dtype"]] = counts.get(v["dtype"], 0) + 1
    check(info["dtypes"] == counts, f"{case}: dtypes {info['dtypes']} != {counts}")
    check(info["shards"] == 1, f"{case}: shards")
    check(info["template"] == {"kind": "llava", "source": "chat_template.json"}, f"{case}: template {info['template']}")

    rc, out, err = run("-m", model)
    tokens = (sv["image_size"] // sv["patch_size"]) ** 2
    check(rc == 0 and f"{len(h)} in 1 shard" in out and f"{tokens} image tokens" in out,
          f"{case}: text output\n{out}{err}")

# errors: exit code 1 and a message naming the file and the fault
rc, out, err = run("-m", os.path.join(DATA, "llava-1.5-7b-hf"))
check(rc == 1 and "model-00001-of-00003.safetensors" in err and "cannot open" in err, f"7b without shards: {rc} {err}")
rc, out, err = run("-m", "/nonexistent/model")
check(rc == 1 and "/nonexistent/model/config.json" in err, f"missing folder: {rc} {err}")
rc, out, err = run()
check(rc != 0 and "-m" in err, f"no arguments: {rc} {err}")

with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(FIX, "tiny-f32", "model")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, f), tmp)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["text_config"]["num_key_value_heads"] = 3
    json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
    rc, out, err = run("-m", tmp)
    check(rc == 1 and "config.json" in err and "text_config.num_key_value_heads" in err, f"bad config: {rc} {err}")

# the chat template: the one the engine renders with, found where the tokenizer finds it
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(FIX, "tiny-f32", "model")
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, f), tmp)

    def template_of(files):
        for name in ("tokenizer_config.json", "chat_template.json", "chat_template.jinja"):
            path = os.path.join(tmp, name)
            if os.path.exists(path):
                os.remove(path)
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        rc, out, err = run("-m", tmp, "--json")
        return rc, (json.loads(out)["template"] if rc == 0 else err)

    mistral = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    chatml = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>{% endfor %}"
    vicuna = "A chat between a curious human and an artificial intelligence assistant. {{ messages }}"
    cases = [
        # model_max_length as a huge integer, as real tokenizer_config.json files write it
        ({"tokenizer_config.json": '{"model_max_length": 1000000000000000019884624838656, "chat_template": '
          + json.dumps(mistral) + "}"}, {"kind": "mistral", "source": "tokenizer_config.json"}),
        ({"tokenizer_config.json": json.dumps({"chat_template": [{"name": "tool_use", "template": mistral},
                                                                 {"name": "default", "template": chatml}]})},
         {"kind": "chatml", "source": "tokenizer_config.json"}),
        ({"tokenizer_config.json": "{}", "chat_template.jinja": vicuna,
          "chat_template.json": json.dumps({"chat_template": mistral})},
         {"kind": "vicuna", "source": "chat_template.jinja"}),
        ({}, {"kind": "llava", "source": None}),
    ]
    for files, want in cases:
        rc, got = template_of(files)
        check(rc == 0 and got == want, f"template of {list(files)}: {rc} {got}, want {want}")
    rc, out, err = run("-m", tmp)
    check(rc == 0 and "no chat_template: chosen by the text model type" in out, f"text output without template: {out}")
    rc, got = template_of({"tokenizer_config.json": '{"chat_template": 3}'})
    check(rc == 1 and "tokenizer_config.json" in got and "chat_template must be a string or a list" in got,
          f"bad chat_template: {rc} {got}")
    rc, got = template_of({"tokenizer_config.json": '{"chat_template": '})
    check(rc == 1 and "tokenizer_config.json" in got and "invalid JSON" in got, f"broken tokenizer_config.json: {rc} {got}")

    cfg["text_config"]["num_key_value_heads"] = 2
    json.dump(cfg, open(os.path.join(tmp, "config.json"), "w"))
    path = os.path.join(tmp, "model.safetensors")
    with open(path, "r+b") as f:  # cut the last tensor short
        f.truncate(os.path.getsize(path) - 10)
    rc, out, err = run("-m", tmp)
    check(rc == 1 and "model.safetensors" in err and "extend past the end" in err, f"truncated: {rc} {err}")

    os.remove(path)
    rc, out, err = run("-m", tmp)
    check(rc == 1 and "no model.safetensors.index.json" in err, f"no weights: {rc} {err}")

if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("ok")
