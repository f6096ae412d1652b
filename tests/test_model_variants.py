#!/usr/bin/env python3
"""Model settings the reference fixtures do not cover, checked against a float64 numpy forward pass
written here from the transformers 4.40 definitions: checkpoints made by tools/make_checkpoint.py
(hub and new layout, one file and shards, F32/F16/BF16), a Mistral text model with a sliding
window shorter than the prompt, grouped-query attention, rope_theta, "linear" and "dynamic" rope
scaling, vision_feature_layer positive and -1, the "full" select strategy, gelu / gelu_pytorch_tanh
/ quick_gelu activations. `llava dump` runs each one; the reference takes the dump's own
pixel_values and input_ids and must agree on image_features, inputs_embeds and last_logits
(relative error <= 1e-4). Same-seed checkpoints in both layouts must give identical dumps."""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

LLAVA = os.environ["LLAVA_BIN"]
SRC = os.environ.get("LLAVA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), ".."))
DATA = os.environ["LLAVA_TEST_DATA"]
TOOL = os.path.join(SRC, "tools", "make_checkpoint.py")
TOKENIZER = os.path.join(DATA, "llava-1.5-7b-hf")
IMAGE = os.path.join(DATA, "images", "pillow_flower.jpg")

BASE = [
    "text_config.hidden_size=64", "text_config.intermediate_size=96", "text_config.num_hidden_layers=2",
    "text_config.num_attention_heads=4", "text_config.num_key_value_heads=2",
    "vision_config.hidden_size=32", "vision_config.intermediate_size=48", "vision_config.num_hidden_layers=3",
    "vision_config.num_attention_heads=2", "vision_config.image_size=28", "vision_config.patch_size=14",
]

# name, make_checkpoint options, --set overrides, llava dump prompt
VARIANTS = [
    ("llama-full-f32", ["--dtype", "f32"],
     ["vision_feature_layer=-1", 'vision_feature_select_strategy="full"'], "What is this?"),
    ("mistral-window-bf16", ["--dtype", "bf16", "--layout", "new"],
     ['text_config.model_type="mistral"', "text_config.sliding_window=6", "text_config.rope_theta=1000000.0",
      "text_config.max_position_embeddings=4096", "vision_feature_layer=1", 'vision_config.hidden_act="gelu"',
      'projector_hidden_act="gelu_pytorch_tanh"'],
     "Describe the picture in a few words, please."),
    ("llama-linear-f16", ["--dtype", "f16", "--shard-size", "1MB"],
     ['text_config.rope_scaling={"type": "linear", "factor": 2.0}'], "What is this?"),
    ("llama-dynamic-f32", ["--dtype", "f32"],
     ['text_config.rope_scaling={"type": "dynamic", "factor": 4.0}', "text_config.max_position_embeddings=16",
      'text_config.hidden_act="silu"'], "What colour is the flower in this photo?"),
]


def read_safetensors(path):
    types = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8"}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=types[v["dtype"]]).reshape(v["shape"])
        if v["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a
    return out


def read_weights(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    w = {}
    for f in files:
        w.update(read_safetensors(os.path.join(d, f)))
    hub = {}
    for k, v in w.items():  # newer layout -> hub names
        for a, b in [("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector.")]:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        hub[k] = v.astype(np.float64)
    return hub


def act(name, x):
    if name == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if name == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if name == "gelu_pytorch_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "silu":
        return x / (1 + np.exp(-x))
    raise ValueError(name)


def layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def reference(cfg, W, pixel_values, input_ids):
    v, t = cfg["vision_config"], cfg["text_config"]
    vact = v.get("hidden_act", "quick_gelu")
    P = "vision_tower.vision_model."
    D, p, nh = v["hidden_size"], v["patch_size"], v["num_attention_heads"]
    g, hd = v["image_size"] // p, v["hidden_size"] // v["num_attention_heads"]
    feats = []
    for img in pixel_values.astype(np.float64):
        x = img.reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, -1)
        h = np.concatenate([W[P + "embeddings.class_embedding"][None],
                            x @ W[P + "embeddings.patch_embedding.weight"].reshape(D, -1).T])
        h = layernorm(h + W[P + "embeddings.position_embedding.weight"], W[P + "pre_layrnorm.weight"],
                      W[P + "pre_layrnorm.bias"])
        hs = [h]
        for i in range(v["num_hidden_layers"]):
            L = f"{P}encoder.layers.{i}."
            lin = lambda n, a: a @ W[L + n + ".weight"].T + W[L + n + ".bias"]
            a = layernorm(h, W[L + "layer_norm1.weight"], W[L + "layer_norm1.bias"])
            q, k, vv = (lin(f"self_attn.{n}_proj", a).reshape(-1, nh, hd).transpose(1, 0, 2) for n in "qkv")
            o = (softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd)) @ vv).transpose(1, 0, 2).reshape(-1, D)
            h = h + lin("self_attn.out_proj", o)
            a = layernorm(h, W[L + "layer_norm2.weight"], W[L + "layer_norm2.bias"])
            h = h + lin("mlp.fc2", act(vact, lin("mlp.fc1", a)))
            hs.append(h)
        sel = hs[cfg.get("vision_feature_layer", -2)]
        if cfg.get("vision_feature_select_strategy", "default") == "default":
            sel = sel[1:]
        M = "multi_modal_projector."
        f = act(cfg.get("projector_hidden_act", "gelu"), sel @ W[M + "linear_1.weight"].T + W[M + "linear_1.bias"])
        feats.append(f @ W[M + "linear_2.weight"].T + W[M + "linear_2.bias"])

    T = "language_model.model."
    rows, k = [], 0
    for tok in input_ids:
        if tok == cfg.get("image_token_index", 32000):
            rows.append(feats[k])
            k += 1
        else:
            rows.append(W[T + "embed_tokens.weight"][[tok]])
    x = np.concatenate(rows)
    embeds = x.copy()
    Dt, H, KV = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"]
    hd, n = Dt // H, x.shape[0]
    theta, pos = t.get("rope_theta", 10000.0), np.arange(n, dtype=np.float64)
    rs = t.get("rope_scaling")
    if rs and rs["type"] == "linear":
        pos = pos / rs["factor"]
    if rs and rs["type"] == "dynamic" and n > t["max_position_embeddings"]:
        f = rs["factor"]
        theta = theta * ((f * n / t["max_position_embeddings"]) - (f - 1)) ** (hd / (hd - 2))
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.concatenate([pos[:, None] * inv[None]] * 2, -1)
    rot = lambda z: z * np.cos(ang) + np.concatenate([-z[..., hd // 2:], z[..., :hd // 2]], -1) * np.sin(ang)
    allowed = np.arange(n)[None, :] <= np.arange(n)[:, None]
    if t.get("model_type") == "mistral" and t.get("sliding_window"):
        allowed &= np.arange(n)[:, None] - np.arange(n)[None, :] <= t["sliding_window"]
    eps = t.get("rms_norm_eps", 1e-6)
    for i in range(t["num_hidden_layers"]):
        L = f"{T}layers.{i}."
        a = rmsnorm(x, W[L + "input_layernorm.weight"], eps)
        q = rot((a @ W[L + "self_attn.q_proj.weight"].T).reshape(n, H, hd).transpose(1, 0, 2))
        kk = rot((a @ W[L + "self_attn.k_proj.weight"].T).reshape(n, KV, hd).transpose(1, 0, 2))
        vv = (a @ W[L + "self_attn.v_proj.weight"].T).reshape(n, KV, hd).transpose(1, 0, 2)
        kk, vv = np.repeat(kk, H // KV, 0), np.repeat(vv, H // KV, 0)
        s = np.where(allowed[None], q @ kk.transpose(0, 2, 1) / math.sqrt(hd), -np.inf)
        x = x + (softmax(s) @ vv).transpose(1, 0, 2).reshape(n, Dt) @ W[L + "self_attn.o_proj.weight"].T
        a = rmsnorm(x, W[L + "post_attention_layernorm.weight"], eps)
        x = x + (act("silu", a @ W[L + "mlp.gate_proj.weight"].T) * (a @ W[L + "mlp.up_proj.weight"].T)) \
            @ W[L + "mlp.down_proj.weight"].T
    last = rmsnorm(x[-1], W[T + "norm.weight"], eps) @ W["language_model.lm_head.weight"].T
    return np.stack(feats), embeds, last


def rel(a, b):
    return float(np.linalg.norm((a.astype(np.float64) - b).ravel()) / np.linalg.norm(b.ravel()))


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{args[:3]}: {r.stderr}"
    return r


def make(out, opts, sets, seed=7):
    args = ["/usr/bin/python3", TOOL, "--config", os.path.join(TOKENIZER, "config.json"), "--tokenizer",
            TOKENIZER, "--out", out, "--seed", str(seed), "--std", "0.1", "--quiet", *opts]
    for s in BASE + sets:
        args += ["--set", s]
    run(*args)


def dump(model, prompt, out):
    run(LLAVA, "dump", "-m", model, "-i", IMAGE, "-p", prompt, "-o", out, "-t", "2")
    return read_safetensors(out)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts, sets, prompt in VARIANTS:
            d = os.path.join(tmp, name)
            make(d, opts, sets)
            mine = dump(d, prompt, os.path.join(tmp, name + ".safetensors"))
            cfg = json.load(open(os.path.join(d, "config.json")))
            feats, embeds, last = reference(cfg, read_weights(d), mine["pixel_values"],
                                             mine["input_ids"][0].tolist())
            errs = {"image_features": rel(mine["image_features"], feats),
                    "inputs_embeds": rel(mine["inputs_embeds"][0], embeds),
                    "last_logits": rel(mine["last_logits"], last)}
            print(f"{name:20s} positions {embeds.shape[0]:3d}  " +
                  "  ".join(f"{k} {v:.2g}" for k, v in errs.items()))
            assert all(e <= 1e-4 for e in errs.values()), (name, errs)

        # the same weights in both layouts, one file or shards: identical results
        a, b = os.path.join(tmp, "hub"), os.path.join(tmp, "new")
        make(a, ["--dtype", "f16"], [])
        make(b, ["--dtype", "f16", "--layout", "new", "--shard-size", "300KB"], [])
        assert os.path.exists(os.path.join(b, "model.safetensors.index.json"))
        da = dump(a, "What is this?", os.path.join(tmp, "a.safetensors"))
        db = dump(b, "What is this?", os.path.join(tmp, "b.safetensors"))
        for k in da:
            assert np.array_equal(da[k], db[k]), k
        r = run(LLAVA, "run", "-m", b, "-i", IMAGE, "-p", "What is this?", "-n", "5", "--json", "-t", "2")
        res = json.loads(r.stdout)
        assert 1 <= res["usage"]["completion_tokens"] <= 5, res
        print("layouts agree; run:", res["finish_reason"], res["token_ids"])

        # the files read into memory (--no-mmap) instead of mapped: the same tokens, also when
        # quantizing at load a tied lm_head, whose source is the embedding table (the mapping
        # drops such source pages and re-reads them from the file; memory of the process's own
        # must keep them)
        t = os.path.join(tmp, "tied")
        make(t, ["--dtype", "f16"], ["text_config.tie_word_embeddings=true"])
        assert json.load(open(os.path.join(t, "config.json")))["text_config"]["tie_word_embeddings"]
        for model, extra in ((a, []), (t, []), (t, ["--quant", "q8_0"])):
            base = [LLAVA, "run", "-m", model, "-i", IMAGE, "-p", "What is this?", "-n", "8", "--json", "-t", "2",
                    "--temp", "0", *extra]
            mapped = json.loads(run(*base).stdout)["token_ids"]
            read = json.loads(run(*base, "--no-mmap").stdout)["token_ids"]
            assert mapped == read, (model, extra, mapped, read)
        print("read into memory = mapped:", mapped)
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
