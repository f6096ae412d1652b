#!/usr/bin/python3
"""Accuracy of the small shipped LLaVA on freshly drawn scenes, for the PyTorch model and, with
--llava, for the C engine, and how often the two give the same greedy answer.

Each held-out image is written to disk (a quarter as JPEG, the rest as PNG) and both sides read
that file, so they start from the same bytes. Per image, one question of each type the scene
supports is asked (shape, colour, count, position, describe) in the single-turn llava-1.5 prompt.
The PyTorch side runs the checkpoint exactly as stored (F16 weights widened to float32), the
engine runs `llava run -m MODEL -i IMAGE -p QUESTION --json`.

  /usr/bin/python3 tools/eval_tiny_llava.py --model models/tiny-llava-shapes --count 500 \\
      --llava build/llava --report /tmp/report.json --check

With --check the exit status is 1 unless shape, colour and count are each >= --min-accuracy
(95%) correct on both sides, the engine agrees with PyTorch on >= --min-agreement (99%) of all
questions, and (with --server) every answer over HTTP is the CLI's.
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import synth_dataset as synth  # noqa: E402
import tiny_llava as tl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_SEED = 9001  # never used by training (tools/train_tiny_llava.py TRAIN_SEED)
GATED = ("shape", "colour", "count")  # the types the accuracy threshold applies to


def held_out(seed, count, folder, jpeg_every=4):
    """[(image path, [(type, question, answer), ...])]: one question per type per image."""
    items = []
    for i in range(count):
        img, scene, qas = synth.sample(seed, i)
        rng = np.random.default_rng([seed, i, 2])
        chosen = [qa for t in synth.QUESTION_TYPES if (qa := synth.pick_question(qas, rng, t)) is not None]
        ext = "jpg" if jpeg_every and i % jpeg_every == jpeg_every - 1 else "png"
        path = os.path.join(folder, f"{i:05d}.{ext}")
        if ext == "jpg":
            img.save(path, quality=90)
        else:
            img.save(path)
        items.append((path, chosen))
    return items


def run_torch(model, tok, items):
    size = model.cfg.vision["image_size"]
    out = []
    for path, qas in items:
        pixels = torch.from_numpy(tl.preprocess(tl.load_image(path), size))
        with torch.no_grad():
            feats = model.image_features(pixels[None])[0]
        for _, q, _ in qas:
            ids = model.generate_from_features(feats, tok.encode(tl.prompt_text(q)))
            out.append(tok.decode(ids).strip())
    return out


def run_engine(binary, model_dir, items, jobs, extra):
    calls = [(path, q) for path, qas in items for _, q, _ in qas]

    def one(call):
        path, q = call
        cmd = [binary, "run", "-m", model_dir, "-i", path, "-p", q, "--json"] + extra
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            return None, f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
        try:
            return json.loads(p.stdout)["text"].strip(), None
        except (ValueError, KeyError) as e:
            return None, f"bad --json output ({e}): {p.stdout[-300:]}"

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, calls))


def run_server(binary, model_dir, items, jobs, extra):
    """Every question asked of `llava serve` through the official OpenAI client (npm `openai`,
    tests/server_clients/ask.mjs): [(answer or None, error or None)] in order."""
    clients = os.path.join(ROOT, "tests", "server_clients")
    sys.path.insert(0, clients)
    from serverlib import Server, install_clients
    install_clients()
    srv = Server(model_dir, *extra, llava=binary)
    try:
        calls = [{"path": os.path.abspath(path), "question": q,
                  "mime": "image/jpeg" if path.endswith(".jpg") else "image/png"}
                 for path, qas in items for _, q, _ in qas]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump({"base": f"http://{srv.host}:{srv.port}", "jobs": jobs, "items": calls}, f)
            f.flush()
            p = subprocess.run(["node", os.path.join(clients, "ask.mjs"), f.name], cwd=clients,
                               capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"ask.mjs failed: {p.stderr[-1000:]}")
        return [(a["text"].strip(), None) if "text" in a else (None, a["error"]) for a in json.loads(p.stdout)]
    finally:
        srv.stop()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny-llava-shapes"))
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--count", type=int, default=500, help="number of held-out images")
    ap.add_argument("--llava", help="the llava binary; without it only PyTorch is evaluated")
    ap.add_argument("--llava-arg", action="append", default=[], help="extra argument for `llava run`")
    ap.add_argument("--server", action="store_true",
                    help="also ask every question through `llava serve` with the official OpenAI client "
                         "(needs --llava, node and npm)")
    ap.add_argument("--jobs", type=int, default=1, help="engine processes (or HTTP requests) at a time")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    ap.add_argument("--engine-threads", type=int, default=1, help="compute threads of each llava process")
    ap.add_argument("--images", help="folder for the held-out images (default: a temporary one)")
    ap.add_argument("--report", help="write the per-question results and the summary here (JSON)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the thresholds below hold")
    ap.add_argument("--min-accuracy", type=float, default=0.95,
                    help="least fraction right on each of shape, colour and count, both sides")
    ap.add_argument("--min-agreement", type=float, default=0.99,
                    help="least fraction of all questions where the engine's answer is PyTorch's")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    tmp = None
    folder = args.images
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="tiny-llava-eval-")
        folder = tmp.name
    os.makedirs(folder, exist_ok=True)
    t0 = time.time()
    items = held_out(args.seed, args.count, folder)
    model = tl.load(args.model)
    tok = tl.Tokenizer(os.path.join(ROOT, "tests", "data", "llava-1.5-7b-hf", "tokenizer.model"))
    torch_answers = run_torch(model, tok, items)
    t_torch = time.time() - t0
    engine = (run_engine(args.llava, args.model, items, args.jobs, ["-t", str(args.engine_threads)] + args.llava_arg)
              if args.llava else None)
    t_engine = time.time() - t0 - t_torch
    server = None
    if args.server and args.llava:
        server = run_server(args.llava, args.model, items, args.jobs, ["--threads", str(args.engine_threads)])

    rows = []
    k = 0
    for path, qas in items:
        for qtype, q, a in qas:
            row = {"image": os.path.basename(path), "type": qtype, "question": q, "answer": a,
                   "torch": torch_answers[k]}
            if engine is not None:
                row["engine"], err = engine[k]
                if err:
                    row["engine_error"] = err
            if server is not None:
                row["server"], err = server[k]
                if err:
                    row["server_error"] = err
            rows.append(row)
            k += 1

    summary = {"model": os.path.relpath(args.model, ROOT), "seed": args.seed, "images": args.count,
               "questions": len(rows), "types": {}}
    print(f"{args.count} images, {len(rows)} questions (seed {args.seed}); torch {t_torch:.0f}s"
          + (f", engine {t_engine:.0f}s" if engine is not None else ""))
    print(f"{'type':<10}{'n':>6}{'torch':>9}" + (f"{'engine':>9}{'agree':>9}" if engine is not None else "")
          + (f"{'http':>9}" if server is not None else ""))
    ok = True
    for qtype in synth.QUESTION_TYPES + ["all"]:
        sel = [r for r in rows if qtype in ("all", r["type"])]
        if not sel:
            continue
        s = {"n": len(sel), "torch_correct": sum(r["torch"] == r["answer"] for r in sel) / len(sel)}
        line = f"{qtype:<10}{len(sel):>6}{100 * s['torch_correct']:>8.1f}%"
        if engine is not None:
            s["engine_correct"] = sum(r["engine"] == r["answer"] for r in sel) / len(sel)
            s["agreement"] = sum(r["engine"] == r["torch"] for r in sel) / len(sel)
            line += f"{100 * s['engine_correct']:>8.1f}%{100 * s['agreement']:>8.1f}%"
        if server is not None:
            s["server_same_as_engine"] = sum(r["server"] == r["engine"] for r in sel) / len(sel)
            line += f"{100 * s['server_same_as_engine']:>8.1f}%"
        print(line)
        summary["types"][qtype] = s
        if qtype in GATED:
            ok &= s["torch_correct"] >= args.min_accuracy and (engine is None or s["engine_correct"] >= args.min_accuracy)
    if engine is not None:
        ok &= summary["types"]["all"]["agreement"] >= args.min_agreement
        errors = [r for r in rows if "engine_error" in r]
        if errors:
            print(f"{len(errors)} engine errors, first: {errors[0]['engine_error']}")
        if server is not None:
            # the server runs the same engine: its answers must be the CLI's, all of them
            ok &= summary["types"]["all"]["server_same_as_engine"] == 1.0
            for r in [r for r in rows if r["server"] != r["engine"]][:5]:
                print(f"  http differs: {r['image']} {r['question']!r}: cli {r['engine']!r}, http {r['server']!r}"
                      + (f" ({r['server_error']})" if "server_error" in r else ""))
        for r in [r for r in rows if r["engine"] != r["torch"]][:5]:
            print(f"  disagree: {r['image']} {r['question']!r}: torch {r['torch']!r}, engine {r['engine']!r}")
    for r in [r for r in rows if r["torch"] != r["answer"] and r["type"] in GATED][:5]:
        print(f"  wrong: {r['image']} {r['question']!r}: {r['torch']!r}, expected {r['answer']!r}")
    summary["passed"] = bool(ok)
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
            f.write("\n")
    print("PASSED" if ok else "FAILED", f"(>= {100 * args.min_accuracy:g}% on shape/colour/count"
          + (f", >= {100 * args.min_agreement:g}% agreement)" if engine else ")"))
    return 0 if (ok or not args.check) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
