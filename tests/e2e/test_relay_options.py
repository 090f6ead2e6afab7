"""Per-key options for relays (issue 12, items 3 and 4), through the real binary: what a
`max_tokens` the key or account cannot pay for gets (`on_oversized_max_tokens`: clamped to what
can be paid for and sent upstream so, or a 400 naming that limit; a 402 only when not even a
minimal answer fits), the stream usage chunk sent unasked (`always_include_usage`), and the
`x-router-one-*` headers left out (`router_headers`)."""
from __future__ import annotations

import json
import re

from gateway import RELAY_DEAD_WORDS, D, expected_cost, get_record, key_state, new_key, wait_settled

LONG = [{"role": "user", "content": "a long answer please [[sim:words=400]]"}]


def chat(gw, secret: str, **body):
    with gw.http(secret) as c:
        return c.post("/v1/chat/completions", json=body)


def stream_events(gw, secret: str, **body) -> tuple[dict, list[dict]]:
    """The response headers and the JSON events of a streamed chat completion."""
    with gw.http(secret) as c:
        r = c.post("/v1/chat/completions", json={**body, "stream": True})
        assert r.status_code == 200, r.text
        events = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        return dict(r.headers), events


def test_the_options_default_round_trip_and_are_checked(mgmt):
    key = new_key(mgmt)
    assert (key["on_oversized_max_tokens"], key["always_include_usage"], key["router_headers"]) == \
        ("clamp", False, True), key
    key = new_key(mgmt, on_oversized_max_tokens="refuse", always_include_usage=True, router_headers=False)
    assert (key["on_oversized_max_tokens"], key["always_include_usage"], key["router_headers"]) == \
        ("refuse", True, False), key
    # A PATCH of one leaves the others; null restores the default.
    r = mgmt.patch(f"/v1/keys/{key['id']}", json={"router_headers": None, "rpm_limit": 100})
    assert r.status_code == 200, r.text
    got = key_state(mgmt, key["id"])
    assert (got["on_oversized_max_tokens"], got["always_include_usage"], got["router_headers"]) == \
        ("refuse", True, True), got
    for field, value in [("on_oversized_max_tokens", "truncate"), ("on_oversized_max_tokens", 1),
                         ("always_include_usage", "yes"), ("router_headers", 0)]:
        r = mgmt.post("/v1/keys", json={field: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == field, r.text


def test_an_oversized_max_tokens_is_clamped_and_the_clamped_limit_goes_upstream(gw, mgmt, models, chat_model):
    cap = expected_cost(models[chat_model]["pricing"], 0, 0, 200).quantize(D("0.0000000001"))
    key = new_key(mgmt, max_spend=str(cap))
    r = chat(gw, key["key"], model=chat_model, max_tokens=4000, messages=LONG)
    assert r.status_code == 200, r.text
    body = r.json()
    # The simulator writes up to the limit it was sent: the clamped one, not 4000.
    assert body["choices"][0]["finish_reason"] == "length", body
    assert 16 <= body["usage"]["completion_tokens"] <= 200, body["usage"]
    rec = get_record(mgmt, r.headers["x-request-id"])
    assert rec["completion_tokens"] == body["usage"]["completion_tokens"] and rec["error_code"] is None, rec
    assert D(wait_settled(mgmt, key["id"])["spend"]) <= cap


def test_a_key_that_refuses_names_the_limit_that_fits(gw, mgmt, models, chat_model):
    cap = expected_cost(models[chat_model]["pricing"], 0, 0, 200).quantize(D("0.0000000001"))
    key = new_key(mgmt, max_spend=str(cap), on_oversized_max_tokens="refuse")
    r = chat(gw, key["key"], model=chat_model, max_tokens=4000, messages=LONG)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_request", "max_tokens")
    assert not any(w in error["message"].lower() for w in RELAY_DEAD_WORDS), error
    fits = int(re.search(r"lower max_tokens to (\d+)", error["message"]).group(1))
    assert 16 <= fits <= 200, error
    # The limit it names is served, and nothing was held by the refusal.
    r = chat(gw, key["key"], model=chat_model, max_tokens=fits, messages=LONG)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == fits


def test_a_402_only_when_not_even_a_minimal_answer_fits(gw, mgmt, models, chat_model):
    cap = expected_cost(models[chat_model]["pricing"], 0, 0, 4).quantize(D("0.0000000001"))
    for option in ("clamp", "refuse"):
        key = new_key(mgmt, max_spend=str(cap), on_oversized_max_tokens=option)
        r = chat(gw, key["key"], model=chat_model, max_tokens=4000, messages=LONG)
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "insufficient_quota", r.text


def test_always_include_usage_sends_the_usage_chunk_unasked(gw, mgmt, chat_model):
    ask = {"model": chat_model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    _, events = stream_events(gw, new_key(mgmt)["key"], **ask)
    assert not any(e.get("usage") for e in events), events[-1]
    _, events = stream_events(gw, new_key(mgmt, always_include_usage=True)["key"], **ask)
    usage = events[-1].get("usage")
    assert usage and usage["completion_tokens"] > 0 and D(usage["cost"]) > 0, events[-1]


def test_router_headers_can_be_left_out(gw, mgmt, chat_model):
    ask = {"model": chat_model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    shown = chat(gw, new_key(mgmt)["key"], **ask)
    assert shown.headers["x-router-one-provider"] and shown.headers["x-router-one-served-model"]
    hidden = new_key(mgmt, router_headers=False)
    r = chat(gw, hidden["key"], **ask)
    assert r.status_code == 200, r.text
    headers, _ = stream_events(gw, hidden["key"], **ask)
    for h in (dict(r.headers), headers):
        assert not [name for name in h if name.lower().startswith("x-router-one-")], h
        # The record stays reachable by request id.
        assert get_record(mgmt, h["x-request-id"])["key_id"] == hidden["id"]


def test_usage_cost_is_a_json_number_whose_text_is_the_exact_decimal(gw, mgmt, chat_model):
    """OpenRouter's convention, which typed clients (LiteLLM) model: a number, not a string; an
    exact reader (`parse_float=Decimal`) gets exactly the record's decimal, streamed or not."""
    secret = new_key(mgmt)["key"]
    ask = {"model": chat_model, "max_tokens": 30, "messages": [{"role": "user", "content": "cost as a number"}]}
    r = chat(gw, secret, **ask)
    assert r.status_code == 200, r.text
    cost = json.loads(r.text, parse_float=D)["usage"]["cost"]
    assert isinstance(json.loads(r.text)["usage"]["cost"], (int, float)), r.text
    assert re.search(r'"cost":\s*\d', r.text), r.text
    assert cost == D(get_record(mgmt, r.headers["x-request-id"])["cost"]) > 0
    with gw.http(secret) as c:
        s = c.post("/v1/chat/completions", json={**ask, "stream": True, "stream_options": {"include_usage": True}})
    last = [line[6:] for line in s.text.splitlines() if line.startswith("data: {")][-1]
    streamed = json.loads(last, parse_float=D)["usage"]["cost"]
    assert streamed == D(get_record(mgmt, s.headers["x-request-id"])["cost"]) > 0, last
