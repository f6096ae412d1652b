"""Stopping `llava serve` with signals: the first SIGTERM/SIGINT stops accepting connections,
answers new requests on open connections with 503 ("draining" on /health, and closes them) and
lets in-flight requests finish, then the process exits 0; requests still running when the grace
period ends are cancelled with an error their client can read (exit still 0); a second signal
aborts (exit 1)."""
import http.client
import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients"))
from serverlib import Server, check, run_tests, sanitized, slow_model  # noqa: E402


def start_stream(srv, max_tokens):
    """A streaming request on its own connection; returns the response once its first content
    chunk has arrived."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    c.request("POST", "/v1/chat/completions", json.dumps({
        "model": "m", "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "messages": [{"role": "user", "content": "Tell a story."}]}), {"Content-Type": "application/json"})
    r = c.getresponse()
    check(r.status == 200, f"stream status {r.status}")
    first = r.read1(65536)  # the role chunk at least
    check(first.startswith(b"data: "), first)
    return c, r, first


def read_stream(r, first):
    return (first + r.read()).decode()


def test_graceful():
    with Server(slow_model(), "--threads", "1", "--grace-seconds", "30") as srv:
        idle, idle2 = (http.client.HTTPConnection(srv.host, srv.port, timeout=10) for _ in range(2))
        for conn in (idle, idle2):  # kept alive
            conn.request("GET", "/health")
            check(conn.getresponse().read() == b'{"status":"ok"}', "health before")
        # outlasts the checks below (1-10 ms a token; sanitizer builds are 5-20 times slower)
        c, r, first = start_stream(srv, 150 if sanitized() else 1000)
        srv.signal(signal.SIGTERM)
        # the open connection gets 503 answers once the signal is handled
        deadline = time.time() + 5
        while True:
            idle.request("GET", "/health")
            h = idle.getresponse()
            body = h.read()
            if h.status == 503:
                break
            check(time.time() < deadline, "the server never started draining")
            time.sleep(0.01)
        check(json.loads(body)["status"] == "draining", f"health while draining: {body!r}")
        check(h.getheader("Connection") == "close", "answers while draining close their connection")
        idle.close()
        idle2.request("POST", "/v1/chat/completions", "{}")
        h = idle2.getresponse()
        check(h.status == 503 and "shutting down" in json.loads(h.read())["error"]["message"],
              "new requests while draining")
        idle2.close()
        # new connections are refused
        try:
            socket.create_connection((srv.host, srv.port), timeout=2).close()
            check(False, "a new connection was accepted while draining")
        except ConnectionRefusedError:
            pass
        # the in-flight stream runs to its end
        text = read_stream(r, first)
        check(text.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in text,
              f"stream cut: {text[-300:]!r}")
        c.close()
        code = srv.proc.wait(30)
        check(code == 0, f"exit code {code}\n{srv.stderr()}")


def test_grace_expires():
    with Server(slow_model(), "--threads", "1", "--grace-seconds", "0.5") as srv:
        c, r, first = start_stream(srv, 3000)
        t0 = time.time()
        srv.signal(signal.SIGINT)
        text = read_stream(r, first)
        events = [json.loads(x[6:]) for x in text.split("\n\n") if x.startswith("data: {")]
        check("error" in events[-1] and "shutting down" in events[-1]["error"]["message"],
              f"last event {events[-1]}")
        check("[DONE]" not in text, "a cancelled stream must not end with [DONE]")
        code = srv.proc.wait(30)
        check(code == 0 and time.time() - t0 < 10, f"exit code {code} after {time.time() - t0:.1f} s")
        check("grace period over" in srv.stderr(), srv.stderr())


def test_second_signal_aborts():
    with Server(slow_model(), "--threads", "1", "--grace-seconds", "60") as srv:
        c, r, first = start_stream(srv, 3000)
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        time.sleep(0.3)
        srv.signal(signal.SIGTERM)
        code = srv.proc.wait(30)
        check(code == 1 and time.time() - t0 < 10, f"exit code {code} after {time.time() - t0:.1f} s")
        check("second signal" in srv.stderr(), srv.stderr())
        c.close()


if __name__ == "__main__":
    run_tests([test_graceful, test_grace_expires, test_second_signal_aborts])
