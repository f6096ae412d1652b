"""`llava quantize` and `llava bench -m` through the command line: the quantized files' headers
(which tensors become blocks, their [groups, blocks, bytes] shapes, the layout in the metadata,
--keep, shards and index), a dequantized block checked against the source weights with numpy,
refusals with their messages, and the benchmark's JSON (every figure present and sane, floors
null without probes, --quant reported)."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

BIN = os.environ["LLAVA_BIN"]
FIX = os.environ["LLAVA_FIXTURES"]
MODEL = os.path.join(FIX, "small-f16", "model")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def llava(*args, timeout=300):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def f16(raw):
    return np.frombuffer(raw, dtype="<f2").astype(np.float32)


def dequantize_q8_0(raw, rows, cols):
    """The layout as llava.quant.layout states it, independently of the C code."""
    g, b = (rows + 15) // 16, cols // 32
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(g, b, 544)
    d = blocks[:, :, :32].copy().view("<f2").astype(np.float32)            # [g, b, 16]
    q = blocks[:, :, 32:].reshape(g, b, 8, 16, 4).astype(np.int32) - 128   # [g, b, j, r, i]
    w = q.transpose(0, 3, 1, 2, 4).reshape(g, 16, b, 32) * d.transpose(0, 2, 1)[:, :, :, None]
    return w.reshape(g * 16, cols)[:rows]


def dequantize_q4_0(raw, rows, cols):
    g, b = (rows + 15) // 16, cols // 32
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(g, b, 288)
    d = blocks[:, :, :32].copy().view("<f2").astype(np.float32)
    q = blocks[:, :, 32:].reshape(g, b, 4, 16, 4).astype(np.int32)         # [g, b, j, r, i]
    lo = (q & 15) - 8
    hi = (q >> 4) - 8
    lo = lo.transpose(0, 3, 1, 2, 4).reshape(g, 16, b, 16)
    hi = hi.transpose(0, 3, 1, 2, 4).reshape(g, 16, b, 16)
    w = np.concatenate([lo, hi], axis=3) * d.transpose(0, 2, 1)[:, :, :, None]
    return w.reshape(g * 16, cols)[:rows]


def main():
    tmp = tempfile.mkdtemp(prefix="llava_quant_")
    try:
        src_hdr, src_base = header(os.path.join(MODEL, "model.safetensors"))
        with open(os.path.join(MODEL, "model.safetensors"), "rb") as f:
            src_data = f.read()[src_base:]
        for qt, block, deq in (("q8_0", 544, dequantize_q8_0), ("q4_0", 288, dequantize_q4_0)):
            out = os.path.join(tmp, qt)
            rc, _, err = llava("quantize", "-m", MODEL, "-o", out, "--type", qt, "-t", "2")
            check(rc == 0, f"quantize {qt}: exit {rc}: {err}")
            hdr, base = header(os.path.join(out, "model.safetensors"))
            meta = hdr.pop("__metadata__")
            check(meta.get("llava.quantization") == qt, f"{qt}: llava.quantization = {meta.get('llava.quantization')}")
            check(str(block) in meta.get("llava.quant.layout", ""), f"{qt}: layout text names the {block}-byte block")
            src = {k: v for k, v in src_hdr.items() if k != "__metadata__"}
            check(sorted(hdr) == sorted(src), f"{qt}: same tensor names")
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                data = f.read()[base:]
            n_quant = 0
            for name, e in hdr.items():
                s = src[name]
                rows_cols = s["shape"]
                quantizable = (len(rows_cols) == 2 and name.endswith(".weight") and rows_cols[1] % 32 == 0
                               and "embed_tokens" not in name and "position_embedding" not in name)
                if quantizable:
                    n_quant += 1
                    r, c = rows_cols
                    check(e["dtype"] == "U8" and e["shape"] == [(r + 15) // 16, c // 32, block],
                          f"{qt}: {name} stored as {e['dtype']} {e['shape']}")
                    if name.endswith("layers.0.self_attn.q_proj.weight") and "language_model" in name:
                        b0, b1 = e["data_offsets"]
                        w = deq(data[b0:b1], r, c)
                        s0, s1 = s["data_offsets"]
                        ref = f16(src_data[s0:s1]).reshape(r, c)
                        amax = np.abs(ref.reshape(r, c // 32, 32)).max(axis=2).repeat(32, axis=1)
                        bound = (amax / 127 * 0.5 if qt == "q8_0" else amax / 8) + amax * 2.0 ** -10 + 1e-12
                        check(bool(np.all(np.abs(w - ref) <= bound)),
                              f"{qt}: {name} dequantized with numpy from the documented layout differs from the "
                              f"weights by up to {np.abs(w - ref).max():.3g}")
                else:
                    check(e["dtype"] == s["dtype"] and e["shape"] == s["shape"], f"{qt}: {name} kept as is")
            check(n_quant > 30, f"{qt}: {n_quant} matrices quantized")
            # `llava info` (and the server's /api/show) count a quantized matrix as its blocks'
            # rows (rounded up to 16) × columns, and name the format most weights are in
            want = sum((16 * ((src[n]["shape"][0] + 15) // 16) * src[n]["shape"][1]) if e["dtype"] == "U8"
                       else int(np.prod(e["shape"])) for n, e in hdr.items())
            rc, out_json, err = llava("info", "-m", out, "--json")
            check(rc == 0, f"info on the {qt} folder: {err}")
            info = json.loads(out_json)
            check(info["parameters"] == want and info["parameters_format"] == qt.upper(),
                  f"{qt}: info gives {info['parameters']} {info['parameters_format']}, expected {want} {qt.upper()}")
            for side in ("config.json", "tokenizer.json", "generation_config.json", "preprocessor_config.json"):
                check(os.path.isfile(os.path.join(out, side)), f"{qt}: {side} copied")

        # --keep leaves a part as stored
        out = os.path.join(tmp, "keep")
        rc, _, err = llava("quantize", "-m", MODEL, "-o", out, "--type", "q8_0", "--keep", "vision", "--keep", "lm_head")
        check(rc == 0, f"--keep: exit {rc}: {err}")
        hdr, _ = header(os.path.join(out, "model.safetensors"))
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            if "vision_tower" in name or "lm_head" in name:
                check(e["dtype"] != "U8", f"--keep: {name} quantized")
        check(hdr["language_model.model.layers.0.self_attn.q_proj.weight"]["dtype"] == "U8", "--keep: text quantized")

        # shards and index: one output shard per input shard, the index rewritten
        shards = os.path.join(tmp, "shards")
        os.makedirs(shards)
        for name in os.listdir(MODEL):
            if name != "model.safetensors":
                shutil.copy(os.path.join(MODEL, name), shards)
        # split the fixture by rewriting it as two files with the standard library
        names = sorted(k for k in src_hdr if k != "__metadata__")
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map = {}
        for i, part in enumerate(halves):
            fname = f"model-{i + 1:05d}-of-00002.safetensors"
            hdr_out, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
            for n in part:
                e = src_hdr[n]
                b0, b1 = e["data_offsets"]
                hdr_out[n] = {"dtype": e["dtype"], "shape": e["shape"], "data_offsets": [off, off + b1 - b0]}
                blobs.append(src_data[b0:b1])
                off += b1 - b0
                weight_map[n] = fname
            text = json.dumps(hdr_out).encode()
            text += b" " * (-len(text) % 8)
            with open(os.path.join(shards, fname), "wb") as f:
                f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
        with open(os.path.join(shards, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
        out = os.path.join(tmp, "shards-q4")
        rc, _, err = llava("quantize", "-m", shards, "-o", out, "--type", "q4_0")
        check(rc == 0, f"shards: exit {rc}: {err}")
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            index = json.load(f)
        check(index["weight_map"] == weight_map, "shards: same weight map")
        total = sum(os.path.getsize(os.path.join(out, f)) for f in set(weight_map.values()))
        check(0 < index["metadata"]["total_size"] < total, "shards: total_size is the tensors' bytes")
        rc, o1, _ = llava("bench", "-m", out, "--repeat", "1", "--warmup", "0", "--gen-tokens", "2",
                          "--prompt-tokens", "4", "--no-probe", "--json", "-t", "2")
        check(rc == 0, "a sharded quantized checkpoint loads and runs")

        # refusals
        for args, words in ((["-m", MODEL, "-o", os.path.join(tmp, "x"), "--type", "q5_1"], "q8_0 or q4_0"),
                            (["-m", MODEL, "-o", MODEL, "--type", "q8_0"], "must differ"),
                            (["-m", os.path.join(tmp, "nowhere"), "-o", os.path.join(tmp, "y"), "--type", "q8_0"],
                             "not a folder"),
                            (["-m", MODEL, "-o", os.path.join(tmp, "z"), "--type", "q8_0", "--keep", "eyes"],
                             "--keep takes")):
            rc, _, err = llava("quantize", *args)
            check(rc != 0 and words in err, f"quantize {' '.join(args[-2:])}: exit {rc}, '{err.strip()}'")
        rc, _, err = llava("bench", "-m", MODEL, "--quant", "q2_k")
        check(rc != 0 and "q8_0 or q4_0" in err, f"bench --quant q2_k: exit {rc}, '{err.strip()}'")

        # the benchmark's JSON
        for q in (None, "q8_0"):
            args = ["bench", "-m", MODEL, "--repeat", "2", "--warmup", "0", "--gen-tokens", "3",
                    "--prompt-tokens", "5", "--json", "-t", "2"]
            if q:
                args += ["--quant", q]
            else:
                args += ["--no-probe"]
            rc, out_json, err = llava(*args)
            check(rc == 0, f"bench {q}: exit {rc}: {err}")
            j = json.loads(out_json)
            check(j["positions"] == 1 + 576 + 5, f"bench: positions {j['positions']}")
            check(j["gen_tokens"] == 3 and j["runs"] == 2, "bench: counts")
            for k in ("vision_ms", "prefill_tok_s", "decode_tok_s", "ttft_ms", "peak_rss_mib", "load_ms"):
                check(isinstance(j[k], (int, float)) and j[k] > 0, f"bench {q}: {k} = {j[k]}")
            check(j["ttft_ms"] > j["vision_ms"], "bench: first token after the image")
            check(0 < j["cpu_share"] <= 1.05, f"bench: cpu_share {j['cpu_share']}")
            if q:
                check(j["quant"] == q, f"bench: quant {j['quant']}")
                for k in ("vision_floor_ms", "prefill_floor_tok_s", "decode_floor_tok_s", "ttft_floor_ms"):
                    check(isinstance(j[k], float) and j[k] > 0, f"bench {q}: {k} = {j[k]}")
                check(j["peak_int8_gops"] > 0, "bench: int8 peak probed")
            else:
                check(j["quant"] == "none", f"bench: quant {j['quant']}")
                for k in ("vision_floor_ms", "prefill_floor_tok_s", "decode_floor_tok_s", "ttft_floor_ms"):
                    check(j[k] is None, f"bench --no-probe: {k} = {j[k]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
