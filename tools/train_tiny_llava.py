#!/usr/bin/python3
"""Train the small LLaVA shipped in models/ from scratch on synthetic scenes (tools/synth_dataset.py)
and export it in the llava-hf layout.

Every image is drawn fresh from a seeded stream (no image is seen twice), goes through the same
CLIPImageProcessor pipeline the engine implements, and is asked several questions in one
llava-1.5 conversation:

  USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>...

The first turn is exactly the single-turn prompt the engine builds; the later turns reuse the
image's positions in the sequence, which costs far less than one sequence per question. The loss
covers the answer tokens and their </s> only.

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
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth_dataset as synth  # noqa: E402
import tiny_llava as tl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(ROOT, "tests", "data", "llava-1.5-7b-hf")
TRAIN_SEED = 1  # the scene stream of training; evaluation and tests use other seeds

_worker = {}


def _init_worker(image_size, turns, seed):
    torch.set_num_threads(1)
    _worker.update(tok=tl.Tokenizer(os.path.join(TOKENIZER_DIR, "tokenizer.model")), size=image_size,
                   turns=turns, seed=seed)


def conversation_ids(tok, qas):
    """Token ids after the <image> id for a multi-turn conversation, and the loss mask (True where
    the id is an answer token or its </s>, i.e. where the model must predict it)."""
    ids, target = [], []
    for turn, (_, q, a) in enumerate(qas):
        text = f"\n{q} ASSISTANT:" if turn == 0 else f"USER: {q} ASSISTANT:"
        p = tok.encode(text, bos=False)
        ans = tok.encode(a, bos=False) + [tl.EOS_ID]
        ids += p + ans
        target += [False] * len(p) + [True] * len(ans)
    return ids, target


def make_example(index):
    """Image `index` of the training stream -> (pixels [3,S,S] float32, ids after <image>, mask)."""
    tok, seed = _worker["tok"], _worker["seed"]
    img, scene, qas = synth.sample(seed, index)
    rng = np.random.default_rng([seed, index, 1])
    chosen = []
    for _ in range(int(rng.integers(1, _worker["turns"] + 1))):
        qa = synth.pick_question(qas, rng)
        if qa not in chosen:
            chosen.append(qa)
    ids, target = conversation_ids(tok, chosen)
    return tl.preprocess(img, _worker["size"]), ids, target


def collate(examples, prefix_ids):
    """Right-padded batch: with a causal mask, padding after a sequence never reaches it."""
    L = max(len(ids) for _, ids, _ in examples)
    pixels = torch.from_numpy(np.stack([p for p, _, _ in examples]))
    ids = torch.full((len(examples), L), tl.PAD_TOKEN_ID, dtype=torch.long)
    mask = torch.zeros((len(examples), L), dtype=torch.bool)
    for b, (_, seq, tgt) in enumerate(examples):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(tgt)] = torch.tensor(tgt)
    return pixels, ids, mask


def batch_loss(model, pixels, ids, mask, prefix):
    """Mean cross-entropy over the answer tokens; returns (loss, n tokens, n correct argmax)."""
    B = pixels.shape[0]
    emb = model.language_model.model.embed_tokens
    feats = model.image_features(pixels)  # [B, N, D]
    x = torch.cat([emb(prefix).expand(B, -1, -1), feats, emb(ids)], 1)
    h = model.decode(x, torch.arange(x.shape[1]))
    start = prefix.shape[0] + feats.shape[1]  # position of ids[:, 0] in the sequence
    # the hidden state at position t predicts the token at t + 1
    h_pred = h[:, start - 1: start - 1 + ids.shape[1]]
    sel = mask.nonzero(as_tuple=True)
    logits = model.language_model.lm_head(h_pred[sel])
    targets = ids[sel]
    loss = F.cross_entropy(logits, targets)
    correct = (logits.argmax(-1) == targets).sum().item()
    return loss, targets.numel(), correct


def main(argv):
    tl.reexec_with_openblas()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the exported model")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--turns", type=int, default=5, help="most questions per image")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="processes drawing images (0: in the trainer)")
    ap.add_argument("--seed", type=int, default=0, help="initialisation seed")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--vision-hidden", type=int, default=128)
    ap.add_argument("--vision-layers", type=int, default=3)
    ap.add_argument("--text-hidden", type=int, default=128)
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--log-every", type=int, default=50)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = tl.Config(vision=dict(hidden_size=args.vision_hidden, intermediate_size=4 * args.vision_hidden,
                                num_hidden_layers=args.vision_layers, image_size=args.image_size),
                    text=dict(hidden_size=args.text_hidden, intermediate_size=int(round(args.text_hidden * 8 / 3 / 8)) * 8,
                              num_hidden_layers=args.text_layers))
    model = tl.TinyLlava(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params / 1e6:.2f} M; image tokens: {cfg.num_patches}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "position_embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "position_embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step):  # linear warmup, then cosine to 5% of the peak
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    tok = tl.Tokenizer(os.path.join(TOKENIZER_DIR, "tokenizer.model"))
    prefix_ids = tok.encode("USER: <image>")[:-1]  # BOS "USER: " up to the <image> id
    assert prefix_ids == [1, 3148, 1001, 29901, 29871], prefix_ids
    prefix = torch.tensor(prefix_ids)

    init = (args.image_size, args.turns, TRAIN_SEED)
    batch_indices = [range(s * args.batch, (s + 1) * args.batch) for s in range(args.steps)]
    if args.workers > 0:
        # at most two batches drawn ahead: the workers share the CPU with the training
        pool = multiprocessing.get_context("fork").Pool(args.workers, _init_worker, init)
        pending = [pool.map_async(make_example, batch_indices[s]) for s in range(min(2, args.steps))]

        def next_batch(step):
            if step + 2 < args.steps:
                pending.append(pool.map_async(make_example, batch_indices[step + 2]))
            return pending.pop(0).get()
    else:
        _init_worker(*init)
        torch.set_num_threads(args.threads)

        def next_batch(step):
            return [make_example(i) for i in batch_indices[step]]

    t0 = time.time()
    run_loss = run_tok = run_ok = 0.0
    model.train()
    for step in range(args.steps):
        examples = next_batch(step)
        pixels, ids, mask = collate(examples, prefix_ids)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss, n_tok, n_ok = batch_loss(model, pixels, ids, mask, prefix)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item() * n_tok
        run_tok += n_tok
        run_ok += n_ok
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            el = time.time() - t0
            print(f"step {step + 1}/{args.steps}  loss {run_loss / run_tok:.4f}  token acc {run_ok / run_tok:.4f}  "
                  f"lr {lr_at(step):.2e}  {el:.0f}s ({el / (step + 1):.2f} s/step)", flush=True)
            run_loss = run_tok = run_ok = 0.0
    train_s = time.time() - t0
    if args.workers > 0:
        pool.terminate()

    model.eval()
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.dtype]
    tl.export(model, args.out, TOKENIZER_DIR, dtype)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"command": "tools/train_tiny_llava.py " + " ".join(argv), "train_seed": TRAIN_SEED,
                   "init_seed": args.seed, "steps": args.steps, "batch": args.batch, "turns": args.turns,
                   "images_seen": args.steps * args.batch, "train_seconds": round(train_s),
                   "threads": args.threads, "parameters": n_params, "config": cfg.to_dict()}, f, indent=2)
        f.write("\n")
    print(f"trained in {train_s:.0f}s; exported to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
