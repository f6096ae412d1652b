#!/usr/bin/env python3
"""Converts a llava-hf checkpoint (LLaMA text model) into the two GGUF files llama.cpp's LLaVA
tools load: the text model (what convert_hf_to_gguf.py writes for the LLaMA part) and the CLIP
image encoder with its projector (what examples/llava/convert_image_encoder_to_gguf.py writes with
--llava-projector). Used by bench/compare-llamacpp to run llama.cpp on the very weights llava.c runs.

llama.cpp's own converters need transformers and torch's model classes, which cannot be installed
here, so this script repeats their tensor names, layouts and metadata keys with numpy and the gguf
package of the llama.cpp tree given on the command line (gguf-py/, added to sys.path at run time).
Tensors are streamed from the safetensors mappings one at a time, so a 7B checkpoint converts in a
few hundred MB of memory.

  /usr/bin/python3 bench/llava_to_gguf.py --llamacpp /work/llamacpp -m /work/ckpt/llava-7b-f16 \\
      -o /work/ckpt/llava-7b-gguf

writes OUT/text-f16.gguf and OUT/mmproj-f16.gguf.
"""
import argparse
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

# transformers 4.40 defaults for keys llava-hf's config.json leaves out (as tools/make_checkpoint.py)
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048,
                      rms_norm_eps=1e-6, rope_theta=10000.0)
CLIP_DEFAULTS = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                     image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                     projection_dim=768)
# LlavaConfig's own defaults
LLAVA_DEFAULTS = dict(vision_feature_layer=-2, projector_hidden_act="gelu")

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


# ---- safetensors (read-only mappings) ----

class Checkpoint:
    """name -> numpy view into the mapped safetensors file(s) of a folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (self.folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            files = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if not files:
            raise SystemExit(f"{folder}: no safetensors files")
        self.entries = {}
        for fname in files:
            path = self.folder / fname
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            for name, e in header.items():
                self.entries[name] = (path, 8 + n, e)

    def names(self):
        return self.entries.keys()

    def get(self, name):
        """The tensor in its stored dtype (BF16 widened to f32: numpy has no bfloat16)."""
        path, base, e = self.entries[name]
        begin, end = e["data_offsets"]
        dt = ST_DTYPES.get(e["dtype"])
        if dt is None:
            raise SystemExit(f"{path}: {name}: dtype {e['dtype']} not supported")
        shape = tuple(e["shape"])
        if end == begin:
            return np.zeros(shape, dt)
        a = np.memmap(path, dtype=dt, mode="r", offset=base + begin, shape=shape)
        if e["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        return a

    def shape(self, name):
        return tuple(self.entries[name][2]["shape"])


def find_prefix(ckpt, candidates, probe):
    for p in candidates:
        if p + probe in ckpt.entries:
            return p
    raise SystemExit(f"no tensor {probe!r} under any of {candidates}")


# ---- the text model, as convert_hf_to_gguf.py's LlamaModel writes it ----

def permute_qk(w, n_head, n_head_kv):
    """LlamaModel.permute: HF's rotate_half layout of q/k rows -> GGML's interleaved RoPE pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def sentencepiece_vocab(gguf, folder, vocab_size):
    """Model._create_vocab_sentencepiece: tokenizer.model, added_tokens.json, then
    tokenizer_config.json's added_tokens_decoder, padded to vocab_size."""
    from sentencepiece import SentencePieceProcessor
    T = gguf.TokenType  # the same values as convert_hf_to_gguf's SentencePieceTokenTypes
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(folder / "tokenizer.model"))
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [T.UNUSED] * vocab_size
    for i in range(sp.vocab_size()):
        t = T.NORMAL
        if sp.IsUnknown(i):
            t = T.UNKNOWN
        elif sp.IsControl(i):
            t = T.CONTROL
        elif sp.IsUnused(i):
            t = T.UNUSED
        elif sp.IsByte(i):
            t = T.BYTE
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), t
    added = folder / "added_tokens.json"
    if added.is_file():
        for key, tid in json.loads(added.read_text()).items():
            if tid < vocab_size:
                tokens[tid], scores[tid], types[tid] = key.encode(), -1000.0, T.USER_DEFINED
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        for tid, data in json.loads(tc.read_text()).get("added_tokens_decoder", {}).items():
            tid = int(tid)
            tok = data["content"]
            looks_special = (tok in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")  # does_token_look_special
                             or (tok.startswith("<|") and tok.endswith("|>"))
                             or (tok.startswith("<\uff5c") and tok.endswith("\uff5c>"))
                             or (tok.startswith("<unused") and tok.endswith(">")))
            if data.get("special") or looks_special:
                types[tid] = T.CONTROL
            else:
                tok = tok.replace("\u2581", " ")
                types[tid] = T.USER_DEFINED
            scores[tid], tokens[tid] = -1000.0, tok.encode()
    return tokens, scores, types


def text_plan(ckpt, tp, text, n_layer):
    """[(gguf name, numpy shape, out dtype, producer)] in the checkpoint's layer order."""
    import gguf
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    H, KV = text["num_attention_heads"], text["num_key_value_heads"]
    plan = []
    names = [n for n in ckpt.names() if n.startswith(tp)]
    if "lm_head.weight" in ckpt.entries:
        names.append("lm_head.weight")
    elif "language_model.lm_head.weight" in ckpt.entries:
        names.append("language_model.lm_head.weight")

    def key(n):  # embeddings, layers in numeric order, final norm, output
        rest = n[len(tp):] if n.startswith(tp) else n
        if rest.startswith("layers."):
            i = int(rest.split(".")[1])
            return (1, i, rest)
        return (0 if "embed" in rest else 2 if "norm" in rest else 3, 0, rest)

    for n in sorted(names, key=key):
        hf = "model." + n[len(tp):] if n.startswith(tp) else "lm_head.weight"
        if hf.endswith("rotary_emb.inv_freq"):
            continue
        new = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"cannot map tensor {n!r}")
        shape = ckpt.shape(n)
        # convert_hf_to_gguf with --outtype f16: 1-D tensors and norms stay f32, matrices f16
        out = np.float32 if (len(shape) <= 1 or new.endswith("_norm.weight")) else np.float16

        def produce(n=n, hf=hf, out=out):
            a = ckpt.get(n)
            if hf.endswith(("q_proj.weight", "q_proj.bias")):
                a = permute_qk(a, H, H)
            elif hf.endswith(("k_proj.weight", "k_proj.bias")):
                a = permute_qk(a, H, KV)
            return np.ascontiguousarray(a, dtype=out)
        plan.append((new, shape, out, produce))
    return plan


def write_text(gguf, ckpt, folder, cfg, out_path, name):
    text = dict(LLAMA_DEFAULTS)
    text.update(cfg.get("text_config", {}))
    if "vocab_size" not in cfg.get("text_config", {}) and "vocab_size" in cfg:
        text["vocab_size"] = cfg["vocab_size"]
    if text.get("num_key_value_heads") is None:
        text["num_key_value_heads"] = text["num_attention_heads"]
    if text.get("model_type", "llama") != "llama":
        raise SystemExit(f"text model {text.get('model_type')!r}: only LLaMA is converted")
    n_layer = text["num_hidden_layers"]
    tp = find_prefix(ckpt, ["language_model.model.", "model.language_model."], "embed_tokens.weight")
    plan = text_plan(ckpt, tp, text, n_layer)

    w = gguf.GGUFWriter(out_path, "llama")
    # Model.set_type / prepare_metadata
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    n_params = sum(int(np.prod(s)) for _, s, _, _ in plan)
    w.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    # Model.set_gguf_parameters + LlamaModel.set_gguf_parameters
    w.add_block_count(n_layer)
    w.add_context_length(text["max_position_embeddings"])
    w.add_embedding_length(text["hidden_size"])
    w.add_feed_forward_length(text["intermediate_size"])
    w.add_head_count(text["num_attention_heads"])
    w.add_head_count_kv(text["num_key_value_heads"])
    w.add_rope_freq_base(text["rope_theta"])
    w.add_layer_norm_rms_eps(text["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(text["vocab_size"])
    w.add_rope_dimension_count(text["hidden_size"] // text["num_attention_heads"])
    rs = text.get("rope_scaling")
    if rs and "factor" in rs and rs.get("type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rs["factor"])
    # LlamaModel.set_vocab -> _set_vocab_sentencepiece
    tokens, scores, types = sentencepiece_vocab(gguf, folder, text["vocab_size"])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(w)
    tc = folder / "tokenizer_config.json"
    if tc.is_file():
        tcj = json.loads(tc.read_text())
        # the converter writes the key whenever it is present; JSON null there means "unset"
        # (the tokenizer's default, a prefix space for LLaMA), not false
        if tcj.get("add_prefix_space") is not None:
            w.add_add_space_prefix(tcj["add_prefix_space"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    stream(w, plan)


# ---- the image encoder + projector, as convert_image_encoder_to_gguf.py writes it ----

def clip_name(name):
    """get_tensor_name() of convert_image_encoder_to_gguf.py (mlp.fc1 -> ffn_down is theirs)."""
    return (name.replace("text_model", "t").replace("vision_model", "v").replace("encoder.layers", "blk")
            .replace("embeddings.", "").replace("_proj", "").replace("self_attn.", "attn_")
            .replace("layer_norm", "ln").replace("layernorm", "ln").replace("mlp.fc1", "ffn_down")
            .replace("mlp.fc2", "ffn_up").replace("embedding", "embd").replace("final", "post")
            .replace("layrnorm", "ln"))


def write_mmproj(gguf, ckpt, folder, cfg, out_path, name):
    vision = dict(CLIP_DEFAULTS)
    vision.update(cfg.get("vision_config", {}))
    llava = dict(LLAVA_DEFAULTS)
    llava.update({k: cfg[k] for k in LLAVA_DEFAULTS if k in cfg})
    if llava["vision_feature_layer"] != -2:
        # the llava-1.5 recipe (surgery + converter) drops exactly the last layer
        raise SystemExit(f"vision_feature_layer {llava['vision_feature_layer']}: llama.cpp's LLaVA "
                         "converter supports -2 only")
    if llava["projector_hidden_act"] != "gelu":
        raise SystemExit("llama.cpp's mlp projector applies gelu; this checkpoint uses "
                         f"{llava['projector_hidden_act']!r}")
    vp = find_prefix(ckpt, ["vision_tower.", "model.vision_tower."], "vision_model.pre_layrnorm.weight")
    pp = find_prefix(ckpt, ["multi_modal_projector.", "model.multi_modal_projector."], "linear_1.weight")
    n_layer = vision["num_hidden_layers"]
    plan = []

    def add(gname, src, kind):
        shape = ckpt.shape(src)
        sq = tuple(d for d in shape if d != 1) if len(shape) != 4 else shape  # data.squeeze()
        if kind == "proj":  # projector: ndim 2 or 4 -> f16, else f32
            out = np.float16 if len(sq) in (2, 4) else np.float32
        elif len(sq) == 4:  # the patch convolution is always f16
            out = np.float16
        else:  # ftype 1: 2-D ".weight" f16, everything else f32
            out = np.float16 if (gname.endswith(".weight") and len(sq) == 2) else np.float32
        plan.append((gname, sq, out, lambda src=src, out=out, sq=sq:
                     np.ascontiguousarray(ckpt.get(src), dtype=out).reshape(sq)))

    # the projector first (the converter adds llava.projector's tensors before CLIP's)
    for i, lin in ((0, "linear_1"), (2, "linear_2")):
        add(f"mm.{i}.weight", f"{pp}{lin}.weight", "proj")
        add(f"mm.{i}.bias", f"{pp}{lin}.bias", "proj")
    # CLIPModel.state_dict() order, last encoder layer popped, post_layernorm skipped
    V = "vision_model."
    order = [V + "embeddings.class_embedding", V + "embeddings.patch_embedding.weight",
             V + "embeddings.position_embedding.weight", V + "pre_layrnorm.weight", V + "pre_layrnorm.bias"]
    for i in range(n_layer - 1):
        L = f"{V}encoder.layers.{i}."
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            order += [L + f"self_attn.{p}.weight", L + f"self_attn.{p}.bias"]
        order += [L + "layer_norm1.weight", L + "layer_norm1.bias", L + "mlp.fc1.weight", L + "mlp.fc1.bias",
                  L + "mlp.fc2.weight", L + "mlp.fc2.bias", L + "layer_norm2.weight", L + "layer_norm2.bias"]
    for n in order:
        add(clip_name(n), vp + n, "clip")

    pre = {}
    if (folder / "preprocessor_config.json").is_file():
        pre = json.loads((folder / "preprocessor_config.json").read_text())
    w = gguf.GGUFWriter(out_path, "clip")
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_file_type(1)
    w.add_name(name)
    w.add_description("image encoder for LLaVA")
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", vision["image_size"])
    w.add_uint32("clip.vision.patch_size", vision["patch_size"])
    w.add_uint32("clip.vision.embedding_length", vision["hidden_size"])
    w.add_uint32("clip.vision.feed_forward_length", vision["intermediate_size"])
    w.add_uint32("clip.vision.projection_dim", vision["projection_dim"])
    w.add_uint32("clip.vision.attention.head_count", vision["num_attention_heads"])
    w.add_float32("clip.vision.attention.layer_norm_epsilon", vision["layer_norm_eps"])
    w.add_uint32("clip.vision.block_count", n_layer - 1)
    w.add_array("clip.vision.image_mean", pre.get("image_mean", [0.48145466, 0.4578275, 0.40821073]))
    w.add_array("clip.vision.image_std", pre.get("image_std", [0.26862954, 0.26130258, 0.27577711]))
    w.add_bool("clip.use_gelu", vision["hidden_act"] == "gelu")
    stream(w, plan)


def stream(w, plan):
    for gname, shape, out, _ in plan:
        nbytes = int(np.prod(shape)) * np.dtype(out).itemsize
        w.add_tensor_info(gname, shape, np.dtype(out), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for gname, shape, out, produce in plan:
        w.write_tensor_data(produce())
    w.close()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llamacpp", required=True, help="llama.cpp source tree (its gguf-py/ is used)")
    ap.add_argument("-m", "--model", required=True, help="llava-hf checkpoint folder")
    ap.add_argument("-o", "--out", required=True, help="output folder")
    ap.add_argument("--only", choices=["text", "mmproj"], help="write one of the two files")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(a.llamacpp, "gguf-py"))
    import gguf

    folder = Path(a.model)
    cfg = json.loads((folder / "config.json").read_text())
    ckpt = Checkpoint(folder)
    os.makedirs(a.out, exist_ok=True)
    name = folder.name
    if a.only in (None, "mmproj"):
        p = os.path.join(a.out, "mmproj-f16.gguf")
        write_mmproj(gguf, ckpt, folder, cfg, p + ".tmp", name)
        os.replace(p + ".tmp", p)
        print(f"wrote {p}", file=sys.stderr)
    if a.only in (None, "text"):
        p = os.path.join(a.out, "text-f16.gguf")
        write_text(gguf, ckpt, folder, cfg, p + ".tmp", name)
        os.replace(p + ".tmp", p)
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
