"""`llava preprocess` on the fixtures' images (image.png, the loaded pixels, and input.jpg, the
original file) must give the pixel_values that transformers' CLIPImageProcessor computed, stored
in ref/reference.safetensors, bit for bit."""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

LLAVA = os.environ.get("LLAVA_BIN", "build/llava")
FIXTURES = os.environ.get("LLAVA_FIXTURES", os.path.join(os.path.dirname(__file__), "fixtures"))


def st_tensor(path, name):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    v = json.loads(b[8:8 + n])[name]
    assert v["dtype"] == "F32", v
    s, e = v["data_offsets"]
    return np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.float32).reshape(v["shape"])


def main():
    failures, n = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pv.safetensors")
        for case in sorted(os.listdir(FIXTURES)):
            ref_path = os.path.join(FIXTURES, case, "ref", "reference.safetensors")
            if not os.path.exists(ref_path):
                continue
            ref = st_tensor(ref_path, "pixel_values")
            for image in ("image.png", "input.jpg"):
                path = os.path.join(FIXTURES, case, image)
                if not os.path.exists(path):
                    continue
                r = subprocess.run([LLAVA, "preprocess", "-m", os.path.join(FIXTURES, case, "model"),
                                    "-i", path, "-o", out], capture_output=True, text=True)
                n += 1
                if r.returncode != 0:
                    failures.append(f"{case}/{image}: {r.stderr.strip()}")
                    continue
                got = st_tensor(out, "pixel_values")
                if got.shape != ref.shape:
                    failures.append(f"{case}/{image}: shape {got.shape}, reference {ref.shape}")
                elif not np.array_equal(got, ref):
                    d = np.abs(got - ref)
                    failures.append(f"{case}/{image}: max |diff| {d.max():.3g}, "
                                    f"{np.mean(d > 0):.3%} of values differ")
    print(f"{n} fixture images compared")
    if n < 3:
        failures.append(f"only {n} fixture images found in {FIXTURES}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
