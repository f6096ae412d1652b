"""`llava tokenize` and `llava detokenize`: the prompts and generations of the fixtures (ids made
by transformers, in ref/reference.json) both ways, whole and streamed; the output forms; a
folder that holds nothing but tokenizer.json; and the errors (exit codes and messages)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

LLAVA = os.environ.get("LLAVA_BIN", "build/llava")
DATA = os.environ.get("LLAVA_TEST_DATA", os.path.join(os.path.dirname(__file__), "data"))
FIXTURES = os.environ.get("LLAVA_FIXTURES", os.path.join(os.path.dirname(__file__), "fixtures"))
MODEL = os.path.join(DATA, "llava-1.5-7b-hf")

failures = []


def run(*args, stdin=None):
    r = subprocess.run([LLAVA, *args], input=stdin, capture_output=True)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def ids_of(out):
    return [int(x) for x in out.split()]


def fixtures():
    n = 0
    for case in sorted(os.listdir(FIXTURES)):
        ref_path = os.path.join(FIXTURES, case, "ref", "reference.json")
        if not os.path.exists(ref_path):
            continue
        with open(ref_path, encoding="utf-8") as f:
            ref = json.load(f)
        model = os.path.join(FIXTURES, case, "model")
        rc, out, err = run("tokenize", "-m", model, ref["prompt"])
        check(rc == 0 and ids_of(out) == ref["input_ids"], f"{case}: prompt ids {out.strip()} {err}")
        rc, out, err = run("tokenize", "-m", model, "--json", ref["prompt"])
        j = json.loads(out) if rc == 0 else {}
        check(j.get("pieces") == ref["input_tokens"], f"{case}: pieces {j.get('pieces')}")
        gen = " ".join(map(str, ref["generated_ids"]))
        for extra in ([], ["--stream"]):
            rc, out, err = run("detokenize", "-m", model, "--skip-special", *extra, gen)
            check(rc == 0 and out == ref["generated_text"] + "\n",
                  f"{case}: generated text {extra} {out!r} != {ref['generated_text']!r} {err}")
        n += 1
    check(n >= 3, f"only {n} fixtures")


def forms():
    rc, out, _ = run("tokenize", "-m", MODEL, "USER: <image>\nWhat")
    check(rc == 0 and ids_of(out) == [1, 3148, 1001, 29901, 29871, 32000, 29871, 13, 5618], out)
    rc, out, _ = run("tokenize", "-m", MODEL, "--no-bos", "hello world")
    check(rc == 0 and ids_of(out) == [22172, 3186], out)
    rc, out, _ = run("tokenize", "-m", MODEL, "--json", "--no-bos", "a\n")
    check(rc == 0 and json.loads(out) == {"ids": [263, 13], "pieces": ["\u2581a", "<0x0A>"]}, out)
    rc, out, _ = run("tokenize", "-m", MODEL, "--file", "-", stdin="héllo 😀".encode())
    check(rc == 0 and ids_of(out) == [1, 298, 3610, 417, 29871, 243, 162, 155, 131], out)
    rc, out, _ = run("tokenize", "-m", MODEL, "--no-bos", "--jsonl", "--file", "-",
                     stdin=b'"a b"\n"<s>"\n""\n')
    check(rc == 0 and out == "263 289\n1\n\n", repr(out))
    rc, out, _ = run("tokenize", "-m", MODEL, "")
    check(rc == 0 and ids_of(out) == [1], out)
    # Ids in any of the accepted spellings; special tokens kept or skipped.
    for spelling in (["1", "22172", "2"], ["1 22172 2"], ["[1, 22172, 2]"], ["1,22172,2"]):
        rc, out, _ = run("detokenize", "-m", MODEL, *spelling)
        check(rc == 0 and out == "<s> hello</s>\n", f"{spelling}: {out!r}")
    rc, out, _ = run("detokenize", "-m", MODEL, "--skip-special", "1 22172 2")
    check(rc == 0 and out == "hello\n", repr(out))
    # Streaming gives the whole decode, here with byte runs (emoji), a broken run and specials.
    ids = "1 22172 29871 243 162 155 131 32000 29871 13 243 162 3186 2"
    rc, whole, _ = run("detokenize", "-m", MODEL, ids)
    rc2, streamed, _ = run("detokenize", "-m", MODEL, "--stream", ids)
    check(rc == 0 and rc2 == 0 and whole == streamed and "\ufffd\ufffd" in whole, f"{whole!r} {streamed!r}")
    rc, out, _ = run("tokenize", "--help")
    check(rc == 0 and "usage: llava tokenize" in out, "tokenize --help")
    rc, out, _ = run("detokenize", "--help")
    check(rc == 0 and "usage: llava detokenize" in out, "detokenize --help")


def tokenizer_only_folder():
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(MODEL, "tokenizer.json"), tmp)
        # Without tokenizer_config.json the post_processor of tokenizer.json adds <s>.
        rc, out, err = run("tokenize", "-m", tmp, "hello")
        check(rc == 0 and ids_of(out) == [1, 22172], f"tokenizer.json only: {out} {err}")
        rc, out, err = run("tokenize", "--tokenizer", os.path.join(tmp, "tokenizer.json"), "hello")
        check(rc == 0 and ids_of(out) == [1, 22172], f"--tokenizer FILE: {out} {err}")
        shutil.copy(os.path.join(MODEL, "tokenizer_config.json"), tmp)
        rc, out, err = run("detokenize", "-m", tmp, "1 22172")
        check(rc == 0 and out == "<s> hello\n", f"detokenize: {out!r} {err}")
        with open(os.path.join(tmp, "bad.txt"), "wb") as f:
            f.write(b"ok \xff no")
        rc, out, err = run("tokenize", "-m", tmp, "--file", os.path.join(tmp, "bad.txt"))
        check(rc == 1 and "not valid UTF-8 at byte offset 3" in err, f"invalid UTF-8: {rc} {err}")
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            f.write('{"add_bos_token": tru')
        rc, out, err = run("tokenize", "-m", tmp, "x")
        check(rc == 1 and "tokenizer_config.json: invalid JSON" in err, f"bad config: {rc} {err}")


def errors():
    rc, _, err = run("tokenize", "hello")
    check(rc == 2 and "usage" in err, f"no model: {rc}")
    rc, _, err = run("tokenize", "-m", MODEL)
    check(rc == 2, f"no text: {rc}")
    rc, _, err = run("tokenize", "-m", "/nonexistent", "x")
    check(rc == 1 and "/nonexistent" in err, f"missing folder: {rc} {err}")
    rc, _, err = run("detokenize", "-m", MODEL, "1 99999")
    check(rc == 1 and "token id 99999 (at position 1)" in err, f"bad id: {rc} {err}")
    rc, _, err = run("detokenize", "-m", MODEL, "1 x")
    check(rc == 2 and "not a list of token ids" in err, f"bad list: {rc} {err}")


def main():
    fixtures()
    forms()
    tokenizer_only_folder()
    errors()
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
