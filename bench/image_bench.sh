#!/usr/bin/env bash
# Decode + CLIP preprocessing time (to 336x336, llava-1.5's preprocessor_config.json) for a
# 12-megapixel JPEG and a 1-megapixel PNG, with `llava preprocess --repeat`, on one core; and the
# same work in Pillow + numpy (transformers' path) for comparison. Wall times need an idle
# machine; the CPU times (of the one thread doing the work) hold up on a shared one.
# usage: bench/image_bench.sh [LLAVA_BIN] [RUNS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
llava=${1:-${LLAVA_BIN:-$root/build/llava}}
runs=${2:-20}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/model"
cp "$root/tests/data/llava-1.5-7b-hf/preprocessor_config.json" "$tmp/model/"

# A photo-like 12 MP JPEG (a real photo upscaled plus sensor-like noise, quality 92, 4:2:0) and a
# 1 MP PNG of the same content.
/usr/bin/python3 - "$root/tests/data/images/llava_waterview.jpg" "$tmp" <<'PY'
import sys
import numpy as np
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
im = Image.open(src).convert("RGB").resize((4000, 3000), Image.BICUBIC)
a = np.asarray(im).astype(np.int16) + np.random.default_rng(0).normal(0, 6, (3000, 4000, 3))
im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
im.save(f"{out}/photo_12mp.jpg", quality=92)
im.resize((1155, 866), Image.BICUBIC).save(f"{out}/photo_1mp.png")
PY

pin=${BENCH_PIN:-}  # single-threaded code; BENCH_PIN="taskset -c N" pins it
for f in photo_12mp.jpg photo_1mp.png; do
  echo "== llava: $f ($(stat -c %s "$tmp/$f") bytes), $runs runs, one core"
  $pin "$llava" preprocess -m "$tmp/model" -i "$tmp/$f" -o "$tmp/out.safetensors" --repeat "$runs"
done

echo "== Pillow $( /usr/bin/python3 -c 'import PIL; print(PIL.__version__)') + numpy, same work (transformers' path), median of 5"
$pin /usr/bin/python3 - "$tmp" <<'PY'
import sys, time
import numpy as np
from PIL import Image, ImageOps
d = sys.argv[1]
mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
for f in ("photo_12mp.jpg", "photo_1mp.png"):
    ts, cs = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        im = ImageOps.exif_transpose(Image.open(f"{d}/{f}")).convert("RGB")
        w, h = im.size
        s = 336
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        a = np.asarray(im.resize((nw, nh), Image.BICUBIC))
        t, l = (nh - s) // 2, (nw - s) // 2
        x = (a[t:t + s, l:l + s].astype(np.float64) / 255).astype(np.float32)
        x = ((x - mean) / std).transpose(2, 0, 1)
        ts.append((time.perf_counter() - t0) * 1e3)
        cs.append((time.process_time() - c0) * 1e3)
    print(f"{f:16s} total wall median {sorted(ts)[2]:8.2f} ms   cpu min {min(cs):8.2f} ms")
PY
