"""Malformed requests to `llava serve` (bodies, fields, images, base64, headers, methods, sizes):
each must get its exact status and a message naming the field at fault, in the error shape of its
API (OpenAI's {"error":{"message","type","param","code"}} under /v1, {"error": "..."} under /api),
and the server must keep serving. Run under ASan by the sanitizer build's ctest."""
import base64
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients"))
from serverlib import Server, check, fixture, openai_chat_body, run_tests  # noqa: E402

FX = fixture("tiny-f32")
PNG = open(FX["image"], "rb").read()
B64 = base64.b64encode(PNG).decode()


def oa(content=None, **extra):
    """An OpenAI body with one user message (content defaults to an image and a question)."""
    if content is None:
        content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64}},
                   {"type": "text", "text": "What?"}]
    body = {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def img(url):
    return oa([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "x"}])


def ol(**extra):
    body = {"model": "m", "stream": False, "options": {"num_predict": 2},
            "messages": [{"role": "user", "content": "What?", "images": [B64]}]}
    body.update(extra)
    return body


CHAT, OCHAT, OGEN = "/v1/chat/completions", "/api/chat", "/api/generate"

# (name, path, body (dict/str/bytes), extra headers, status, words in the message, OpenAI param)
CASES = [
    ("invalid JSON", CHAT, b'{"model": "m", "messages": [', {}, 400, "invalid JSON", None),
    ("not an object", CHAT, b"[1, 2]", {}, 400, "must be a JSON object", None),
    ("empty body", CHAT, b"", {}, 400, "body is empty", None),
    ("invalid UTF-8", CHAT, b'{"model": "\xff\xfe", "messages": []}', {}, 400, "invalid JSON", None),
    ("NUL escape", CHAT, '{"messages": [{"role": "user", "content": "a\\u0000b"}]}', {}, 400,
     "invalid JSON", None),
    ("duplicate key", CHAT, b'{"messages": [], "messages": []}', {}, 400, "duplicate", None),
    ("messages missing", CHAT, {"model": "m"}, {}, 400, "messages: missing", "messages"),
    ("messages not an array", CHAT, {"messages": "hi"}, {}, 400, "messages: expected an array", "messages"),
    ("messages empty", CHAT, {"messages": []}, {}, 400, "at least one message", "messages"),
    ("message not an object", CHAT, {"messages": ["hi"]}, {}, 400, "messages[0]: expected a message", "messages[0]"),
    ("unknown role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, {}, 400,
     "messages[0].role: unknown role 'wizard'", "messages[0].role"),
    ("tool role", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, {}, 400,
     "'tool' messages are not supported", "messages[0].role"),
    ("content a number", CHAT, {"messages": [{"role": "user", "content": 5}]}, {}, 400,
     "messages[0].content: expected a string or an array", "messages[0].content"),
    ("content missing", CHAT, {"messages": [{"role": "user"}]}, {}, 400, "messages[0].content: missing",
     "messages[0].content"),
    ("unknown part type", CHAT, oa([{"type": "input_audio", "input_audio": {}}]), {}, 400,
     "messages[0].content[0].type: unsupported content part type 'input_audio'", "messages[0].content[0].type"),
    ("text part without text", CHAT, oa([{"type": "text"}]), {}, 400, "messages[0].content[0].text: missing",
     "messages[0].content[0].text"),
    ("image_url without url", CHAT, oa([{"type": "image_url", "image_url": {"detail": "low"}}]), {}, 400,
     "messages[0].content[0].image_url.url: missing", "messages[0].content[0].image_url.url"),
    ("bad detail", CHAT, oa([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64,
                                                                   "detail": "ultra"}}]), {}, 400,
     "detail: expected auto, low or high", "messages[0].content[0].image_url.detail"),
    ("image in a system message", CHAT, {"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64}}]}]}, {}, 400,
     "only allowed in user messages", "messages[0].content[0].type"),
    ("bad base64", CHAT, img("data:image/png;base64,iVBOR*w0KGgo="), {}, 400,
     "invalid base64 character '*' at offset 5", "messages[0].content[0].image_url.url"),
    ("truncated base64", CHAT, img("data:image/png;base64,iVBORw0KG"), {}, 400, "truncated base64",
     "messages[0].content[0].image_url.url"),
    ("bad padding", CHAT, img("data:image/png;base64,iVBO=Rw0"), {}, 400, "after '=' padding",
     "messages[0].content[0].image_url.url"),
    ("not an image media type", CHAT, img("data:text/plain;base64,aGVsbG8="), {}, 400,
     "media type is not image/*", "messages[0].content[0].image_url.url"),
    ("data URI not base64", CHAT, img("data:image/png,abc"), {}, 400, "only base64 data URIs",
     "messages[0].content[0].image_url.url"),
    ("bytes not an image", CHAT, img("data:image/png;base64," + base64.b64encode(b"hello world").decode()),
     {}, 400, "are not a JPEG, PNG, WebP, GIF or BMP image", "messages[0].content[0].image_url.url"),
    ("undecodable PNG", CHAT, img("data:image/png;base64," + base64.b64encode(PNG[:200]).decode()), {}, 400,
     "messages[0].content[0].image_url.url: image 0", "messages[0].content[0].image_url.url"),
    ("plain string URL", CHAT, img("picture.png"), {}, 400, "expected a data:image/...;base64 URI",
     "messages[0].content[0].image_url.url"),
    ("remote images off", CHAT, img("https://example.com/a.png"), {}, 400, "--allow-remote-images",
     "messages[0].content[0].image_url.url"),
    ("local files off", CHAT, img("file:///etc/hosts"), {}, 400, "--allow-local-files",
     "messages[0].content[0].image_url.url"),
    ("too many images", CHAT, oa([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + B64}}] * 3),
     {}, 400, "more than 2 images in one request", "messages[0].content[2].image_url.url"),
    ("more markers than images", CHAT, oa("<image> and <image>"), {}, 400,
     "2 <image> markers in the text but 0 images", "messages[0].content"),
    ("temperature a string", CHAT, oa(temperature="hot"), {}, 400, "temperature: expected a number", "temperature"),
    ("temperature too high", CHAT, oa(temperature=5), {}, 400, "temperature: 5 is out of range", "temperature"),
    ("top_p negative", CHAT, oa(top_p=-0.5), {}, 400, "top_p: -0.5 is out of range", "top_p"),
    ("max_tokens zero", CHAT, oa(max_tokens=0), {}, 400, "max_tokens: 0 is out of range", "max_tokens"),
    ("max_tokens fractional", CHAT, oa(max_tokens=2.5), {}, 400, "max_tokens: expected an integer", "max_tokens"),
    ("max_tokens past the context", CHAT, oa(max_tokens=1000000), {}, 400, "exceed the context", None),
    ("n = 2", CHAT, oa(n=2), {}, 400, "n: only n = 1 is supported", "n"),
    ("stop not a string", CHAT, oa(stop=["a", 3]), {}, 400, "stop[1]: expected a string", "stop[1]"),
    ("empty stop", CHAT, oa(stop=""), {}, 400, "stop: empty stop string", "stop"),
    ("stream_options without stream", CHAT, oa(stream_options={"include_usage": True}), {}, 400,
     "stream_options: only allowed when stream is true", "stream_options"),
    ("stream not a boolean", CHAT, oa(stream="yes"), {}, 400, "stream: expected a boolean", "stream"),
    ("tools", CHAT, oa(tools=[{"type": "function", "function": {"name": "f"}}]), {}, 400,
     "tools: not supported", "tools"),
    ("json response format", CHAT, oa(response_format={"type": "json_object"}), {}, 400,
     "response_format.type: only \"text\"", "response_format.type"),
    ("logprobs", CHAT, oa(logprobs=True), {}, 400, "logprobs: log probabilities are not supported", "logprobs"),
    ("gzip body", CHAT, oa(), {"Content-Encoding": "gzip"}, 415, "Content-Encoding 'gzip' is not supported", None),
    ("ollama model missing", OCHAT, {"messages": []}, {}, 400, "model: missing", None),
    ("ollama format", OCHAT, ol(format="json"), {}, 400, "format: structured output", None),
    ("ollama bad image", OCHAT, ol(messages=[{"role": "user", "content": "x", "images": ["@@@@"]}]), {}, 400,
     "messages[0].images[0]: invalid base64 character '@' at offset 0", None),
    ("ollama image a number", OCHAT, ol(messages=[{"role": "user", "content": "x", "images": [7]}]), {}, 400,
     "messages[0].images[0]: expected a base64 string", None),
    ("ollama unknown role", OCHAT, ol(messages=[{"role": "robot", "content": "x"}]), {}, 400,
     "messages[0].role: unknown role 'robot'", None),
    ("ollama option type", OCHAT, ol(options={"temperature": "warm"}), {}, 400,
     "options.temperature: expected a number", None),
    ("ollama num_predict zero", OCHAT, ol(options={"num_predict": 0}), {}, 400, "options.num_predict", None),
    ("ollama raw markers", OGEN, {"model": "m", "raw": True, "prompt": "USER: hi", "images": [B64]}, {}, 400,
     "images: 1 image for 0 <image> markers in the raw prompt", None),
    ("ollama context", OGEN, {"model": "m", "prompt": "hi", "context": [1, 2, 3]}, {}, 400,
     "context: not supported", None),
    ("ollama template", OGEN, {"model": "m", "prompt": "hi", "template": "{{ .Prompt }}"}, {}, 400,
     "template: custom prompt templates are not supported", None),
]


def check_error(name, st, h, data, status, words, param, openai):
    check(st == status, f"{name}: status {st}, expected {status}: {data[:300]!r}")
    check(h.get("content-type", "").startswith("application/json"), f"{name}: content type {h}")
    r = json.loads(data)
    if openai:
        e = r["error"]
        check(set(e) == {"message", "type", "param", "code"}, f"{name}: error shape {e}")
        check(words in e["message"], f"{name}: {e['message']!r} lacks {words!r}")
        check(e["param"] == param, f"{name}: param {e['param']!r}, expected {param!r}")
        check(e["type"] == ("invalid_request_error" if status < 500 else "server_error"), e)
    else:
        check(isinstance(r["error"], str) and words in r["error"], f"{name}: {r['error']!r} lacks {words!r}")


def test_bodies():
    with Server(FX["model"], "--max-images", "2") as srv:
        for name, path, body, headers, status, words, param in CASES:
            if isinstance(body, dict):
                body = json.dumps(body)
            st, h, data = srv.request("POST", path, body, dict({"Content-Type": "application/json"}, **headers))
            check_error(name, st, h, data, status, words, param, path.startswith("/v1/"))
        # the server keeps serving, and counted what it refused
        st, _, _, r = srv.post_json(CHAT, openai_chat_body(FX))
        check(st == 200 and r["choices"][0]["message"]["content"] == FX["text"], r)
        m = srv.metrics()
        check(m['llava_http_responses_total{code="4xx"}'] == len(CASES), m)
        print(f"     {len(CASES)} malformed bodies refused with the expected status and message")


def test_http_level():
    with Server(FX["model"], "--max-body", "64K") as srv:
        # methods and paths
        st, h, data = srv.request("GET", CHAT)
        check(st == 405 and h.get("allow") == "POST" and "method not allowed" in json.loads(data)["error"]["message"],
              f"GET chat: {st} {data!r}")
        st, h, data = srv.request("DELETE", "/health")
        check(st == 405 and h.get("allow") == "GET", f"DELETE health: {st}")
        st, _, data = srv.request("GET", "/v1/nothing")
        check(st == 404 and json.loads(data)["error"]["code"] == "not_found", data)
        st, _, data = srv.request("GET", "/api/nothing")
        check(st == 404 and json.loads(data)["error"] == "no such endpoint", data)
        st, _, data = srv.request("GET", "/nothing")
        check(st == 404, data)
        # a body over --max-body: 413 before the body is parsed
        st, _, data = srv.request("POST", CHAT, b"{" + b" " * 100000 + b"}")
        check(st == 413 and b"Request Entity Too Large" in data, f"big body: {st} {data!r}")
        # raw HTTP faults: bad request line, bad Content-Length, oversized headers, bad chunking
        # (libevent answers these itself, with its HTML error page)
        out = srv.raw(b"GARBAGE\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 400 Bad Request"), f"bad request line: {out[:60]!r}")
        out = srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        check(out.startswith(b"HTTP/1.1 400 Bad Request"), f"bad Content-Length: {out[:60]!r}")
        out = srv.raw(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 400 Bad Request"), f"oversized header: {out[:60]!r}")
        out = srv.raw(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n")
        check(out.startswith(b"HTTP/1.1 413"), f"bad chunk: {out[:60]!r}")
        out = srv.raw(b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n")
        check(out.startswith(b"HTTP/1.1 501 Not Implemented"), f"unknown method: {out[:60]!r}")
        # a chunked body that is fine is accepted
        body = json.dumps(openai_chat_body(FX, max_tokens=2)).encode()
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
        out = srv.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Content-Type: application/json\r\n\r\n" + chunked, timeout=30)
        check(out.startswith(b"HTTP/1.1 200"), f"chunked body: {out[:200]!r}")
        # still healthy
        check(srv.request("GET", "/health")[0] == 200, "healthy after HTTP faults")


if __name__ == "__main__":
    run_tests([test_bodies, test_http_level])
