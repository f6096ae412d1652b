"""`llava preprocess` against Debian's Pillow on every image in tests/data/images and on images
made here (1x1 .. 4000x3000, both aspect orientations, up- and down-scaling, EXIF orientations
1-8 in JPEG/PNG/WebP and XMP, CMYK, 16-bit, palettes with transparency, gray 1/2/4-bit, alpha,
GIF first frames and BMP layouts, pad mode, other filters and size forms). The reference is transformers' path written with
Pillow and numpy: Image.open -> ImageOps.exif_transpose -> convert("RGB") -> resize(BICUBIC) ->
center crop -> float32(u8 * (1/255) in double) -> (x - mean) / std in float32.
Decoded and resized 8-bit images must equal Pillow's bit for bit; the acceptance bound (1 level
on 99.9 % of pixels, 2 everywhere, pixel_values within 0.02) is reported as well."""
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
from PIL import Image, ImageOps

LLAVA = os.environ.get("LLAVA_BIN", "build/llava")
DATA = os.environ.get("LLAVA_TEST_DATA", os.path.join(os.path.dirname(__file__), "data"))
LLAVA_CFG = os.path.join(DATA, "llava-1.5-7b-hf", "preprocessor_config.json")

failures = []


def st_read(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    dtypes = {"F32": np.float32, "U8": np.uint8}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dtypes[v["dtype"]]).reshape(v["shape"])
    return out


# ---- the reference: transformers 4.40 CLIPImageProcessor written out with Pillow ----

def reference_load(path):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    return im.convert("RGB")


def reference_u8(im, cfg, pad=False):
    if pad:  # LLaVA's expand2square
        w, h = im.size
        bg = tuple(int(x * 255) for x in cfg["image_mean"])
        if w != h:
            side = max(w, h)
            sq = Image.new(im.mode, (side, side), bg)
            sq.paste(im, ((side - w) // 2, (side - h) // 2))
            im = sq
    size = cfg["size"]
    w, h = im.size
    if "shortest_edge" in size:
        s = size["shortest_edge"]
        short, long = (w, h) if w <= h else (h, w)
        if short != s:
            nl = int(s * long / short)
            nw, nh = (s, nl) if w <= h else (nl, s)
            im = im.resize((nw, nh), resample=cfg.get("resample", 3))
    else:
        im = im.resize((size["width"], size["height"]), resample=cfg.get("resample", 3))
    a = np.asarray(im)
    ch, cw = cfg["crop_size"]["height"], cfg["crop_size"]["width"]
    H, W = a.shape[:2]
    top, left = (H - ch) // 2, (W - cw) // 2
    if top >= 0 and left >= 0:
        return a[top:top + ch, left:left + cw]
    nh, nw = max(ch, H), max(cw, W)  # transformers' center_crop zero padding
    big = np.zeros((nh, nw, 3), np.uint8)
    tp, lp = math.ceil((nh - H) / 2), math.ceil((nw - W) / 2)
    big[tp:tp + H, lp:lp + W] = a
    top, left = top + tp, left + lp
    return big[max(0, top):min(nh, top + ch), max(0, left):min(nw, left + cw)]


def reference_pixels(u8, cfg):
    x = (u8.astype(np.float64) * cfg["rescale_factor"]).astype(np.float32)
    mean = np.array(cfg["image_mean"], dtype=np.float32)
    std = np.array(cfg["image_std"], dtype=np.float32)
    x = (x - mean) / std
    return x.transpose(2, 0, 1)[None]


# ---- running llava ----

def run_llava(model_dir, image, out, pad=False):
    cmd = [LLAVA, "preprocess", "-m", model_dir, "-i", image, "-o", out, "--u8"]
    if pad:
        cmd.append("--pad")
    return subprocess.run(cmd, capture_output=True, text=True)


def check(name, path, model_dir, cfg, pad=False):
    out = os.path.join(TMP, "out.safetensors")
    r = run_llava(model_dir, path, out, pad)
    try:
        ref_img = reference_load(path)
    except Exception as e:  # Pillow cannot read it: neither may we
        if r.returncode == 0:
            failures.append(f"{name}: Pillow fails ({e}) but llava accepted it")
        return
    if r.returncode != 0:
        failures.append(f"{name}: llava failed: {r.stderr.strip()}")
        return
    got = st_read(out)
    ref = np.asarray(ref_img)
    dec = got["image.decoded"]
    if dec.shape != ref.shape:
        failures.append(f"{name}: decoded shape {dec.shape}, Pillow {ref.shape}")
        return
    if not np.array_equal(dec, ref):
        d = np.abs(dec.astype(int) - ref)
        failures.append(f"{name}: decoded pixels differ from Pillow (max {d.max()}, "
                        f"{np.mean(d > 0):.4%} of values)")
    ref_u8 = reference_u8(ref_img, cfg, pad)
    u8 = got["image.processed"]
    if u8.shape != ref_u8.shape:
        failures.append(f"{name}: processed shape {u8.shape}, reference {ref_u8.shape}")
        return
    d = np.abs(u8.astype(int) - ref_u8)
    within1 = np.mean(d <= 1)
    if d.max() > 2 or within1 < 0.999:
        failures.append(f"{name}: resized image outside the acceptance bound "
                        f"(max {d.max()}, {within1:.4%} within 1 level)")
    elif d.max() != 0:
        failures.append(f"{name}: resized image no longer bit-exact with Pillow (max {d.max()})")
    px = got["pixel_values"]
    ref_px = reference_pixels(ref_u8, cfg)
    if px.shape != ref_px.shape or np.abs(px - ref_px).max() > 0.02:
        failures.append(f"{name}: pixel_values differ (shape {px.shape} vs {ref_px.shape})")
    elif d.max() == 0 and not np.array_equal(px, ref_px):
        failures.append(f"{name}: pixel_values not bit-exact (max {np.abs(px - ref_px).max()})")


def model_dir_for(cfg):
    d = tempfile.mkdtemp(dir=TMP)
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump(cfg, f)
    return d


# ---- images made here ----

def texture(w, h, seed):
    """Gradients plus noise and a few sharp edges, so that every rounding case of the filter
    shows; integer arithmetic, so that 12 megapixels take well under a second."""
    rng = np.random.default_rng(seed)
    x = np.arange(w, dtype=np.int16)[None, :]
    y = np.arange(h, dtype=np.int16)[:, None]
    a = np.empty((h, w, 3), np.int16)
    a[..., 0] = (x.astype(np.int32) * 255 // max(w - 1, 1)).astype(np.int16)
    a[..., 1] = (y.astype(np.int32) * 255 // max(h - 1, 1)).astype(np.int16)
    a[..., 2] = (x.astype(np.int32) * 3 + y.astype(np.int32) * 7) % 256
    a += rng.integers(0, 41, (h, w, 3), dtype=np.int16)
    a -= 20
    a[((x // 13 + y // 11) % 5) == 0] = (250, 5, 128)
    return np.clip(a, 0, 255).astype(np.uint8)


def save(name, im, fmt, **kw):
    path = os.path.join(TMP, name)
    im.save(path, fmt, **kw)
    return path


def png_bytes(w, h, depth, ctype, raw_rows, plte=None, trns=None, after_idat=()):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in raw_rows)))
    for t, d in after_idat:
        out += chunk(t, d)
    return out + chunk(b"IEND", b"")


def write(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def generated_cases():
    cases = []
    # sizes: tiny, around the crop, both orientations, up- and downscaling, up to 12 MP
    sizes = [(1, 1), (1, 9), (9, 1), (2, 3), (17, 13), (335, 337), (337, 335), (336, 336),
             (500, 100), (100, 500), (640, 480), (480, 640), (1000, 1), (1, 1000), (1920, 1080),
             (3000, 4000), (4000, 3000)]
    for i, (w, h) in enumerate(sizes):
        im = Image.fromarray(texture(w, h, i))
        if w * h >= 1_000_000:
            cases.append((f"gen_{w}x{h}.jpg", save(f"gen_{w}x{h}.jpg", im, "JPEG", quality=90)))
        else:
            cases.append((f"gen_{w}x{h}.png", save(f"gen_{w}x{h}.png", im, "PNG", compress_level=1)))
    base = Image.fromarray(texture(40, 24, 99))  # not square: rotations change the shape
    for o in range(1, 9):
        cases.append((f"exif{o}.jpg", save(f"exif{o}.jpg", base, "JPEG", quality=95, exif=exif_bytes(o))))
        cases.append((f"exif{o}.png", save(f"exif{o}.png", base, "PNG", exif=exif_bytes(o))))
        cases.append((f"exif{o}.webp", save(f"exif{o}.webp", base, "WEBP", lossless=True, exif=exif_bytes(o))))
    raw = np.asarray(base)
    rows = [raw[y].tobytes() for y in range(24)]
    tiff = exif_bytes(6)[6:] if exif_bytes(6).startswith(b"Exif") else exif_bytes(6)
    cases.append(("exif_after_idat.png", write("exif_after_idat.png",
                                                png_bytes(40, 24, 8, 2, rows, after_idat=[(b"eXIf", tiff)]))))
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>')
    cases.append(("xmp8.png", save("xmp8.png", base, "PNG", pnginfo=info)))
    for o, compressed in ((3, False), (6, True)):  # ImageMagick's hex "Raw profile type exif"
        hx = exif_bytes(o).hex()
        text = "\nexif\n     %d\n%s\n" % (len(hx) // 2, "\n".join(hx[i:i + 72] for i in range(0, len(hx), 72)))
        info = PngImagePlugin.PngInfo()
        info.add_text("Raw profile type exif", text, zip=compressed)
        cases.append((f"rawprofile{o}.png", save(f"rawprofile{o}.png", base, "PNG", pnginfo=info)))
    # colour modes
    cases.append(("cmyk.jpg", save("cmyk.jpg", base.convert("CMYK"), "JPEG", quality=95)))
    cases.append(("gray.jpg", save("gray.jpg", base.convert("L"), "JPEG")))
    cases.append(("progressive.jpg", save("progressive.jpg", Image.fromarray(texture(300, 200, 5)),
                                          "JPEG", progressive=True, quality=85)))
    cases.append(("444.jpg", save("444.jpg", base, "JPEG", subsampling=0)))
    cases.append(("422.jpg", save("422.jpg", base, "JPEG", subsampling=1)))
    g16 = (np.arange(40 * 24, dtype=np.uint32).reshape(24, 40) * 68).astype(">u2")
    cases.append(("gray16.png", write("gray16.png", png_bytes(40, 24, 16, 0, [r.tobytes() for r in g16]))))
    rgb16 = (raw.astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16) * 99).astype(">u2")
    cases.append(("rgb16.png", write("rgb16.png", png_bytes(40, 24, 16, 2, [r.tobytes() for r in rgb16]))))
    rgba16 = np.concatenate([rgb16, np.full((24, 40, 1), 1234, ">u2")], -1)
    cases.append(("rgba16.png", write("rgba16.png", png_bytes(40, 24, 16, 6, [r.tobytes() for r in rgba16]))))
    la16 = np.stack([g16, g16[::-1]], -1).astype(">u2")
    cases.append(("la16.png", write("la16.png", png_bytes(40, 24, 16, 4, [r.tobytes() for r in la16]))))
    for bits in (1, 2, 4):
        vals = (np.arange(40 * 24).reshape(24, 40) * 7) % (1 << bits)
        packed = [np.packbits(np.unpackbits(v.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:].ravel()).tobytes()
                  for v in vals]
        cases.append((f"gray{bits}.png", write(f"gray{bits}.png", png_bytes(40, 24, bits, 0, packed))))
        plte = bytes(np.random.default_rng(bits).integers(0, 256, 3 << bits, dtype=np.uint8))
        cases.append((f"pal{bits}.png", write(f"pal{bits}.png", png_bytes(40, 24, bits, 3, packed, plte=plte,
                                                                           trns=b"\x00\x80"))))
    # tRNS on gray and RGB images: Pillow ignores it in convert("RGB")
    rng = np.random.default_rng(11)
    for bits, ctype, nbytes, trns in ((1, 0, 5, b"\0\1"), (2, 0, 10, b"\0\1"), (8, 0, 40, b"\0\7"),
                                      (16, 0, 80, b"\1\7"), (8, 2, 120, b"\0\7\0\10\0\11")):
        rows_t = [bytes(rng.integers(0, 256, nbytes, dtype=np.uint8)) for _ in range(7)]
        name = f"trns_{ctype}_{bits}.png"
        cases.append((name, write(name, png_bytes(40, 7, bits, ctype, rows_t, trns=trns))))
    idx = ((np.arange(40 * 24).reshape(24, 40) * 11) % 256).astype(np.uint8)
    short_plte = bytes(range(30))  # 10 entries: higher indices fall on Pillow's gray ramp
    cases.append(("pal_short.png", write("pal_short.png", png_bytes(40, 24, 8, 3, [r.tobytes() for r in idx],
                                                                    plte=short_plte))))
    p = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    cases.append(("pal_trns.png", save("pal_trns.png", p, "PNG", transparency=5)))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(40 * 24).reshape(24, 40) % 256).astype(np.uint8)))
    cases.append(("rgba.png", save("rgba.png", rgba, "PNG")))
    cases.append(("la.png", save("la.png", rgba.convert("LA"), "PNG")))
    cases.append(("rgba_lossy.webp", save("rgba_lossy.webp", rgba, "WEBP", quality=80)))
    cases.append(("rgba_lossless.webp", save("rgba_lossless.webp", rgba, "WEBP", lossless=True)))
    cases.append(("interlaced.png", write("interlaced.png", interlaced_png(base))))
    cases += gif_bmp_cases(base)
    anim = [Image.fromarray(texture(48, 32, s)) for s in (1, 2)]
    path = os.path.join(TMP, "anim.webp")
    anim[0].save(path, "WEBP", save_all=True, append_images=anim[1:], duration=50, lossless=True)
    cases.append(("anim.webp", path))
    return cases


def lzw_literal(indices, bits):
    """GIF LZW data that codes every index as a literal (valid: the decoder still grows its table
    and code size, which the encoder mirrors), with a clear code first and an end code last."""
    clear, size, nxt, first = 1 << bits, bits + 1, (1 << bits) + 2, True
    codes = [(clear, size)]
    for v in indices:
        codes.append((int(v), size))
        if not first and nxt < 4096:
            if nxt == (1 << size) - 1 and size < 12:
                size += 1
            nxt += 1
        first = False
        if nxt >= 4000:
            codes.append((clear, size))
            size, nxt, first = bits + 1, clear + 2, True
    codes.append((clear + 1, size))
    acc = n = 0
    out = bytearray()
    for c, sz in codes:
        acc |= c << n
        n += sz
        while n >= 8:
            out.append(acc & 255)
            acc >>= 8
            n -= 8
    if n:
        out.append(acc)
    return bytes(out)


def gif_bytes(screen, frame, indices, bits=8, gpal=None, lpal=None, transparency=None, interlace=False):
    out = b"GIF89a" + struct.pack("<HH", *screen)
    out += bytes([0x80 | (len(gpal) // 3).bit_length() - 2, 0, 0]) + gpal if gpal else b"\0\0\0"
    if transparency is not None:
        out += b"\x21\xf9\x04" + bytes([1, 0, 0, transparency, 0])
    flags = (0x40 if interlace else 0) | ((0x80 | (len(lpal) // 3).bit_length() - 2) if lpal else 0)
    out += b"," + struct.pack("<HHHHB", *frame, flags) + (lpal or b"") + bytes([bits])
    data = lzw_literal(indices, bits)
    for i in range(0, len(data), 255):
        out += bytes([len(data[i:i + 255])]) + data[i:i + 255]
    return out + b"\0;"


def bmp_bytes(w, h, bits, rows, header=40, compression=0, masks=None, top_down=False, palette=b""):
    stride = ((w * bits + 31) >> 3) & ~3
    data = b"".join(r.ljust(stride, b"\0") for r in (rows if top_down else rows[::-1]))
    extra = b""
    if header == 12:
        hdr = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        hdr = struct.pack("<IiiHHIIiiII", header, w, -h if top_down else h, 1, bits, compression,
                          len(data), 2835, 2835, 0, 0)
        if header == 124:
            hdr += struct.pack("<IIII", *masks) + bytes(124 - 56)
        elif compression == 3:
            extra = struct.pack("<III", *masks[:3])
    off = 14 + len(hdr) + len(extra) + len(palette)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + hdr + extra + palette + data


def gif_bmp_cases(base):
    rng = np.random.default_rng(7)
    cases = [("p.gif", save("p.gif", base.convert("P"), "GIF")),
             ("interlaced.gif", save("interlaced.gif", base.convert("P"), "GIF", interlace=True)),
             ("gray.gif", save("gray.gif", base.convert("L"), "GIF")),
             ("transparent.gif", save("transparent.gif", base.convert("P"), "GIF", transparency=7))]
    frames = [base, base.rotate(90), Image.fromarray(texture(40, 24, 3))]
    path = os.path.join(TMP, "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    cases.append(("anim.gif", path))
    pal = bytes(rng.integers(0, 256, 768, dtype=np.uint8))
    idx = rng.integers(0, 256, 20 * 13)
    for name, kw in [("offset.gif", dict(screen=(10, 8), frame=(3, 2, 20, 13), gpal=pal, transparency=9)),
                     ("local.gif", dict(screen=(20, 13), frame=(0, 0, 20, 13), gpal=pal,
                                        lpal=bytes(rng.integers(0, 256, 48, dtype=np.uint8)))),
                     ("nopalette.gif", dict(screen=(20, 13), frame=(0, 0, 20, 13))),
                     ("shortpalette.gif", dict(screen=(20, 13), frame=(0, 0, 20, 13), gpal=pal[:12])),
                     ("interlaced13.gif", dict(screen=(20, 13), frame=(0, 0, 20, 13), gpal=pal, interlace=True))]:
        cases.append((name, write(name, gif_bytes(indices=idx, **kw))))
    cases.append(("bits2.gif", write("bits2.gif", gif_bytes((20, 13), (0, 0, 20, 13), idx % 4, bits=2, gpal=pal[:12]))))
    big = rng.integers(0, 3, 300 * 200)  # long enough to fill the 4096-entry table
    cases.append(("bigtable.gif", write("bigtable.gif", gif_bytes((300, 200), (0, 0, 300, 200), big, gpal=pal))))
    for m in ("1", "L", "P", "RGB", "RGBA"):
        cases.append((f"{m}.bmp", save(f"{m}.bmp", base.convert(m), "BMP")))
    cases.append(("P4.bmp", save("P4.bmp", base.convert("P", palette=Image.ADAPTIVE, colors=16), "BMP")))
    a = np.asarray(base).astype(np.uint16)
    h, w = a.shape[:2]
    v565 = ((a[..., 0] >> 3) << 11) | ((a[..., 1] >> 2) << 5) | (a[..., 2] >> 3)
    v555 = ((a[..., 0] >> 3) << 10) | ((a[..., 1] >> 3) << 5) | (a[..., 2] >> 3)
    cases.append(("565.bmp", write("565.bmp", bmp_bytes(w, h, 16, [r.astype("<u2").tobytes() for r in v565],
                                                          compression=3, masks=(0xF800, 0x7E0, 0x1F, 0)))))
    cases.append(("555.bmp", write("555.bmp", bmp_bytes(w, h, 16, [r.astype("<u2").tobytes() for r in v555]))))
    a8 = np.asarray(base)
    bgrx = np.concatenate([a8[..., ::-1], np.full((h, w, 1), 77, np.uint8)], -1)
    cases.append(("topdown.bmp", write("topdown.bmp", bmp_bytes(w, h, 32, [r.tobytes() for r in bgrx], top_down=True))))
    rgba = np.concatenate([a8, np.full((h, w, 1), 77, np.uint8)], -1)
    cases.append(("v5_rgba.bmp", write("v5_rgba.bmp", bmp_bytes(w, h, 32, [r.tobytes() for r in rgba], header=124,
                                                                  compression=3, masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000)))))
    cases.append(("os2.bmp", write("os2.bmp", bmp_bytes(w, h, 24, [r[..., ::-1].tobytes() for r in a8], header=12))))
    idx8 = (np.arange(w * h).reshape(h, w) * 5 % 256).astype(np.uint8)
    cases.append(("shortpalette.bmp", write("shortpalette.bmp", bmp_bytes(w, h, 8, [r.tobytes() for r in idx8],
                                                                            palette=bytes(rng.integers(0, 256, 40, dtype=np.uint8))))))
    return cases


def interlaced_png(im):
    """Adam7 written by hand (Pillow cannot write interlaced PNGs)."""
    a = np.asarray(im)
    h, w = a.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    data = b""
    for x0, y0, dx, dy in passes:
        sub = a[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        data += b"".join(b"\0" + r.tobytes() for r in sub)
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1)) +
            chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


def main():
    global TMP
    t0 = time.time()
    with tempfile.TemporaryDirectory() as TMP:
        cfg = json.load(open(LLAVA_CFG))
        cfg.setdefault("resample", 3)
        llava_dir = model_dir_for(cfg)
        n = 0
        images = os.path.join(DATA, "images")
        for f in sorted(os.listdir(images)):
            if f.endswith((".jpg", ".png", ".webp", ".gif", ".bmp")):
                check(f, os.path.join(images, f), llava_dir, cfg)
                n += 1
        for name, path in generated_cases():
            check(name, path, llava_dir, cfg)
            n += 1
        # pad mode, other filters, size forms, crops larger than the image
        flower = os.path.join(images, "pillow_flower.jpg")
        tall = os.path.join(images, "derived_waterview_tall_96x667.jpg")
        for path in (flower, tall):
            check("pad " + os.path.basename(path), path, llava_dir, cfg, pad=True)
            n += 1
        variants = []
        for resample in (0, 1, 2, 4, 5):
            variants.append(dict(cfg, resample=resample))
        variants.append(dict(cfg, size={"height": 200, "width": 150}, crop_size={"height": 180, "width": 160}))
        variants.append(dict(cfg, size={"shortest_edge": 100}, crop_size={"height": 150, "width": 90}))
        variants.append(dict(cfg, size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]))
        for i, v in enumerate(variants):
            d = model_dir_for(v)
            for path in (flower, tall):
                check(f"variant {i} {os.path.basename(path)}", path, d, v)
                n += 1
        print(f"{n} images compared with Pillow in {time.time() - t0:.1f} s")
    if failures:
        print("\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
