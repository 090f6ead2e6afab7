"""Console sessions: a session is a management key in an HttpOnly cookie. Log-ins through the
console count toward the API's lockout, log-out revokes the key, a revoked or forged cookie sends
the visitor to log in, `next` never leads off the console, and every console answer carries the
security headers."""

from __future__ import annotations

import re

import httpx
import pytest

import conftest
from console import PASSWORD, Visitor
from gateway import Gateway, log_path


@pytest.fixture(scope="module")
def sgw(tmp_path_factory):
    """A gateway of this module's own: the lockout test uses up a source's log-in attempts."""
    base = tmp_path_factory.mktemp("console-sessions")
    g = Gateway(base / "data", log_path=log_path("console-sessions-gateway", base))
    conftest._GATEWAYS.append(g)
    g.start()
    yield g
    g.stop()


@pytest.fixture
def visitor(sgw):
    v = Visitor(sgw.root)
    yield v
    v.close()


def test_the_session_cookie_is_http_only_and_lax_and_its_key_is_listed(sgw, visitor):
    email = visitor.sign_up()
    visitor.http.cookies.clear()
    r = visitor.log_in(email)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("router_one_session=mkey_")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"):
        assert attribute in cookie, cookie
    # Plain http here: no `Secure` (the browser would drop the cookie); https public URLs set it.
    assert "Secure" not in cookie
    key_id = visitor.http.cookies["router_one_session"].split(".", 1)[0]
    with visitor.api() as api:
        listed = {k["id"]: k for k in api.get("/v1/management-keys").json()["data"]}
    assert listed[key_id]["name"].startswith("login ") and listed[key_id]["revoked_at"] is None


def test_log_out_revokes_the_sessions_key(sgw, visitor):
    visitor.sign_up()
    copied = visitor.management_key()
    visitor.get("/console")
    r = visitor.post("/logout")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "Max-Age=0" in r.headers["set-cookie"]
    # A copy of the cookie's key is dead too.
    assert httpx.get(f"{sgw.root}/v1/account", headers={"Authorization": f"Bearer {copied}"}).status_code == 401
    again = Visitor(sgw.root)
    again.http.cookies.set("router_one_session", f"mkey_x.{copied}")
    r = again.get("/console/keys")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fconsole%2Fkeys"
    again.close()


def test_a_session_revoked_elsewhere_or_forged_ends_at_the_next_page(sgw, visitor):
    visitor.sign_up()
    key_id = visitor.http.cookies["router_one_session"].split(".", 1)[0]
    with visitor.api() as api:
        assert api.delete(f"/v1/management-keys/{key_id}").status_code == 200
    r = visitor.get("/console")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "router_one_session=;" in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    forged = Visitor(sgw.root)
    forged.http.cookies.set("router_one_session", "mkey_0.sk-rm-" + "A" * 48)
    assert forged.get("/console").status_code == 303
    forged.http.cookies.set("router_one_session", "no-dot-at-all")
    assert forged.get("/console/usage").status_code == 303
    forged.close()


def test_next_never_leads_off_the_console(sgw, visitor):
    email = visitor.sign_up()
    for evil in ("https://evil.example/console", "//evil.example/console", "/console//evil.example",
                 "/\\evil.example"):
        visitor.http.cookies.clear()
        page = visitor.get("/login", params={"next": evil})
        assert evil not in page.text
        r = visitor.post("/login", {"email": email, "password": PASSWORD, "next": evil})
        assert r.status_code == 303 and r.headers["location"] == "/console", (evil, r.headers)
    visitor.http.cookies.clear()
    visitor.get("/login")
    r = visitor.post("/login", {"email": email, "password": PASSWORD, "next": "/console/usage?model=x"})
    assert r.headers["location"] == "/console/usage?model=x"


def test_console_log_ins_count_toward_the_apis_lockout(sgw, visitor):
    email = visitor.sign_up()
    visitor.http.cookies.clear()
    visitor.get("/login")
    for _ in range(10):
        r = visitor.post("/login", {"email": email, "password": "not the password"})
        assert r.status_code == 401 and "Incorrect email or password." in r.text
    # The right password now: refused like the API's own log-in, with the API's message.
    r = visitor.post("/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 429, r.text
    api = httpx.post(f"{sgw.root}/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert api.status_code == 429
    # The two answers are a moment apart, so their countdowns ("retry in 900 s") may differ by one.
    countdown = re.compile(r"retry in \d+ s")
    shown = countdown.sub("retry in N s", r.text.replace("&#39;", "'").replace("&quot;", '"'))
    assert countdown.sub("retry in N s", api.json()["error"]["message"]) in shown
    assert "router_one_session" not in r.headers.get("set-cookie", "")


def test_every_console_answer_carries_the_security_headers(sgw, visitor):
    visitor.sign_up()
    for path in ("/login", "/signup", "/console", "/console/keys", "/console/no-such-page",
                 "/console/keys/key_unknown", "/console/requests/req_unknown"):
        r = visitor.get(path)
        assert r.status_code in (200, 404), (path, r.status_code)
        h = r.headers
        assert h["content-security-policy"].startswith("default-src 'none'; script-src 'self'"), path
        assert "form-action 'self'" in h["content-security-policy"] and "frame-ancestors 'none'" in h["content-security-policy"]
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert h["cache-control"] == "no-store", path
    css = visitor.get("/console/assets/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]
    assert visitor.get("/console/assets/secret.txt").status_code == 404
