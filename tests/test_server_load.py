"""Load on `llava serve` with a small queue: 50 concurrent clients x 20 requests each, mixing
OpenAI and Ollama, streamed and whole answers, bad bodies, health checks and clients that leave
mid-stream. Every request must get either a complete answer (a finished stream, a whole JSON) or
a clean 4xx/5xx JSON error (429 with Retry-After when the queue is full); the server must not
crash or hang, must account for every request in /metrics, and its memory must return to near
its baseline afterwards. Then more connections than the server has descriptors for: it must
neither spin nor flood its log while out of them, and must serve again once they close."""
import http.client
import json
import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients"))
from serverlib import Server, check, fixture, run_tests, sanitized  # noqa: E402

FX = fixture("tiny-f32")
CLIENTS, PER_CLIENT = 50, 20
IMAGE = {"type": "image_url", "image_url": {"url": f"data:{FX['mime']};base64,{FX['image_b64']}"}}


def request_kind(k):
    """(method, path, body, what a complete answer looks like)"""
    chat = {"model": "m", "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]}]}
    if k == 0:
        return "POST", "/v1/chat/completions", chat, "openai"
    if k == 1:
        return "POST", "/v1/chat/completions", dict(chat, stream=True), "sse"
    if k == 2:
        return "POST", "/api/chat", {"model": "m", "options": {"num_predict": 4},
                                     "messages": [{"role": "user", "content": "Hi", "images": [FX["image_b64"]]}]}, "ndjson"
    if k == 3:
        return "POST", "/api/generate", {"model": "m", "prompt": "Hello", "stream": False,
                                         "options": {"num_predict": 3}}, "ollama"
    if k == 4:
        return "POST", "/v1/chat/completions", '{"messages": [', "bad"
    if k == 5:
        return "POST", "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["!!"]}]}, "bad"
    if k == 6:
        return "GET", "/health", None, "health"
    return "POST", "/v1/chat/completions", dict(chat, stream=True, max_tokens=50), "leave"


def complete(kind, status, headers, data):
    """None if the answer is complete and well-formed, else what is wrong."""
    if status == 429:
        if headers.get("retry-after") != "1":
            return "429 without Retry-After"
        return None if "error" in json.loads(data) else "429 without an error body"
    if kind == "bad":
        return None if status == 400 and "error" in json.loads(data) else f"bad input got {status}"
    if status != 200:
        return f"status {status}: {data[:200]!r}"
    if kind == "openai":
        r = json.loads(data)
        return None if r["usage"]["completion_tokens"] == 4 and r["choices"][0]["finish_reason"] else "incomplete"
    if kind == "sse":
        return None if data.rstrip().endswith(b"data: [DONE]") else "stream without [DONE]"
    if kind == "ndjson":
        lines = data.decode().splitlines()
        return None if json.loads(lines[-1])["done"] else "ndjson without done"
    if kind == "ollama":
        return None if json.loads(data)["done"] else "not done"
    if kind == "health":
        return None if json.loads(data)["status"] == "ok" else "not ok"
    return f"unexpected kind {kind}"


def client(srv, index, results):
    conn = None
    for i in range(PER_CLIENT):
        k = (index + i * 7) % 8
        method, path, body, kind = request_kind(k)
        try:
            if conn is None or i % 5 == 0:  # mix kept-alive and fresh connections
                if conn:
                    conn.close()
                conn = http.client.HTTPConnection(srv.host, srv.port, timeout=120)
            if not isinstance(body, str) and body is not None:
                body = json.dumps(body)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            if kind == "leave" and r.status == 200:
                r.read(1)  # first bytes of the stream, then hang up
                conn.close()
                conn = None
                results.append(("left", 200, None))
                continue
            data = r.read()
            headers = {k.lower(): v for k, v in r.getheaders()}
            if kind == "leave":
                kind = "sse"
            results.append((kind, r.status, complete(kind, r.status, headers, data)))
            if r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as e:  # a reset, a timeout, a malformed answer: all failures
            results.append((kind, -1, f"{type(e).__name__}: {e}"))
            conn = None
    if conn:
        conn.close()


def test_load():
    with Server(FX["model"], "--max-queue", "4", "--threads", "1") as srv:
        for _ in range(10):  # warm up: the engine's buffers and the allocator's arenas
            srv.post_json(*request_kind(0)[1:3])
        time.sleep(1.0)
        base_rss = srv.rss_kib()
        results = []
        threads = [threading.Thread(target=client, args=(srv, i, results)) for i in range(CLIENTS)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        elapsed = time.time() - t0
        check(not any(t.is_alive() for t in threads), "clients hung")
        check(srv.proc.poll() is None, "the server died")
        bad = [r for r in results if r[2]]
        check(len(results) == CLIENTS * PER_CLIENT, f"{len(results)} results")
        check(not bad, f"{len(bad)} incomplete answers, e.g. {bad[:5]}")
        by = {}
        for kind, status, _ in results:
            by[(kind, status)] = by.get((kind, status), 0) + 1
        # everything in flight finishes (streams whose clients left are cancelled)
        deadline = time.time() + 30
        while srv.metrics()["llava_http_active_requests"] > 0:
            check(time.time() < deadline, "requests still active after the load")
            time.sleep(0.05)
        m = srv.metrics()
        ended = sum(m[f'llava_requests_total{{outcome="{o}"}}'] for o in ("stop", "length", "cancelled", "error"))
        check(ended == m["llava_requests_submitted_total"], f"{ended} ended of {m['llava_requests_submitted_total']}")
        check(m['llava_requests_rejected_total{reason="queue_full"}'] == sum(
            n for (k, s), n in by.items() if s == 429), "429s match the engine's refusals")
        check(srv.request("GET", "/health")[0] == 200, "healthy after the load")
        time.sleep(1.5)  # the server gives freed memory back after half a second idle
        rss = srv.rss_kib()
        print(f"     {len(results)} requests in {elapsed:.1f} s: " +
              ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(by.items())))
        print(f"     RSS {base_rss / 1024:.1f} MiB before, {rss / 1024:.1f} MiB after")
        if sanitized():  # ASan keeps freed memory in quarantine: RSS says nothing there
            print("     (sanitizer build: memory not compared)")
        else:
            check(rss < base_rss + 24 * 1024, f"RSS {rss} KiB vs baseline {base_rss} KiB")
        # how many fit through a queue of 4 depends on the machine; each kind must have some
        for kind in ("openai", "sse", "ndjson", "ollama", "left"):
            check(by.get((kind, 200), 0) >= 1, f"no {kind} request was served: {by}")
        ok = sum(n for (k, s), n in by.items() if s == 200 and k not in ("bad", "health"))
        check(ok >= 20, f"only {ok} generations served")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files_limit(pid):
    """(soft, hard) of a running process, from /proc (the values prlimit would give)."""
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no 'Max open files' line")


def test_out_of_descriptors():
    # started with a low soft limit: `llava serve` raises it to the hard one
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    with Server(FX["model"], preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))) as srv:
        pid = srv.proc.pid
        check(open_files_limit(pid) == (str(hard), str(hard)) or hard == resource.RLIM_INFINITY,
              f"descriptor limit not raised: {open_files_limit(pid)}, hard {hard}")
        # now room for only 4 more descriptors, and 40 clients connecting
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 4, in_use + 4))
        socks = [socket.create_connection((srv.host, srv.port), timeout=10) for _ in range(40)]
        time.sleep(0.5)
        c0, t0 = cpu_seconds(pid), time.time()
        time.sleep(2.0)
        busy = (cpu_seconds(pid) - c0) / (time.time() - t0)
        log = srv.stderr()
        pauses = [line for line in log.splitlines() if "accepting connections" in line]
        print(f"     out of descriptors: server CPU {100 * busy:.0f} % of a core, {len(pauses)} log line(s), "
              f"{len(log)} bytes of log")
        check(len(pauses) == 1 and "paused" in pauses[0], f"pause not logged once: {pauses[:3]}")
        check(len(log) < 4096, f"{len(log)} bytes of log while out of descriptors")
        # spinning on accept() takes a whole core; waiting takes next to nothing
        check(busy < 0.5, f"the server used {100 * busy:.0f} % of a core while out of descriptors")
        for s in socks:
            s.close()
        deadline = time.time() + 20
        while True:
            try:
                if srv.request("GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            check(time.time() < deadline, "no answer after the connections closed")
            time.sleep(0.1)
        method, path, body, kind = request_kind(0)
        st, headers, data = srv.request(method, path, body)
        check(complete(kind, st, headers, data) is None, f"no complete answer after: {st} {data[:200]!r}")
        check(srv.metrics()["llava_accept_pauses_total"] >= 1, "pauses not counted in /metrics")


if __name__ == "__main__":
    run_tests([test_load, test_out_of_descriptors])
