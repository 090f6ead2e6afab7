"""A reseller's relay in front of Router One (issue 12, docs/relays.md): one-api and new-api, replayed
as their source does it, against the real binary. Their channel test, balance probe and stream usage
handling work; none of the per-request refusals (an oversized `max_tokens` near a cap, a model the
key may not use, a rate limit, a used-up periodic budget) would switch the channel off under either
relay's rules, while a revoked key and an empty account would (those are the only refusals that
mean "this channel cannot be used")."""
from __future__ import annotations

import datetime
import json
import uuid
from decimal import Decimal

import pytest

from gateway import D, get_record, new_key

# ------------------------------------------------------------------ the relays' rules, from source

#: one-api (songquanpeng/one-api) monitor/manage.go `ShouldDisableChannel`: 401; error types
#: insufficient_quota, authentication_error, permission_error, forbidden; codes invalid_api_key,
#: account_deactivated; a message starting "Your credit balance is too low" or "This organization
#: has been disabled.", or containing "credit" or "balance" (case-sensitive `strings.Contains`).
ONE_API_TYPES = {"insufficient_quota", "authentication_error", "permission_error", "forbidden"}
ONE_API_CODES = {"invalid_api_key", "account_deactivated"}

#: new-api (QuantumNous/new-api) service/channel.go `ShouldDisableChannel`: a status in the
#: automatic-disable ranges (default 401), or the lower-cased message containing one of
#: `AutomaticDisableKeywords` (setting/operation_setting). Its forks and plan-quota rules also
#: disable on a 402 and on quota / credit / balance wording, so the replay adds those: a refusal
#: that passes this stricter rule passes every variant we read.
NEW_API_KEYWORDS = (
    "your credit balance is too low", "this organization has been disabled.",
    "you exceeded your current quota", "permission denied",
    "the security token included in the request is invalid", "operation not allowed",
    "your account is not authorized",
    # what the forks add (BusinessErrorKeywords and the like)
    "insufficient balance", "insufficient credit", "insufficient quota", "quota exceeded",
    "credit balance",
)


def one_api_disables(status: int, error: dict) -> bool:
    if status == 401:
        return True
    if error.get("type") in ONE_API_TYPES or error.get("code") in ONE_API_CODES:
        return True
    message = error.get("message", "")
    return (message.startswith("Your credit balance is too low")
            or message.startswith("This organization has been disabled.")
            or "credit" in message or "balance" in message)


def new_api_disables(status: int, error: dict) -> bool:
    if status in (401, 402):
        return True
    if error.get("type") in ONE_API_TYPES or error.get("code") in {"insufficient_quota", *ONE_API_CODES}:
        return True
    message = error.get("message", "").lower()
    return any(k in message for k in NEW_API_KEYWORDS)


def disabled_by(r) -> list[str]:
    """Which relays would switch the channel off on this answer."""
    if r.status_code < 400:
        return []
    error = r.json()["error"]
    return [name for name, rule in (("one-api", one_api_disables), ("new-api", new_api_disables))
            if rule(r.status_code, error)]


# ------------------------------------------------------------------ how the relays call us


def channel_test(gw, secret: str, model: str, relay: str):
    """The channel test: one-api sends `hi` with `max_tokens: 1` and fails the test when the answer
    has no completion tokens; new-api sends `hi` with a small `max_tokens`, not streamed."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1 if relay == "one-api" else 16}
    with gw.http(secret) as c:
        return c.post("/v1/chat/completions", json=body)


def balance_probe(gw, secret: str) -> Decimal:
    """one-api's `updateChannelBalance` for an OpenAI-compatible channel (controller/channel-billing.go):
    `hard_limit_usd` from the subscription, minus `total_usage / 100` from the usage of the last 100
    days; a balance at or below zero disables the channel."""
    today = datetime.date.today()
    start = today - datetime.timedelta(days=100)
    end = today + datetime.timedelta(days=1)
    with gw.http(secret) as c:
        sub = c.get("/v1/dashboard/billing/subscription")
        assert sub.status_code == 200, sub.text
        use = c.get("/v1/dashboard/billing/usage",
                    params={"start_date": start.isoformat(), "end_date": end.isoformat()})
        assert use.status_code == 200, use.text
    # Go's encoding/json reads both as float64; Decimal(str(...)) of the JSON text is the exact value.
    sub_json = json.loads(sub.text, parse_float=Decimal)
    use_json = json.loads(use.text, parse_float=Decimal)
    return Decimal(sub_json["hard_limit_usd"]) - Decimal(use_json["total_usage"]) / 100


def relay_stream(gw, secret: str, model: str) -> tuple[str, dict | None]:
    """A stream the way one-api's OpenAI adaptor reads it (relay/adaptor/openai/main.go
    StreamHandler): every `data: ` line but `[DONE]` is a chunk; the last chunk with a `usage`
    object gives the counts, else the relay counts tokens itself. It never asks for
    `stream_options`."""
    body = {"model": model, "stream": True, "max_tokens": 20,
            "messages": [{"role": "user", "content": "relay stream"}]}
    usage = None
    with gw.http(secret) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:], parse_float=Decimal)
            if chunk.get("usage"):
                usage = chunk["usage"]
    return rid, usage


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("relay", ["one-api", "new-api"])
def test_the_channel_test_passes_with_completion_tokens(gw, mgmt, chat_model, relay):
    r = channel_test(gw, new_key(mgmt)["key"], chat_model, relay)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0, r.text


def test_the_balance_probe_shows_what_the_key_has_left(gw, mgmt, chat_model):
    key = new_key(mgmt, max_spend="0.5")
    assert balance_probe(gw, key["key"]) == D("0.5")
    r = channel_test(gw, key["key"], chat_model, "one-api")
    assert r.status_code == 200, r.text
    spent = D(get_record(mgmt, r.headers["x-request-id"])["cost"])
    # Both probes are exact decimal literals, so the relay's subtraction is exact too.
    assert balance_probe(gw, key["key"]) == D("0.5") - spent > 0


def test_a_relay_that_never_asks_for_usage_gets_exact_counts_from_a_key_that_says_so(gw, mgmt, chat_model):
    plain = new_key(mgmt)
    _, usage = relay_stream(gw, plain["key"], chat_model)
    assert usage is None, "without the option, the usage chunk is sent only when asked for"
    relay_key = new_key(mgmt, always_include_usage=True)
    rid, usage = relay_stream(gw, relay_key["key"], chat_model)
    assert usage is not None
    rec = get_record(mgmt, rid)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (rec["prompt_tokens"], rec["completion_tokens"])
    assert D(usage["cost"]) == D(rec["cost"])


def test_per_request_refusals_never_switch_the_channel_off(gw, mgmt, models, chat_model):
    other = next(m for m in models if m != chat_model and "embedding" not in m)
    refusals = {}
    ask = {"model": chat_model, "messages": [{"role": "user", "content": "hi"}]}
    # An oversized max_tokens near a cap: clamped by default, a 400 naming the limit on request.
    for mode in ("clamp", "refuse"):
        near_cap = new_key(mgmt, max_spend="0.0005", on_oversized_max_tokens=mode)
        with gw.http(near_cap["key"]) as c:
            refusals[f"oversized max_tokens ({mode})"] = c.post(
                "/v1/chat/completions", json={**ask, "max_tokens": 1_000_000})
    # A model the key may not use.
    with gw.http(new_key(mgmt, models=[chat_model])["key"]) as c:
        refusals["disallowed model"] = c.post("/v1/chat/completions", json={**ask, "model": other, "max_tokens": 5})
    # A rate limit.
    with gw.http(new_key(mgmt, rpm_limit=1)["key"]) as c:
        assert c.post("/v1/chat/completions", json={**ask, "max_tokens": 5}).status_code == 200
        refusals["rpm"] = c.post("/v1/chat/completions", json={**ask, "max_tokens": 5})
    # A used-up periodic budget.
    with gw.http(new_key(mgmt, max_spend="0.0000001", budget_period="daily")["key"]) as c:
        refusals["daily budget"] = c.post("/v1/chat/completions", json={**ask, "max_tokens": 50})

    assert refusals["oversized max_tokens (clamp)"].status_code == 200, refusals["oversized max_tokens (clamp)"].text
    expected = {"oversized max_tokens (refuse)": 400, "disallowed model": 404, "rpm": 429, "daily budget": 429}
    for name, status in expected.items():
        r = refusals[name]
        assert r.status_code == status, (name, r.status_code, r.text)
        assert disabled_by(r) == [], (name, r.text)


def test_a_revoked_key_and_an_empty_account_do_switch_it_off(gw, mgmt, chat_model):
    ask = {"model": chat_model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    key = new_key(mgmt)
    assert mgmt.delete(f"/v1/keys/{key['id']}").status_code in (200, 204)
    with gw.http(key["key"]) as c:
        revoked = c.post("/v1/chat/completions", json=ask)
    assert revoked.status_code == 401, revoked.text
    assert disabled_by(revoked) == ["one-api", "new-api"]

    with gw.http(None) as anon:
        r = anon.post("/v1/auth/signup", json={"email": f"relay-{uuid.uuid4().hex[:12]}@example.com",
                                                "password": "correct horse battery staple"})
        assert r.status_code == 201, r.text
    with gw.http(r.json()["management_key"]) as empty_mgmt:
        secret = new_key(empty_mgmt)["key"]
    with gw.http(secret) as c:
        empty = c.post("/v1/chat/completions", json=ask)
    assert empty.status_code == 402, empty.text
    assert empty.json()["error"]["code"] == "insufficient_quota"
    assert disabled_by(empty) == ["one-api", "new-api"]
    # The balance probe agrees: nothing left, which one-api also disables on.
    assert balance_probe(gw, secret) <= 0
