"""Every documented error, raw over HTTP: status, OpenAI error shape and code."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from gateway import Gateway, get_record, log_path


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None):
    assert r.status_code == status, f"want {status} {code}, got {r.status_code}: {r.text[:500]}"
    try:
        body = r.json()
    except json.JSONDecodeError:
        raise AssertionError(f"error body is not JSON: {r.text[:500]!r}")
    err = body.get("error")
    assert isinstance(err, dict), body
    for field in ("message", "type", "param", "code"):
        assert field in err, f"error object lacks {field!r}: {body}"
    assert isinstance(err["message"], str) and err["message"], body
    assert err["code"] == code, f"want code {code}, got {body}"
    if param is not None:
        assert err["param"] == param, f"want param {param}, got {body}"
    assert r.headers.get("x-request-id", "").startswith("req_"), f"no x-request-id: {dict(r.headers)}"
    return err


def chat(model, text="hello"):
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def test_bad_json(http):
    r = http.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                  headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")


def test_missing_model(http):
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert_error(r, 400, "invalid_request", param="model")


def test_missing_messages(http, chat_model):
    r = http.post("/v1/chat/completions", json={"model": chat_model})
    assert_error(r, 400, "invalid_request", param="messages")


def test_unknown_model(http):
    r = http.post("/v1/chat/completions", json=chat("no-such-model-anywhere"))
    assert_error(r, 404, "model_not_found")


def test_unknown_embedding_model(http):
    r = http.post("/v1/embeddings", json={"model": "no-such-embedder", "input": "x"})
    assert_error(r, 404, "model_not_found")


def test_missing_api_key(anon, chat_model):
    r = anon.post("/v1/chat/completions", json=chat(chat_model))
    assert_error(r, 401, "missing_api_key")
    r = anon.get("/v1/models")
    assert r.status_code in (200, 401), r.text  # listing may be public; if not, it is a 401


def test_invalid_api_key(gw, chat_model):
    with gw.http("sk-rk-this-key-does-not-exist-0000000000") as c:
        assert_error(c.post("/v1/chat/completions", json=chat(chat_model)), 401, "invalid_api_key")
    with gw.http("garbage") as c:
        assert_error(c.post("/v1/chat/completions", json=chat(chat_model)), 401, "invalid_api_key")


def test_management_key_is_not_an_inference_key(gw, chat_model):
    with gw.http(gw.management_key) as c:
        r = c.post("/v1/chat/completions", json=chat(chat_model))
    assert r.status_code == 401, r.text


def test_inference_key_is_not_a_management_key(http):
    r = http.get("/v1/keys")
    assert r.status_code in (401, 403), r.text


def test_body_too_large(http, chat_model):
    big = "a " * (17 * 1024 * 1024)  # 34 MiB of text: over the default 32 MiB limit
    payload = json.dumps(chat(chat_model, big)).encode()
    try:
        r = http.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    except httpx.HTTPError as e:  # server answered and closed before reading it all
        pytest.fail(f"gateway dropped the connection instead of answering 413: {e!r}")
    assert r.status_code == 413, r.text[:300]


def test_insufficient_quota(gw, chat_model):
    """A fresh account whose balance cannot cover the worst case of a request gets 402."""
    res = gw.admin("create-account", "--email", f"poor-{time.time_ns()}@example.com", "--credit", "0")
    if res.returncode != 0:
        res = gw.admin("create-account", "--email", f"poor-{time.time_ns()}@example.com", "--credit", "0.000001")
    assert res.returncode == 0, f"admin create-account failed: {res.stdout} {res.stderr}"
    acct = json.loads(res.stdout.strip().splitlines()[-1])
    assert acct["account_id"] and acct["management_key"].startswith("sk-rm-"), acct
    with gw.http(acct["management_key"]) as m:
        r = m.post("/v1/keys", json={"name": "poor"})
        assert r.status_code == 201, r.text
        key = r.json()["key"]
    with gw.http(key) as c:
        body = chat(chat_model)
        body["max_tokens"] = 1000
        assert_error(c.post("/v1/chat/completions", json=body), 402, "insufficient_quota")


# ---------------------------------------------------------------- upstream faults


@pytest.mark.parametrize("directive,status,code", [
    ("status=503", 503, "upstream_overloaded"),
    ("status=500", 502, "upstream_error"),
    ("malformed", 502, "upstream_error"),
    ("reset", 502, "upstream_error"),
])
def test_upstream_failure_is_5xx(http, mgmt, chat_model, directive, status, code):
    t0 = time.monotonic()
    r = http.post("/v1/chat/completions", json=chat(chat_model, f"please fail [[sim:{directive}]]"))
    assert_error(r, status, code)
    assert time.monotonic() - t0 < 30
    rid = r.headers.get("x-request-id")
    assert rid, f"error response has no x-request-id: {dict(r.headers)}"
    rec = get_record(mgmt, rid)
    assert rec["error_code"] == code, rec


@pytest.mark.parametrize("directive,status,code", [("status=503", 503, "upstream_overloaded"),
                                                   ("malformed", 502, "upstream_error")])
def test_upstream_failure_streaming(http, chat_model, directive, status, code):
    body = chat(chat_model, f"please fail [[sim:{directive}]]")
    body["stream"] = True
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        text = r.read().decode()
    if r.status_code == 200:
        # Already committed to a 200 stream: the failure must show as an error event, not [DONE].
        assert '"error"' in text, text
    else:
        assert r.status_code == status, text
        assert json.loads(text)["error"]["code"] == code


@pytest.mark.parametrize("status", [400, 422])
def test_upstream_4xx_passes_through(http, chat_model, status):
    r = http.post("/v1/chat/completions", json=chat(chat_model, f"bad for upstream [[sim:status={status}]]"))
    assert r.status_code == status, r.text
    assert "error" in r.json(), r.text


def test_stream_cut_midway(http, mgmt, chat_model):
    body = chat(chat_model, "cut me off [[sim:cut=3,words=20]]")
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        lines = []
        try:
            for line in r.iter_lines():
                lines.append(line)
        except httpx.HTTPError:
            pass  # the gateway may cut the client too
    assert "data: [DONE]" not in lines or any('"error"' in ln for ln in lines), \
        f"an upstream cut must not look like a clean end of stream: {lines}"
    rec = get_record(mgmt, rid)
    assert rec["status"] is not None and rec["error_code"], rec


@pytest.fixture(scope="module")
def short_timeout_gw(tmp_path_factory):
    base = tmp_path_factory.mktemp("timeout")
    g = Gateway(base / "data", log_path=log_path("timeout-gateway", base), config_text="upstream_timeout_secs = 2\n")
    g.start()
    yield g
    g.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(short_timeout_gw, stream):
    g = short_timeout_gw
    with g.http(g.api_key) as c:
        models = c.get("/v1/models").json()["data"]
    model = next(m["id"] for m in models if "embed" not in m["id"])
    body = chat(model, "never answer [[sim:timeout]]")
    if stream:
        body["stream"] = True
    t0 = time.monotonic()
    with g.http(g.api_key, timeout=30) as c:
        r = c.post("/v1/chat/completions", json=body)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"timeout of 2 s took {elapsed:.1f} s"
    if stream and r.status_code == 200:
        assert "upstream_timeout" in r.text, r.text
    else:
        assert_error(r, 504, "upstream_timeout")


def test_client_disconnect_mid_stream_is_metered(http, mgmt, chat_model, made_ids):
    """A client that hangs up mid-stream got a response: it has exactly one usage record."""
    body = chat(chat_model, "slow stream [[sim:words=30,tpot_ms=20]]")
    body["stream"] = True
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    made_ids.append(rid)
    rec = get_record(mgmt, rid, wait=5)
    assert rec["streamed"] is True, rec
    assert rec["prompt_tokens"] > 0, rec


def test_upstream_stalling_mid_stream_times_out(short_timeout_gw):
    """No request hangs past its timeout, even after the stream has started."""
    g = short_timeout_gw
    body = chat("gpt-6.2-sol", "stall after the first word [[sim:tpot_ms=4000,words=5]]")
    body["stream"] = True
    with g.http(g.api_key) as c:
        body["model"] = next(m["id"] for m in c.get("/v1/models").json()["data"] if m.get("kind", "chat") == "chat")
        t0 = time.monotonic()
        r = c.post("/v1/chat/completions", json=body, timeout=30)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"a stalled stream with a 2 s upstream timeout took {elapsed:.1f} s"
    if r.status_code == 200:
        assert "upstream_timeout" in r.text and "data: [DONE]" not in r.text, r.text
    else:
        assert_error(r, 504, "upstream_timeout")
