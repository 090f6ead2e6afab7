"""Issue 10, items 1-4, 6 and 8 (the requested model): attacks on the metering through the real
binary. The demo's simulated upstream behaves as a hostile one can: it keeps the LAST value of a
repeated JSON key (as Python's json and JavaScript do), honours `n`, and reports whatever usage the
`[[sim:report_*=N]]` / `reasoning=N` directives tell it to. Each test failed against the gateway
before these fixes (see the module doc of each)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from conftest import tracked
from gateway import (RELAY_DEAD_WORDS, D, Gateway, expected_cost, get_record, key_state, list_usage, log_path, new_key,
                     wait_settled)


@pytest.fixture(scope="module")
def agw(tmp_path_factory):
    """A gateway of its own: the implausible usage reports made here are billed at their
    reservation (not at the formula on their tokens), which the shared gateway's final check of
    every record's cost must not see."""
    data = tmp_path_factory.mktemp("attacks") / "data"
    g = tracked(Gateway(data, log_path=log_path("attacks-gateway", data.parent)))
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def amgmt(agw):
    with agw.http(agw.management_key) as c:
        yield c


@pytest.fixture(scope="module")
def catalog(agw):
    with agw.http(agw.api_key) as c:
        r = c.get("/v1/models")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}


def openai_chat_models(catalog) -> list[str]:
    """Chat models served through the OpenAI wire format (where the body passes through)."""
    return [mid for mid, m in catalog.items() if m.get("kind", "chat") == "chat" and mid.startswith("gpt-")]


@pytest.fixture(scope="module")
def cheap_and_dear(catalog):
    models = openai_chat_models(catalog)
    by_price = sorted(models, key=lambda m: D(catalog[m]["pricing"]["output_per_mtok"]))
    cheap, dear = by_price[0], by_price[-1]
    assert D(catalog[dear]["pricing"]["output_per_mtok"]) > D(catalog[cheap]["pricing"]["output_per_mtok"])
    return cheap, dear


def records_of(mgmt, key_id: str, n: int, wait: float = 10) -> list[dict]:
    """The key's usage records once there are at least n."""
    deadline = time.monotonic() + wait
    while True:
        recs = list_usage(mgmt, key_id=key_id)
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def post_raw(gw: Gateway, secret: str, raw: str, timeout: float = 60) -> httpx.Response:
    with gw.http(secret, timeout=timeout) as c:
        return c.post("/v1/chat/completions", content=raw.encode(),
                      headers={"content-type": "application/json"})


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert r.status_code == status, f"want {status} {code}, got {r.status_code}: {r.text[:500]}"
    err = r.json()["error"]
    assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


# ------------------------------------------------------------------ 1. duplicate JSON keys


def test_a_repeated_model_is_refused_not_served_at_the_first_ones_price(agw, amgmt, cheap_and_dear):
    """Before: a key allowed only the cheap model was served the dear one (kept last by the
    upstream), billed at the cheap rate."""
    cheap, dear = cheap_and_dear
    key = new_key(amgmt, models=[cheap])
    raw = (f'{{"model": "{cheap}", "max_tokens": 8, "messages": [{{"role": "user", "content": "hi"}}], '
           f'"model": "{dear}"}}')
    r = post_raw(agw, key["key"], raw)
    assert_error(r, 400, "invalid_request", "model")
    assert "more than once" in r.json()["error"]["message"]
    # Nothing was sent upstream: nothing spent.
    assert D(key_state(amgmt, key["id"])["spend"]) == 0


def test_a_repeated_max_tokens_is_refused(agw, amgmt, cheap_and_dear):
    """Before: `max_tokens: 1` was reserved and `max_tokens: 1000` served."""
    cheap, _ = cheap_and_dear
    key = new_key(amgmt)
    raw = (f'{{"model": "{cheap}", "max_tokens": 1, "messages": [{{"role": "user", '
           f'"content": "long [[sim:words=1000]]"}}], "max_tokens": 1000}}')
    assert_error(post_raw(agw, key["key"], raw), 400, "invalid_request", "max_tokens")
    assert D(key_state(amgmt, key["id"])["spend"]) == 0


def test_a_stream_is_always_metered_whatever_stream_options_say(agw, amgmt, catalog, cheap_and_dear):
    """Before: `include_usage: false` as a second `stream_options` left the stream unbilled
    (cost 0, upstream_usage_missing)."""
    cheap, _ = cheap_and_dear
    key = new_key(amgmt)
    msgs = '[{"role": "user", "content": "stream me [[sim:words=12]]"}]'
    raw = (f'{{"model": "{cheap}", "stream": true, "max_tokens": 50, "messages": {msgs}, '
           f'"stream_options": {{"include_usage": true}}, "stream_options": {{"include_usage": false}}}}')
    assert_error(post_raw(agw, key["key"], raw), 400, "invalid_request", "stream_options")
    # Repeated inside stream_options: refused too, rather than guessed.
    raw = (f'{{"model": "{cheap}", "stream": true, "max_tokens": 50, "messages": {msgs}, '
           f'"stream_options": {{"include_usage": true, "include_usage": false}}}}')
    assert_error(post_raw(agw, key["key"], raw), 400, "invalid_request", "stream_options")
    # Asked not to report usage: the client gets no usage chunk, and the stream is billed anyway.
    raw = (f'{{"model": "{cheap}", "stream": true, "max_tokens": 50, "messages": {msgs}, '
           f'"stream_options": {{"include_usage": false}}}}')
    r = post_raw(agw, key["key"], raw)
    assert r.status_code == 200, r.text
    assert '"usage":{' not in r.text.replace(" ", ""), r.text
    rec = get_record(amgmt, r.headers["x-request-id"])
    assert rec["error_code"] is None and rec["completion_tokens"] == 12, rec
    pricing = catalog[cheap]["pricing"]
    assert D(rec["cost"]) == expected_cost(pricing, rec["prompt_tokens"], 0, 12) > 0, rec


# ------------------------------------------------------------------ 2. cost multipliers


def test_every_choice_is_in_the_worst_case(agw, amgmt, catalog, cheap_and_dear):
    """Before: `n: 8` on a key capped at about one choice's worst case spent 8 choices."""
    cheap, _ = cheap_and_dear
    pricing = catalog[cheap]["pricing"]
    prompt = [{"role": "user", "content": "many choices [[sim:words=100]]"}]
    one_choice = expected_cost(pricing, 0, 0, 100)
    cap = (one_choice * 3).quantize(Decimal("0.0000000001"))
    eight = json.dumps({"model": cheap, "n": 8, "max_tokens": 100, "messages": prompt})
    # A key that refuses an oversized max_tokens names the limit that fits all eight choices.
    key = new_key(amgmt, max_spend=str(cap), on_oversized_max_tokens="refuse")
    err = assert_error(post_raw(agw, key["key"], eight), 400, "invalid_request", "max_tokens")
    fits = int(re.search(r"lower max_tokens to (\d+)", err["message"]).group(1))
    assert 16 <= fits and 8 * fits <= 300, err
    assert not any(w in err["message"].lower() for w in RELAY_DEAD_WORDS), err
    # A key that clamps (the default) serves the eight choices with that limit, within the cap.
    clamping = new_key(amgmt, max_spend=str(cap))
    r = post_raw(agw, clamping["key"], eight)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["choices"]) == 8 and body["usage"]["completion_tokens"] <= 8 * fits, body["usage"]
    assert all(c["finish_reason"] == "length" for c in body["choices"]), body["choices"]
    assert D(wait_settled(amgmt, clamping["id"])["spend"]) <= cap
    # Within the cap, n choices are served and billed as n choices.
    r = post_raw(agw, key["key"], json.dumps({"model": cheap, "n": 2, "max_tokens": 100, "messages": prompt}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["choices"]) == 2 and body["usage"]["completion_tokens"] == 200, body["usage"]
    rec = get_record(amgmt, r.headers["x-request-id"])
    assert rec["completion_tokens"] == 200 and rec["error_code"] is None, rec
    k = wait_settled(amgmt, key["id"])
    assert D(k["spend"]) == D(rec["cost"]) <= cap, k
    for bad in (0, 129):
        r = post_raw(agw, key["key"], json.dumps({"model": cheap, "n": bad, "messages": prompt}))
        assert_error(r, 400, "invalid_request", "n")


@pytest.mark.parametrize("field,value", [
    ("service_tier", "priority"),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("web_search_options", {}),
    ("prediction", {"type": "content", "content": "x"}),
])
def test_fields_billed_off_the_posted_rates_are_refused(agw, cheap_and_dear, field, value):
    cheap, _ = cheap_and_dear
    body = {"model": cheap, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], field: value}
    assert_error(post_raw(agw, agw.api_key, json.dumps(body)), 400, "invalid_request", field)


# ------------------------------------------------------------------ 3. a lying upstream


def test_an_absurd_usage_report_is_billed_at_the_reservation_and_the_server_survives(agw, amgmt, cheap_and_dear,
                                                                                    tmp_path):
    """Before: a token count near 2^64 became a cost of $922,337,203; GET /v1/keys answered 500,
    the account was refused everything, and the server could not restart."""
    cheap, _ = cheap_and_dear
    key = new_key(amgmt, max_spend="1")
    ids = []
    for directive in ("report_completion=18446744073709551615", "report_prompt=18446744073709551615",
                      "report_cached=18446744073709551615", "report_reasoning=9999"):
        for stream in (False, True):
            body = {"model": cheap, "max_tokens": 20, "stream": stream,
                    "messages": [{"role": "user", "content": f"lie [[sim:{directive},words=5]]"}]}
            r = post_raw(agw, key["key"], json.dumps(body))
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
            if not stream:
                usage = r.json()["usage"]
                assert D(usage["cost"]) < 1, usage
    for rid in ids:
        rec = get_record(amgmt, rid)
        assert rec["error_code"] == "upstream_usage_implausible", rec
        assert rec["completion_tokens"] <= 20 and rec["prompt_tokens"] <= 10_000_000, rec
        assert rec["cached_tokens"] <= rec["prompt_tokens"] and rec["reasoning_tokens"] <= rec["completion_tokens"]
    k = wait_settled(amgmt, key["id"])
    assert D(k["spend"]) <= 1, k
    assert amgmt.get("/v1/keys").status_code == 200
    # The account still works, and so does a restart.
    r = post_raw(agw, key["key"], json.dumps({"model": cheap, "max_tokens": 5,
                                              "messages": [{"role": "user", "content": "still here"}]}))
    assert r.status_code == 200, r.text
    agw.stop()
    agw.start()
    assert amgmt.get("/v1/keys").status_code == 200
    assert D(key_state(amgmt, key["id"])["spend"]) == D(k["spend"]) + D(r.json()["usage"]["cost"])


def test_an_over_report_cannot_take_a_key_past_its_cap(agw, amgmt, catalog, cheap_and_dear):
    """Before: an upstream reporting 20,000 reasoning tokens took a $0.05 cap to $4.00."""
    _, dear = cheap_and_dear
    pricing = catalog[dear]["pricing"]
    cap = (expected_cost(pricing, 200, 0, 200) * 3).quantize(Decimal("0.0000000001"))
    key = new_key(amgmt, max_spend=str(cap))
    statuses = []
    for _ in range(6):
        body = {"model": dear, "max_tokens": 100,
                "messages": [{"role": "user", "content": "think hard [[sim:reasoning=20000,words=3]]"}]}
        statuses.append(post_raw(agw, key["key"], json.dumps(body)).status_code)
    assert 200 in statuses, statuses
    k = wait_settled(amgmt, key["id"])
    assert D(k["spend"]) <= cap, f"spent {k['spend']} on a cap of {cap}"
    recs = records_of(amgmt, key["id"], statuses.count(200))
    flagged = [r for r in recs if r["status"] == 200]
    assert flagged and all(r["error_code"] == "upstream_usage_implausible" for r in flagged), recs


# ------------------------------------------------------------------ 4. held money, defaults


def _slow_stream(gw: Gateway, secret: str, body: dict, started: threading.Event, out: list):
    with gw.http(secret, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            started.set()
            out.append((r.status_code, r.read()))


def test_money_held_in_flight_is_a_transient_429_not_a_dead_channel(agw, amgmt, catalog, cheap_and_dear):
    """Before: a request refused only because requests in flight held the rest got 402
    insufficient_quota ("$0 is available"), which relays read as a dead channel."""
    cheap, _ = cheap_and_dear
    pricing = catalog[cheap]["pricing"]
    worst = expected_cost(pricing, 500, 0, 1000)
    key = new_key(amgmt, max_spend=str((worst * Decimal("1.5")).quantize(Decimal("0.0000000001"))))
    slow = {"model": cheap, "max_tokens": 1000, "stream": True,
            "messages": [{"role": "user", "content": "slow [[sim:words=10,tpot_ms=300]]"}]}
    started, out = threading.Event(), []
    t = threading.Thread(target=_slow_stream, args=(agw, key["key"], slow, started, out))
    t.start()
    assert started.wait(30)
    second = {"model": cheap, "max_tokens": 1000, "messages": [{"role": "user", "content": "me too"}]}
    r = post_raw(agw, key["key"], json.dumps(second))
    err = assert_error(r, 429, "rate_limit_exceeded")
    assert r.headers.get("retry-after") == "1", dict(r.headers)
    assert not any(w in err["message"].lower() for w in RELAY_DEAD_WORDS), err
    t.join(60)
    assert out and out[0][0] == 200
    wait_settled(amgmt, key["id"])
    # The first spent a little of what it held: the same request now fits.
    assert post_raw(agw, key["key"], json.dumps(second)).status_code == 200


def test_a_request_without_max_tokens_holds_the_default_not_the_models_whole_output(agw, catalog, cheap_and_dear):
    """Before: each request without max_tokens held the model's whole output limit (128,000
    tokens, $5.12 on the dearest model), so a funded account admitted a handful of concurrent
    requests. Now each holds the default output (8192 tokens), which is sent upstream."""
    _, dear = cheap_and_dear
    pricing = catalog[dear]["pricing"]
    default_worst = expected_cost(pricing, 100, 0, 8192)
    whole_worst = expected_cost(pricing, 100, 0, catalog[dear]["max_output"])
    n = 12
    credit = (default_worst * (n + 2)).quantize(Decimal("0.000001"))
    assert whole_worst * 2 > credit, "the model's whole output must not fit twice for this test to mean anything"
    res = agw.admin("create-account", "--email", f"defaults-{uuid.uuid4().hex[:8]}@example.com",
                    "--credit", str(credit))
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout.strip().splitlines()[-1])
    with agw.http(acct["management_key"]) as m:
        secret = new_key(m)["key"]
    body = {"model": dear, "messages": [{"role": "user", "content": "no limit named [[sim:ttft_ms=800,words=5]]"}]}

    async def burst():
        async with httpx.AsyncClient(base_url=agw.root, headers={"authorization": f"Bearer {secret}"},
                                     timeout=60, limits=httpx.Limits(max_connections=n)) as c:
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(n)))

    results = asyncio.run(burst())
    assert [r.status_code for r in results] == [200] * n, [(r.status_code, r.text[:200]) for r in results]
    # The default went upstream: a reply longer than it is cut there.
    r = post_raw(agw, secret, json.dumps({"model": dear, "messages": [
        {"role": "user", "content": "very long [[sim:words=9000]]"}]}), timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8192
    assert r.json()["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------ 6. hang-up before the head


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_before_the_response_head_is_still_billed(agw, amgmt, catalog, cheap_and_dear,
                                                                         stream):
    """Before: the handler was dropped with the connection, so a request the upstream answered
    (and bills for) had no record and no debit."""
    cheap, _ = cheap_and_dear
    key = new_key(amgmt)
    body = {"model": cheap, "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": "answer slowly [[sim:ttft_ms=1500,words=7]]"}]}
    with agw.http(key["key"], timeout=0.5) as c:
        with pytest.raises(httpx.TimeoutException):
            c.post("/v1/chat/completions", json=body)
    recs = records_of(amgmt, key["id"], 1)
    assert len(recs) == 1, recs
    rec = recs[0]
    assert (rec["status"], rec["error_code"]) == (499, "client_disconnected"), rec
    assert rec["completion_tokens"] == 7, rec
    want = expected_cost(catalog[cheap]["pricing"], rec["prompt_tokens"], 0, 7)
    assert D(rec["cost"]) == want > 0, rec
    k = wait_settled(amgmt, key["id"])
    assert D(k["spend"]) == want and D(k["reserved"]) == 0, k


# ------------------------------------------------------------------ 8. the requested model


def test_an_overlong_model_name_is_refused_before_it_is_recorded(agw, amgmt):
    """Before: a 2 MB model name was stored in the usage record (an 80 MB usage page)."""
    key = new_key(amgmt)
    body = {"model": "m" * 2_000_000, "messages": [{"role": "user", "content": "hi"}]}
    assert_error(post_raw(agw, key["key"], json.dumps(body)), 400, "invalid_request", "model")
    unknown = {"model": "x" * 256, "messages": [{"role": "user", "content": "hi"}]}
    assert_error(post_raw(agw, key["key"], json.dumps(unknown)), 404, "model_not_found")
    recs = records_of(amgmt, key["id"], 2)
    assert len(recs) == 2 and all(len(r["requested_model"]) <= 256 for r in recs), [
        len(r["requested_model"]) for r in recs]
