"""Management API: key CRUD and revocation, usage listing, pagination, export, summary, trace."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from gateway import D, get_record, list_usage


def _create_key(mgmt, **fields):
    r = mgmt.post("/v1/keys", json=fields)
    assert r.status_code == 201, f"POST /v1/keys -> {r.status_code} {r.text}"
    return r.json()


def test_key_crud_and_revocation(gw, mgmt, chat_model, made_ids):
    expires = (datetime.now(timezone.utc) + timedelta(days=30)).replace(microsecond=0)
    created = _create_key(
        mgmt, name="customer-42", max_spend="5.00", budget_period="monthly", rpm_limit=600,
        tpm_limit=1_000_000, max_concurrency=8, models=[chat_model],
        expires_at=expires.isoformat().replace("+00:00", "Z"), metadata={"customer_id": "cus_42"})
    secret = created["key"]
    kid = created["id"]
    assert secret.startswith("sk-rk-"), created
    assert created["name"] == "customer-42"
    assert D(created["max_spend"]) == D("5.00"), created
    assert created["budget_period"] == "monthly"
    assert created["rpm_limit"] == 600 and created["tpm_limit"] == 1_000_000 and created["max_concurrency"] == 8
    assert created["models"] == [chat_model]
    assert created["metadata"] == {"customer_id": "cus_42"}

    # The secret is shown once: never again in get or list.
    got = mgmt.get(f"/v1/keys/{kid}")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == kid
    assert secret not in got.text
    listing = mgmt.get("/v1/keys")
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list"
    assert kid in [k["id"] for k in body["data"]]
    assert secret not in listing.text

    patched = mgmt.patch(f"/v1/keys/{kid}", json={"name": "customer-42-renamed", "rpm_limit": 1200})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "customer-42-renamed" and patched.json()["rpm_limit"] == 1200
    assert mgmt.get(f"/v1/keys/{kid}").json()["name"] == "customer-42-renamed"

    with gw.http(secret) as c:
        r = c.post("/v1/chat/completions", json={"model": chat_model, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        made_ids.append(r.headers["x-request-id"])
        rec = get_record(mgmt, r.headers["x-request-id"])
        assert rec["key_id"] == kid, rec

        deleted = mgmt.delete(f"/v1/keys/{kid}")
        assert deleted.status_code in (200, 204), deleted.text

        r = c.post("/v1/chat/completions", json={"model": chat_model, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_api_key", r.text


def test_key_model_allow_list(gw, mgmt, models, chat_model):
    """A model the key may not use answers like an unknown one (relays disable a channel on a
    403 `permission_error`), and `/v1/models` lists only the key's models (what a relay's "fetch
    models" fills its channel with)."""
    other = next(m for m in models if m != chat_model and "embed" not in m)
    created = _create_key(mgmt, name="only-one-model", models=[chat_model])
    with gw.http(created["key"]) as c:
        r = c.post("/v1/chat/completions", json={"model": other, "messages": [{"role": "user", "content": "hi"}]})
        listed = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert r.status_code == 404, f"a key limited to {chat_model} asked for {other}: {r.status_code} {r.text}"
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", "model"), r.text
    assert not any(w in error["message"].lower() for w in ("permission", "credit", "balance", "quota")), r.text
    assert listed == [chat_model], listed
    # A key without an allow-list sees every model.
    with gw.http(gw.api_key) as c:
        assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == sorted(models)
    mgmt.delete(f"/v1/keys/{created['id']}")


def test_other_accounts_keys_are_invisible(gw, mgmt):
    res = gw.admin("create-account", "--email", f"other-{uuid.uuid4().hex[:8]}@example.com", "--credit", "1")
    assert res.returncode == 0, res.stderr
    other = json.loads(res.stdout.strip().splitlines()[-1])
    with gw.http(other["management_key"]) as m:
        theirs = _create_key(m, name="theirs")
    assert mgmt.get(f"/v1/keys/{theirs['id']}").status_code == 404
    assert mgmt.delete(f"/v1/keys/{theirs['id']}").status_code == 404
    assert theirs["id"] not in [k["id"] for k in mgmt.get("/v1/keys").json()["data"]]


def test_usage_pagination_filters_and_export(gw, mgmt, chat_model, made_ids):
    # A key of our own, so the expected set is exactly known.
    created = _create_key(mgmt, name=f"pager-{uuid.uuid4().hex[:6]}")
    kid = created["id"]
    ids = []
    with gw.http(created["key"]) as c:
        for i in range(7):
            r = c.post("/v1/chat/completions",
                       json={"model": chat_model, "messages": [{"role": "user", "content": f"page {i}"}]})
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
    made_ids.extend(ids)
    for rid in ids:
        get_record(mgmt, rid)

    pages = []
    after = None
    while True:
        params = {"key_id": kid, "limit": 3}
        if after:
            params["after"] = after
        r = mgmt.get("/v1/usage", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list"
        assert len(body["data"]) <= 3
        pages.append(body["data"])
        if not body["has_more"]:
            break
        after = body["next_cursor"]
        assert after
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1], [len(p) for p in pages]
    seen = [rec["request_id"] for p in pages for rec in p]
    assert sorted(seen) == sorted(ids), "pagination lost or duplicated records"
    assert all(rec["key_id"] == kid for p in pages for rec in p)

    # Filters.
    by_model = list_usage(mgmt, key_id=kid, model=chat_model)
    assert sorted(r["request_id"] for r in by_model) == sorted(ids)
    assert list_usage(mgmt, key_id=kid, model="no-such-model") == []
    status = pages[0][0]["status"]
    by_status = list_usage(mgmt, key_id=kid, status=status)
    assert sorted(r["request_id"] for r in by_status) == sorted(ids)
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    past = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert list_usage(mgmt, key_id=kid, **{"from": future}) == []
    assert len(list_usage(mgmt, key_id=kid, **{"from": past, "to": future})) == 7
    for rec in by_model:
        datetime.fromisoformat(rec["created_at"].replace("Z", "+00:00"))
        for field in ("request_id", "key_id", "created_at", "endpoint", "requested_model", "served_model",
                      "provider", "prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens",
                      "cost", "latency_us", "upstream_sent_us", "ttft_us", "status", "error_code", "streamed"):
            assert field in rec, f"usage record lacks {field}: {rec}"
        assert isinstance(rec["cost"], str)

    # JSON Lines export.
    r = mgmt.get("/v1/usage", params={"key_id": kid, "format": "jsonl", "limit": 100})
    assert r.status_code == 200, r.text
    lines = [json.loads(ln) for ln in r.text.splitlines() if ln.strip()]
    assert sorted(x["request_id"] for x in lines) == sorted(ids)
    json_costs = {x["request_id"]: D(x["cost"]) for x in by_model}
    assert all(D(x["cost"]) == json_costs[x["request_id"]] for x in lines)

    # CSV export.
    r = mgmt.get("/v1/usage", params={"key_id": kid, "format": "csv", "limit": 100})
    assert r.status_code == 200, r.text
    assert "csv" in r.headers.get("content-type", ""), r.headers
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["request_id"] for row in rows) == sorted(ids)
    assert all(D(row["cost"]) == json_costs[row["request_id"]] for row in rows)


def test_usage_summary(mgmt, chat_model):
    for group in ("key", "model", "day"):
        r = mgmt.get("/v1/usage/summary", params={"group_by": group})
        assert r.status_code == 200, f"group_by={group}: {r.status_code} {r.text}"
        body = r.json()
        rows = body.get("data", body)
        assert isinstance(rows, list) and rows, body
    rows = mgmt.get("/v1/usage/summary", params={"group_by": "model"}).json()
    rows = rows.get("data", rows)
    assert any(chat_model in json.dumps(row) for row in rows), rows
    bad = mgmt.get("/v1/usage/summary", params={"group_by": "nonsense"})
    assert bad.status_code == 400, bad.text


def test_request_trace(mgmt, http, chat_model, made_ids):
    r = http.post("/v1/chat/completions",
                  json={"model": chat_model, "stream": True, "messages": [{"role": "user", "content": "trace me"}]})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    made_ids.append(rid)
    get_record(mgmt, rid)
    t = mgmt.get(f"/v1/requests/{rid}")
    assert t.status_code == 200, t.text
    body = t.json()
    assert body["record"]["request_id"] == rid
    assert body["record"]["streamed"] is True
    assert "timeline" in body
    assert mgmt.get("/v1/requests/req_does_not_exist").status_code == 404


def test_bad_usage_queries(mgmt):
    assert mgmt.get("/v1/usage", params={"format": "xml"}).status_code == 400
    assert mgmt.get("/v1/usage", params={"from": "yesterday"}).status_code == 400
    r = mgmt.get("/v1/usage", params={"limit": "lots"})
    assert r.status_code == 400, r.text


def test_management_needs_its_key(anon):
    r = anon.get("/v1/keys")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    assert anon.get("/v1/usage").status_code == 401
