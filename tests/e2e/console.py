"""A console visitor without a browser: httpx with a cookie jar, filling forms with the page's
own token. The browser suite (tests/browser) drives the same pages in Chromium."""

from __future__ import annotations

import re
import uuid

import httpx

PASSWORD = "correct horse battery staple"

_TOKEN = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def token_of(html: str) -> str:
    """The form token a page carries (every form on a page carries the same one)."""
    m = _TOKEN.search(html)
    assert m, f"no form token on the page: {html[:500]}"
    return m.group(1)


class Visitor:
    """One browser: its cookies, and the token of the last page it loaded."""

    def __init__(self, root: str):
        self.root = root
        self.http = httpx.Client(base_url=root, timeout=30, follow_redirects=False)
        self.token = ""

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kw) -> httpx.Response:
        r = self.http.get(path, **kw)
        if "text/html" in r.headers.get("content-type", "") and 'name="csrf"' in r.text:
            self.token = token_of(r.text)
        return r

    def post(self, path: str, data: dict | None = None, *, token: str | None = None) -> httpx.Response:
        """Posts a form with the current page's token (or `token`; "" sends none)."""
        fields = dict(data or {})
        t = self.token if token is None else token
        if t:
            fields["csrf"] = t
        return self.http.post(path, data=fields)

    def sign_up(self, email: str | None = None, invite_code: str | None = None) -> str:
        email = email or f"console-{uuid.uuid4().hex[:10]}@example.com"
        page = self.get("/signup" + (f"?invite={invite_code}" if invite_code else ""))
        assert page.status_code == 200, page.text
        fields = {"email": email, "password": PASSWORD}
        if invite_code:
            fields["invite_code"] = invite_code
        r = self.post("/signup", fields)
        assert r.status_code == 303 and r.headers["location"] == "/console", (r.status_code, r.text[:500])
        return email

    def log_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        return self.post("/login", {"email": email, "password": password})

    def management_key(self) -> str:
        """The session's management key (the cookie holds `{id}.{key}`), for API checks."""
        cookie = self.http.cookies.get("router_one_session")
        assert cookie, "not signed in"
        return cookie.split(".", 1)[1]

    def api(self) -> httpx.Client:
        """The management API as this visitor's account."""
        return httpx.Client(base_url=self.root, timeout=30,
                            headers={"Authorization": f"Bearer {self.management_key()}"})
