"""A LlavaForConditionalGeneration-shaped model in plain PyTorch, with the llava-hf preprocessing,
tokenization and checkpoint layout around it: what tools/train_tiny_llava.py trains and
tools/eval_tiny_llava.py checks.

The math mirrors Hugging Face transformers 4.40.2 (CLIPVisionModel, LlavaMultiModalProjector,
LlamaForCausalLM, eager attention, float32) line for line, because the checkpoint must mean the
same thing to the C engine as to transformers; ../shared/fixtures/README.md lists the details and
the module names below are the hub tensor names, so state_dict() is the checkpoint.
"""
import json
import math
import os
import shutil
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

IMAGE_TOKEN_ID = 32000
PAD_TOKEN_ID = 32001
BOS_ID, EOS_ID = 1, 2
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
TRANSFORMERS_VERSION = "4.40.2"  # the version whose save_pretrained output the exported files match

# Debian's python3-torch calls whatever libblas.so.3 the loader finds; the default alternative is
# the netlib reference BLAS, about 7x slower on these matrix products than OpenBLAS.
OPENBLAS_DIRS = ["/usr/lib/x86_64-linux-gnu/openblas-openmp", "/usr/lib/x86_64-linux-gnu/openblas-pthread",
                 "/usr/lib/x86_64-linux-gnu/openblas-serial"]


def reexec_with_openblas():
    """Restart this script with an installed OpenBLAS (apt install libopenblas0-openmp) ahead of
    the system's libblas.so.3, without changing the system's choice for other programs. No-op
    when none is installed or when already done."""
    if os.environ.get("TINY_LLAVA_BLAS") is not None:
        return
    env = dict(os.environ, TINY_LLAVA_BLAS="")
    for d in OPENBLAS_DIRS:
        if os.path.isfile(os.path.join(d, "libblas.so.3")):
            env["TINY_LLAVA_BLAS"] = d
            env["LD_LIBRARY_PATH"] = d + (":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
            break
    if not env["TINY_LLAVA_BLAS"]:
        print("note: no OpenBLAS found (apt install libopenblas0-openmp); the reference BLAS is much slower",
              file=sys.stderr)
        os.environ["TINY_LLAVA_BLAS"] = ""
        return
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


# Hugging Face defaults that save_pretrained leaves out of config.json when a value equals them.
CLIP_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                            projection_dim=512)
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048,
                      rms_norm_eps=1e-6, rope_theta=10000.0)


class Config:
    """The shapes of one model; field names are the Hugging Face config keys."""

    def __init__(self, **kw):
        self.vision = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                           image_size=112, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)
        self.text = dict(vocab_size=32002, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=10000.0)
        self.vision.update(kw.get("vision", {}))
        self.text.update(kw.get("text", {}))
        self.vision_feature_layer = -2
        self.projector_hidden_act = "gelu"

    @property
    def num_patches(self):
        return (self.vision["image_size"] // self.vision["patch_size"]) ** 2

    def to_dict(self):
        return {"vision": dict(self.vision), "text": dict(self.text)}


# ---------------------------------------------------------------- image preprocessing (CLIPImageProcessor)

def load_image(path):
    """As transformers.image_utils.load_image: EXIF orientation applied, then convert("RGB")."""
    from PIL import ImageOps
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def preprocess(img, size):
    """CLIPImageProcessor with llava-hf settings: shortest edge -> size with PIL bicubic on uint8
    (long edge truncated), center crop size x size, * (1/255) in double then float32, normalize
    with the CLIP mean/std in float32; returns float32 [3, size, size]."""
    img = img.convert("RGB")
    w, h = img.size
    short, long_ = (w, h) if w <= h else (h, w)
    new_long = int(size * long_ / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((nw, nh), resample=Image.BICUBIC)
    a = np.asarray(img)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = a[top:top + size, left:left + size]
    a = (a * (1 / 255)).astype(np.float32)
    a = (a - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


# ---------------------------------------------------------------- tokenization (llava-hf tokenizer.json behaviour)

class Tokenizer:
    """The LLaMA SentencePiece model plus llava-hf's added <image> (32000) and <pad> (32001).

    llava-hf's tokenizer.json splits the text around added tokens and gives every piece its own
    leading "▁" (legacy LLaMA behaviour), which is what SentencePiece's dummy prefix does to each
    piece encoded on its own: "USER: <image>\\nWhat" -> [3148, 1001, 29901, 29871], 32000,
    [29871, 13, 5618]."""

    SPECIAL = {"<image>": IMAGE_TOKEN_ID, "<pad>": PAD_TOKEN_ID, "<s>": BOS_ID, "</s>": EOS_ID}

    def __init__(self, model_file):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=model_file)

    def encode(self, text, bos=True):
        ids = [BOS_ID] if bos else []
        pos = 0
        while pos < len(text):
            nxt = [(text.find(s, pos), s) for s in self.SPECIAL if text.find(s, pos) >= 0]
            if not nxt:
                ids += self.sp.encode(text[pos:])
                break
            at, s = min(nxt)
            if at > pos:
                ids += self.sp.encode(text[pos:at])
            ids.append(self.SPECIAL[s])
            pos = at + len(s)
        return ids

    def decode(self, ids):
        """Like tokenizer.decode(ids, skip_special_tokens=True)."""
        return self.sp.decode([i for i in ids if i < self.sp.vocab_size() and i not in (BOS_ID, EOS_ID)])


def prompt_text(question):
    """llava-1.5's single-turn chat prompt, as llava-hf's chat template renders it."""
    return f"USER: <image>\n{question} ASSISTANT:"


# ---------------------------------------------------------------- vision tower (CLIPVisionModel)

class CLIPAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):  # x [B, T, D]; no mask: every patch sees every patch
        B, T, D = x.shape
        q = self.q_proj(x) * self.hd ** -0.5  # scaled after the bias, as CLIPAttention does
        k, v = self.k_proj(x), self.v_proj(x)
        q, k, v = (t.view(B, T, self.heads, self.hd).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(B, T, D))


class CLIPMLP(nn.Module):
    def __init__(self, d, ff, act):
        super().__init__()
        self.act = act
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, vc):
        super().__init__()
        d, eps = vc["hidden_size"], vc["layer_norm_eps"]
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.self_attn = CLIPAttention(d, vc["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = CLIPMLP(d, vc["intermediate_size"], vc["hidden_act"])

    def forward(self, h):
        h = h + self.self_attn(self.layer_norm1(h))
        return h + self.mlp(self.layer_norm2(h))


class CLIPEmbeddings(nn.Module):
    def __init__(self, vc):
        super().__init__()
        d, p = vc["hidden_size"], vc["patch_size"]
        n = (vc["image_size"] // p) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.randn(d) * d ** -0.5)
        self.patch_embedding = nn.Conv2d(3, d, kernel_size=p, stride=p, bias=False)
        self.position_embedding = nn.Embedding(n, d)

    def forward(self, pixels):  # [B, 3, S, S] -> [B, 1 + N, D], CLS first, patches row-major
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], 1) + self.position_embedding.weight[None]


class CLIPEncoder(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(vc) for _ in range(vc["num_hidden_layers"]))


class CLIPVisionTransformer(nn.Module):
    def __init__(self, vc):
        super().__init__()
        d = vc["hidden_size"]
        self.embeddings = CLIPEmbeddings(vc)
        self.pre_layrnorm = nn.LayerNorm(d, eps=vc["layer_norm_eps"])
        self.encoder = CLIPEncoder(vc)
        # In the checkpoint because CLIPVisionModel has it; LLaVA never uses it.
        self.post_layernorm = nn.LayerNorm(d, eps=vc["layer_norm_eps"])

    def hidden_states(self, pixels, upto):
        """hidden_states[0..upto] as CLIPVisionModel(output_hidden_states=True) returns them:
        [0] after pre_layrnorm, [i] after encoder layer i. Layers past `upto` do not change the
        selected state, so they are not run (transformers runs them and throws them away)."""
        h = self.pre_layrnorm(self.embeddings(pixels))
        out = [h]
        for layer in self.encoder.layers[:upto]:
            h = layer(h)
            out.append(h)
        return out


class CLIPVisionModel(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.vision_model = CLIPVisionTransformer(vc)


class LlavaMultiModalProjector(nn.Module):
    def __init__(self, dv, dt):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(dv, dt), nn.Linear(dt, dt)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x)))  # exact erf GELU


# ---------------------------------------------------------------- decoder (LlamaForCausalLM)

class LlamaRMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, tc):
        super().__init__()
        d = tc["hidden_size"]
        self.heads, self.kv = tc["num_attention_heads"], tc["num_key_value_heads"]
        self.hd = d // self.heads
        self.q_proj = nn.Linear(d, self.heads * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.heads * self.hd, d, bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        """x [B, T, D]; cos/sin [T, hd] for the T new positions; mask [T, T_total] additive;
        cache: None, or a list [k, v] of earlier positions that is extended in place."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        rep = self.heads // self.kv  # grouped-query attention: head h reads kv head h // rep
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        w = q @ k.transpose(-1, -2) / math.sqrt(self.hd) + mask
        w = torch.softmax(w.float(), dim=-1)
        return self.o_proj((w @ v).transpose(1, 2).reshape(B, T, -1))


class LlamaMLP(nn.Module):
    def __init__(self, tc):
        super().__init__()
        d, ff = tc["hidden_size"], tc["intermediate_size"]
        self.gate_proj, self.up_proj = nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, tc):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(tc["hidden_size"], tc["rms_norm_eps"])
        self.self_attn = LlamaAttention(tc)
        self.post_attention_layernorm = LlamaRMSNorm(tc["hidden_size"], tc["rms_norm_eps"])
        self.mlp = LlamaMLP(tc)

    def forward(self, h, cos, sin, mask, cache=None):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, tc):
        super().__init__()
        self.embed_tokens = nn.Embedding(tc["vocab_size"], tc["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(tc) for _ in range(tc["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(tc["hidden_size"], tc["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, tc):
        super().__init__()
        self.model = LlamaModel(tc)
        self.lm_head = nn.Linear(tc["hidden_size"], tc["vocab_size"], bias=False)


# ---------------------------------------------------------------- LlavaForConditionalGeneration

class TinyLlava(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        vc, tc = cfg.vision, cfg.text
        self.vision_tower = CLIPVisionModel(vc)
        self.multi_modal_projector = LlavaMultiModalProjector(vc["hidden_size"], tc["hidden_size"])
        self.language_model = LlamaForCausalLM(tc)
        hd = tc["hidden_size"] // tc["num_attention_heads"]
        # float32 as LlamaRotaryEmbedding computes it; not a checkpoint tensor
        inv_freq = 1.0 / (tc["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._init_weights()

    def _init_weights(self):
        """Fan-in scaled normal init (std 1/sqrt(inputs)); residual-branch outputs further scaled
        by 1/sqrt(2 * layers) so that the stack starts close to the identity. Hugging Face's
        fixed std 0.02 is about 1/sqrt(width) for a 4096-wide model; at width 128 it is 4-5x too
        small per matrix, and the image's path through vision tower, projector, attention and
        lm_head is a product of several such matrices: training then sits for thousands of
        steps answering from the question alone before it starts to look at the image."""
        layers = {"vision_tower": self.cfg.vision["num_hidden_layers"],
                  "language_model": self.cfg.text["num_hidden_layers"]}
        for name, p in self.named_parameters():
            if name.endswith("class_embedding"):
                nn.init.normal_(p, std=p.shape[0] ** -0.5)
            elif name.endswith(("embed_tokens.weight", "position_embedding.weight")):
                nn.init.normal_(p, std=p.shape[1] ** -0.5)
            elif p.dim() >= 2:
                std = p[0].numel() ** -0.5
                if name.endswith(("o_proj.weight", "down_proj.weight", "out_proj.weight", "fc2.weight")):
                    std /= math.sqrt(2 * layers[name.split(".")[0]])
                nn.init.normal_(p, std=std)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def vision_features(self, pixels):
        """[B, 3, S, S] -> [B, N, Dv]: hidden_states[vision_feature_layer] with the CLS row dropped
        (vision_feature_select_strategy "default")."""
        n_layers = self.cfg.vision["num_hidden_layers"]
        sel = self.cfg.vision_feature_layer % (n_layers + 1)
        return self.vision_tower.vision_model.hidden_states(pixels, sel)[sel][:, 1:]

    def image_features(self, pixels):
        """[B, 3, S, S] -> [B, N, Dt]: the vision features through the projector."""
        return self.multi_modal_projector(self.vision_features(pixels))

    def rope(self, positions):
        freqs = positions.float()[:, None] * self.inv_freq[None]
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos(), emb.sin()

    def decode(self, embeds, positions, caches=None):
        """Run the decoder on embeds [B, T, D] at positions [T] (after len(cache) earlier ones);
        returns the final normed hidden states [B, T, D]."""
        T = embeds.shape[1]
        past = positions[0].item()
        cos, sin = self.rope(positions)
        mask = torch.full((T, past + T), float("-inf"))
        mask = torch.triu(mask, diagonal=past + 1)
        h = embeds
        for i, layer in enumerate(self.language_model.model.layers):
            h = layer(h, cos, sin, mask, None if caches is None else caches[i])
        return self.language_model.model.norm(h)

    def merge(self, ids, image_feats):
        """Token embeddings of ids [L] with the single <image> id replaced by the N rows of
        image_feats [N, D], as LlavaForConditionalGeneration merges them: [L - 1 + N, D]."""
        emb = self.language_model.model.embed_tokens
        at = ids.index(IMAGE_TOKEN_ID)
        before = emb(torch.tensor(ids[:at], dtype=torch.long))
        after = emb(torch.tensor(ids[at + 1:], dtype=torch.long))
        return torch.cat([before, image_feats, after], 0)

    @torch.no_grad()
    def generate(self, pixels, ids, max_new_tokens=32):
        """Greedy generation with a KV cache for one image [3, S, S] and prompt ids (one <image>
        id); returns the new ids, ending with EOS when it is produced."""
        return self.generate_from_features(self.image_features(pixels[None])[0], ids, max_new_tokens)

    @torch.no_grad()
    def generate_from_features(self, feats, ids, max_new_tokens=32):
        """generate() for an image already through the vision tower and projector: feats [N, D]."""
        x = self.merge(ids, feats)[None]
        caches = [[] for _ in self.language_model.model.layers]
        h = self.decode(x, torch.arange(x.shape[1]), caches)
        pos = x.shape[1]
        out = []
        for _ in range(max_new_tokens):
            nxt = int(self.language_model.lm_head(h[0, -1]).argmax())
            out.append(nxt)
            if nxt == EOS_ID:
                break
            e = self.language_model.model.embed_tokens(torch.tensor([[nxt]]))
            h = self.decode(e, torch.tensor([pos]), caches)
            pos += 1
        return out


# ---------------------------------------------------------------- checkpoint in the llava-hf layout

ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def write_safetensors(path, tensors):
    """safetensors as the reference writer lays it out: {"__metadata__": {"format": "pt"}} first,
    tensors in sorted-name order, contiguous little-endian data, header padded with spaces to 8."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        data = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    np_types = {"F32": np.float32, "F16": np.float16}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        a = np.frombuffer(data[b:e], dtype=np_types[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(a.astype(np.float32))
    return out


def _diff(values, defaults):
    """The keys save_pretrained writes: those whose value is not the class default."""
    return {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}


def config_json(cfg, dtype):
    vc = _diff(cfg.vision, CLIP_VISION_DEFAULTS)
    vc["model_type"] = "clip_vision_model"
    tc = _diff(cfg.text, LLAMA_DEFAULTS)
    tc["model_type"] = "llama"
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": IMAGE_TOKEN_ID,
        "model_type": "llava",
        "pad_token_id": PAD_TOKEN_ID,
        "projector_hidden_act": cfg.projector_hidden_act,
        "text_config": dict(sorted(tc.items())),
        "torch_dtype": {torch.float16: "float16", torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype],
        "transformers_version": TRANSFORMERS_VERSION,
        "vision_config": dict(sorted(vc.items())),
        "vision_feature_layer": cfg.vision_feature_layer,
        "vision_feature_select_strategy": "default",
    }


def preprocessor_json(size):
    return {
        "_valid_processor_keys": ["images", "do_resize", "size", "resample", "do_center_crop", "crop_size",
                                  "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
                                  "do_convert_rgb", "return_tensors", "data_format", "input_data_format"],
        "crop_size": {"height": size, "width": size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": size},
    }


def export(model, out_dir, tokenizer_dir, dtype=torch.float16):
    """Write the model as llava-hf publishes one: config files, the LLaMA tokenizer files with
    the llava-1.5 chat template, and model.safetensors in `dtype` under the hub tensor names."""
    os.makedirs(out_dir, exist_ok=True)

    def dump(name, obj):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")

    dump("config.json", config_json(model.cfg, dtype))
    dump("generation_config.json", {"_from_model_config": True, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
                                    "pad_token_id": PAD_TOKEN_ID, "transformers_version": TRANSFORMERS_VERSION})
    dump("preprocessor_config.json", preprocessor_json(model.cfg.vision["image_size"]))
    for name in ("tokenizer.json", "special_tokens_map.json", "added_tokens.json", "chat_template.json"):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
    # llava-hf kept the chat template in tokenizer_config.json before it moved to chat_template.json;
    # carrying it in both lets a loader that reads either one find it.
    tok_cfg = json.load(open(os.path.join(tokenizer_dir, "tokenizer_config.json")))
    tok_cfg["chat_template"] = json.load(open(os.path.join(tokenizer_dir, "chat_template.json")))["chat_template"]
    dump("tokenizer_config.json", tok_cfg)
    tensors = {k: v.to(dtype) for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)


def load(model_dir):
    """A TinyLlava from an exported folder, weights widened to float32 exactly as stored."""
    cfg_json = json.load(open(os.path.join(model_dir, "config.json")))
    vc = {k: v for k, v in cfg_json["vision_config"].items() if k in Config().vision}
    tc = {k: v for k, v in cfg_json["text_config"].items() if k in Config().text}
    vc = {**{k: CLIP_VISION_DEFAULTS[k] for k in Config().vision if k in CLIP_VISION_DEFAULTS}, **vc}
    tc = {**{k: LLAMA_DEFAULTS[k] for k in Config().text if k in LLAMA_DEFAULTS}, **tc}
    cfg = Config(vision=vc, text=tc)
    model = TinyLlava(cfg)
    state = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return model.eval()
