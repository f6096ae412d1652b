"""`llava serve` driven by the official `openai` and `ollama` npm clients (tests/server_clients,
installed here with npm ci): chat with a base64 image, whole and streamed, Ollama chat and
generate; every greedy answer must equal `llava run` on the same input (and the fixture's
reference text). Needs node and npm."""
import json
import os
import subprocess
import sys

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_clients")
sys.path.insert(0, HERE)
from serverlib import Server, check, fixture, install_clients, llava_run, run_tests  # noqa: E402


def run_clients(srv, fx, api_key=None):
    cfg = {"base": f"http://{srv.host}:{srv.port}", "image_b64": fx["image_b64"], "mime": fx["mime"],
           "question": fx["question"], "api_key": api_key}
    p = subprocess.run(["node", os.path.join(HERE, "clients.mjs"), json.dumps(cfg)], cwd=HERE,
                       capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"clients.mjs failed:\n{p.stdout}\n{p.stderr}\n{srv.stderr()}")
    return json.loads(p.stdout)


def test_official_clients():
    install_clients()
    fx = fixture("tiny-f32")
    with Server(fx["model"], "--api-key", "key-123") as srv:
        r = run_clients(srv, fx, api_key="key-123")
    want = llava_run(fx)
    check(want == fx["text"], f"llava run: {want!r}")
    check(r["openai"]["content"] == want, f"openai: {r['openai']}")
    check(r["openai"]["finish_reason"] == "length" and r["openai"]["usage"]["completion_tokens"] == 16, r["openai"])
    s = r["openai_stream"]
    check(s["content"] == want and s["finish_reason"] == "length", f"openai stream: {s}")
    check(s["usage"]["completion_tokens"] == 16 and s["chunks"] >= 17, s)
    e = r["openai_error"]
    check(e and e["status"] == 400 and "only n = 1" in e["message"], f"openai error: {e}")
    check(r["openai_models"] == ["test-model"], r["openai_models"])
    check(r["ollama_chat"]["content"] == want and r["ollama_chat"]["eval_count"] == 16, r["ollama_chat"])
    check(r["ollama_chat_stream"]["content"] == want and r["ollama_chat_stream"]["done"], r["ollama_chat_stream"])
    check(r["ollama_generate"]["response"] == want, r["ollama_generate"])
    check(r["ollama_generate_stream"]["response"] == want, r["ollama_generate_stream"])
    check(r["ollama_models"] == ["test-model"], r["ollama_models"])
    check(r["ollama_show"]["capabilities"] == ["completion", "vision"] and r["ollama_show"]["family"] == "llama" and
          r["ollama_show"]["parameter_count"] > 1_000_000, r["ollama_show"])
    check(r["ollama_ps"] == ["test-model"], r["ollama_ps"])
    e = r["ollama_error"]
    check(e and e["status"] == 400 and "format" in e["message"], f"ollama error: {e}")


if __name__ == "__main__":
    run_tests([test_official_clients])
