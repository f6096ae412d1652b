#!/usr/bin/env python3
"""Latency of GET /health on `llava serve` while N streaming requests generate: the figure that
shows whether the event loop is ever blocked by the engine (it should not be: the model runs on
the engine's threads, the loop only moves events and bytes).

Starts the server on any model folder, starts --streams streaming chat requests long enough to
outlast the measurement, measures once while the first of them encodes its image and fills its
prompt, then again once it produces tokens: each time --requests sequential
GET /health over one kept-alive connection (or a new connection each with --fresh), paced every
--interval-ms so that they span the generation, and prints p50/p99/max in milliseconds, the
tokens streamed meanwhile, and whether generation went on until the end. The same measurement on
the idle server comes first, so that what a busy machine adds can be told apart.

  bench/server_health_latency.py -m MODEL_DIR [--streams 4] [--requests 1000] [--max-tokens 3000]
      [--threads N] [--image FILE] [--llava build/llava] [--fresh] [--interval-ms 2]
      [--engine-nice N] [--json]
"""
import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


class Stream:
    """One streaming chat request run by curl in its own process (a reader thread here would
    share the interpreter lock with the measuring thread and add its own delays)."""

    def __init__(self, port, body_file):
        self.out = tempfile.NamedTemporaryFile(prefix="llava-bench-stream-", delete=False)
        self.proc = subprocess.Popen(
            ["curl", "-sS", "-N", "-H", "Content-Type: application/json", "--data-binary", "@" + body_file,
             f"http://127.0.0.1:{port}/v1/chat/completions"], stdout=self.out, stderr=subprocess.DEVNULL)

    def data(self):
        with open(self.out.name, "rb") as f:
            return f.read()

    @property
    def chunks(self):
        return self.data().count(b'"content":')

    @property
    def done(self):
        return self.proc.poll() is not None

    @property
    def tail(self):
        return self.data()[-300:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.out.close()
        os.unlink(self.out.name)


def health_once(sock):
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < n:
        body += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"health: {head[:40]!r}")


def measure(port, a):
    """a.requests paced GET /health; returns (latencies in ms, wall seconds)."""
    lat = []
    sock = None if a.fresh else socket.create_connection(("127.0.0.1", port))
    t_start = time.perf_counter()
    for i in range(a.requests):
        if a.interval_ms > 0:  # paced from the start, not from the last answer
            delay = t_start + i * a.interval_ms / 1000 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        t = time.perf_counter()
        if a.fresh:
            s = socket.create_connection(("127.0.0.1", port))
            health_once(s)
            s.close()
        else:
            health_once(sock)
        lat.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - t_start
    if sock:
        sock.close()
    return lat, wall


def summary(lat):
    return {"p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
            "max_ms": round(max(lat), 3), "mean_ms": round(sum(lat) / len(lat), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True, help="a llava-hf checkpoint folder (any size)")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=3000,
                    help="per stream; enough to outlast the measurement, within the context with the image")
    ap.add_argument("--threads", type=int, default=0, help="engine compute threads (0: all cores)")
    ap.add_argument("--image", default=os.path.join(ROOT, "tests", "fixtures", "tiny-f32", "image.png"),
                    help="image sent with each stream ('' for text only)")
    ap.add_argument("--llava", default=os.environ.get("LLAVA_BIN", os.path.join(ROOT, "build", "llava")))
    ap.add_argument("--fresh", action="store_true", help="a new connection per health request")
    ap.add_argument("--interval-ms", type=float, default=2.0,
                    help="pause between health requests, so that they span the generation "
                         "(0: back to back)")
    ap.add_argument("--engine-nice", type=int, default=5, help="llava serve --engine-nice (0: off)")
    ap.add_argument("--settle-s", type=float, default=2.0,
                    help="seconds after starting the streams before the first measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    cmd = [a.llava, "serve", "-m", a.model, "--port", "0", "--quiet", "--max-queue", str(max(4, a.streams)),
           "--engine-nice", str(a.engine_nice)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    streams, body_file = [], None
    try:
        port = int(re.search(r":(\d+)$", srv.stdout.readline().strip()).group(1))
        t0 = time.time()
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port))
                health_once(s)
                s.close()
                break
            except (RuntimeError, OSError):
                if time.time() - t0 > 600:
                    raise SystemExit("model not ready after 600 s")
                time.sleep(0.1)
        load_s = time.time() - t0
        # the same measurement on the idle server first: what the machine itself adds
        idle, _ = measure(port, a)

        content = [{"type": "text", "text": "Describe the picture in great detail."}]
        if a.image:
            b64 = base64.b64encode(open(a.image, "rb").read()).decode()
            mime = "image/jpeg" if a.image.lower().endswith((".jpg", ".jpeg")) else "image/png"
            content.insert(0, {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}})
        body = {"model": "m", "stream": True, "temperature": 0, "max_tokens": a.max_tokens,
                "messages": [{"role": "user", "content": content}]}
        body_file = tempfile.NamedTemporaryFile("w", prefix="llava-bench-body-", suffix=".json", delete=False)
        json.dump(body, body_file)
        body_file.close()
        streams += [Stream(port, body_file.name) for _ in range(a.streams)]
        t0 = time.time()
        # The engine runs one request at a time: the first stream encodes its image and fills
        # its prompt (the longest stretch of work without a token on a large model), the others
        # wait in the queue, their connections open. Measure once during that stretch and once
        # while tokens stream.
        time.sleep(a.settle_s)
        prefill, prefill_wall = measure(port, a)
        prefill_tokens = sum(st.chunks for st in streams)
        # whichever request reached the server first runs first
        while max(st.chunks for st in streams) < 2:
            if any(st.done for st in streams) or time.time() - t0 > 1800:
                bad = next((st for st in streams if st.done), streams[0])
                raise SystemExit(f"stream did not start: {bad.tail!r}")
            time.sleep(0.01)
        ttft = time.time() - t0

        chunks0 = sum(st.chunks for st in streams)
        lat, wall = measure(port, a)
        tokens = sum(st.chunks for st in streams) - chunks0
        # the engine runs the streams one after another: generation went on the whole time if
        # one is still running at the end, and none failed
        active = not all(st.done for st in streams) and tokens > 0
        failed = [st for st in streams if b'{"error":' in st.tail]
        for i, st in enumerate(failed):
            print(f"  stream {i}: {st.chunks} chunks, {st.tail[-200:]!r}", file=sys.stderr)
        active = active and not failed
        in_flight = sum(not st.done for st in streams)
        res = {"model": a.model, "streams": a.streams, "requests": a.requests, "fresh_connections": a.fresh,
               "interval_ms": a.interval_ms, "engine_nice": a.engine_nice, "wall_s": round(wall, 2),
               "load_s": round(load_s, 2), "idle": summary(idle),
               "before_first_token": dict(summary(prefill), wall_s=round(prefill_wall, 2),
                                          tokens_before_end=prefill_tokens),
               "first_token_s": round(ttft, 1), "generating": summary(lat),
               "streams_in_flight_at_end": in_flight,
               "tokens_during": tokens, "tokens_per_s": round(tokens / wall, 1),
               "generating_throughout": active}
        if a.json:
            print(json.dumps(res))
        else:
            print(f"model {a.model}: {a.streams} streams, {a.requests} GET /health "
                  f"({'new' if a.fresh else 'one kept-alive'} connection{'s' if a.fresh else ''})")
            for k in ("idle", "before_first_token", "generating"):
                r = res[k]
                print(f"  {k:18s}  p50 {r['p50_ms']:.3f} ms   p99 {r['p99_ms']:.3f} ms   max {r['max_ms']:.3f} ms")
            print(f"  before the first token: {prefill_tokens} tokens by the end of that measurement "
                  f"(first token {ttft:.1f} s after the streams started)")
            print(f"  {tokens} tokens streamed meanwhile ({res['tokens_per_s']} tokens/s); "
                  f"generating throughout: {'yes' if active else 'NO (raise --max-tokens)'}")
        return 0 if active else 1
    finally:
        for st in streams:
            st.stop()
        if body_file:
            os.unlink(body_file.name)
        srv.terminate()
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
