#!/usr/bin/python3
"""Train the small LLaVA shipped in models/ from scratch on synthetic scenes (tools/synth_dataset.py)
and export it in the llava-hf layout.

Every image is drawn fresh from a seeded stream (no image is seen twice) and goes through the same
CLIPImageProcessor pipeline the engine implements. Training has two phases:

1. Vision warm-up: the vision tower alone, with small linear heads on the patch features LLaVA
   uses (hidden_states[-2], CLS dropped) that predict per patch which shape and colour cover it
   and which object's center (shape, colour, grid cell) lies in it. Learning to see only through
   the answers' loss is slow for a vision tower that starts from nothing: the answer tokens reach
   it through attention that has not yet learnt where to look, and the language model first
   learns to answer from the question alone. This phase costs little (no decoder, no 32k-way
   softmax) and gives the tower features worth looking at.
2. End to end: every weight trains on the answers, the patch heads' loss kept at a lower weight.
   Each image is asked several questions, packed into one row after its image:

     USER: <image> | \\n{q1} ASSISTANT: {a1}</s> | \\n{q2} ASSISTANT: {a2}</s> | ...

   Each exchange sees the image and itself only, at the positions it would have alone, so every
   one is exactly the single-turn prompt the engine builds, and one image encoding serves them
   all. (An earlier recipe chained them as a multi-turn conversation; a later turn could then
   copy its answer from an earlier one, e.g. a colour from the description, instead of looking.)
   The language loss covers the answer tokens and their </s> only. Question types are drawn
   with TYPE_WEIGHTS.

The patch heads are not part of the model and are not exported.

  /usr/bin/python3 tools/train_tiny_llava.py --out models/tiny-llava-shapes
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth_dataset as synth  # noqa: E402
import tiny_llava as tl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(ROOT, "tests", "data", "llava-1.5-7b-hf")
TRAIN_SEED = 1  # the scene stream of training; evaluation and tests use other seeds
VALID_SEED = 2  # a small fixed set watched during training
VOCAB_SEED = 3  # scenes whose answers list the answer vocabulary

_worker = {}


def _init_worker(image_size, patch, questions, seed):
    torch.set_num_threads(1)
    _worker.update(tok=tl.Tokenizer(os.path.join(TOKENIZER_DIR, "tokenizer.model")), size=image_size,
                   patch=patch, questions=questions, seed=seed)


# How often each question type is drawn for training. Shape questions (looked up by colour) and
# descriptions are learnt early; looking an object up by its shape (its colour, how many of it
# there are) is what takes long, so those are drawn most.
TYPE_WEIGHTS = {"shape": 0.1, "colour": 0.3, "count": 0.3, "position": 0.15, "describe": 0.15}


def answer_ids(tok, q, a):
    """(ids, loss mask) of one single-turn exchange after the <image> id: the prompt the engine
    builds for a question, then the answer and its </s>, which are what the model must predict."""
    p = tok.encode(f"\n{q} ASSISTANT:", bos=False)
    ans = tok.encode(a, bos=False) + [tl.EOS_ID]
    return p + ans, [False] * len(p) + [True] * len(ans)


def training_questions(scene, qas):
    """The scene's questions plus "how many" for every shape it lacks (answer 0): the evaluation
    asks about a missing shape only now and then, but without them "1" would be right for most
    per-shape counts and the model would learn that instead of counting."""
    asked = {q for _, q, _ in qas}
    extra = []
    for shape in synth.SHAPES:
        q = synth.count_question(shape)
        if q not in asked and not any(o[0] == shape for o in scene.objects):
            extra.append(("count", q, "0"))
    return qas + extra


# Within the count type, how often a question with each answer is drawn, relative to a count of
# 1: several of one shape is rare in the scenes, and a missing shape is common once every missing
# shape can be asked about.
COUNT_WEIGHTS = {"0": 0.4, "1": 1.0}
MANY_WEIGHT = 3.0
PER_SHAPE_COUNT_QUESTIONS = {synth.count_question(s) for s in synth.SHAPES}


def pick_training_question(qas, rng):
    types = sorted({t for t, _, _ in qas})
    w = np.array([TYPE_WEIGHTS[t] for t in types])
    t = types[int(rng.choice(len(types), p=w / w.sum()))]
    cands = [qa for qa in qas if qa[0] == t]
    per_shape = [q in PER_SHAPE_COUNT_QUESTIONS for _, q, _ in cands]
    w = np.array([COUNT_WEIGHTS.get(a, MANY_WEIGHT) if ps else 1.0 for (_, _, a), ps in zip(cands, per_shape)])
    return cands[int(rng.choice(len(cands), p=w / w.sum()))]


def make_example(index):
    """Image `index` of the training stream -> (pixels [3,S,S] float32, [(ids after <image>, loss
    mask), ...] one per question, patch labels [N, len(PATCH_LABELS)])."""
    tok, seed, size = _worker["tok"], _worker["seed"], _worker["size"]
    img, scene, qas = synth.sample(seed, index)
    qas = training_questions(scene, qas)
    rng = np.random.default_rng([seed, index, 1])
    chosen = []
    for _ in range(_worker["questions"]):
        qa = pick_training_question(qas, rng)
        if qa not in chosen:
            chosen.append(qa)
    segments = [answer_ids(tok, q, a) for _, q, a in chosen]
    return tl.preprocess(img, size), segments, synth.patch_labels(scene, size, _worker["patch"])


def collate(examples, shared):
    """Packs each image's questions into one row after its `shared` prefix and image positions:
    [BOS USER: | image | q1 a1 | q2 a2 | ...]. Each exchange sees the shared positions and itself
    only, at the positions it would have alone, so it is exactly the single-turn prompt the engine
    runs, and one image encoding serves several questions. Returns pixels, ids [B, L] (the tokens
    after the image), loss mask [B, L], positions [B, shared + L], additive attention mask
    [B, 1, shared + L, shared + L], patch labels."""
    rows = []
    for _, segments, _ in examples:
        ids, tgt, pos, seg = [], [], [], []
        for k, (s_ids, s_tgt) in enumerate(segments):
            ids += s_ids
            tgt += s_tgt
            pos += range(shared, shared + len(s_ids))
            seg += [k + 1] * len(s_ids)
        rows.append((ids, tgt, pos, seg))
    L = max(len(r[0]) for r in rows)
    B = len(examples)
    ids = torch.full((B, L), tl.PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    pos = torch.arange(shared + L).repeat(B, 1)
    seg = torch.full((B, shared + L), -1, dtype=torch.long)  # -1: padding; it sees the shared part
    seg[:, :shared] = 0
    for b, (r_ids, r_tgt, r_pos, r_seg) in enumerate(rows):
        n = len(r_ids)
        ids[b, :n] = torch.tensor(r_ids)
        mask[b, :n] = torch.tensor(r_tgt)
        pos[b, shared:shared + n] = torch.tensor(r_pos)
        seg[b, shared:shared + n] = torch.tensor(r_seg)
    causal = torch.ones(shared + L, shared + L, dtype=torch.bool).tril()
    visible = causal & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
    attn = torch.zeros(visible.shape).masked_fill(~visible, float("-inf"))[:, None]
    pixels = torch.from_numpy(np.stack([e[0] for e in examples]))
    labels = torch.from_numpy(np.stack([e[2] for e in examples]))
    return pixels, ids, mask, pos, attn, labels


class PatchHeads(nn.Module):
    """One linear classifier per column of synth.PATCH_LABELS on each vision feature row."""

    def __init__(self, dv):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dv, n) for n in synth.PATCH_LABELS.values())

    def loss(self, feats, labels):
        """feats [B, N, Dv], labels [B, N, heads] -> (mean cross-entropy, accuracy per head)."""
        losses, accs = [], []
        for k, head in enumerate(self.heads):
            logits = head(feats).flatten(0, 1)
            y = labels[..., k].flatten()
            losses.append(F.cross_entropy(logits, y))
            # accuracy where there is something to find: all-background patches are easy
            sel = y > 0
            accs.append((logits[sel].argmax(-1) == y[sel]).float().mean().item() if sel.any() else 1.0)
        return sum(losses) / len(losses), accs


def answer_vocabulary(tok, scenes=4000):
    """Sorted ids of every token an answer can hold (and </s>): the answers of `scenes` drawn scenes
    (a seed of its own) plus every shape/colour/position sentence. Checked against the ids of
    each training batch, so a token outside it stops training with a message, never silently."""
    ids = {tl.EOS_ID}
    for i in range(scenes):
        rng = synth.scene_rng(VOCAB_SEED, i)
        qas = synth.questions(synth.make_scene(rng), rng)  # the scene's answers, without drawing it
        for _, _, a in qas:
            ids.update(tok.encode(a, bos=False))
    for shape in synth.SHAPES:
        for colour in synth.COLOURS:
            for row in synth.POSITIONS:
                for where in row:
                    for a in (f"It is a {shape}.", f"It is {colour}.", f"It is at the {where}.",
                              f"The {colour} one is a {shape}.", f"The {shape} is {colour}.",
                              f"The {colour} {shape} is at the {where}."):
                        ids.update(tok.encode(a, bos=False))
    return sorted(ids)


class AnswerHead:
    """Cross-entropy of the full-vocabulary softmax of a model whose lm_head rows are zero for
    every token outside the answer vocabulary, computed without the 32k-wide product.

    Those rows stay zero through training (they get no gradient, and decoupled weight decay keeps
    zero at zero), so each of the other V - K tokens has logit exactly 0: their share of the
    softmax is one extra logit log(V - K). The exported model is the one trained, and its greedy
    answers can only use answer tokens. This makes a training step about twice as fast: the
    32k-wide softmax and its gradients were half of it."""

    def __init__(self, model, vocab):
        lm = model.language_model.lm_head.weight
        self.cand = torch.tensor(vocab, dtype=torch.long)
        keep = torch.zeros(lm.shape[0], dtype=torch.bool)
        keep[self.cand] = True
        with torch.no_grad():
            lm[~keep] = 0
        self.index = torch.full((lm.shape[0],), -1, dtype=torch.long)
        self.index[self.cand] = torch.arange(len(vocab))
        self.rest = math.log(lm.shape[0] - len(vocab))

    def loss(self, model, h, targets):
        """h [n, D] final hidden states, targets [n] token ids -> (mean cross-entropy, n correct)."""
        local = self.index[targets]
        if (local < 0).any():
            bad = targets[local < 0].unique().tolist()
            raise SystemExit(f"answer token ids {bad} are not in the answer vocabulary")
        w = model.language_model.lm_head.weight[self.cand]
        logits = torch.cat([h @ w.t(), torch.full((h.shape[0], 1), self.rest)], 1)
        loss = F.cross_entropy(logits, local)
        correct = (logits.argmax(-1) == local).sum().item()
        return loss, correct


def decode_packed(model, x, positions, attn):
    """The decoder on embeds x [B, T, D] with per-row positions [B, T] and an additive attention
    mask [B, 1, T, T] (see collate); returns the final normed hidden states."""
    freqs = positions.float()[..., None] * model.inv_freq
    emb = torch.cat([freqs, freqs], -1)[:, None]  # [B, 1, T, hd]: broadcast over heads
    cos, sin = emb.cos(), emb.sin()
    h = x
    for layer in model.language_model.model.layers:
        h = layer(h, cos, sin, attn)
    return model.language_model.model.norm(h)


def answer_loss(model, head, feats, ids, mask, prefix, positions, attn):
    """Cross-entropy over the answer tokens given vision features [B, N, Dv]; returns (loss,
    n tokens, n correct argmax)."""
    B = feats.shape[0]
    emb = model.language_model.model.embed_tokens
    img = model.multi_modal_projector(feats)
    x = torch.cat([emb(prefix).expand(B, -1, -1), img, emb(ids)], 1)
    h = decode_packed(model, x, positions, attn)
    start = prefix.shape[0] + img.shape[1]  # position of ids[:, 0] in the sequence
    # the hidden state at position t predicts the token at t + 1; an answer token is never the
    # first of its exchange, so its predecessor is always in the same exchange
    h_pred = h[:, start - 1: start - 1 + ids.shape[1]]
    sel = mask.nonzero(as_tuple=True)
    targets = ids[sel]
    loss, correct = head.loss(model, h_pred[sel], targets)
    return loss, targets.numel(), correct


def validation_set(tok, size, n):
    """n images of the validation stream, each with one question per type, single-turn."""
    out = []
    for i in range(n):
        img, scene, qas = synth.sample(VALID_SEED, i)
        rng = np.random.default_rng([VALID_SEED, i])
        pixels = tl.preprocess(img, size)
        for t in synth.QUESTION_TYPES:
            qa = synth.pick_question(qas, rng, t)
            if qa is not None:
                out.append((t, (pixels, [answer_ids(tok, qa[1], qa[2])], np.zeros((1, 1), np.int64))))
    return out


@torch.no_grad()
def validate(model, valid, prefix, shared, batch=64):
    """Teacher-forced exact match of whole answers (every answer token and </s> the argmax), per
    question type: a cheap stand-in for greedy decoding, which it equals when every token is right."""
    hits = {t: [0, 0] for t in synth.QUESTION_TYPES}
    emb = model.language_model.model.embed_tokens
    for k in range(0, len(valid), batch):
        chunk = valid[k:k + batch]
        pixels, ids, mask, pos, attn, _ = collate([ex for _, ex in chunk], shared)
        img = model.image_features(pixels)
        x = torch.cat([emb(prefix).expand(len(chunk), -1, -1), img, emb(ids)], 1)
        h = decode_packed(model, x, pos, attn)
        start = prefix.shape[0] + img.shape[1]
        pred = model.language_model.lm_head(h[:, start - 1: start - 1 + ids.shape[1]]).argmax(-1)
        ok = ((pred == ids) | ~mask).all(1)
        for (t, _), good in zip(chunk, ok.tolist()):
            hits[t][0] += good
            hits[t][1] += 1
    return {t: h / n for t, (h, n) in hits.items() if n}


class Stream:
    """Batches of training examples by index, drawn by worker processes at most two batches
    ahead (they share the CPU with the training), or in this process with workers=0."""

    def __init__(self, workers, init):
        self.pool = multiprocessing.get_context("fork").Pool(workers, _init_worker, init) if workers else None
        if not self.pool:
            threads = torch.get_num_threads()
            _init_worker(*init)
            torch.set_num_threads(threads)
        self.pending = []

    def plan(self, batches):
        """batches: list of index ranges, in the order they will be asked for."""
        self.batches = list(batches)
        if self.pool:
            self.pending = [self.pool.map_async(make_example, b) for b in self.batches[:2]]

    def next(self, step):
        if not self.pool:
            return [make_example(i) for i in self.batches[step]]
        if step + 2 < len(self.batches):
            self.pending.append(self.pool.map_async(make_example, self.batches[step + 2]))
        return self.pending.pop(0).get()

    def close(self):
        if self.pool:
            self.pool.terminate()


def main(argv):
    tl.reexec_with_openblas()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the exported model")
    ap.add_argument("--vision-steps", type=int, default=1000, help="phase 1 steps (vision tower only)")
    ap.add_argument("--vision-batch", type=int, default=32)
    ap.add_argument("--vision-lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=5000, help="phase 2 steps (end to end)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--patch-weight", type=float, default=0.3, help="weight of the patch heads' loss in phase 2")
    ap.add_argument("--questions", type=int, default=4, help="questions drawn per image (repeats dropped)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images (0: in the trainer)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed")
    ap.add_argument("--image-size", type=int, default=84)
    ap.add_argument("--patch-size", type=int, default=28)
    ap.add_argument("--vision-hidden", type=int, default=128)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=4)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--valid-every", type=int, default=250)
    ap.add_argument("--valid-images", type=int, default=100)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = tl.Config(vision=dict(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                                num_hidden_layers=args.vision_layers, image_size=args.image_size,
                                patch_size=args.patch_size),
                    text=dict(hidden_size=args.text_hidden, intermediate_size=int(round(args.text_hidden * 8 / 3 / 8)) * 8,
                              num_hidden_layers=args.text_layers))
    model = tl.TinyLlava(cfg)
    heads = PatchHeads(cfg.vision["hidden_size"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params / 1e6:.2f} M; image tokens: {cfg.num_patches}; BLAS: "
          f"{os.environ.get('TINY_LLAVA_BLAS') or 'system default'}", flush=True)

    def param_groups(params):
        decay = [p for n, p in params if p.dim() >= 2 and "position_embedding" not in n]
        no_decay = [p for n, p in params if not (p.dim() >= 2 and "position_embedding" not in n)]
        return [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def schedule(step, steps, peak, warmup):  # linear warmup, then cosine to 5% of the peak
        if step < warmup:
            return peak * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    tok = tl.Tokenizer(os.path.join(TOKENIZER_DIR, "tokenizer.model"))
    prefix_ids = tok.encode("USER: <image>")[:-1]  # BOS "USER: " up to the <image> id
    assert prefix_ids == [1, 3148, 1001, 29901, 29871], prefix_ids
    prefix = torch.tensor(prefix_ids)
    shared = len(prefix_ids) + cfg.num_patches  # positions before the first question token
    valid = validation_set(tok, args.image_size, args.valid_images)
    head = AnswerHead(model, answer_vocabulary(tok))
    print(f"answer vocabulary: {len(head.cand)} tokens", flush=True)

    stream = Stream(args.workers, (args.image_size, cfg.vision["patch_size"], args.questions, TRAIN_SEED))
    n1 = args.vision_steps * args.vision_batch
    stream.plan([range(s * args.vision_batch, (s + 1) * args.vision_batch) for s in range(args.vision_steps)]
                + [range(n1 + s * args.batch, n1 + (s + 1) * args.batch) for s in range(args.steps)])
    t0, c0 = time.time(), time.process_time()
    log = {}

    # ---- phase 1: vision tower and patch heads
    vision = list(model.vision_tower.named_parameters()) + list(heads.named_parameters())
    opt = torch.optim.AdamW(param_groups(vision), lr=args.vision_lr, betas=(0.9, 0.98))
    model.train()
    run = np.zeros(1 + len(synth.PATCH_LABELS))
    for step in range(args.vision_steps):
        pixels, _, _, _, _, labels = collate(stream.next(step), shared)
        for g in opt.param_groups:
            g["lr"] = schedule(step, args.vision_steps, args.vision_lr, min(args.warmup, args.vision_steps // 5))
        loss, accs = heads.loss(model.vision_features(pixels), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in vision], 1.0)
        opt.step()
        run += [loss.item()] + accs
        if (step + 1) % args.log_every == 0 or step + 1 == args.vision_steps:
            r = run / args.log_every if (step + 1) % args.log_every == 0 else run / ((step + 1) % args.log_every)
            el = time.time() - t0
            print(f"vision {step + 1}/{args.vision_steps}  loss {r[0]:.4f}  patch acc "
                  + " ".join(f"{n} {a:.3f}" for n, a in zip(synth.PATCH_LABELS, r[1:]))
                  + f"  {el:.0f}s", flush=True)
            log["vision_patch_accuracy"] = dict(zip(synth.PATCH_LABELS, [round(float(a), 4) for a in r[1:]]))
            run[:] = 0
    vision_s = time.time() - t0

    # ---- phase 2: end to end
    everything = list(model.named_parameters()) + list(heads.named_parameters())
    opt = torch.optim.AdamW(param_groups(everything), lr=args.lr, betas=(0.9, 0.98))
    run_loss = run_tok = run_ok = 0.0
    acc = {}
    for step in range(args.steps):
        pixels, ids, mask, pos, attn, labels = collate(stream.next(args.vision_steps + step), shared)
        for g in opt.param_groups:
            g["lr"] = schedule(step, args.steps, args.lr, args.warmup)
        feats = model.vision_features(pixels)
        loss, n_tok, n_ok = answer_loss(model, head, feats, ids, mask, prefix, pos, attn)
        total = loss
        if args.patch_weight > 0:
            total = total + args.patch_weight * heads.loss(feats, labels)[0]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in everything], 1.0)
        opt.step()
        run_loss += loss.item() * n_tok
        run_tok += n_tok
        run_ok += n_ok
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.time() - t0
            print(f"step {step + 1}/{args.steps}  loss {run_loss / run_tok:.4f}  token acc {run_ok / run_tok:.4f}  "
                  f"lr {schedule(step, args.steps, args.lr, args.warmup):.2e}  {el:.0f}s", flush=True)
            run_loss = run_tok = run_ok = 0.0
        if (step + 1) % args.valid_every == 0 or step + 1 == args.steps:
            model.eval()
            acc = validate(model, valid, prefix, shared)
            model.train()
            print("  validation exact match: " + ", ".join(f"{t} {a:.3f}" for t, a in acc.items()), flush=True)
    train_s = time.time() - t0
    train_cpu = time.process_time() - c0
    stream.close()

    model.eval()
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.dtype]
    tl.export(model, args.out, TOKENIZER_DIR, dtype)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"command": "tools/train_tiny_llava.py " + " ".join(argv), "train_seed": TRAIN_SEED,
                   "init_seed": args.seed, "vision_steps": args.vision_steps, "vision_batch": args.vision_batch,
                   "steps": args.steps, "batch": args.batch, "questions_per_image": args.questions,
                   "images_seen": n1 + args.steps * args.batch, "vision_phase_seconds": round(vision_s),
                   "train_seconds": round(train_s), "train_cpu_seconds_main_process": round(train_cpu),
                   "threads": args.threads, "workers": args.workers, "parameters": n_params,
                   "validation_exact_match": acc, **log, "config": cfg.to_dict()}, f, indent=2)
        f.write("\n")
    print(f"trained in {train_s:.0f}s; exported to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
