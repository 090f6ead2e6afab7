"""Promise 3 (hard caps) through the public API: a key's spend never exceeds its max_spend under
concurrency, the refusals are 402s (or, while requests in flight hold what is left, transient 429s),
and the key's reported spend equals the sum of its records."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from gateway import D, assert_money_refusal, check_record_cost, get_record, list_usage


def _hammer(gw, secret, body, threads=16, each=3):
    results = []
    lock = threading.Lock()

    def worker():
        with gw.http(secret) as c:
            for _ in range(each):
                resp = c.post("/v1/chat/completions", json=body)
                with lock:
                    results.append(resp)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return results


def test_account_balance_never_goes_negative(gw, models, chat_model):
    credit = Decimal("0.001")
    res = gw.admin("create-account", "--email", f"small-{threading.get_ident()}-{id(gw)}@example.com",
                   "--credit", str(credit))
    assert res.returncode == 0, res.stderr
    acct = json.loads(res.stdout.strip().splitlines()[-1])
    with gw.http(acct["management_key"]) as m:
        r = m.post("/v1/keys", json={"name": "no-cap"})
        assert r.status_code == 201, r.text
        body = {"model": chat_model, "max_tokens": 20,
                "messages": [{"role": "user", "content": "drain it [[sim:words=20,ttft_ms=30,tpot_ms=2]]"}]}
        results = _hammer(gw, r.json()["key"], body)
        ok = [x for x in results if x.status_code == 200]
        refused = [x for x in results if x.status_code != 200]
        assert ok and refused, f"{len(ok)} admitted, {len(refused)} refused"
        for x in refused:
            assert_money_refusal(x.status_code, x.json()["error"], x.headers, (402, "insufficient_quota"))
        for x in ok:
            get_record(m, x.headers["x-request-id"])
        records = list_usage(m)
        spent = sum((D(rec["cost"]) for rec in records), Decimal(0))
        print(f"credit {credit}: {len(ok)} admitted, {len(refused)} refused, spent {spent}")
        assert spent <= credit, f"account with {credit} USD credit spent {spent}: balance went negative"
        for rec in records:
            check_record_cost(models, rec)


def test_max_spend_is_a_hard_cap_under_concurrency(gw, mgmt, models, chat_model, made_ids):
    cap = Decimal("0.001")
    r = mgmt.post("/v1/keys", json={"name": "capped", "max_spend": str(cap)})
    assert r.status_code == 201, r.text
    key = r.json()
    body = {"model": chat_model, "max_tokens": 20,
            "messages": [{"role": "user", "content": "spend it all [[sim:words=20,ttft_ms=30,tpot_ms=2]]"}]}
    results = _hammer(gw, key["key"], body)
    ok = [x for x in results if x.status_code == 200]
    refused = [x for x in results if x.status_code != 200]
    assert ok, "no request fit under the cap; the test proves nothing"
    assert refused, f"all {len(results)} requests were admitted under a {cap} USD cap"
    for x in refused:
        assert_money_refusal(x.status_code, x.json()["error"], x.headers, (402, "insufficient_quota"))
    ok_ids = [x.headers["x-request-id"] for x in ok]
    made_ids.extend(ok_ids)
    for rid in ok_ids:
        get_record(mgmt, rid)

    records = [rec for rec in list_usage(mgmt, key_id=key["id"]) if rec["status"] == 200]
    assert sorted(rec["request_id"] for rec in records) == sorted(ok_ids)
    for rec in records:
        check_record_cost(models, rec)
    spent = sum((D(rec["cost"]) for rec in records), Decimal(0))
    assert spent <= cap, f"key spent {spent} over its max_spend {cap}"
    print(f"max_spend {cap}: {len(ok)} admitted, {len(refused)} refused, spent {spent}")
    got = mgmt.get(f"/v1/keys/{key['id']}").json()
    if "spend" in got:
        assert D(got["spend"]) == spent, (got, spent)


def test_expired_key_is_refused(gw, mgmt, chat_model):
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(microsecond=0)
    r = mgmt.post("/v1/keys", json={"name": "expired", "expires_at": past.isoformat().replace("+00:00", "Z")})
    if r.status_code == 400:
        return  # refusing to create an already-expired key is fine too
    assert r.status_code == 201, r.text
    with gw.http(r.json()["key"]) as c:
        resp = c.post("/v1/chat/completions", json={"model": chat_model, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"]["code"] in ("expired_api_key", "invalid_api_key"), resp.text


def test_bad_key_fields_are_400(mgmt):
    for bad in ({"name": "x", "max_spend": "lots"}, {"name": "x", "max_spend": "-1"},
                {"name": "x", "budget_period": "fortnightly"}, {"name": "x", "expires_at": "tomorrow"}):
        r = mgmt.post("/v1/keys", json=bad)
        assert r.status_code == 400, f"{bad} -> {r.status_code} {r.text}"
        assert r.json()["error"]["param"], r.text
