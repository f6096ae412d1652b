"""Images by URL in `llava serve`: http(s) URLs fetched by the server (only with
--allow-remote-images; redirects, size and time limits, failures named by field) from a local
test HTTP server, and file:// URLs (only with --allow-local-files); the answers must equal those
for the same image sent inline. While a slow fetch is under way the server keeps answering."""
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients"))
from serverlib import Server, check, fixture, openai_chat_body, run_tests  # noqa: E402

FX = fixture("tiny-f32")
PNG = open(FX["image"], "rb").read()


class Images(http.server.BaseHTTPRequestHandler):
    """/img.png, /redirect (to /img.png), /loop (redirects forever), /big (over the limit),
    /slow (answers after 3 s), /text (not an image), anything else 404."""

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", ctype="image/png", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def do_GET(self):
        p = self.path
        if p == "/img.png":
            self.send(200, PNG)
        elif p == "/redirect":
            self.send(302, extra=[("Location", "/img.png")])
        elif p == "/loop":
            self.send(302, extra=[("Location", "/loop")])
        elif p == "/big":
            self.send(200, PNG + b"\0" * (2 << 20))
        elif p == "/slow":
            time.sleep(3)
            self.send(200, PNG)
        elif p == "/text":
            self.send(200, b"hello, not an image", "text/plain")
        else:
            self.send(404, b"no", "text/plain")


def image_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def with_url(url, **extra):
    body = openai_chat_body(FX, **extra)
    body["messages"][0]["content"][0]["image_url"]["url"] = url
    return body


def test_remote():
    httpd, base = image_server()
    try:
        with Server(FX["model"], "--allow-remote-images", "--remote-max-bytes", "1M",
                    "--remote-timeout-ms", "1000", "--remote-max-redirects", "2") as srv:
            for path in ("/img.png", "/redirect"):
                st, _, _, r = srv.post_json("/v1/chat/completions", with_url(base + path))
                check(st == 200 and r["choices"][0]["message"]["content"] == FX["text"], f"{path}: {st} {r}")
            field = "messages[0].content[0].image_url.url"
            for path, words in [("/loop", "redirects"), ("/big", "larger than 1048576 bytes"),
                                ("/slow", "timed out"), ("/text", "not a JPEG"), ("/missing", "HTTP 404")]:
                st, _, _, r = srv.post_json("/v1/chat/completions", with_url(base + path))
                e = r["error"]
                check(st == 400 and e["param"] == field and e["message"].startswith(field + ": could not fetch")
                      and words in e["message"], f"{path}: {st} {e}")
            # an unreachable host and a non-http scheme
            st, _, _, r = srv.post_json("/v1/chat/completions", with_url("http://127.0.0.1:1/x.png"))
            check(st == 400 and "could not fetch" in r["error"]["message"], r)
            st, _, _, r = srv.post_json("/v1/chat/completions", with_url("ftp://127.0.0.1/x.png"))
            check(st == 400 and "expected a data:image" in r["error"]["message"], r)
            # the loop is free while a fetch waits: health answers at once
            result = {}
            t = threading.Thread(target=lambda: result.update(
                r=srv.post_json("/v1/chat/completions", with_url(base + "/slow"))))
            t.start()
            time.sleep(0.2)
            t0 = time.time()
            check(srv.request("GET", "/health")[0] == 200, "health during a fetch")
            check(time.time() - t0 < 0.5, f"health took {time.time() - t0:.3f} s during a fetch")
            t.join(10)
            st, _, _, r = result["r"]
            check(st == 400 and "timed out" in r["error"]["message"], result)
            m = srv.metrics()
            check(m["llava_remote_fetches_total"] == 9 and m["llava_remote_fetch_failures_total"] == 7,
                  {k: v for k, v in m.items() if "fetch" in k})
    finally:
        httpd.shutdown()


def test_local_files():
    field = "messages[0].content[0].image_url.url"
    url = "file://" + urllib.parse.quote(os.path.realpath(FX["image"]))
    with Server(FX["model"]) as srv:  # off by default
        st, _, _, r = srv.post_json("/v1/chat/completions", with_url(url))
        check(st == 400 and "--allow-local-files" in r["error"]["message"], r)
    with Server(FX["model"], "--allow-local-files") as srv:
        st, _, _, r = srv.post_json("/v1/chat/completions", with_url(url))
        check(st == 200 and r["choices"][0]["message"]["content"] == FX["text"], f"{st} {r}")
        st, _, _, r = srv.post_json("/v1/chat/completions", with_url("file:///nonexistent/a.png"))
        check(st == 400 and r["error"]["param"] == field and "/nonexistent/a.png" in r["error"]["message"], r)
        st, _, _, r = srv.post_json("/v1/chat/completions", with_url("file://host/a.png"))
        check(st == 400 and "absolute path" in r["error"]["message"], r)
        # a file that is not an image: the decoder's error, named by field
        st, _, _, r = srv.post_json("/v1/chat/completions", with_url("file://" + os.path.realpath(__file__)))
        check(st == 400 and r["error"]["message"].startswith(field + ": image 0"), r)


if __name__ == "__main__":
    run_tests([test_remote, test_local_files])
