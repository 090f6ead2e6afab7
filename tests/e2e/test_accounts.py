"""Accounts, the prepaid ledger, top-ups and referrals (docs/accounts-and-billing.md), through real
HTTP against the real binary: sign-up / login / management keys, checkout sessions paid at the
in-process simulated payment provider, signed webhooks (replayed, forged, stale, tampered),
refunds and chargebacks with commission reversal, referral refusals, account isolation, and the
operator CLI crediting a running gateway.

One fresh demo gateway for the module; every test signs up its own accounts with unique emails.
All money is compared as Decimal, never float."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway import UNIT, D, Gateway, get_record, log_path, model_pricing, pick_chat_model

#: The demo's payment provider (the in-process simulator) and its secrets, random per run: set
#: from demo.json when the module's gateway starts.
PROVIDER = "simulated"
SIM_API_KEY = ""
WEBHOOK_SECRET = b""
SIG_HEADER = "x-router-one-signature"
PASSWORD = "correct horse battery"
COMMISSION = Decimal("5")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def agw(tmp_path_factory):
    """A gateway of this module's own: these tests create many accounts and payments."""
    base = tmp_path_factory.mktemp("accounts")
    g = Gateway(base / "data", log_path=log_path("accounts-gateway", base))
    try:
        import conftest  # noqa: PLC0415  (so a failing test shows this gateway's log too)
        conftest._GATEWAYS.append(g)
    except Exception:  # pragma: no cover
        pass
    g.start()
    global SIM_API_KEY, WEBHOOK_SECRET
    SIM_API_KEY = g.demo["payment_api_key"]
    WEBHOOK_SECRET = g.demo["payment_webhook_secret"].encode()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def chat_model(agw):
    with agw.http(agw.api_key) as c:
        return pick_chat_model(model_pricing(c))


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(scope="module", autouse=True)
def _close_clients():
    yield
    for c in _CLIENTS:
        c.close()
    _CLIENTS.clear()


# ----------------------------------------------------------------------------- helpers


@dataclass
class Acct:
    id: str
    email: str
    key: str
    invite_code: str
    http: httpx.Client
    signup: dict = field(repr=False)


def email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


def client(gw: Gateway, key: str | None) -> httpx.Client:
    c = gw.http(key, timeout=30)
    _CLIENTS.append(c)
    return c


def raw_signup(gw: Gateway, body: dict) -> httpx.Response:
    return httpx.post(f"{gw.root}/v1/auth/signup", json=body, timeout=30)


def signup(gw: Gateway, tag: str = "user", *, addr: str | None = None, invite_code: str | None = None) -> Acct:
    body = {"email": addr or email(tag), "password": PASSWORD}
    if invite_code is not None:
        body["invite_code"] = invite_code
    r = raw_signup(gw, body)
    assert r.status_code == 201, f"signup {body['email']} -> {r.status_code} {r.text}"
    s = r.json()
    assert s["object"] == "signup", s
    assert s["management_key"].startswith("sk-rm-"), s
    return Acct(s["account_id"], s["email"], s["management_key"], s["invite_code"],
                client(gw, s["management_key"]), s)


def err(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]


def assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = "<any>") -> dict:
    assert r.status_code == status, f"expected {status} {code}, got {r.status_code} {r.text}"
    e = err(r)
    if code is not None:
        assert e["code"] == code, e
    if param != "<any>":
        assert e["param"] == param, e
    return e


def account(a: Acct) -> dict:
    r = a.http.get("/v1/account")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "account" and body["id"] == a.id, body
    for money in ("balance", "spend", "reserved"):
        assert isinstance(body[money], str), f"{money} must be a decimal string: {body}"
    return body


def balance(a: Acct) -> Decimal:
    return D(account(a)["balance"])


def ledger(a: Acct, page: int = 100) -> list[dict]:
    out: list[dict] = []
    after = None
    for _ in range(1000):
        params = {"limit": page}
        if after is not None:
            params["after"] = after
        r = a.http.get("/v1/account/ledger", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["data"])
        for e in body["data"]:
            assert e["object"] == "ledger_entry" and isinstance(e["amount"], str), e
        if not body["has_more"]:
            ids = [e["id"] for e in out]
            assert ids == sorted(ids) and len(set(ids)) == len(ids), f"ledger not oldest first: {ids}"
            return out
        after = body["next_cursor"]
        assert after is not None, body
    raise AssertionError("ledger pagination does not end")


def entries(a: Acct, kind: str) -> list[dict]:
    return [e for e in ledger(a) if e["kind"] == kind]


def check_books(a: Acct) -> Decimal:
    """balance == Σ ledger, and never negative; returns the balance."""
    acct = account(a)
    total = sum((D(e["amount"]) for e in ledger(a)), Decimal(0))
    bal = D(acct["balance"])
    assert bal == total, f"{a.email}: balance {bal} != Σ ledger {total}"
    assert bal >= 0, f"{a.email}: negative balance {bal}"
    return bal


def commission_of(token_line: Decimal) -> Decimal:
    return (token_line * COMMISSION / 100).quantize(UNIT, rounding=ROUND_DOWN)


def quote(a: Acct, amount: str, currency: str, channel: str) -> dict:
    r = a.http.post("/v1/checkout/quote", json={"amount_usd": amount, "currency": currency, "channel": channel})
    assert r.status_code == 200, r.text
    return r.json()


QUOTE_FIELDS = ("token_line_usd", "currency", "channel", "minor_units", "fx_rate", "converted",
                "fx_cost", "channel_fee", "total")


def open_session(a: Acct, amount: str, currency: str = "USD", channel: str = "card") -> dict:
    r = a.http.post("/v1/checkout/sessions", json={"amount_usd": amount, "currency": currency, "channel": channel})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["object"] == "checkout.session" and s["id"].startswith("cs_"), s
    assert s["status"] == "open" and s["payment_id"] is None and s["provider"] == PROVIDER, s
    assert "/payments/pay/sps_" in s["payment_url"], s
    return s


def sim_base(session: dict) -> str:
    u = urlsplit(session["payment_url"])
    return f"{u.scheme}://{u.netloc}"


def pay(session: dict, deliver: bool = True) -> dict:
    """The payer pays at the simulator; returns {payment_id, event: {body, signature}, delivery}."""
    url = session["payment_url"] + ("" if deliver else "?deliver=false")
    r = httpx.post(url, timeout=30)
    assert r.status_code == 200, f"POST {url} -> {r.status_code} {r.text}"
    body = r.json()
    assert body["payment_id"].startswith("pay_"), body
    if not deliver:
        assert body["delivery"] is None, body
    return body


def delivered_outcome(sim_answer: dict) -> str:
    d = sim_answer["delivery"]
    assert d is not None and d["status"] == 200, f"webhook delivery failed: {d}"
    assert d["body"]["received"] is True, d
    return d["body"]["outcome"]


def topup(a: Acct, amount: str, currency: str = "USD", channel: str = "card") -> tuple[dict, str]:
    """A paid top-up, webhook delivered by the simulator; returns (session, payment id)."""
    s = open_session(a, amount, currency, channel)
    paid = pay(s)
    assert delivered_outcome(paid) == "credited", paid
    return s, paid["payment_id"]


def sim_reverse(session: dict, payment_id: str, action: str, deliver: bool = True) -> dict:
    url = f"{sim_base(session)}/payments/v1/payments/{payment_id}/{action}"
    if not deliver:
        url += "?deliver=false"
    r = httpx.post(url, headers={"authorization": f"Bearer {SIM_API_KEY}"}, timeout=30)
    assert r.status_code == 200, f"POST {url} -> {r.status_code} {r.text}"
    return r.json()


def sign(body: bytes, ts: int | None = None, secret: bytes | None = None) -> str:
    ts = int(time.time()) if ts is None else ts
    secret = WEBHOOK_SECRET if secret is None else secret
    mac = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def post_webhook(gw: Gateway, body: bytes | str, signature: str | None, provider: str = PROVIDER) -> httpx.Response:
    if isinstance(body, str):
        body = body.encode()
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers[SIG_HEADER] = signature
    return httpx.post(f"{gw.root}/v1/payments/webhooks/{provider}", content=body, headers=headers, timeout=30)


def session_status(a: Acct, sid: str) -> dict:
    r = a.http.get(f"/v1/checkout/sessions/{sid}")
    assert r.status_code == 200, r.text
    return r.json()


def referrals(a: Acct) -> dict:
    r = a.http.get("/v1/referrals")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "referrals", body
    return body


def new_inference_key(a: Acct, name: str = "k") -> dict:
    r = a.http.post("/v1/keys", json={"name": name})
    assert r.status_code == 201, r.text
    k = r.json()
    assert k["key"].startswith("sk-rk-"), k
    return k


def chat(gw: Gateway, secret: str, model: str, text: str = "hello there", max_tokens: int = 16) -> httpx.Response:
    with gw.http(secret) as c:
        return c.post("/v1/chat/completions", json={
            "model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]})


def snapshot(a: Acct) -> tuple[Decimal, list[tuple]]:
    return balance(a), [(e["id"], e["kind"], e["amount"], e["reference"]) for e in ledger(a)]


# ----------------------------------------------------------------------------- 1. acceptance flow


def test_acceptance_referral_topup_commission(agw):
    a = signup(agw, "inviter")
    assert a.signup["referred_by"] is None
    ref = referrals(a)
    assert ref["code"] == a.invite_code, ref
    assert ref["commission_percent"] == "5", ref
    assert ref["referred"] == [] and D(ref["commission_total"]) == 0, ref
    link = urlsplit(ref["link"])
    assert ref["link"].startswith(f"{agw.root}/signup?"), ref
    code_from_link = parse_qs(link.query)["invite"][0]
    assert code_from_link == a.invite_code

    b = signup(agw, "invitee", invite_code=code_from_link)
    assert b.signup["referred_by"] == a.id, b.signup
    assert account(b)["referred_by"] == a.id
    assert balance(b) == 0 and ledger(b) == []

    expected_b = Decimal(0)
    expected_a = Decimal(0)
    payments = []
    for amount, currency, channel in [("25.50", "USD", "card"), ("12.34", "CNY", "alipay")]:
        q = quote(b, amount, currency, channel)
        assert D(q["token_line_usd"]) == D(amount), q
        s = open_session(b, amount, currency, channel)
        for f in QUOTE_FIELDS:
            assert s["quote"][f] == q[f], (f, s["quote"], q)

        # The simulator's pay page names the session and the amount to pay (the quote's total).
        page = httpx.get(s["payment_url"], timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text
        assert s["id"] in page.text and q["total"] in page.text and currency in page.text, page.text

        before_a = balance(a)
        paid = pay(s)
        pid = paid["payment_id"]
        assert delivered_outcome(paid) == "credited", paid
        ev = json.loads(paid["event"]["body"])
        assert ev["type"] == "payment.succeeded" and ev["data"]["payment_id"] == pid, ev
        assert ev["data"]["session_id"] == s["id"] and ev["data"]["currency"] == currency, ev
        assert D(ev["data"]["amount"]) == D(q["total"]), (ev, q)

        token_line = D(q["token_line_usd"])
        expected_b += token_line
        assert balance(b) == expected_b, f"B's balance is not exactly the token lines {expected_b}"
        topups = [e for e in ledger(b) if e["reference"] == pid]
        assert [(e["kind"], D(e["amount"])) for e in topups] == [("topup", token_line)], topups

        commission = commission_of(token_line)
        expected_a += commission
        comm = [e for e in ledger(a) if e["reference"] == pid]
        assert [(e["kind"], D(e["amount"])) for e in comm] == [("commission", commission)], comm
        assert balance(a) == before_a + commission

        st = session_status(b, s["id"])
        assert st["status"] == "paid" and st["payment_id"] == pid, st
        payments.append(pid)

    # 5 % of the token line, never of the total paid (FX, fees): 25.50 -> 1.275, 12.34 -> 0.617.
    assert expected_a == Decimal("1.892"), expected_a
    assert balance(a) == expected_a
    # Small pages: the cursor gives the same entries, oldest first.
    for acct in (a, b):
        assert ledger(acct, page=1) == ledger(acct)
    assert [e["kind"] for e in ledger(b)] == ["topup", "topup"]
    assert [e["kind"] for e in ledger(a)] == ["commission", "commission"]

    ref = referrals(a)
    assert len(ref["referred"]) == 1, ref
    r0 = ref["referred"][0]
    assert r0["account_id"] == b.id, r0
    assert r0["email"] != b.email and "***" in r0["email"], r0
    assert r0["email"].endswith("@example.com") and b.email.split("@")[0] not in r0["email"], r0
    assert r0["payments"] == 2, r0
    assert D(r0["commission"]) == expected_a and D(ref["commission_total"]) == expected_a, ref
    # B was invited by A, but invited nobody.
    assert referrals(b)["referred"] == []

    # A session is paid once: the simulator refuses a second payment of the same session.
    again = httpx.post(s["payment_url"], timeout=30)
    assert again.status_code == 409, again.text
    check_books(a)
    check_books(b)


# ----------------------------------------------------------------------------- 2. webhook replay / forgery


def test_webhook_replay_forgery_and_staleness(agw):
    a = signup(agw, "inv2")
    b = signup(agw, "payer2", invite_code=a.invite_code)
    s = open_session(b, "20")
    paid = pay(s, deliver=False)
    pid = paid["payment_id"]
    body = paid["event"]["body"].encode()
    sig = paid["event"]["signature"]
    assert sig.startswith("t=") and ",v1=" in sig, sig
    # Our own signing agrees with the simulator's, byte for byte.
    ts = int(sig.split(",")[0][2:])
    assert sign(body, ts) == sig

    # Refused ones first: nothing may be credited by any of them.
    hexpart = sig.split("v1=")[1]
    flipped = sig.split("v1=")[0] + "v1=" + ("0" if hexpart[0] != "0" else "1") + hexpart[1:]
    tampered = bytearray(body)
    i = body.index(b'"id"') + 7  # a character inside the event id
    tampered[i] = ord("a") if tampered[i] != ord("a") else ord("b")
    now = int(time.time())
    refused = [
        ("flipped hex char", body, flipped, 400, "invalid_signature"),
        ("tampered body byte", bytes(tampered), sig, 400, "invalid_signature"),
        ("no signature", body, None, 400, "invalid_signature"),
        ("wrong secret", body, sign(body, now, b"whsec_not_the_secret"), 400, "invalid_signature"),
        ("stale (10 min old)", body, sign(body, now - 600), 400, "invalid_signature"),
        ("from the future (10 min)", body, sign(body, now + 600), 400, "invalid_signature"),
    ]
    for what, bdy, header, status, code in refused:
        r = post_webhook(agw, bdy, header)
        assert_error(r, status, code)
        assert "received" not in r.text, (what, r.text)
    r = post_webhook(agw, body, sig, provider="nope")
    assert_error(r, 404, "not_found")

    assert balance(b) == 0 and ledger(b) == [], "a refused webhook credited B"
    assert balance(a) == 0 and ledger(a) == [], "a refused webhook credited A's commission"
    assert session_status(b, s["id"])["status"] == "open"

    # The authentic one: credited once, then every replay is a duplicate.
    r = post_webhook(agw, body, sig)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "outcome": "credited"}
    snap_b, snap_a = snapshot(b), snapshot(a)
    assert snap_b[0] == Decimal("20") and snap_a[0] == Decimal("1")
    for header in (sig, sign(body)):  # the exact replay, and a retry signed later
        r = post_webhook(agw, body, header)
        assert r.status_code == 200, r.text
        assert r.json() == {"received": True, "outcome": "duplicate"}
    assert snapshot(b) == snap_b and snapshot(a) == snap_a, "a replayed webhook changed a balance"
    st = session_status(b, s["id"])
    assert st["status"] == "paid" and st["payment_id"] == pid, st
    assert entries(b, "topup")[0]["reference"] == pid
    check_books(a)
    check_books(b)


# ----------------------------------------------------------------------------- 3. refunds, chargebacks


def test_refund_and_chargeback_reverse_credit_and_commission(agw):
    a = signup(agw, "inv3")
    b = signup(agw, "payer3", invite_code=a.invite_code)
    s1, p1 = topup(b, "40")
    s2, p2 = topup(b, "15", "EUR", "card")
    assert balance(b) == Decimal("55") and balance(a) == Decimal("2.75")

    refunded = sim_reverse(s1, p1, "refund")
    assert delivered_outcome(refunded) == "reversed", refunded
    ev = json.loads(refunded["event"]["body"])
    assert ev["type"] == "payment.refunded" and ev["data"]["payment_id"] == p1, ev
    assert [(e["kind"], D(e["amount"])) for e in ledger(b) if e["reference"] == p1] == [
        ("topup", Decimal("40")), ("refund", Decimal("-40"))]
    assert [(e["kind"], D(e["amount"])) for e in ledger(a) if e["reference"] == p1] == [
        ("commission", Decimal("2")), ("commission_reversal", Decimal("-2"))]
    assert balance(b) == Decimal("15") and balance(a) == Decimal("0.75")
    assert session_status(b, s1["id"])["status"] == "refunded"

    snap_b, snap_a = snapshot(b), snapshot(a)
    again = sim_reverse(s1, p1, "refund")
    assert delivered_outcome(again) == "already_reversed", again
    assert again["event"]["body"] == refunded["event"]["body"]
    assert snapshot(b) == snap_b and snapshot(a) == snap_a

    cb = sim_reverse(s2, p2, "chargeback")
    assert delivered_outcome(cb) == "reversed", cb
    assert [(e["kind"], D(e["amount"])) for e in ledger(b) if e["reference"] == p2] == [
        ("topup", Decimal("15")), ("chargeback", Decimal("-15"))]
    assert [(e["kind"], D(e["amount"])) for e in ledger(a) if e["reference"] == p2] == [
        ("commission", Decimal("0.75")), ("commission_reversal", Decimal("-0.75"))]
    assert session_status(b, s2["id"])["status"] == "charged_back"
    assert balance(b) == 0 and balance(a) == 0
    # A refund of a charged-back payment takes nothing more.
    late = sim_reverse(s2, p2, "refund")
    assert delivered_outcome(late) == "already_reversed", late
    assert balance(b) == 0 and balance(a) == 0

    ref = referrals(a)
    assert D(ref["commission_total"]) == 0, ref
    check_books(a)
    check_books(b)


def test_refund_before_the_payment_is_confirmed_is_409_then_applies(agw):
    b = signup(agw, "early-refund")
    s = open_session(b, "7")
    paid = pay(s, deliver=False)
    refund = sim_reverse(s, paid["payment_id"], "refund", deliver=False)
    r = post_webhook(agw, refund["event"]["body"], refund["event"]["signature"])
    assert_error(r, 409, "payment_not_confirmed")
    assert balance(b) == 0 and ledger(b) == []
    r = post_webhook(agw, paid["event"]["body"], paid["event"]["signature"])
    assert r.status_code == 200 and r.json()["outcome"] == "credited", r.text
    r = post_webhook(agw, refund["event"]["body"], refund["event"]["signature"])
    assert r.status_code == 200 and r.json()["outcome"] == "reversed", r.text
    assert balance(b) == 0
    assert [e["kind"] for e in ledger(b)] == ["topup", "refund"]
    check_books(b)


def test_refund_after_spending_takes_back_at_most_what_is_left(agw, chat_model):
    a = signup(agw, "inv-spend")
    b = signup(agw, "spender", invite_code=a.invite_code)
    s, pid = topup(b, "10")
    k = new_inference_key(b, "spend")
    oai = agw.openai(api_key=k["key"])
    ids = []
    try:
        for i in range(4):
            raw = oai.chat.completions.with_raw_response.create(
                model=chat_model, max_tokens=64,
                messages=[{"role": "user", "content": f"spend some money {i} [[sim:words=40]]"}])
            assert raw.http_response.status_code == 200
            ids.append(raw.headers["x-request-id"])
    finally:
        oai.close()
    records = [get_record(b.http, rid) for rid in ids]
    spent = sum((D(rec["cost"]) for rec in records), Decimal(0))
    assert spent > 0
    # Wait for the usage debits to reach the ledger (batched).
    deadline = time.monotonic() + 10
    while True:
        acct = account(b)
        usage_sum = -sum((D(e["amount"]) for e in entries(b, "usage")), Decimal(0))
        if usage_sum == spent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert usage_sum == spent, f"usage ledger entries {usage_sum} != usage records {spent}"
    assert D(acct["spend"]) == spent, acct
    assert D(acct["balance"]) == Decimal("10") - spent, acct
    check_books(b)

    refunded = sim_reverse(s, pid, "refund")
    assert delivered_outcome(refunded) == "reversed", refunded
    time.sleep(1.2)  # anything the follower or the usage batcher would still post
    bal = check_books(b)
    assert bal == 0, f"B should have nothing left after the refund, has {bal}"
    refunds = entries(b, "refund")
    assert len(refunds) == 1 and refunds[0]["reference"] == pid, refunds
    assert D(refunds[0]["amount"]) == -(Decimal("10") - spent), (refunds, spent)
    # The inviter had not spent: the commission is reversed in full.
    assert [(e["kind"], D(e["amount"])) for e in ledger(a)] == [
        ("commission", Decimal("0.5")), ("commission_reversal", Decimal("-0.5"))]
    assert session_status(b, s["id"])["status"] == "refunded"
    # Nothing left: the next request is refused for money, not admitted on credit.
    r = chat(agw, k["key"], chat_model)
    assert_error(r, 402, "insufficient_quota")
    assert check_books(b) == 0


# ----------------------------------------------------------------------------- 4. amount mismatch


def test_payment_that_does_not_match_its_quote_is_422(agw):
    a = signup(agw, "inv-mm")
    b = signup(agw, "mismatch", invite_code=a.invite_code)
    s = open_session(b, "25.50", "EUR", "card")
    paid = pay(s, deliver=False)
    event = json.loads(paid["event"]["body"])
    assert D(event["data"]["amount"]) == D(s["quote"]["total"])

    cheaper = json.loads(paid["event"]["body"])
    cheaper["data"]["amount"] = "1.00"
    other_currency = json.loads(paid["event"]["body"])
    other_currency["data"]["currency"] = "USD"
    more_decimals = json.loads(paid["event"]["body"])
    more_decimals["data"]["amount"] = str(D(event["data"]["amount"]) + Decimal("0.001"))
    for tampered in (cheaper, other_currency, more_decimals):
        body = json.dumps(tampered).encode()
        r = post_webhook(agw, body, sign(body))
        assert_error(r, 422, "payment_mismatch")
    assert balance(b) == 0 and ledger(b) == [] and ledger(a) == []
    assert session_status(b, s["id"])["status"] == "open"

    # An event for a session that does not exist is not credited either.
    ghost = json.loads(paid["event"]["body"])
    ghost["data"]["session_id"] = "cs_does_not_exist"
    ghost["data"]["payment_id"] = paid["payment_id"] + "x"
    body = json.dumps(ghost).encode()
    r = post_webhook(agw, body, sign(body))
    assert_error(r, 404)
    assert balance(b) == 0

    # The genuine event still credits the quote's token line, exactly once.
    r = post_webhook(agw, paid["event"]["body"], paid["event"]["signature"])
    assert r.status_code == 200 and r.json()["outcome"] == "credited", r.text
    assert balance(b) == Decimal("25.50") and balance(a) == Decimal("1.275")
    check_books(b)


# ----------------------------------------------------------------------------- 5. sign-up, login, keys


@pytest.mark.parametrize("bad", ["not-an-email", "two@@example.com", "a b@example.com", "", "@example.com",
                                 "x" * 250 + "@example.com"])
def test_signup_bad_email_is_400(agw, bad):
    r = raw_signup(agw, {"email": bad, "password": PASSWORD})
    assert_error(r, 400, param="email")


@pytest.mark.parametrize("pw", ["", "short7!", "x" * 257])
def test_signup_bad_password_is_400(agw, pw):
    r = raw_signup(agw, {"email": email("pw"), "password": pw})
    assert_error(r, 400, param="password")


def test_signup_duplicates_unknown_invites_and_login(agw):
    a = signup(agw, "Dup")
    assert a.email == a.email.lower()
    for variant in (a.email, a.email.upper(), f"  {a.email.capitalize()} "):
        r = raw_signup(agw, {"email": variant, "password": PASSWORD})
        assert_error(r, 409, "email_taken", "email")
    r = raw_signup(agw, {"email": email("badinv"), "password": PASSWORD, "invite_code": "NOSUCHCODE1"})
    assert_error(r, 400, param="invite_code")

    wrong_pw = httpx.post(f"{agw.root}/v1/auth/login", json={"email": a.email, "password": "wrong password!"})
    unknown = httpx.post(f"{agw.root}/v1/auth/login", json={"email": email("nobody"), "password": PASSWORD})
    assert_error(wrong_pw, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong_pw.json() == unknown.json(), (wrong_pw.text, unknown.text)

    r = httpx.post(f"{agw.root}/v1/auth/login", json={"email": a.email.upper(), "password": PASSWORD})
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["object"] == "login" and login["account_id"] == a.id, login
    assert login["management_key"].startswith("sk-rm-") and login["management_key"] != a.key
    with agw.http(login["management_key"]) as c:
        got = c.get("/v1/account")
        assert got.status_code == 200 and got.json()["id"] == a.id, got.text
    names = [k["name"] for k in a.http.get("/v1/management-keys").json()["data"]]
    assert any(n and n.startswith("login ") for n in names), names


def test_failed_logins_lock_that_email_only(agw):
    """Ten failed logins lock the email (429 with Retry-After, no hashing) for the rest of the
    15-minute window; the right password is refused too meanwhile; other emails are unaffected."""
    a = signup(agw, "guess")
    b = signup(agw, "bystander")
    for _ in range(10):
        r = httpx.post(f"{agw.root}/v1/auth/login", json={"email": a.email, "password": "not the password"})
        assert_error(r, 401, "invalid_credentials")
    for password in ("not the password", PASSWORD):
        r = httpx.post(f"{agw.root}/v1/auth/login", json={"email": a.email, "password": password})
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert 1 <= int(r.headers["retry-after"]) <= 900, r.headers
        assert "credit" not in err["message"] and "balance" not in err["message"], err
    r = httpx.post(f"{agw.root}/v1/auth/login", json={"email": b.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    # The account's existing management keys keep working.
    assert a.http.get("/v1/account").status_code == 200


def test_management_keys_create_list_revoke(agw):
    a = signup(agw, "mk")
    r = a.http.post("/v1/management-keys", json={"name": "ci"})
    assert r.status_code == 201, r.text
    k = r.json()
    assert k["object"] == "management_key" and k["name"] == "ci" and k["revoked_at"] is None, k
    assert k["key"].startswith("sk-rm-"), k
    r = a.http.post("/v1/management-keys")  # no body: a key without a name
    assert r.status_code == 201, r.text
    k2 = r.json()

    listing = a.http.get("/v1/management-keys")
    assert listing.status_code == 200, listing.text
    data = listing.json()["data"]
    assert [d["id"] for d in data][:2] == [k2["id"], k["id"]], "not newest first"
    assert len(data) == 3  # the sign-up key too
    assert all("key" not in d for d in data), data
    for secret in (k["key"], k2["key"], a.key):
        assert secret not in listing.text

    with agw.http(k["key"]) as c:
        assert c.get("/v1/account").status_code == 200
        revoked = a.http.delete(f"/v1/management-keys/{k['id']}")
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["id"] == k["id"] and revoked.json()["revoked_at"], revoked.text
        assert "key" not in revoked.json()
        assert_error(c.get("/v1/account"), 401)

    # A key revoking itself: the call succeeds, the very next one is refused.
    with agw.http(k2["key"]) as c:
        r = c.delete(f"/v1/management-keys/{k2['id']}")
        assert r.status_code == 200, r.text
        assert_error(c.get("/v1/account"), 401)
        assert_error(c.get("/v1/management-keys"), 401)
    assert_error(a.http.delete("/v1/management-keys/mk_does_not_exist"), 404)
    # The sign-up key still works and sees both revocations.
    listing = {d["id"]: d for d in a.http.get("/v1/management-keys").json()["data"]}
    assert listing[k["id"]]["revoked_at"] and listing[k2["id"]]["revoked_at"]


# ----------------------------------------------------------------------------- 6. referral refusals


def claim(a: Acct, code: str) -> httpx.Response:
    return a.http.post("/v1/referrals/claim", json={"invite_code": code})


def refused(r: httpx.Response, words: str) -> None:
    e = assert_error(r, 400, "referral_refused", "invite_code")
    assert words in e["message"].lower(), e


def test_referral_claims_and_refusals(agw):
    a = signup(agw, "ra")
    refused(claim(a, a.invite_code), "self-referral")
    assert_error(claim(a, "NOSUCHCODE1"), 400, param="invite_code")

    c = signup(agw, "rc")
    r = claim(c, a.invite_code)
    assert r.status_code == 200, r.text
    assert r.json()["referred_by"] == a.id
    assert account(c)["referred_by"] == a.id
    other = signup(agw, "rother")
    refused(claim(c, other.invite_code), "already")
    refused(claim(c, a.invite_code), "already")
    assert account(c)["referred_by"] == a.id
    assert [x["account_id"] for x in referrals(a)["referred"]] == [c.id]

    # Loops: A (referred by nobody) claims the code of C (referred by A), or of D (referred by C).
    refused(claim(a, c.invite_code), "loop")
    d = signup(agw, "rd", invite_code=c.invite_code)
    refused(claim(a, d.invite_code), "loop")
    assert account(a)["referred_by"] is None

    # After a top-up, no inviter can be added.
    e = signup(agw, "re")
    topup(e, "5")
    refused(claim(e, a.invite_code), "top-up")
    assert account(e)["referred_by"] is None

    # The same mailbox with a +tag is a self-referral, at sign-up and by claim.
    local = f"ann{uuid.uuid4().hex[:8]}"
    ann = signup(agw, addr=f"{local}@example.com")
    r = raw_signup(agw, {"email": f"{local}+x@example.com", "password": PASSWORD, "invite_code": ann.invite_code})
    refused(r, "self-referral")
    alias = signup(agw, addr=f"{local}+y@example.com")
    refused(claim(alias, ann.invite_code), "self-referral")
    assert referrals(ann)["referred"] == []


# ----------------------------------------------------------------------------- 7. isolation matrix


@dataclass
class World:
    x: Acct
    y: Acct
    y_key: dict
    x_key: dict
    y_request: str
    y_session: dict
    y_payment: str
    y_mgmt_key: dict
    x_request: str
    y_ids: list[str]


@pytest.fixture(scope="module")
def world(agw, chat_model):
    x = signup(agw, "iso-x")
    z = signup(agw, "iso-z")
    y = signup(agw, "iso-y", invite_code=z.invite_code)  # Y has an inviter, but not X
    reqs = {}
    sessions = {}
    pays = {}
    keys = {}
    for who in (x, y):
        s, pid = topup(who, "3")
        sessions[who.id], pays[who.id] = s, pid
        k = new_inference_key(who, f"iso-{who.email[:6]}")
        keys[who.id] = k
        r = chat(agw, k["key"], chat_model)
        assert r.status_code == 200, r.text
        reqs[who.id] = r.headers["x-request-id"]
        get_record(who.http, reqs[who.id])
    r = y.http.post("/v1/management-keys", json={"name": "y-extra"})
    assert r.status_code == 201, r.text
    ymk = r.json()
    # Wait for Y's usage debit to be on its ledger too.
    deadline = time.monotonic() + 5
    while not entries(y, "usage") and time.monotonic() < deadline:
        time.sleep(0.2)
    y_ids = [y.id, y.email, y.invite_code, keys[y.id]["id"], reqs[y.id], sessions[y.id]["id"],
             pays[y.id], ymk["id"]]
    return World(x, y, keys[y.id], keys[x.id], reqs[y.id], sessions[y.id], pays[y.id], ymk, reqs[x.id], y_ids)


CROSS = [
    ("GET", "/v1/keys/{y_key}", None),
    ("PATCH", "/v1/keys/{y_key}", {"name": "hijacked", "max_spend": "0"}),
    ("DELETE", "/v1/keys/{y_key}", None),
    ("GET", "/v1/requests/{y_request}", None),
    ("GET", "/v1/checkout/sessions/{y_session}", None),
    ("DELETE", "/v1/management-keys/{y_mgmt_key}", None),
    ("DELETE", "/v1/management-keys/{y_signup_key}", None),
]


def _ids(w: World) -> dict:
    signup_key_id = next(k["id"] for k in w.y.http.get("/v1/management-keys").json()["data"]
                         if k["name"] == "signup")
    return {"y_key": w.y_key["id"], "y_request": w.y_request, "y_session": w.y_session["id"],
            "y_mgmt_key": w.y_mgmt_key["id"], "y_signup_key": signup_key_id}


@pytest.mark.parametrize("method,path,body", CROSS, ids=[f"{m} {p}" for m, p, _ in CROSS])
def test_another_accounts_objects_are_404(agw, world, chat_model, method, path, body):
    w = world
    url = path.format(**_ids(w))
    before_key = w.y.http.get(f"/v1/keys/{w.y_key['id']}").json()
    target = url.rsplit("/", 1)[1]
    ghost = target.split("_", 1)[0] + "_" + "0" * len(target.split("_", 1)[1])
    r = w.x.http.request(method, url, json=body) if body is not None else w.x.http.request(method, url)
    assert_error(r, 404, "not_found")
    for yid in w.y_ids:
        if yid != target:  # the 404 may name the id asked for, nothing else of Y's
            assert yid not in r.text, (yid, r.text)
    # Exactly as if it did not exist: the same answer as for an id nobody has.
    ghost_url = url.rsplit("/", 1)[0] + "/" + ghost
    g = w.x.http.request(method, ghost_url, json=body) if body is not None else w.x.http.request(method, ghost_url)
    assert (g.status_code, g.text.replace(ghost, target)) == (r.status_code, r.text), (g.text, r.text)

    # Y's objects are untouched.
    after_key = w.y.http.get(f"/v1/keys/{w.y_key['id']}")
    assert after_key.status_code == 200 and after_key.json() == before_key, after_key.text
    assert chat(agw, w.y_key["key"], chat_model).status_code == 200
    assert w.y.http.get(f"/v1/requests/{w.y_request}").status_code == 200
    st = session_status(w.y, w.y_session["id"])
    assert st["status"] == "paid" and st["payment_id"] == w.y_payment, st
    mks = {k["id"]: k for k in w.y.http.get("/v1/management-keys").json()["data"]}
    assert mks[w.y_mgmt_key["id"]]["revoked_at"] is None, mks
    with agw.http(w.y_mgmt_key["key"]) as c:
        assert c.get("/v1/account").status_code == 200
    assert account(w.y)["id"] == w.y.id


LISTS = ["/v1/usage", "/v1/usage/summary", "/v1/account", "/v1/account/ledger", "/v1/referrals",
         "/v1/keys", "/v1/management-keys"]


@pytest.mark.parametrize("path", LISTS)
def test_lists_never_show_another_accounts_ids(world, path):
    w = world
    r = w.x.http.get(path)
    assert r.status_code == 200, r.text
    for yid in w.y_ids:
        assert yid not in r.text, f"{path} with X's key shows Y's {yid}: {r.text[:2000]}"
    # ...while Y's own view does show them (the check is not vacuous).
    if path != "/v1/usage/summary":
        mine = w.y.http.get(path).text
        assert any(yid in mine for yid in w.y_ids), (path, mine[:1000])


MGMT_ENDPOINTS = [
    ("GET", "/v1/account"), ("GET", "/v1/account/ledger"), ("GET", "/v1/referrals"),
    ("GET", "/v1/management-keys"), ("POST", "/v1/management-keys"), ("GET", "/v1/keys"),
    ("POST", "/v1/keys"), ("GET", "/v1/usage"), ("POST", "/v1/checkout/quote"),
    ("POST", "/v1/checkout/sessions"), ("POST", "/v1/referrals/claim"),
]


@pytest.mark.parametrize("who", ["inference-key", "no-key", "garbage-key"])
@pytest.mark.parametrize("method,path", MGMT_ENDPOINTS, ids=[f"{m} {p}" for m, p in MGMT_ENDPOINTS])
def test_management_endpoints_need_a_management_key(agw, world, who, method, path):
    key = {"inference-key": world.x_key["key"], "no-key": None, "garbage-key": "sk-rm-not-a-real-key"}[who]
    body = {"amount_usd": "5", "currency": "USD", "channel": "card"} if "checkout" in path else (
        {"invite_code": world.y.invite_code} if "claim" in path else {})
    with agw.http(key) as c:
        r = c.request(method, path, json=body) if method == "POST" else c.request(method, path)
    assert_error(r, 401)
    for yid in world.y_ids:
        assert yid not in r.text


# ----------------------------------------------------------------------------- 8. operator CLI


def test_admin_credit_reaches_the_running_gateway(agw, chat_model):
    z = signup(agw, "cli")
    k = new_inference_key(z, "cli")
    r = chat(agw, k["key"], chat_model)
    assert_error(r, 402, "insufficient_quota")

    res = agw.admin("credit", "--account", z.id, "--amount", "3.25", "--reason", "test")
    assert res.returncode == 0, f"admin credit failed: {res.stdout}\n{res.stderr}"
    deadline = time.monotonic() + 2.0
    while balance(z) != Decimal("3.25") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert balance(z) == Decimal("3.25")
    adj = entries(z, "adjustment")
    assert [(D(e["amount"]), e["reason"]) for e in adj] == [(Decimal("3.25"), "test")], adj

    deadline = time.monotonic() + 2.0
    while True:
        r = chat(agw, k["key"], chat_model)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, f"a credited account is still refused: {r.status_code} {r.text}"

    # A debit larger than the balance is refused and changes nothing.
    res = agw.admin("debit", "--account", z.email, "--amount", "1000", "--reason", "too much")
    assert res.returncode != 0, res.stdout
    get_record(z.http, r.headers["x-request-id"])
    time.sleep(1.2)
    check_books(z)
    assert [e["kind"] for e in ledger(z) if e["kind"] == "adjustment"] == ["adjustment"]


# ----------------------------------------------------------------------------- races


def test_concurrent_deliveries_of_one_payment_credit_once(agw):
    from concurrent.futures import ThreadPoolExecutor

    a = signup(agw, "inv-race")
    b = signup(agw, "race", invite_code=a.invite_code)
    s = open_session(b, "9.99")
    paid = pay(s, deliver=False)
    body, sig = paid["event"]["body"], paid["event"]["signature"]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: post_webhook(agw, body, sig), range(12)))
    outcomes = sorted(r.json().get("outcome", r.text) if r.status_code == 200 else f"{r.status_code} {r.text}"
                      for r in answers)
    assert outcomes == ["credited"] + ["duplicate"] * 11, outcomes
    assert balance(b) == Decimal("9.99") and balance(a) == commission_of(Decimal("9.99"))
    assert len(entries(b, "topup")) == 1 and len(entries(a, "commission")) == 1
    check_books(a)
    check_books(b)


def test_concurrent_signups_with_one_email_make_one_account(agw):
    from concurrent.futures import ThreadPoolExecutor

    addr = email("same")
    variants = [addr, addr.upper(), f" {addr} ", addr.capitalize()] * 2
    with ThreadPoolExecutor(len(variants)) as pool:
        answers = list(pool.map(lambda e: raw_signup(agw, {"email": e, "password": PASSWORD}), variants))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * (len(variants) - 1), [(r.status_code, r.text) for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert err(r)["code"] == "email_taken", r.text
