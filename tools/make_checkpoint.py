#!/usr/bin/env python3
"""Writes a random-weight LLaVA checkpoint in the exact llava-hf layout for any config.

The folder gets config.json, generation_config.json, preprocessor_config.json, the tokenizer
files copied from a source folder, and model.safetensors (or model-0000i-of-0000N.safetensors
shards with model.safetensors.index.json). Tensors are generated and written one chunk at a
time, so a 7B-shaped F16 checkpoint (~14 GB) needs only a few hundred MB of memory.

Every tensor's values depend only on --seed and its hub name, so the same config written in the
hub layout and in the newer layout (--layout new) holds identical weights.

  /usr/bin/python3 tools/make_checkpoint.py --config tests/data/llava-1.5-7b-hf/config.json \\
      --tokenizer tests/data/llava-1.5-7b-hf --dtype f16 --shard-size 5GB --out /tmp/llava-7b
  /usr/bin/python3 tools/make_checkpoint.py --config tests/data/llava-1.5-7b-hf/config.json \\
      --set text_config.num_hidden_layers=2 --set vision_config.num_hidden_layers=2 ... --out DIR
"""
import argparse
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np

# transformers 4.40 defaults for keys save_pretrained leaves out of config.json
CLIP_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048,
                      rms_norm_eps=1e-6, rope_theta=10000.0, attention_bias=False, tie_word_embeddings=False)
MISTRAL_DEFAULTS = dict(LLAMA_DEFAULTS, intermediate_size=14336, num_key_value_heads=8,
                        max_position_embeddings=4096 * 32)
TOKENIZER_FILES = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.json", "chat_template.jinja"]
NUMPY_DTYPE = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
CHUNK = 1 << 24  # values generated at a time (64 MB of float32)


def parse_size(s):
    units = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "KIB": 1024, "MIB": 1 << 20, "GIB": 1 << 30}
    u = s.upper()
    for k, f in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if u.endswith(k):
            return int(float(u[: -len(k)]) * f)
    return int(u)


def apply_override(cfg, assignment):
    key, _, value = assignment.partition("=")
    if not _:
        raise SystemExit(f"--set {assignment!r}: expected KEY=VALUE")
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass  # a bare string
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def resolved(cfg):
    """(vision, text, llava) settings with defaults filled in."""
    tc = cfg.get("text_config", {})
    text_type = tc.get("model_type", "llama")
    text = dict(MISTRAL_DEFAULTS if text_type == "mistral" else LLAMA_DEFAULTS)
    text.update(tc)
    if "vocab_size" not in tc and "vocab_size" in cfg:
        text["vocab_size"] = cfg["vocab_size"]
    if text.get("num_key_value_heads") is None:
        text["num_key_value_heads"] = text["num_attention_heads"]
    vision = dict(CLIP_DEFAULTS)
    vision.update(cfg.get("vision_config", {}))
    return vision, text


def tensor_list(cfg):
    """[(hub name, shape, kind)] in the llava-hf hub layout; kind picks the initialisation."""
    v, t = resolved(cfg)
    out = []
    P = "vision_tower.vision_model."
    Dv, Fv, p, C = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["num_channels"]
    n_pos = (v["image_size"] // p) ** 2 + 1
    out += [(P + "embeddings.class_embedding", [Dv], "weight"),
            (P + "embeddings.patch_embedding.weight", [Dv, C, p, p], "weight"),
            (P + "embeddings.position_embedding.weight", [n_pos, Dv], "weight"),
            (P + "pre_layrnorm.weight", [Dv], "norm"), (P + "pre_layrnorm.bias", [Dv], "bias")]
    for i in range(v["num_hidden_layers"]):
        L = f"{P}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(L + f"self_attn.{proj}.weight", [Dv, Dv], "weight"), (L + f"self_attn.{proj}.bias", [Dv], "bias")]
        out += [(L + "layer_norm1.weight", [Dv], "norm"), (L + "layer_norm1.bias", [Dv], "bias"),
                (L + "layer_norm2.weight", [Dv], "norm"), (L + "layer_norm2.bias", [Dv], "bias"),
                (L + "mlp.fc1.weight", [Fv, Dv], "weight"), (L + "mlp.fc1.bias", [Fv], "bias"),
                (L + "mlp.fc2.weight", [Dv, Fv], "weight"), (L + "mlp.fc2.bias", [Dv], "bias")]
    out += [(P + "post_layernorm.weight", [Dv], "norm"), (P + "post_layernorm.bias", [Dv], "bias")]
    Dt, F, V = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    H, KV = t["num_attention_heads"], t["num_key_value_heads"]
    hd = Dt // H
    out += [("multi_modal_projector.linear_1.weight", [Dt, Dv], "weight"),
            ("multi_modal_projector.linear_1.bias", [Dt], "bias"),
            ("multi_modal_projector.linear_2.weight", [Dt, Dt], "weight"),
            ("multi_modal_projector.linear_2.bias", [Dt], "bias")]
    T = "language_model.model."
    out.append((T + "embed_tokens.weight", [V, Dt], "weight"))
    for i in range(t["num_hidden_layers"]):
        L = f"{T}layers.{i}."
        out += [(L + "input_layernorm.weight", [Dt], "norm"),
                (L + "self_attn.q_proj.weight", [H * hd, Dt], "weight"),
                (L + "self_attn.k_proj.weight", [KV * hd, Dt], "weight"),
                (L + "self_attn.v_proj.weight", [KV * hd, Dt], "weight"),
                (L + "self_attn.o_proj.weight", [Dt, H * hd], "weight"),
                (L + "post_attention_layernorm.weight", [Dt], "norm"),
                (L + "mlp.gate_proj.weight", [F, Dt], "weight"),
                (L + "mlp.up_proj.weight", [F, Dt], "weight"),
                (L + "mlp.down_proj.weight", [Dt, F], "weight")]
        if t.get("attention_bias"):
            out += [(L + "self_attn.q_proj.bias", [H * hd], "bias"), (L + "self_attn.k_proj.bias", [KV * hd], "bias"),
                    (L + "self_attn.v_proj.bias", [KV * hd], "bias"), (L + "self_attn.o_proj.bias", [Dt], "bias")]
    out.append((T + "norm.weight", [Dt], "norm"))
    if not (cfg.get("tie_word_embeddings") or t.get("tie_word_embeddings")):
        out.append(("language_model.lm_head.weight", [V, Dt], "weight"))
    return out


NEW_LAYOUT = [("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
              ("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector.")]


def layout_name(hub_name, layout):
    if layout == "hub":
        return hub_name
    for a, b in NEW_LAYOUT:
        if hub_name.startswith(a):
            return b + hub_name[len(a):]
    raise ValueError(hub_name)


def to_dtype(x, dtype):
    if dtype == "F32":
        return x.astype(np.float32)
    if dtype == "F16":
        return x.astype(np.float16)
    b = x.astype(np.float32).view(np.uint32)  # BF16, round to nearest even as torch does
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write_tensor(f, hub_name, shape, kind, dtype, seed, std):
    """Streams one tensor's values, CHUNK at a time; values depend on (seed, hub name) only."""
    n = int(np.prod(shape)) if shape else 1
    rng = np.random.default_rng([seed, zlib.crc32(hub_name.encode())])
    done = 0
    while done < n:
        k = min(CHUNK, n - done)
        if kind == "weight":
            x = rng.standard_normal(k, dtype=np.float32) * np.float32(std)
        elif kind == "norm":
            x = 1.0 + rng.standard_normal(k, dtype=np.float32) * np.float32(0.1)
        else:
            x = rng.standard_normal(k, dtype=np.float32) * np.float32(std)
        f.write(to_dtype(x, dtype).tobytes())
        done += k


def header_bytes(entries, dtype):
    """The safetensors header for [(name, shape)] in this order, padded to 8 bytes."""
    hdr = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape in entries:
        nbytes = int(np.prod(shape)) * DTYPE_BYTES[dtype] if shape else DTYPE_BYTES[dtype]
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, off


def write_shards(out_dir, tensors, layout, dtype, seed, std, shard_bytes, log):
    items = sorted(((layout_name(h, layout), h, s, k) for h, s, k in tensors), key=lambda e: e[0])
    size = lambda s: (int(np.prod(s)) if s else 1) * DTYPE_BYTES[dtype]
    shards, cur, cur_bytes = [], [], 0
    for it in items:
        if cur and shard_bytes and cur_bytes + size(it[2]) > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(it)
        cur_bytes += size(it[2])
    shards.append(cur)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map, total = {}, 0
    for fname, shard in zip(names, shards):
        header, data_len = header_bytes([(n, s) for n, _, s, _ in shard], dtype)
        path = os.path.join(out_dir, fname)
        with open(path + ".tmp", "wb") as f:
            f.write(header)
            for name, hub, shape, kind in shard:
                write_tensor(f, hub, shape, kind, dtype, seed, std)
                weight_map[name] = fname
        os.replace(path + ".tmp", path)
        total += data_len
        log(f"wrote {path} ({len(shard)} tensors, {data_len / 1e9:.2f} GB)")
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    return total


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a LLaVA config.json (missing keys take transformers defaults)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. text_config.num_hidden_layers=2 (JSON value)")
    ap.add_argument("--tokenizer", required=True, help="folder to copy tokenizer files from")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f16")
    ap.add_argument("--layout", choices=["hub", "new"], default="hub",
                    help="hub: language_model.model.* (llava-hf); new: model.language_model.*, lm_head.weight")
    ap.add_argument("--shard-size", default="0", help="largest shard, e.g. 5GB (0: one file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02, help="standard deviation of weights and biases")
    ap.add_argument("--image-size", type=int, help="shortcut for vision_config.image_size (also the preprocessing size)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr))

    with open(a.config) as f:
        cfg = json.load(f)
    if a.image_size:
        apply_override(cfg, f"vision_config.image_size={a.image_size}")
    for s in a.set:
        apply_override(cfg, s)
    cfg.setdefault("model_type", "llava")
    cfg.setdefault("architectures", ["LlavaForConditionalGeneration"])
    dtype = {"f32": "F32", "f16": "F16", "bf16": "BF16"}[a.dtype]
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    vision, text = resolved(cfg)
    if "vocab_size" in cfg and cfg.get("text_config", {}).get("vocab_size", cfg["vocab_size"]) != cfg["vocab_size"]:
        cfg["vocab_size"] = cfg["text_config"]["vocab_size"]

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2}
    if "pad_token_id" in cfg:
        gen["pad_token_id"] = cfg["pad_token_id"]
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    S = vision["image_size"]
    pre = {"crop_size": {"height": S, "width": S}, "do_center_crop": True, "do_convert_rgb": True,
           "do_normalize": True, "do_rescale": True, "do_resize": True,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
           "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaProcessor",
           "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": S}}
    with open(os.path.join(a.out, "preprocessor_config.json"), "w") as f:
        json.dump(pre, f, indent=2)
    copied = 0
    for name in TOKENIZER_FILES:
        src = os.path.join(a.tokenizer, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(a.out, name))
            copied += 1
    if not os.path.isfile(os.path.join(a.tokenizer, "tokenizer.json")):
        raise SystemExit(f"{a.tokenizer}: no tokenizer.json to copy")
    total = write_shards(a.out, tensor_list(cfg), a.layout, dtype, a.seed, a.std, parse_size(a.shard_size), log)
    log(f"{a.out}: {total / 1e9:.2f} GB of {dtype} weights, {copied} tokenizer files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
