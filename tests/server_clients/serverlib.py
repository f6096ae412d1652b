"""Shared helpers of the `llava serve` tests (tests/test_server_*.py): start a server on a free
port with a fixture model, talk HTTP to it (raw sockets, http.client, curl), read /metrics and
the process's memory, and stop it with a signal. Standard library only."""
import base64
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

LLAVA_BIN = os.environ.get("LLAVA_BIN", "llava")
FIXTURES = os.environ.get("LLAVA_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "fixtures"))
HERE = os.path.dirname(os.path.abspath(__file__))

def install_clients():
    """npm ci of the official clients in this folder (offline from the cache first), once:
    node_modules is kept between runs. Several tests may call it at once (ctest -j), so it holds
    a lock on the folder while it checks and installs."""
    import fcntl
    import shutil
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("node and npm are needed for the official clients (scripts/setup with LLAVA_TEST_DEPS=1)")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "node_modules.lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        stamp = os.path.join(here, "node_modules", ".package-lock.json")
        lock = os.path.join(here, "package-lock.json")
        if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(lock):
            return
        for args in (["npm", "ci", "--offline", "--no-audit", "--no-fund"], ["npm", "ci", "--no-audit", "--no-fund"]):
            p = subprocess.run(args, cwd=here, capture_output=True, text=True, timeout=300)
            if p.returncode == 0:
                return
        raise SystemExit(f"npm ci failed:\n{p.stdout}\n{p.stderr}")


# Each fixture case: its model, image, the text of its reference prompt, and the greedy text
# Hugging Face transformers produced for it (ref/reference.json).
def fixture(name):
    root = os.path.join(FIXTURES, name)
    ref = json.load(open(os.path.join(root, "ref", "reference.json")))
    image = os.path.join(root, "input.jpg")
    if not os.path.exists(image):
        image = os.path.join(root, "image.png")
    spec = json.load(open(os.path.join(root, "spec.json")))
    prompt = spec["prompt"]
    # "USER: <image>\n{question} ASSISTANT:" -> the question a client would send
    m = re.fullmatch(r"USER: <image>\n(.*) ASSISTANT:", prompt, re.S)
    return {
        "name": name,
        "model": os.path.join(root, "model"),
        "image": image,
        "image_b64": base64.b64encode(open(image, "rb").read()).decode(),
        "mime": "image/jpeg" if image.endswith(".jpg") else "image/png",
        "raw_prompt": prompt,
        "question": m.group(1) if m else None,
        "text": ref["generated_text"],
        "ids": ref["generated_ids"],
    }


def sanitized():
    """True when LLAVA_BIN is a sanitizer build (much slower; memory held in quarantine)."""
    p = subprocess.run(["ldd", LLAVA_BIN], capture_output=True, text=True)
    return "libasan" in p.stdout or "libtsan" in p.stdout


def slow_model():
    """A random-weight checkpoint slow enough to catch a request inside one phase on one thread
    (vision 256 wide x 8 layers at 336 px: ~0.3 s per image; text 256 x 4 layers: ~10 ms per
    token), written by tools/make_checkpoint.py (~50 MB) once into the build folder. Sanitizer
    builds run unoptimized code, so they get one a quarter of the work (128 wide, half the
    layers) that is about as slow there."""
    small = sanitized()
    name = "server-test-slow-model" + ("-small" if small else "")
    out = os.path.join(os.environ.get("LLAVA_BUILD_DIR", tempfile.gettempdir()), name)
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    source = os.environ.get("LLAVA_SOURCE_DIR", os.path.join(HERE, "..", ".."))
    w, ffn_v, ffn_t, lv, lt = (128, 512, 344, 4, 2) if small else (256, 1024, 688, 8, 4)
    sets = [f"vision_config.hidden_size={w}", f"vision_config.num_hidden_layers={lv}",
            "vision_config.num_attention_heads=4", f"vision_config.intermediate_size={ffn_v}",
            f"text_config.hidden_size={w}", f"text_config.num_hidden_layers={lt}",
            "text_config.num_attention_heads=4", "text_config.num_key_value_heads=4",
            f"text_config.intermediate_size={ffn_t}", "text_config.max_position_embeddings=4096"]
    tmp = f"{out}.tmp{os.getpid()}"
    cmd = ["/usr/bin/python3", os.path.join(source, "tools", "make_checkpoint.py"),
           "--config", os.path.join(source, "tests", "data", "llava-1.5-7b-hf", "config.json"),
           "--tokenizer", os.path.join(source, "tests", "data", "llava-1.5-7b-hf"),
           "--dtype", "f16", "--out", tmp, "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, timeout=300)
    try:
        os.rename(tmp, out)
    except OSError:  # another test wrote it meanwhile
        subprocess.run(["rm", "-rf", tmp], check=True)
    return out


def llava_run(fx, raw=False, max_tokens=16):
    """The greedy answer of `llava run` (the command line, no server) on a fixture's image and
    question (or, raw, its whole prompt)."""
    cmd = [LLAVA_BIN, "run", "-m", fx["model"], "-i", fx["image"], "-n", str(max_tokens), "--json",
           "-t", "1", "-p", fx["raw_prompt"] if raw else fx["question"]] + (["--raw"] if raw else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"llava run failed: {p.stderr}")
    return json.loads(p.stdout)["text"]


class Server:
    """One `llava serve` process on 127.0.0.1 and a free port."""

    def __init__(self, model, *args, env=None, ready=True, timeout=60, llava=None, preexec_fn=None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llava-serve-", suffix=".log", delete=False)
        # one compute thread unless a test asks otherwise: the models are small and the
        # machines running the tests are often shared
        threads = [] if "--threads" in args else ["--threads", "1"]
        cmd = [llava or LLAVA_BIN, "serve", "-m", model, "--port", "0", "--model-name", "test-model"] + threads + list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=dict(os.environ, **(env or {})), preexec_fn=preexec_fn)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([^:]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.stderr()}")
        self.host, self.port = m.group(1), int(m.group(2))
        if ready:
            self.wait_ready(timeout)

    def stderr(self):
        with open(self.log.name) as f:
            return f.read()

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            st, _, body = self.request("GET", "/health")
            if st == 200:
                return
            if st == 500:
                raise RuntimeError(f"model failed to load: {body!r}")
            time.sleep(0.05)
        raise RuntimeError("server not ready in time")

    # ---- HTTP ----
    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers dict with lower-case names, body bytes) over a fresh connection."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post_json(self, path, obj, headers=None, timeout=60):
        st, h, data = self.request("POST", path, json.dumps(obj),
                                   dict({"Content-Type": "application/json"}, **(headers or {})),
                                   timeout=timeout)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return st, h, data, parsed

    def raw(self, data, timeout=10, read=True):
        """Sends raw bytes; returns what came back until the server closed or timed out."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            s.sendall(data)
            if not read:
                return b""
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and response_complete(out):
                    break
            return out
        finally:
            s.close()

    def curl(self, *args, data=None):
        """Runs curl against the server; returns (http status, body bytes)."""
        cmd = ["curl", "-sS", "-N", "-o", "-", "-w", "\n%{http_code}"] + list(args)
        cmd = [a.replace("{base}", f"http://{self.host}:{self.port}") for a in cmd]
        p = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
        out = p.stdout
        i = out.rfind(b"\n")
        return int(out[i + 1:] or 0), out[:i]

    def metrics(self):
        st, _, body = self.request("GET", "/metrics")
        assert st == 200, st
        return parse_metrics(body.decode())

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    # ---- stopping ----
    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        """SIGTERM, then the exit code (after a kill if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop after SIGTERM")
        finally:
            self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            code = self.stop()
            if exc[0] is None:
                assert code == 0, f"server exited with {code}\n{self.stderr()}"
        os.unlink(self.log.name)


def response_complete(data):
    """True once a whole HTTP response (Content-Length or chunked) is in data."""
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if m:
        return len(body) >= int(m.group(1))
    if re.search(rb"(?i)transfer-encoding:\s*chunked", head):
        return body.endswith(b"0\r\n\r\n")
    return False


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def openai_chat_body(fx, stream=False, max_tokens=16, **extra):
    body = {
        "model": "test-model",
        "temperature": 0,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:{fx['mime']};base64,{fx['image_b64']}"}},
            {"type": "text", "text": fx["question"]}]}],
    }
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def sse_events(data):
    """The JSON payloads of an SSE body, and whether it ended with [DONE]."""
    events, done = [], False
    for block in data.decode().split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[6:]
        if payload == "[DONE]":
            done = True
            continue
        events.append(json.loads(payload))
    return events, done


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run_tests(tests):
    """Runs test functions in order; prints one line each; exits non-zero on the first failure."""
    for t in tests:
        t0 = time.time()
        try:
            t()
        except Exception:
            print(f"FAIL {t.__name__}", flush=True)
            raise
        print(f"ok   {t.__name__} ({time.time() - t0:.2f} s)", flush=True)
    sys.exit(0)
