"""Metering that cannot overshoot (promise 3) through the public API: hard budgets under 500
concurrent requests, RPM / TPM / concurrency caps with OpenAI's x-ratelimit-* headers and an
honest Retry-After, clamping of requests that name no max_tokens, disconnects that release their
reservation, and the relay probe endpoints."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from gateway import (D, assert_money_refusal, check_record_cost, get_record, key_state, list_usage, new_key,
                     wait_settled)

OUT = 200  # output tokens per request in the budget tests: the simulator writes exactly this many


async def _burst(root: str, secret: str, bodies: list[dict]) -> list[tuple[int, dict, str, bytes]]:
    """Sends every body at once; returns (status, headers, request id, body) per request."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=root, headers={"authorization": f"Bearer {secret}"},
                                 timeout=120, limits=limits) as c:
        async def one(body):
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                data = await r.aread()
                return r.status_code, dict(r.headers), r.headers.get("x-request-id", ""), data
        return await asyncio.gather(*(one(b) for b in bodies))


def burst(gw, secret: str, bodies: list[dict]):
    return asyncio.run(_burst(gw.root, secret, bodies))


def budget_bodies(model: str, n: int) -> list[dict]:
    """n requests whose worst case is close to their real cost (max_tokens = the words the
    simulator writes), half of them streaming."""
    out = []
    for i in range(n):
        body = {"model": model, "max_tokens": OUT,
                "messages": [{"role": "user", "content": f"spend {i} [[sim:words={OUT},ttft_ms=20]]"}]}
        if i % 2:
            body["stream"] = True
        out.append(body)
    return out


def check_hard_cap(mgmt, models, results, records, cap: Decimal, code: str, status: int):
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert ok and refused, f"{len(ok)} admitted, {len(refused)} refused: the test proves nothing"
    for st, headers, _, data in refused:
        assert_money_refusal(st, json.loads(data)["error"], headers, (status, code))
    ok_ids = {r[2] for r in ok}
    for rid in ok_ids:
        get_record(mgmt, rid)
    for rec in records:
        check_record_cost(models, rec)
    spent = sum((D(rec["cost"]) for rec in records if rec["status"] == 200), Decimal(0))
    print(f"cap {cap}: {len(ok)} admitted, {len(refused)} refused, spent {spent} ({spent / cap:.1%})")
    assert spent <= cap, f"spent {spent} over the cap {cap}"
    assert spent >= cap * Decimal("0.9"), f"only {spent} of {cap} used: reservations are too coarse"
    return ok_ids


def test_500_concurrent_requests_never_overshoot_a_key_budget(gw, mgmt, models, chat_model, made_ids):
    rates = models[chat_model]["pricing"]
    per_request = D(rates["output_per_mtok"]) * OUT / 1_000_000
    cap = (per_request * 40).quantize(Decimal("0.000001"))
    key = new_key(mgmt, max_spend=str(cap))
    results = burst(gw, key["key"], budget_bodies(chat_model, 500))
    made_ids.extend(r[2] for r in results if r[2])
    wait_settled(mgmt, key["id"])
    records = [r for r in list_usage(mgmt, key_id=key["id"])]
    check_hard_cap(mgmt, models, results, records, cap, "insufficient_quota", 402)
    k = key_state(mgmt, key["id"])
    assert D(k["reserved"]) == 0, f"a reservation leaked: {k}"
    assert D(k["spend"]) == sum((D(r["cost"]) for r in records), Decimal(0)), k


def test_500_concurrent_requests_never_overshoot_an_account_balance(gw, models, chat_model):
    rates = models[chat_model]["pricing"]
    credit = (D(rates["output_per_mtok"]) * OUT / 1_000_000 * 40).quantize(Decimal("0.000001"))
    res = gw.admin("create-account", "--email", f"burst-{uuid.uuid4().hex[:8]}@example.com", "--credit", str(credit))
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout.strip().splitlines()[-1])
    with gw.http(acct["management_key"]) as m:
        key = new_key(m)
        results = burst(gw, key["key"], budget_bodies(chat_model, 500))
        wait_settled(m, key["id"])
        records = list_usage(m)
        check_hard_cap(m, models, results, records, credit, "insufficient_quota", 402)
        assert D(key_state(m, key["id"])["reserved"]) == 0


def _statuses(results):
    return sorted(r[0] for r in results)


def test_rpm_admits_exactly_n_per_window_and_headers_count_down(gw, mgmt, chat_model, made_ids):
    key = new_key(mgmt, rpm_limit=5)
    body = {"model": chat_model, "max_tokens": 5, "messages": [{"role": "user", "content": "rpm"}]}
    results = burst(gw, key["key"], [body] * 8)
    made_ids.extend(r[2] for r in results if r[2])
    assert _statuses(results) == [200] * 5 + [429] * 3, _statuses(results)
    remaining = sorted(int(r[1]["x-ratelimit-remaining-requests"]) for r in results if r[0] == 200)
    assert remaining == [0, 1, 2, 3, 4], remaining
    for st, headers, _, data in results:
        assert headers["x-ratelimit-limit-requests"] == "5"
        if st == 429:
            err = json.loads(data)["error"]
            assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error", err
            assert "credit" not in err["message"] and "balance" not in err["message"], err
            retry = int(headers["retry-after"])
            assert 1 <= retry <= 60, headers
            # Honest: the window resets within Retry-After (reset header, Go duration).
            assert headers["x-ratelimit-reset-requests"].endswith("s"), headers


def test_tpm_counts_prompt_and_max_output(gw, mgmt, chat_model, made_ids):
    # Each request holds about 30 prompt + 250 output tokens: three fit in 1000, a fourth cannot.
    key = new_key(mgmt, tpm_limit=1000)
    body = {"model": chat_model, "max_tokens": 250,
            "messages": [{"role": "user", "content": "tpm [[sim:words=5,ttft_ms=400]]"}]}
    results = burst(gw, key["key"], [body] * 6)
    made_ids.extend(r[2] for r in results if r[2])
    assert _statuses(results) == [200] * 3 + [429] * 3, _statuses(results)
    for st, headers, _, data in results:
        assert headers["x-ratelimit-limit-tokens"] == "1000"
        if st == 429:
            assert json.loads(data)["error"]["code"] == "rate_limit_exceeded"
            assert int(headers["retry-after"]) >= 1
    # After settling, the window counts what was really used, not the reservations.
    k = key_state(mgmt, key["id"])
    used = 1000 - k["rate_limits"]["tokens"]["remaining"]
    assert 0 < used < 3 * 250, k["rate_limits"]


def test_concurrency_cap(gw, mgmt, chat_model, made_ids):
    key = new_key(mgmt, max_concurrency=2)
    body = {"model": chat_model, "max_tokens": 5,
            "messages": [{"role": "user", "content": "slow [[sim:words=5,ttft_ms=600]]"}]}
    results = burst(gw, key["key"], [body] * 5)
    made_ids.extend(r[2] for r in results if r[2])
    assert _statuses(results) == [200] * 2 + [429] * 3, _statuses(results)
    for st, headers, _, data in results:
        if st == 429:
            assert json.loads(data)["error"]["code"] == "rate_limit_exceeded"
            assert headers["retry-after"] == "1"
    # The slots came back.
    again = burst(gw, key["key"], [body] * 2)
    assert _statuses(again) == [200, 200]


def test_a_request_without_max_tokens_is_clamped_not_refused(gw, mgmt, models, chat_model, made_ids):
    rates = models[chat_model]["pricing"]
    per_token = D(rates["output_per_mtok"]) / 1_000_000
    cap = (per_token * 120).quantize(Decimal("0.0000001"))  # ~120 output tokens, minus the prompt
    key = new_key(mgmt, max_spend=str(cap))
    with gw.http(key["key"]) as c:
        r = c.post("/v1/chat/completions", json={
            "model": chat_model, "messages": [{"role": "user", "content": "write a lot [[sim:words=500]]"}]})
        assert r.status_code == 200, r.text
        made_ids.append(r.headers["x-request-id"])
        body = r.json()
        assert body["choices"][0]["finish_reason"] == "length", body
        assert 16 <= body["usage"]["completion_tokens"] < 120, body["usage"]
        assert D(body["usage"]["cost"]) <= cap
        # Now not even a minimal answer fits: refused, and nothing overspent.
        r2 = c.post("/v1/chat/completions", json={
            "model": chat_model, "messages": [{"role": "user", "content": "more [[sim:words=500]]"}]})
        made_ids.append(r2.headers["x-request-id"])
        assert r2.status_code == 402, r2.text
        assert r2.json()["error"]["code"] == "insufficient_quota"
    k = wait_settled(mgmt, key["id"])
    assert D(k["spend"]) <= cap and D(k["reserved"]) == 0, k


def test_a_client_that_disconnects_releases_its_reservation_and_is_billed(gw, mgmt, chat_model, made_ids):
    key = new_key(mgmt, max_concurrency=1, max_spend="1")
    body = {"model": chat_model, "stream": True, "max_tokens": 60,
            "messages": [{"role": "user", "content": "stream slowly [[sim:words=60,tpot_ms=20]]"}]}
    with httpx.Client(base_url=gw.root, headers={"authorization": f"Bearer {key['key']}"}, timeout=30) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            rid = r.headers["x-request-id"]
            for _ in r.iter_raw(64):
                break  # read a little, then hang up
    made_ids.append(rid)
    rec = get_record(mgmt, rid, wait=20)
    assert rec["error_code"] == "client_disconnected", rec
    assert rec["completion_tokens"] > 0 and D(rec["cost"]) > 0, rec
    k = wait_settled(mgmt, key["id"])
    assert D(k["reserved"]) == 0, k
    assert D(k["spend"]) == D(rec["cost"]), (k, rec)
    # Its concurrency slot is free again.
    with gw.http(key["key"]) as c2:
        r2 = c2.post("/v1/chat/completions",
                     json={"model": chat_model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
        made_ids.append(r2.headers["x-request-id"])
        assert r2.status_code == 200, r2.text


def test_a_used_up_daily_budget_is_a_transient_429(gw, mgmt, chat_model, made_ids):
    key = new_key(mgmt, max_spend="0.0000001", budget_period="daily")
    with gw.http(key["key"]) as c:
        r = c.post("/v1/chat/completions",
                   json={"model": chat_model, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    made_ids.append(r.headers["x-request-id"])
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded", err
    assert "credit" not in err["message"] and "balance" not in err["message"], err
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= 86_400, r.headers
    k = key_state(mgmt, key["id"])
    assert k["period"]["start"].endswith("T00:00:00Z") and k["period"]["end"].endswith("T00:00:00Z"), k


def test_relay_probe_endpoints_show_what_is_left(gw, mgmt, chat_model, made_ids):
    key = new_key(mgmt, max_spend="0.5")
    with gw.http(key["key"]) as c:
        r = c.post("/v1/chat/completions",
                   json={"model": chat_model, "max_tokens": 10, "messages": [{"role": "user", "content": "probe"}]})
        assert r.status_code == 200
        made_ids.append(r.headers["x-request-id"])
        get_record(mgmt, r.headers["x-request-id"])
        sub = c.get("/v1/dashboard/billing/subscription")
        use = c.get("/v1/dashboard/billing/usage", params={"start_date": "2026-11-01", "end_date": "2026-12-01"})
    assert sub.status_code == 200 and use.status_code == 200, (sub.text, use.text)
    # Parsed as one-api / new-api do: numbers, hard limit in USD, usage in cents.
    hard = json.loads(sub.text, parse_float=Decimal)["hard_limit_usd"]
    cents = json.loads(use.text, parse_float=Decimal)["total_usage"]
    k = wait_settled(mgmt, key["id"])
    assert Decimal(str(cents)) / 100 == D(k["spend"]), (cents, k)
    assert Decimal(str(hard)) - Decimal(str(cents)) / 100 == D(k["remaining"]), (hard, cents, k)
    assert Decimal(str(hard)) == Decimal("0.5")
