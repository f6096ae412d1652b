"""`llava serve` driven with curl: OpenAI chat (whole and streamed), Ollama chat and generate
(whole, NDJSON, raw), with a base64 image; the greedy answers must equal `llava run` on the same
image and question, and the fixtures' reference text (Hugging Face transformers, 16 greedy
tokens). Also the model lists, /health, /metrics,
bearer-token auth, and requests that arrive while the model loads (then is ready, or fails)."""
import base64
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients"))
from serverlib import (Server, check, fixture, llava_run, openai_chat_body, run_tests,  # noqa: E402
                       sse_events)

CASES = ["tiny-f32", "tiny-bf16-gelu", "small-f16"]


def curl_json(srv, path, body, *extra):
    return srv.curl("-H", "Content-Type: application/json", "--data-binary", "@-", *extra,
                    "{base}" + path, data=json.dumps(body).encode())


def answers_for(fx):
    # the command line's greedy answers are the reference; they equal transformers' too
    cli, cli_raw = llava_run(fx), llava_run(fx, raw=True)
    check(cli == fx["text"] and cli_raw == fx["text"], f"{fx['name']}: llava run {cli!r} {cli_raw!r}")
    with Server(fx["model"]) as srv:
        # OpenAI, whole answer
        st, out = curl_json(srv, "/v1/chat/completions", openai_chat_body(fx))
        check(st == 200, f"{fx['name']}: status {st} {out[:300]!r}")
        r = json.loads(out)
        check(r["object"] == "chat.completion" and r["model"] == "test-model", r)
        ch = r["choices"][0]
        check(ch["message"]["content"] == fx["text"],
              f"{fx['name']}: {ch['message']['content']!r} != {fx['text']!r}")
        check(ch["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 16, r)
        check(r["usage"]["total_tokens"] == r["usage"]["prompt_tokens"] + 16, r["usage"])

        # OpenAI, streamed with usage
        st, out = curl_json(srv, "/v1/chat/completions",
                            openai_chat_body(fx, stream=True, stream_options={"include_usage": True}))
        check(st == 200, f"stream status {st}")
        events, done = sse_events(out)
        check(done, "no [DONE] at the end of the stream")
        check(events[0]["choices"][0]["delta"].get("role") == "assistant", events[0])
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        check(text == fx["text"], f"streamed {text!r} != {fx['text']!r}")
        check(events[-2]["choices"][0]["finish_reason"] == "length", events[-2])
        check(events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 16,
              events[-1])
        check(all("usage" in e for e in events), "include_usage: every chunk has a usage field")
        check(len({e["id"] for e in events}) == 1, "one id per stream")

        img = fx["image_b64"]
        # Ollama chat, whole and streamed
        chat = {"model": "test-model", "stream": False, "options": {"temperature": 0, "num_predict": 16},
                "messages": [{"role": "user", "content": fx["question"], "images": [img]}]}
        st, out = curl_json(srv, "/api/chat", chat)
        check(st == 200, f"ollama chat {st} {out[:200]!r}")
        r = json.loads(out)
        check(r["done"] and r["message"]["content"] == fx["text"] and r["done_reason"] == "length", r)
        check(r["eval_count"] == 16 and r["prompt_eval_count"] > 0 and r["total_duration"] > 0, r)
        chat["stream"] = True
        st, out = curl_json(srv, "/api/chat", chat)
        lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        check(st == 200 and lines[-1]["done"] and not any(x["done"] for x in lines[:-1]), lines[-1])
        check("".join(x["message"]["content"] for x in lines) == fx["text"], "ollama chat stream text")

        # Ollama generate: templated, raw, streamed
        gen = {"model": "test-model", "prompt": fx["question"], "images": [img], "stream": False,
               "options": {"temperature": 0, "num_predict": 16}}
        st, out = curl_json(srv, "/api/generate", gen)
        check(st == 200 and json.loads(out)["response"] == fx["text"], f"generate {st} {out[:200]!r}")
        raw = dict(gen, raw=True, prompt=fx["raw_prompt"])
        st, out = curl_json(srv, "/api/generate", raw)
        check(st == 200 and json.loads(out)["response"] == fx["text"], f"raw generate {out[:200]!r}")
        gen["stream"] = True
        st, out = curl_json(srv, "/api/generate", gen)
        lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        check("".join(x["response"] for x in lines) == fx["text"] and lines[-1]["done"],
              "generate stream text")

        m = srv.metrics()
        check(m['llava_requests_total{outcome="length"}'] == 7, "7 requests ended by length")
        check(m['llava_images_encoded_total'] == 7 and m['llava_http_responses_total{code="2xx"}'] >= 7, m)


def test_answers_tiny_f32():
    answers_for(fixture("tiny-f32"))


def test_answers_other_fixtures():
    for name in CASES[1:]:
        answers_for(fixture(name))


def test_sampling_and_stop():
    fx = fixture("tiny-f32")
    with Server(fx["model"]) as srv:
        # a stop string cuts the answer before it (and it never appears)
        words = fx["text"].split(" ")
        body = openai_chat_body(fx, stop=[" " + words[3]])
        st, _, _, r = srv.post_json("/v1/chat/completions", body)
        check(st == 200, r)
        check(r["choices"][0]["message"]["content"] == " ".join(words[:3]), r["choices"][0])
        check(r["choices"][0]["finish_reason"] == "stop", r)
        # the same seed gives the same sampled answer; the answer is not the greedy one
        body = openai_chat_body(fx, temperature=1.5, seed=1234, top_p=0.95)
        a = srv.post_json("/v1/chat/completions", body)[3]["choices"][0]["message"]["content"]
        b = srv.post_json("/v1/chat/completions", body)[3]["choices"][0]["message"]["content"]
        check(a == b and a != fx["text"], f"seeded sampling: {a!r} vs {b!r}")
        # a text-only conversation with a system prompt and earlier turns
        body = {"model": "m", "max_tokens": 3, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]}
        st, _, _, r = srv.post_json("/v1/chat/completions", body)
        check(st == 200 and r["usage"]["completion_tokens"] == 3, r)
        # Ollama: an empty prompt only loads the model
        st, _, _, r = srv.post_json("/api/generate", {"model": "m", "stream": False})
        check(st == 200 and r["done"] and r["done_reason"] == "load", r)


def test_large_bodies():
    """Bodies over 256 KiB are parsed on a helper thread: a 20 MiB image upload gets the same
    answer, its errors the same messages, a client leaving mid-parse is harmless, and /health
    answers promptly all the while (an inline parse of such a body holds a loop for ~1 s)."""
    fx = fixture("tiny-f32")
    # PNG decoders stop at IEND: trailing bytes make the upload big, not different
    big = dict(fx, image_b64=base64.b64encode(open(fx["image"], "rb").read() + b"\0" * (15 << 20)).decode())
    with Server(fx["model"]) as srv:
        lat, stop = [], []

        def poll():
            s = socket.create_connection((srv.host, srv.port))
            while not stop:
                t = time.perf_counter()
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                data = b""
                while not data.endswith(b'{"status":"ok"}'):
                    data += s.recv(4096)
                lat.append(time.perf_counter() - t)
                time.sleep(0.002)
            s.close()

        t = threading.Thread(target=poll)
        t.start()
        try:
            st, _, _, r = srv.post_json("/v1/chat/completions", openai_chat_body(big))
            check(st == 200 and r["choices"][0]["message"]["content"] == fx["text"], f"{st} {str(r)[:300]}")
            body = json.dumps(openai_chat_body(big))
            st, _, data = srv.request("POST", "/v1/chat/completions", body[:-2] + "]", {})
            check(st == 400 and "invalid JSON" in json.loads(data)["error"]["message"], data[:300])
            st, _, data = srv.request("POST", "/api/chat", json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "x", "images": [big["image_b64"] + "@"]}]}), {})
            check(st == 400 and "invalid base64 character '@'" in json.loads(data)["error"], data[:300])
            srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body.encode()), read=False)  # and gone at once
        finally:
            stop.append(True)
            t.join()
        worst = max(lat)
        check(worst < 0.3, f"/health took {worst * 1000:.0f} ms during the uploads")
        print(f"     /health during 20 MiB uploads: {len(lat)} checks, worst {worst * 1000:.1f} ms")
        st, _, _, r = srv.post_json("/v1/chat/completions", openai_chat_body(fx))
        check(st == 200 and r["choices"][0]["message"]["content"] == fx["text"], r)


def test_lists_health_metrics():
    fx = fixture("tiny-f32")
    with Server(fx["model"]) as srv:
        st, body = srv.curl("{base}/v1/models")
        r = json.loads(body)
        check(st == 200 and r["object"] == "list" and r["data"][0]["id"] == "test-model", r)
        st, body = srv.curl("{base}/v1/models/test-model")
        check(st == 200 and json.loads(body)["object"] == "model", body)
        st, body = srv.curl("{base}/v1/models/other")
        check(st == 404 and json.loads(body)["error"]["code"] == "not_found", body)
        st, body = srv.curl("{base}/api/tags")
        m = json.loads(body)["models"][0]
        check(st == 200 and m["name"] == "test-model" and m["size"] > 1_000_000, m)
        st, body = srv.curl("{base}/api/version")
        check(st == 200 and json.loads(body)["version"].count(".") == 2, body)
        # /api/show against the folder read here: config.json and the safetensors header
        cfg = json.load(open(os.path.join(fx["model"], "config.json")))
        with open(os.path.join(fx["model"], "model.safetensors"), "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        params = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        text, vision = cfg["text_config"], cfg["vision_config"]
        for body_sent in ('{"model": "test-model"}', '{"name": "test-model:latest"}'):
            st, body = srv.curl("{base}/api/show", "-d", body_sent)
            r = json.loads(body)
            check(st == 200, body)
            arch = r["model_info"]["general.architecture"]
            check(arch == text.get("model_type", "llama") and r["details"]["family"] == arch, r["details"])
            check(r["model_info"]["general.parameter_count"] == params, (r["model_info"], params))
            check(r["model_info"][f"{arch}.embedding_length"] == text["hidden_size"] and
                  r["model_info"][f"{arch}.block_count"] == text["num_hidden_layers"] and
                  r["model_info"][f"{arch}.context_length"] == text.get("max_position_embeddings", 4096), r["model_info"])
            check(r["projector_info"]["clip.vision.image_size"] == vision["image_size"] and
                  r["projector_info"]["clip.vision.patch_size"] == vision["patch_size"], r["projector_info"])
            check(r["capabilities"] == ["completion", "vision"], r["capabilities"])
            # the fixture's chat_template.json is llava-1.5's: the same template in Ollama's syntax
            check(r["template"].startswith("{{ range .Messages }}") and "USER: " in r["template"] and
                  r["template"].endswith("ASSISTANT:"), r["template"])
            check(r["details"]["quantization_level"] == "F32" and r["details"]["parameter_size"], r["details"])
        st, body = srv.curl("{base}/api/show", "-d", '{"model": "other"}')
        check(st == 404 and "not found" in json.loads(body)["error"], body)
        st, body = srv.curl("{base}/api/show", "-d", '{"model": 3}')
        check(st == 400 and json.loads(body)["error"] == "model: must be a string", body)
        st, body = srv.curl("{base}/api/show", "-d", '{"model": "test-model"')
        check(st == 400 and "invalid JSON" in json.loads(body)["error"], body)
        st, body = srv.curl("{base}/api/show", "--data-binary", "@-", data=b'{"model": "' + b"x" * 70000 + b'"}')
        check(st == 413 and "at most 65536" in json.loads(body)["error"], body)
        st, body = srv.curl("{base}/api/ps")
        m = json.loads(body)["models"]
        check(st == 200 and len(m) == 1 and m[0]["name"] == "test-model" and m[0]["size_vram"] == 0, m)
        st, body = srv.curl("{base}/health")
        check(st == 200 and json.loads(body) == {"status": "ok"}, body)
        st, body = srv.curl("{base}/metrics")
        text = body.decode()
        for name in ["llava_requests_total", "llava_queue_depth", "llava_time_to_first_token_seconds_bucket",
                     "llava_time_per_output_token_seconds_count", "llava_image_encode_seconds_sum",
                     "llava_prompt_tokens_total", "llava_client_disconnects_total",
                     'llava_model_state{state="ready"} 1']:
            check(name in text, f"/metrics lacks {name}")


def test_api_key():
    fx = fixture("tiny-f32")
    with Server(fx["model"], "--api-key", "s3cret-key") as srv:
        body = openai_chat_body(fx, max_tokens=2)
        st, h, _, r = srv.post_json("/v1/chat/completions", body)
        check(st == 401 and r["error"]["type"] == "authentication_error", r)
        check(h.get("www-authenticate") == "Bearer", h)
        for bad in ["Bearer s3cret-kez", "Bearer s3cret-key2", "Bearer s3cret", "Basic s3cret-key", ""]:
            st, _, _, r = srv.post_json("/v1/chat/completions", body, {"Authorization": bad})
            check(st == 401, f"{bad!r} -> {st}")
        st, _, _, r = srv.post_json("/api/chat", {"model": "m", "messages": []})
        check(st == 401 and isinstance(r["error"], str), r)
        st, _, _, r = srv.post_json("/v1/chat/completions", body, {"Authorization": "Bearer s3cret-key"})
        check(st == 200, r)
        # health and metrics stay open for load balancers and scrapers
        check(srv.request("GET", "/health")[0] == 200, "health needs no key")
        check(srv.request("GET", "/metrics")[0] == 200, "metrics need no key")


def padded_model(fx, drop=()):
    """A copy of a fixture's model folder (links) whose tokenizer_config.json carries a million
    ignored integers: loading then takes the better part of a second instead of milliseconds,
    long enough to watch the server while it loads. Files named in drop are left out."""
    d = tempfile.mkdtemp(prefix="llava-slow-model-")
    for name in os.listdir(fx["model"]):
        if name not in drop and name != "tokenizer_config.json":
            os.symlink(os.path.realpath(os.path.join(fx["model"], name)), os.path.join(d, name))
    cfg = json.load(open(os.path.join(fx["model"], "tokenizer_config.json")))
    cfg["x_padding"] = [[0] * 1000 for _ in range(1000)]
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, separators=(",", ":"))
    return d


def during_load(srv, fx):
    """Sends requests while the model loads; returns the threads and their results."""
    st, _, body = srv.request("GET", "/health")
    check(st == 503 and json.loads(body)["status"] == "loading", f"{st} {body!r}")
    results = {}

    def send(key, path, body):
        results[key] = srv.post_json(path, body)

    threads = [threading.Thread(target=send, args=("openai", "/v1/chat/completions", openai_chat_body(fx))),
               threading.Thread(target=send, args=("load", "/api/generate", {"model": "m"}))]
    for t in threads:
        t.start()
    return threads, results


def test_loading_then_ready():
    fx = fixture("tiny-f32")
    d = padded_model(fx)
    try:
        with Server(d, ready=False) as srv:
            threads, results = during_load(srv, fx)
            for t in threads:
                t.join(60)
            st, _, _, r = results["openai"]
            check(st == 200 and r["choices"][0]["message"]["content"] == fx["text"], results["openai"])
            st, _, _, r = results["load"]
            check(st == 200 and r["done_reason"] == "load", results["load"])
            check(srv.request("GET", "/health")[0] == 200, "ready after loading")
    finally:
        shutil.rmtree(d)


def test_loading_then_failed():
    fx = fixture("tiny-f32")
    d = padded_model(fx, drop=("model.safetensors",))
    try:
        with Server(d, ready=False) as srv:
            threads, results = during_load(srv, fx)
            for t in threads:
                t.join(60)
            st, _, body = srv.request("GET", "/health")
            h = json.loads(body)
            check(st == 500 and h["status"] == "error" and "safetensors" in h["error"], f"{st} {body!r}")
            st, _, _, r = results["openai"]
            check(st == 500 and "failed to load" in r["error"]["message"], results["openai"])
            check(r["error"]["type"] == "server_error", r)
            st, _, _, r = results["load"]
            check(st == 500 and "safetensors" in r["error"], results["load"])
            # later requests fail at once with the same message
            st, _, _, r = srv.post_json("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
            check(st == 500 and "failed to load" in r["error"] and "safetensors" in r["error"], r)
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    run_tests([test_answers_tiny_f32, test_answers_other_fixtures, test_sampling_and_stop,
               test_large_bodies, test_lists_health_metrics, test_api_key, test_loading_then_ready,
               test_loading_then_failed])
