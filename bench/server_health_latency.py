#!/usr/bin/env python3
"""Latency of GET /health on `llava serve` while N streaming requests generate: the figure that
shows whether the event loop is ever blocked by the engine (it should not be: the model runs on
the engine's threads, the loop only moves events and bytes).

Starts the server on any model folder, starts --streams streaming chat requests long enough to
outlast the measurement, waits until each has produced tokens, then sends --requests sequential
GET /health over one kept-alive connection (or a new connection each with --fresh) and prints
p50/p99/max in milliseconds, and whether every stream was still generating at the end.

  bench/server_health_latency.py -m MODEL_DIR [--streams 4] [--requests 1000] [--max-tokens 4000]
      [--threads N] [--image FILE] [--llava build/llava] [--fresh] [--json]
"""
import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


class Stream(threading.Thread):
    """One streaming chat request; counts content chunks until it ends or is stopped."""

    def __init__(self, port, body):
        super().__init__(daemon=True)
        self.port, self.body = port, json.dumps(body).encode()
        self.chunks, self.done, self.error, self.tail = 0, False, None, b""
        self.sock = None

    def run(self):
        try:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=600)
            self.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(self.body), self.body))
            buf = b""
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                self.chunks += data.count(b'"content":')
                if b"data: [DONE]" in buf[-64:] or b'{"error":' in data:
                    self.tail = buf[-300:]
                    break
                buf = buf[-400:]
        except OSError as e:
            if not self.done:
                self.error = str(e)
        self.done = True

    def stop(self):
        self.done = True
        if self.sock:
            self.sock.close()


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True, help="a llava-hf checkpoint folder (any size)")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=4000, help="per stream; enough to outlast the measurement")
    ap.add_argument("--threads", type=int, default=0, help="engine compute threads (0: all cores)")
    ap.add_argument("--image", default=os.path.join(ROOT, "tests", "fixtures", "tiny-f32", "image.png"),
                    help="image sent with each stream ('' for text only)")
    ap.add_argument("--llava", default=os.environ.get("LLAVA_BIN", os.path.join(ROOT, "build", "llava")))
    ap.add_argument("--fresh", action="store_true", help="a new connection per health request")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    cmd = [a.llava, "serve", "-m", a.model, "--port", "0", "--quiet", "--max-queue", str(max(4, a.streams))]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
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

        content = [{"type": "text", "text": "Describe the picture in great detail."}]
        if a.image:
            b64 = base64.b64encode(open(a.image, "rb").read()).decode()
            mime = "image/jpeg" if a.image.lower().endswith((".jpg", ".jpeg")) else "image/png"
            content.insert(0, {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}})
        body = {"model": "m", "stream": True, "temperature": 0, "max_tokens": a.max_tokens,
                "messages": [{"role": "user", "content": content}]}
        streams = [Stream(port, body) for _ in range(a.streams)]
        for st in streams:
            st.start()
        t0 = time.time()
        # the engine runs one request at a time: wait for the first stream's tokens, the others
        # are queued behind it (their connections and the loop are just as busy)
        while streams and streams[0].chunks < 2:
            if streams[0].done or time.time() - t0 > 600:
                raise SystemExit(f"stream did not start: {streams[0].error}")
            time.sleep(0.01)

        chunks0 = sum(st.chunks for st in streams)
        lat = []
        sock = None if a.fresh else socket.create_connection(("127.0.0.1", port))
        t_start = time.perf_counter()
        for _ in range(a.requests):
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
        tokens = sum(st.chunks for st in streams) - chunks0
        active = all(not st.done for st in streams)
        if not active:
            for i, st in enumerate(streams):
                print(f"  stream {i}: {st.chunks} chunks, ended {st.done}, {st.error or st.tail!r}",
                      file=sys.stderr)
        for st in streams:
            st.stop()
        res = {"model": a.model, "streams": a.streams, "requests": a.requests, "fresh_connections": a.fresh,
               "load_s": round(load_s, 2), "p50_ms": round(percentile(lat, 50), 3),
               "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3),
               "mean_ms": round(sum(lat) / len(lat), 3), "tokens_during": tokens,
               "tokens_per_s": round(tokens / wall, 1), "streams_active_throughout": active}
        if a.json:
            print(json.dumps(res))
        else:
            print(f"model {a.model}: {a.streams} streams, {a.requests} GET /health "
                  f"({'new' if a.fresh else 'one kept-alive'} connection{'s' if a.fresh else ''})")
            print(f"  p50 {res['p50_ms']:.3f} ms   p99 {res['p99_ms']:.3f} ms   max {res['max_ms']:.3f} ms")
            print(f"  {tokens} tokens streamed meanwhile ({res['tokens_per_s']} tokens/s); "
                  f"streams active throughout: {'yes' if active else 'NO (raise --max-tokens)'}")
        return 0 if active else 1
    finally:
        srv.terminate()
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()


if __name__ == "__main__":
    sys.exit(main())
