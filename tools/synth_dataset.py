#!/usr/bin/python3
"""Synthetic scenes of simple shapes with question/answer pairs, for training and checking the
small LLaVA shipped in models/.

Every scene is a pure function of (seed, index), so training, evaluation and the tests can each
draw their own images without storing any: a seed used by training is never used for evaluation.

A scene holds one to four shapes (circle, square, triangle, star, cross, diamond) in eight named
colours, each in its own cell of a 3x3 grid, on a plain, noisy or gradient background. Images
come in many sizes (short edge 64..640 px) and aspect ratios (up to 2.5:1), so the engine's real
resize and center crop are exercised. CLIP preprocessing keeps only the central square of an
image, so the grid is laid over that square and the rest is background only.

Answers are short canonical sentences that name what was asked about before the answer itself:
"The triangle is red.", "The red one is a circle.", "The blue star is at the top left.", "3",
"A red circle and a blue square." Naming the subject first puts it right before the answer word
instead of only several tokens back in the question, so a small decoder can find it with a
previous-token lookup. Objects in a description are
listed in reading order (grid rows top to bottom, then left to right), so every scene has exactly
one right description.

  /usr/bin/python3 tools/synth_dataset.py --seed 7 --count 20 --out /tmp/scenes
writes /tmp/scenes/NNNNN.png and /tmp/scenes/questions.jsonl (one line per question).
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
           "cross": "crosses", "diamond": "diamonds"}
# Far apart in RGB so that noise, jitter and resampling never move one colour onto another's name.
COLOURS = {
    "red": (220, 30, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 220, 30),
    "orange": (250, 140, 20),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
POSITIONS = [["top left", "top", "top right"],
             ["left", "center", "right"],
             ["bottom left", "bottom", "bottom right"]]
QUESTION_TYPES = ["shape", "colour", "count", "position", "describe"]

# Shapes are drawn on a canvas whose short edge is at least this many pixels and then reduced to
# the image size: small images get anti-aliased edges instead of a few jagged pixels.
MIN_DRAW_EDGE = 384
# Fraction of the central square left empty on each side. Zero: the 3x3 grid spans the whole
# central square, so that each grid cell is exactly one patch of a vision tower whose patch is a
# third of its image (the model in models/ has 84 px images and 28 px patches). Shapes keep at
# least 4% of a cell from its edges (size <= 0.92), about a pixel at 84 px: the center crop's
# rounding and the bicubic filter's reach can blur an edge pixel, never cut a shape.
MARGIN = 0.0


class Scene:
    """What an image shows; `objects` are (shape, colour, row, col, size, dx, dy, angle) with size
    the fraction of a grid cell the shape spans and (dx, dy) its offset from the cell center in
    cell units."""

    def __init__(self, width, height, background, objects, colour_jitter, noise, noise_seed):
        self.width, self.height = width, height
        self.background = background  # ("plain", rgb) | ("gradient", rgb0, rgb1, vertical)
        self.objects = objects
        self.colour_jitter = colour_jitter  # per object: RGB offsets
        self.noise = noise  # amplitude of per-pixel uniform noise (0: none)
        self.noise_seed = noise_seed

    def reading_order(self):
        return sorted(self.objects, key=lambda o: (o[2], o[3]))


def scene_rng(seed, index):
    # Independent streams per (seed, index): the scene does not depend on which others were drawn.
    return np.random.default_rng([int(seed), int(index)])


def make_scene(rng):
    short = int(rng.integers(64, 641))
    ratio = 1.0 if rng.random() < 0.3 else float(np.exp(rng.uniform(0.0, math.log(2.5))))
    long_ = min(1600, int(round(short * ratio)))
    width, height = (long_, short) if rng.random() < 0.5 else (short, long_)

    n = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.25, 0.25, 0.2]))
    cells = rng.choice(9, size=n, replace=False)
    pairs = set()
    objects = []
    for cell in cells:
        while True:  # every (colour, shape) pair at most once, so "the red circle" is one object
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            if (colour, shape) not in pairs:
                break
        pairs.add((colour, shape))
        size = float(rng.uniform(0.6, 0.92))
        slack = (1.0 - size) / 2
        dx, dy = (float(v) for v in rng.uniform(-slack, slack, 2))
        angle = float(rng.uniform(-12, 12)) if shape in ("triangle", "star") else 0.0
        objects.append((shape, colour, int(cell) // 3, int(cell) % 3, size, dx, dy, angle))
    jitter = [tuple(int(v) for v in rng.integers(-15, 16, 3)) for _ in objects]

    def grey():
        level = int(rng.integers(90, 171))
        return tuple(int(np.clip(level + t, 0, 255)) for t in rng.integers(-12, 13, 3))

    kind = rng.choice(["plain", "noise", "gradient"], p=[0.4, 0.35, 0.25])
    if kind == "gradient":
        background = ("gradient", grey(), grey(), bool(rng.random() < 0.5))
    else:
        background = ("plain", grey())
    noise = int(rng.integers(8, 31)) if kind == "noise" else 0
    return Scene(width, height, background, objects, jitter, noise, int(rng.integers(2**31)))


def _polygon(shape, cx, cy, r, angle):
    """Vertices of a shape of 'radius' r (half its extent) centered at (cx, cy)."""
    a0 = math.radians(angle)
    if shape == "triangle":  # equilateral, pointing up; centered on its bounding box, not centroid
        pts = [(math.cos(a0 - math.pi / 2 + k * 2 * math.pi / 3), math.sin(a0 - math.pi / 2 + k * 2 * math.pi / 3))
               for k in range(3)]
        pts = [(x, y + 0.25) for x, y in pts]
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = 1.0 if k % 2 == 0 else 0.42
            t = a0 - math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(t), rad * math.sin(t) + 0.1))
    elif shape == "diamond":
        pts = [(0, -1), (0.8, 0), (0, 1), (-0.8, 0)]
    elif shape == "cross":
        w = 0.34
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
               (-w, -w)]
    else:
        raise ValueError(shape)
    return [(cx + r * x, cy + r * y) for x, y in pts]


def _layout(scene, W, H):
    """(cx, cy, r) of each object on a W x H canvas: center and half extent in pixels."""
    side = min(W, H)
    ox, oy = (W - side) / 2, (H - side) / 2
    cell = side * (1 - 2 * MARGIN) / 3
    out = []
    for shape, colour, row, col, size, dx, dy, angle in scene.objects:
        out.append((ox + side * MARGIN + (col + 0.5 + dx) * cell, oy + side * MARGIN + (row + 0.5 + dy) * cell,
                    size * cell / 2))
    return out


def _draw_objects(draw, scene, W, H, fills):
    for (shape, _, _, _, _, _, _, angle), (cx, cy, r), fill in zip(scene.objects, _layout(scene, W, H), fills):
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            h = r * 0.85  # a square of the full extent looks bigger than the other shapes
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        else:
            draw.polygon(_polygon(shape, cx, cy, r, angle), fill=fill)


def render(scene):
    """The scene as an RGB PIL image of scene.width x scene.height."""
    scale = max(1, math.ceil(MIN_DRAW_EDGE / min(scene.width, scene.height)))
    W, H = scene.width * scale, scene.height * scale
    bg = scene.background
    if bg[0] == "plain":
        img = Image.new("RGB", (W, H), bg[1])
    else:
        c0, c1, vertical = np.array(bg[1], np.float32), np.array(bg[2], np.float32), bg[3]
        t = np.linspace(0.0, 1.0, H if vertical else W, dtype=np.float32)
        line = (c0[None] * (1 - t[:, None]) + c1[None] * t[:, None]).round().astype(np.uint8)
        arr = np.broadcast_to(line[:, None, :], (H, W, 3)) if vertical else np.broadcast_to(line[None], (H, W, 3))
        img = Image.fromarray(np.ascontiguousarray(arr))
    fills = [tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOURS[o[1]], jit))
             for o, jit in zip(scene.objects, scene.colour_jitter)]
    _draw_objects(ImageDraw.Draw(img), scene, W, H, fills)
    if scale > 1:
        img = img.resize((scene.width, scene.height), resample=Image.BOX)
    if scene.noise:
        rng = np.random.default_rng(scene.noise_seed)
        a = np.asarray(img).astype(np.int16)
        a = a + rng.integers(-scene.noise, scene.noise + 1, a.shape, dtype=np.int16)
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return img


PATCH_LABELS = {"cover_shape": len(SHAPES) + 1, "cover_colour": len(COLOURS) + 1,
                "center_shape": len(SHAPES) + 1, "center_colour": len(COLOURS) + 1, "center_cell": 10,
                "center_same_shape": 6, "count": 6, **{f"count_{s}": 6 for s in SHAPES}}


def patch_labels(scene, size, patch):
    """Dense labels of the CLIP crop (shortest edge resized to `size`, center crop size x size),
    one row per patch in row-major order, columns as PATCH_LABELS (0 = nothing):
    cover_*: the object covering most of the patch (if it covers >= 20% of it); center_*: the
    object whose center lies in the patch, center_cell its grid cell + 1 and center_same_shape how
    many objects of the scene have its shape + 1 (so that "how many stars" can be answered by
    looking up a star, as "what colour is the star" is); count and
    count_<shape>: how many objects (of that shape) the whole scene holds, + 1, the same on every
    patch: the vision tower's attention sees all patches, so it can count for the decoder, which
    would otherwise have to count through one softmax-normalized lookup."""
    w, h = scene.width, scene.height
    short, long_ = min(w, h), max(w, h)
    new_long = int(size * long_ / short)
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    left, top = (nw - size) // 2, (nh - size) // 2
    ids = Image.new("L", (nw, nh), 0)
    _draw_objects(ImageDraw.Draw(ids), scene, nw, nh, list(range(1, len(scene.objects) + 1)))
    a = np.asarray(ids)[top:top + size, left:left + size]
    g = size // patch
    blocks = a[:g * patch, :g * patch].reshape(g, patch, g, patch).transpose(0, 2, 1, 3).reshape(g * g, -1)
    out = np.zeros((g * g, len(PATCH_LABELS)), np.int64)
    colours = list(COLOURS)
    for k, (shape, colour, row, col, *_) in enumerate(scene.objects):
        frac = (blocks == k + 1).mean(1)
        best = (frac >= 0.2) & (frac >= np.array([(blocks == j + 1).mean(1) for j in range(len(scene.objects))]).max(0))
        out[best, 0] = SHAPES.index(shape) + 1
        out[best, 1] = colours.index(colour) + 1
    for k, (cx, cy, r) in enumerate(_layout(scene, nw, nh)):
        shape, colour, row, col = scene.objects[k][:4]
        px, py = int((cx - left) // patch), int((cy - top) // patch)
        if 0 <= px < g and 0 <= py < g:
            same = sum(o[0] == shape for o in scene.objects)
            out[py * g + px, 2:6] = (SHAPES.index(shape) + 1, colours.index(colour) + 1, row * 3 + col + 1, same + 1)
    out[:, 6] = len(scene.objects) + 1
    for k, shape in enumerate(SHAPES):
        out[:, 7 + k] = sum(o[0] == shape for o in scene.objects) + 1
    return out


def _article(colour):
    return "an" if colour[0] in "aeiou" else "a"


def describe(scene):
    parts = [f"{_article(c)} {c} {s}" for s, c, *_ in scene.reading_order()]
    if len(parts) == 1:
        text = parts[0]
    else:
        text = ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


def count_question(shape):
    """The question asking how many objects of `shape` a scene holds."""
    return f"How many {PLURALS[shape]} are there?"


def questions(scene, rng=None):
    """Every question this scene answers unambiguously: list of (type, question, answer).
    With rng, one phrasing is drawn per question; without, the first phrasing is used."""
    pick = (lambda opts: opts[int(rng.integers(len(opts)))]) if rng is not None else (lambda opts: opts[0])
    objs = scene.objects
    shape_count = {s: sum(o[0] == s for o in objs) for s in SHAPES}
    colour_count = {c: sum(o[1] == c for o in objs) for c in COLOURS}
    out = []
    if len(objs) == 1:
        shape, colour, row, col = objs[0][:4]
        out.append(("shape", pick(["What shape is this?", "What shape is in the image?",
                                   "What is the shape in the image?"]), f"It is a {shape}."))
        out.append(("colour", pick(["What colour is the shape?", "What color is the shape?",
                                    "What colour is it?"]), f"It is {colour}."))
        out.append(("position", pick(["Where is the shape?", f"Where is the {shape}?"]),
                    f"It is at the {POSITIONS[row][col]}."))
    for shape, colour, row, col, *_ in objs:
        if colour_count[colour] == 1:
            out.append(("shape", pick([f"What shape is the {colour} object?", f"What shape is the {colour} one?"]),
                        f"The {colour} one is a {shape}."))
        if shape_count[shape] == 1:
            out.append(("colour", pick([f"What colour is the {shape}?", f"What color is the {shape}?"]),
                        f"The {shape} is {colour}."))
        out.append(("position", pick([f"Where is the {colour} {shape}?"]),
                    f"The {colour} {shape} is at the {POSITIONS[row][col]}."))
    out.append(("count", pick(["How many shapes are there?", "How many shapes are in the image?",
                               "How many objects are there?"]), str(len(objs))))
    for shape in SHAPES:
        if shape_count[shape] or (rng is not None and rng.random() < 0.1):
            out.append(("count", pick([count_question(shape)]), str(shape_count[shape])))
    out.append(("describe", pick(["Describe the image in one sentence.", "Describe the image.",
                                  "What is in the image?"]), describe(scene)))
    return out


def sample(seed, index):
    """(PIL image, scene, [(type, question, answer), ...]) for one index of a seeded stream."""
    rng = scene_rng(seed, index)
    scene = make_scene(rng)
    return render(scene), scene, questions(scene, rng)


def pick_question(qas, rng, qtype=None):
    """One question of a scene, the type first drawn uniformly among those present (or the given
    one), so that rare types (a single-shape scene's shape question) are not drowned out."""
    types = sorted({t for t, _, _ in qas}) if qtype is None else [qtype]
    t = types[int(rng.integers(len(types)))]
    cands = [qa for qa in qas if qa[0] == t]
    return cands[int(rng.integers(len(cands)))] if cands else None


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--start", type=int, default=0, help="first index of the stream")
    ap.add_argument("--out", required=True)
    ap.add_argument("--format", choices=["png", "jpg"], default="png")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "questions.jsonl"), "w") as f:
        for i in range(args.start, args.start + args.count):
            img, scene, qas = sample(args.seed, i)
            name = f"{i:05d}.{args.format}"
            img.save(os.path.join(args.out, name), quality=92) if args.format == "jpg" else img.save(
                os.path.join(args.out, name))
            for t, q, a in qas:
                f.write(json.dumps({"image": name, "type": t, "question": q, "answer": a}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
