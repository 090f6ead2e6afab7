"""The OpenAPI document at `GET /openapi.json`: a valid OpenAPI 3.1 document (openapi-spec-validator)
that describes every management route, and whose response schemas match what the gateway really
answers. Every management call below is made for real and its body checked with jsonschema
against the schema the document gives for that path, method and status; response objects refuse
unknown fields, so a field added to a handler but not to the document fails here too."""

from __future__ import annotations

import copy
import time
import uuid

import httpx
import jsonschema
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from gateway import Gateway, get_record

MANAGEMENT_OPERATIONS = {
    ("post", "/v1/keys"), ("get", "/v1/keys"),
    ("get", "/v1/keys/{id}"), ("patch", "/v1/keys/{id}"), ("delete", "/v1/keys/{id}"),
    ("get", "/v1/usage"), ("get", "/v1/usage/summary"), ("get", "/v1/requests/{id}"),
    ("get", "/v1/requests/{id}/receipt"), ("get", "/v1/account"), ("get", "/v1/account/ledger"),
    ("post", "/v1/checkout/quote"), ("post", "/v1/checkout/sessions"), ("get", "/v1/checkout/sessions/{id}"),
    ("get", "/v1/referrals"), ("post", "/v1/referrals/claim"),
    ("post", "/v1/management-keys"), ("get", "/v1/management-keys"), ("delete", "/v1/management-keys/{id}"),
    ("post", "/v1/auth/signup"), ("post", "/v1/auth/login"),
    ("post", "/v1/payments/webhooks/{provider}"),
}
KEYLESS = {"/v1/auth/signup", "/v1/auth/login", "/v1/payments/webhooks/{provider}"}
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def doc(anon):
    r = anon.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


class Checker:
    """Checks a real response against the document's schema for its operation and status."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.checked: set[tuple[str, str, int]] = set()

    def _deref(self, obj: dict) -> dict:
        while "$ref" in obj:
            node = self.doc
            for part in obj["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            obj = node
        return obj

    def schema(self, method: str, path: str, status: int) -> dict:
        op = self.doc["paths"][path][method]
        responses = op["responses"]
        assert str(status) in responses, f"{method.upper()} {path}: status {status} is not documented"
        response = self._deref(responses[str(status)])
        return response["content"]["application/json"]["schema"]

    def validator(self, schema: dict) -> Draft202012Validator:
        # `#/components/...` refs resolve against this root, which embeds the document's components.
        root = {**schema, "components": self.doc["components"]}
        Draft202012Validator.check_schema(root)
        return Draft202012Validator(root)

    def __call__(self, method: str, path: str, r: httpx.Response) -> dict:
        assert r.headers.get("content-type", "").startswith("application/json"), (
            f"{method.upper()} {path} -> {r.status_code} {r.headers.get('content-type')}")
        body = r.json()
        errors = sorted(self.validator(self.schema(method, path, r.status_code)).iter_errors(body),
                        key=lambda e: list(e.absolute_path))
        assert not errors, (f"{method.upper()} {path} -> {r.status_code} does not match the document:\n"
                            + "\n".join(f"  at {list(e.absolute_path)}: {e.message}" for e in errors)
                            + f"\nbody: {body}")
        self.checked.add((method, path, r.status_code))
        return body


@pytest.fixture(scope="module")
def check(doc):
    return Checker(doc)


def signup(gw: Gateway, check, tag: str, invite_code: str | None = None) -> dict:
    body = {"email": f"oa-{tag}-{uuid.uuid4().hex[:10]}@example.com", "password": PASSWORD}
    if invite_code:
        body["invite_code"] = invite_code
    r = httpx.post(f"{gw.root}/v1/auth/signup", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return {**check("post", "/v1/auth/signup", r), "password": PASSWORD}


# ------------------------------------------------------------------------------ the document


def test_the_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)


def test_every_management_operation_is_described_with_its_security(doc):
    ops = {(m, p) for p, item in doc["paths"].items() for m in item
           if m in {"get", "post", "put", "patch", "delete"}}
    assert ops == MANAGEMENT_OPERATIONS
    schemes = doc["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values()), schemes
    for method, path in MANAGEMENT_OPERATIONS:
        op = doc["paths"][path][method]
        if path in KEYLESS:
            assert not op.get("security"), (method, path)
        else:
            assert op.get("security") and all(set(req) <= set(schemes) for req in op["security"]), (method, path)
        assert any(s.startswith("4") for s in op["responses"]), f"{method} {path}: no 4xx documented"


def test_query_parameters_are_documented(doc):
    def names(path):
        return {p["name"] for p in doc["paths"][path]["get"].get("parameters", []) if p["in"] == "query"}
    assert {"key_id", "model", "status", "from", "to", "after", "limit", "format"} <= names("/v1/usage")
    assert "group_by" in names("/v1/usage/summary")
    assert names("/v1/account/ledger") == {"after", "limit"}


def test_the_checker_refuses_what_the_schemas_do_not_allow(check):
    """The schemas are strict: an extra field, a missing field, a float for money all fail."""
    good = {"object": "account", "id": "acct_x", "email": "a@example.com", "balance": "1.5", "spend": "0",
            "reserved": "0", "invite_code": "ABCD", "referred_by": None, "created_at": "2026-11-25T00:00:00Z"}
    v = check.validator(check.schema("get", "/v1/account", 200))
    assert v.is_valid(good)
    for bad in ({**good, "surprise": 1}, {k: x for k, x in good.items() if k != "email"},
                {**good, "balance": 1.5}, {**good, "created_at": "yesterday"}, {**good, "referred_by": 3}):
        assert not v.is_valid(bad), bad


# ------------------------------------------------------------------------- real responses


def test_account_keys_usage_and_errors_match(gw, mgmt, http, anon, chat_model, made_ids, check):
    check("get", "/v1/account", mgmt.get("/v1/account"))
    ledger = check("get", "/v1/account/ledger", mgmt.get("/v1/account/ledger", params={"limit": 1}))
    if ledger["has_more"]:
        assert isinstance(ledger["next_cursor"], int)
        check("get", "/v1/account/ledger",
              mgmt.get("/v1/account/ledger", params={"after": ledger["next_cursor"], "limit": 1}))

    # Keys: one with every setting, one with none.
    created = mgmt.post("/v1/keys", json={
        "name": "openapi", "max_spend": "3.50", "budget_period": "daily", "rpm_limit": 60, "tpm_limit": 100000,
        "max_concurrency": 4, "models": [chat_model], "expires_at": "2031-01-01T00:00:00Z",
        "metadata": {"team": "docs", "n": 1}})
    assert created.status_code == 201, created.text
    full = check("post", "/v1/keys", created)
    bare_r = mgmt.post("/v1/keys")
    assert bare_r.status_code == 201, bare_r.text
    bare = check("post", "/v1/keys", bare_r)
    for key in (full, bare):
        check("get", "/v1/keys/{id}", mgmt.get(f"/v1/keys/{key['id']}"))
    patched = mgmt.patch(f"/v1/keys/{full['id']}", json={"budget_period": "monthly", "max_spend": None})
    assert patched.status_code == 200, patched.text
    check("patch", "/v1/keys/{id}", patched)

    # A request so that usage, summary and trace have something to show.
    with gw.http(full["key"]) as c:
        r = c.post("/v1/chat/completions", json={"model": chat_model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    made_ids.append(r.headers["x-request-id"])
    get_record(mgmt, r.headers["x-request-id"])
    check("get", "/v1/requests/{id}", mgmt.get(f"/v1/requests/{r.headers['x-request-id']}"))
    check("get", "/v1/requests/{id}/receipt", mgmt.get(f"/v1/requests/{r.headers['x-request-id']}/receipt"))
    check("get", "/v1/keys", mgmt.get("/v1/keys"))
    page = check("get", "/v1/usage", mgmt.get("/v1/usage", params={"limit": 1}))
    assert page["data"] and (page["next_cursor"] is None) == (not page["has_more"])
    check("get", "/v1/usage", mgmt.get("/v1/usage", params={"key_id": full["id"], "status": "success"}))
    for group in ("key", "model", "day"):
        s = check("get", "/v1/usage/summary", mgmt.get("/v1/usage/summary", params={"group_by": group}))
        assert s["group_by"] == group and s["data"]

    revoked = mgmt.delete(f"/v1/keys/{bare['id']}")
    assert revoked.status_code == 200, revoked.text
    assert check("delete", "/v1/keys/{id}", revoked)["revoked_at"]
    check("get", "/v1/keys/{id}", mgmt.get(f"/v1/keys/{bare['id']}"))

    # Errors, in the shared shape.
    check("get", "/v1/keys/{id}", mgmt.get("/v1/keys/key_nope"))
    check("get", "/v1/requests/{id}", mgmt.get("/v1/requests/req_nope"))
    check("get", "/v1/requests/{id}/receipt", mgmt.get("/v1/requests/req_nope/receipt"))
    check("get", "/v1/account", anon.get("/v1/account"))
    check("get", "/v1/account", http.get("/v1/account"))
    check("post", "/v1/keys", mgmt.post("/v1/keys", json={"bogus": 1}))
    check("patch", "/v1/keys/{id}", mgmt.patch(f"/v1/keys/{full['id']}", json={"budget_period": "hourly"}))
    check("get", "/v1/usage", mgmt.get("/v1/usage", params={"limit": 0}))
    check("get", "/v1/usage/summary", mgmt.get("/v1/usage/summary", params={"group_by": "week"}))
    check("get", "/v1/account/ledger", mgmt.get("/v1/account/ledger", params={"nope": 1}))


def test_auth_management_keys_checkout_referrals_and_webhooks_match(gw, check):
    inviter = signup(gw, check, "inviter")
    assert inviter["referred_by"] is None
    login = httpx.post(f"{gw.root}/v1/auth/login", json={"email": inviter["email"], "password": PASSWORD}, timeout=30)
    assert login.status_code == 200, login.text
    check("post", "/v1/auth/login", login)
    wrong = httpx.post(f"{gw.root}/v1/auth/login", json={"email": inviter["email"], "password": "wrong password!"},
                       timeout=30)
    check("post", "/v1/auth/login", wrong)
    taken = httpx.post(f"{gw.root}/v1/auth/signup", json={"email": inviter["email"], "password": PASSWORD}, timeout=30)
    check("post", "/v1/auth/signup", taken)
    check("post", "/v1/auth/signup", httpx.post(f"{gw.root}/v1/auth/signup", json={"email": "x"}, timeout=30))

    invitee = signup(gw, check, "invitee", invite_code=inviter["invite_code"])
    assert invitee["referred_by"] == inviter["account_id"]
    late = signup(gw, check, "late")

    with gw.http(inviter["management_key"]) as a, gw.http(invitee["management_key"]) as b, \
            gw.http(late["management_key"]) as c:
        # Management keys.
        named = a.post("/v1/management-keys", json={"name": "ci"})
        assert named.status_code == 201, named.text
        named = check("post", "/v1/management-keys", named)
        unnamed = a.post("/v1/management-keys")
        assert unnamed.status_code == 201, unnamed.text
        unnamed = check("post", "/v1/management-keys", unnamed)
        gone = a.delete(f"/v1/management-keys/{unnamed['id']}")
        assert gone.status_code == 200, gone.text
        check("delete", "/v1/management-keys/{id}", gone)
        check("delete", "/v1/management-keys/{id}", a.delete("/v1/management-keys/mkey_nope"))
        listing = check("get", "/v1/management-keys", a.get("/v1/management-keys"))
        assert {named["id"], unnamed["id"]} <= {k["id"] for k in listing["data"]}
        check("post", "/v1/management-keys", a.post("/v1/management-keys", json={"name": "x" * 201}))

        # Referral claimed after signing up without a code.
        claimed = c.post("/v1/referrals/claim", json={"invite_code": inviter["invite_code"]})
        assert claimed.status_code == 200, claimed.text
        check("post", "/v1/referrals/claim", claimed)
        check("post", "/v1/referrals/claim", c.post("/v1/referrals/claim", json={"invite_code": inviter["invite_code"]}))

        # Checkout: quotes, a session, paid at the simulator, and its webhook delivered by us.
        for amount, currency, channel in (("25.55", "EUR", "card"), ("20", "JPY", "card")):
            q = b.post("/v1/checkout/quote", json={"amount_usd": amount, "currency": currency, "channel": channel})
            assert q.status_code == 200, q.text
            check("post", "/v1/checkout/quote", q)
        check("post", "/v1/checkout/quote", b.post("/v1/checkout/quote",
                                                   json={"amount_usd": "10", "currency": "XXX", "channel": "card"}))
        s = b.post("/v1/checkout/sessions", json={"amount_usd": "10", "currency": "USD", "channel": "card"})
        assert s.status_code == 201, s.text
        session = check("post", "/v1/checkout/sessions", s)
        assert session["status"] == "open"
        check("get", "/v1/checkout/sessions/{id}", b.get(f"/v1/checkout/sessions/{session['id']}"))
        check("get", "/v1/checkout/sessions/{id}", b.get("/v1/checkout/sessions/cs_nope"))

        paid = httpx.post(session["payment_url"] + "?deliver=false", timeout=30)
        assert paid.status_code == 200, paid.text
        event = paid.json()["event"]
        url = f"{gw.root}/v1/payments/webhooks/simulated"
        headers = {"content-type": "application/json", "x-router-one-signature": event["signature"]}
        body = event["body"].encode() if isinstance(event["body"], str) else event["body"]
        first = httpx.post(url, content=body, headers=headers, timeout=30)
        assert first.status_code == 200, first.text
        assert check("post", "/v1/payments/webhooks/{provider}", first)["outcome"] == "credited"
        again = httpx.post(url, content=body, headers=headers, timeout=30)
        assert check("post", "/v1/payments/webhooks/{provider}", again)["outcome"] == "duplicate"
        forged = httpx.post(url, content=body, headers={**headers, "x-router-one-signature": "t=1,v1=00"}, timeout=30)
        assert forged.status_code == 400, forged.text
        check("post", "/v1/payments/webhooks/{provider}", forged)
        check("post", "/v1/payments/webhooks/{provider}",
              httpx.post(f"{gw.root}/v1/payments/webhooks/nope", content=b"{}", timeout=30))

        deadline = time.monotonic() + 5
        while True:
            got = check("get", "/v1/checkout/sessions/{id}", b.get(f"/v1/checkout/sessions/{session['id']}"))
            if got["status"] == "paid" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert got["status"] == "paid" and got["payment_id"], got

        # The top-up and the commission on the ledgers and referrals.
        check("get", "/v1/account", b.get("/v1/account"))
        entries = check("get", "/v1/account/ledger", b.get("/v1/account/ledger"))["data"]
        assert any(e["kind"] == "topup" for e in entries), entries
        check("get", "/v1/account", a.get("/v1/account"))
        a_entries = check("get", "/v1/account/ledger", a.get("/v1/account/ledger"))["data"]
        referrals = check("get", "/v1/referrals", a.get("/v1/referrals"))
        assert invitee["account_id"] in {r["account_id"] for r in referrals["referred"]}, referrals
        if any(e["kind"] == "commission" for e in a_entries):
            assert any(r["payments"] >= 1 for r in referrals["referred"]), referrals
        check("get", "/v1/referrals", b.get("/v1/referrals"))


def test_every_schema_with_a_real_response_was_checked(check):
    """The tests above reached every operation's success response (run the module as a whole)."""
    if len(check.checked) < 5:
        pytest.skip("run with the tests above")
    ok = {(m, p) for m, p, s in check.checked if s < 300}
    assert ok >= MANAGEMENT_OPERATIONS, sorted(MANAGEMENT_OPERATIONS - ok)
    assert any(s >= 400 for _, _, s in check.checked)
