"""Issue 10, items 11 and 12, against the real binary: login attempts counted before the password
is verified and limited per source too (so nobody can lock an owner out from elsewhere), the
relay billing probes refusing revoked and expired keys, the demo's random payment secrets, and
forged webhooks that cannot flood the log.

Sources: the test client is 127.0.0.1 (a trusted proxy by default, so its X-Forwarded-For names
the source) or binds 127.0.0.2 (an ordinary client, whose X-Forwarded-For is ignored)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from conftest import tracked
from gateway import D, Gateway, log_path, model_pricing, pick_chat_model

PASSWORD = "correct horse battery"
#: The secret the demo's payment simulator used to sign webhooks with, for every run.
PUBLIC_DEFAULT_SECRET = b"whsec_router_one_simulated"


@pytest.fixture(scope="module")
def hgw(tmp_path_factory):
    """A gateway of this module's own: its login limits are per process."""
    base = tmp_path_factory.mktemp("hardening")
    g = tracked(Gateway(base / "data", log_path=log_path("hardening-gateway", base)))
    g.start()
    yield g
    g.stop()


def signup(g: Gateway, tag: str) -> dict:
    email = f"{tag}-{uuid.uuid4().hex[:12]}@example.com"
    r = httpx.post(f"{g.root}/v1/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


def login(g: Gateway, email: str, password: str, *, bind: str | None = None,
          forwarded_for: str | None = None) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=bind) if bind else None
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    with httpx.Client(transport=transport, timeout=60) as c:
        return c.post(f"{g.root}/v1/auth/login", json={"email": email, "password": password}, headers=headers)


# ----------------------------------------------------------------------------- item 11: logins


def test_sixty_concurrent_wrong_guesses_verify_at_most_ten(hgw):
    account = signup(hgw, "concurrent")
    start = threading.Barrier(60)

    def guess(n: int) -> httpx.Response:
        start.wait()
        return login(hgw, account["email"], f"wrong password {n}")

    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(guess, range(60)))
    statuses = sorted(r.status_code for r in answers)
    verified = [r for r in answers if r.status_code == 401]
    limited = [r for r in answers if r.status_code == 429]
    assert len(verified) <= 10, f"{len(verified)} wrong passwords were verified (limit 10): {statuses}"
    assert len(verified) + len(limited) == 60, statuses
    for r in limited:
        assert r.json()["error"]["code"] == "rate_limit_exceeded", r.text
        assert 1 <= int(r.headers["retry-after"]) <= 900, r.headers


def guess_until_locked(g: Gateway, email: str, **source) -> None:
    """Ten wrong passwords are verified (401); the eleventh is refused unverified (429)."""
    for n in range(11):
        r = login(g, email, f"guess {n}", **source)
        assert r.status_code == (401 if n < 10 else 429), (n, r.text)


def test_a_guesser_from_one_address_cannot_lock_the_owner_out_from_another(hgw):
    owner = signup(hgw, "owner")
    guess_until_locked(hgw, owner["email"], bind="127.0.0.2")
    # The owner, from another address, signs in.
    r = login(hgw, owner["email"], PASSWORD, bind="127.0.0.1")
    assert r.status_code == 200, r.text
    assert r.json()["account_id"] == owner["account_id"]
    # The guesser stays stopped, even with the right password, and cannot claim to be elsewhere:
    # it is no trusted proxy, so its X-Forwarded-For is ignored.
    r = login(hgw, owner["email"], PASSWORD, bind="127.0.0.2", forwarded_for="198.51.100.7")
    assert r.status_code == 429, r.text


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_source(hgw):
    owner = signup(hgw, "proxied")
    guess_until_locked(hgw, owner["email"], forwarded_for="203.0.113.9")
    r = login(hgw, owner["email"], PASSWORD, forwarded_for="198.51.100.7")
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- item 12: probes


def _probe_statuses(g: Gateway, key: str) -> dict[str, tuple[int, str | None]]:
    out = {}
    with g.http(key) as c:
        for path in ("/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage", "/v1/models"):
            r = c.get(path)
            out[path] = (r.status_code, r.json().get("error", {}).get("code") if r.status_code != 200 else None)
        r = c.post("/v1/chat/completions", json={"model": pick_chat_model(model_pricing_of(g)),
                                                 "messages": [{"role": "user", "content": "hi"}]})
        out["chat"] = (r.status_code, r.json().get("error", {}).get("code") if r.status_code != 200 else None)
    return out


def model_pricing_of(g: Gateway) -> dict:
    with g.http(g.api_key) as c:
        return model_pricing(c)


def test_billing_probes_give_revoked_and_expired_keys_the_401_inference_gives(hgw):
    with hgw.http(hgw.management_key) as m:
        revoked = m.post("/v1/keys", json={"name": "to revoke"}).json()
        assert m.delete(f"/v1/keys/{revoked['id']}").status_code in (200, 204)
        expires_at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
        expiring = m.post("/v1/keys", json={"name": "expiring", "expires_at": expires_at.isoformat()})
        assert expiring.status_code == 201, expiring.text
        expiring = expiring.json()
    for path, (status, _) in _probe_statuses(hgw, expiring["key"]).items():
        assert status == 200, f"{path} before expiry: {status}"
    while datetime.datetime.now(datetime.timezone.utc) < expires_at + datetime.timedelta(seconds=1):
        time.sleep(0.2)
    assert set(_probe_statuses(hgw, revoked["key"]).values()) == {(401, "invalid_api_key")}
    assert set(_probe_statuses(hgw, expiring["key"]).values()) == {(401, "expired_api_key")}


# ----------------------------------------------------------------------------- item 12: the demo


def test_demo_payment_secrets_are_random_per_run_and_the_public_default_is_refused(tmp_path):
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("demo-secrets", tmp_path)))
    g.start()
    try:
        # A top-up paid at the simulator; its "succeeded" event re-signed with the old public
        # secret, as anyone could: refused, nothing credited.
        account = signup(g, "demo-topup")
        with g.http(account["management_key"]) as m:
            session = m.post("/v1/checkout/sessions", json={"amount_usd": "5", "currency": "USD", "channel": "card"})
            assert session.status_code == 201, session.text
            paid = httpx.post(session.json()["payment_url"] + "?deliver=false", timeout=30)
            assert paid.status_code == 200, paid.text
            body = paid.json()["event"]["body"].encode()
            ts = int(time.time())
            forged = hmac.new(PUBLIC_DEFAULT_SECRET, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
            url = f"{g.root}/v1/payments/webhooks/simulated"
            r = httpx.post(url, content=body, timeout=30,
                           headers={"content-type": "application/json", "x-router-one-signature": f"t={ts},v1={forged}"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
            assert D(m.get("/v1/account").json()["balance"]) == 0
            # The simulator's own signature, with this run's secret, is honoured.
            r = httpx.post(url, content=body, timeout=30, headers={
                "content-type": "application/json", "x-router-one-signature": paid.json()["event"]["signature"]})
            assert r.status_code == 200 and r.json()["outcome"] == "credited", r.text
            assert D(m.get("/v1/account").json()["balance"]) == Decimal("5")
        # Two runs on the same data directory: two different secrets, in demo.json for tools.
        first = dict(g.demo)
        g.stop()
        g.start()
        second = dict(g.demo)
        secrets = [run.get("payment_webhook_secret") for run in (first, second)]
        assert all(secrets) and secrets[0] != secrets[1], secrets
        assert first.get("payment_api_key") != second.get("payment_api_key")
        assert PUBLIC_DEFAULT_SECRET.decode() not in secrets
    finally:
        g.stop()


def test_forged_webhooks_cannot_flood_the_log(hgw):
    for n in range(30):
        r = httpx.post(f"{hgw.root}/v1/payments/webhooks/simulated", content=b'{"id": "evt_%d"}' % n,
                       headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature", r.text
    lines = [line for line in hgw.log_tail(10**7).splitlines() if "webhook" in line and "WARN" in line]
    assert len(lines) <= 1, f"{len(lines)} warnings for 30 forged webhooks:\n" + "\n".join(lines[:5])
