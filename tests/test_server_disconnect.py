"""Clients of `llava serve` that disconnect while their request waits in the queue, while its
images go through the vision tower, during prefill and during decode: each request must be
cancelled in the engine (llava_requests_total{outcome="cancelled"} grows, promptly, before it
would have finished) and the next request must be served normally.

The fixtures are too small to catch a request inside one phase, so this uses a random-weight
checkpoint written by tools/make_checkpoint.py (vision 256 wide x 8 layers at 336 px, text 256 x
4 layers; ~50 MB, cached in the build folder) on one compute thread, and times each drop from a
calibration run of the same request (the server's per-phase times in /metrics)."""
import json
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "server_clients"))
from serverlib import Server, check, fixture, run_tests, slow_model  # noqa: E402

FX = fixture("tiny-f32")
CANCELLED = 'llava_requests_total{outcome="cancelled"}'


def body(n_images=1, text="Describe it.", max_tokens=1, stream=False):
    parts = [{"type": "image_url", "image_url": {"url": f"data:{FX['mime']};base64,{FX['image_b64']}"}}] * n_images
    return {"model": "m", "temperature": 0, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]}


def send(srv, obj):
    """Sends a POST over a raw socket and returns the socket (the answer is not read)."""
    data = json.dumps(obj).encode()
    s = socket.create_connection((srv.host, srv.port), timeout=60)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    return s


def phases(srv, obj):
    """Runs obj to completion; returns its phase times (s) from the server's /metrics."""
    before = srv.metrics()
    st, _, _, r = srv.post_json("/v1/chat/completions", obj)
    check(st == 200, r)
    after = srv.metrics()
    return {p: after[f'llava_request_phase_seconds_sum{{phase="{p}"}}'] -
            before[f'llava_request_phase_seconds_sum{{phase="{p}"}}']
            for p in ("queue", "prepare", "image", "prefill", "decode")}


def wait_cancelled(srv, count, timeout=10):
    """Seconds until the cancelled counter reaches count."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if srv.metrics()[CANCELLED] >= count:
            return time.time() - t0
        time.sleep(0.005)
    raise AssertionError(f"no cancellation within {timeout} s: {srv.metrics()[CANCELLED]} < {count}")


def drop_at(srv, obj, at, label, full):
    """Sends obj, closes the connection `at` seconds after the body went out, and checks that
    the request is cancelled before its first token (full: seconds the whole request takes)."""
    m0 = srv.metrics()
    s = send(srv, obj)
    t0 = time.time()
    time.sleep(max(0.0, at - (time.time() - t0)))
    s.close()
    latency = wait_cancelled(srv, m0[CANCELLED] + 1)
    m1 = srv.metrics()
    check(m1["llava_time_to_first_token_seconds_count"] == m0["llava_time_to_first_token_seconds_count"],
          f"{label}: the request reached its first token")
    check(m1['llava_client_disconnects_total{phase="before_first_token"}'] ==
          m0['llava_client_disconnects_total{phase="before_first_token"}'] + 1, f"{label}: disconnect not counted")
    # "Before it would have finished" is the first-token check above: a wall-clock bound on the
    # latency would fail whenever the machine is busy, so the latency is reported, not asserted.
    print(f"     {label}: dropped at {at:.3f} s of {full:.3f} s, cancelled {latency * 1000:.0f} ms later")


def served_normally(srv):
    st, _, _, r = srv.post_json("/v1/chat/completions", dict(body(), max_tokens=3))
    check(st == 200 and r["usage"]["completion_tokens"] == 3, f"next request: {st} {r}")


def test_disconnects():
    with Server(slow_model(), "--threads", "1", "--max-queue", "4") as srv:
        # queue and decode: A streams a long answer; B waits behind it and leaves; then A leaves
        a = send(srv, body(text="Tell a long story.", max_tokens=2000, stream=True))
        got = b""
        while got.count(b"data: ") < 4:
            chunk = a.recv(65536)
            check(chunk, "stream A ended early")
            got += chunk
        m0 = srv.metrics()
        b = send(srv, body())
        t0 = time.time()
        while srv.metrics()["llava_queue_depth"] < 1:
            check(time.time() - t0 < 5, "B never queued")
            time.sleep(0.005)
        b.close()
        latency = wait_cancelled(srv, m0[CANCELLED] + 1)
        print(f"     queued: cancelled {latency * 1000:.0f} ms after the drop")
        check(srv.metrics()["llava_requests_running"] == 1, "A stopped with B")
        a.settimeout(5)
        check(a.recv(65536), "A still streams after B left")
        m1 = srv.metrics()
        a.close()
        latency = wait_cancelled(srv, m1[CANCELLED] + 1)
        m2 = srv.metrics()
        check(m2['llava_client_disconnects_total{phase="streaming"}'] ==
              m1['llava_client_disconnects_total{phase="streaming"}'] + 1, "streaming disconnect counted")
        check(m2["llava_completion_tokens_total"] - m0["llava_completion_tokens_total"] < 2000,
              "A ran to its end")
        print(f"     decoding: cancelled {latency * 1000:.0f} ms after the drop")
        served_normally(srv)

        # image encoding: four images (the vision tower takes the better part of a second)
        four = body(n_images=4)
        p = phases(srv, four)
        full = p["prepare"] + p["image"] + p["prefill"] + p["decode"]
        drop_at(srv, four, p["prepare"] + 0.4 * p["image"], "image encoding", full)
        served_normally(srv)

        # prefill: one image and a long text (about 3500 positions, so that prefill lasts well
        # over the time a busy machine may add to a drop), dropped early in the prefill
        long_text = body(text="word " * 2900)
        p = phases(srv, long_text)
        full = p["prepare"] + p["image"] + p["prefill"] + p["decode"]
        drop_at(srv, long_text, p["prepare"] + p["image"] + 0.25 * p["prefill"], "prefill", full)
        served_normally(srv)

        m = srv.metrics()
        check(m[CANCELLED] == 4 and m["llava_http_active_requests"] == 0, m)


if __name__ == "__main__":
    run_tests([test_disconnects])
