"""A new user's whole way through the console, in Chromium: sign up through another account's
invite link, top up in EUR at the (simulated) provider, create a key with limits, copy its
secret, use it with the official `openai` client, find those requests in the usage table and the
charts at their exact costs, see the inviter's 5% commission, revoke the key and see the next
request refused. Each page is screenshotted and checked by axe-core (conftest.Tab.check), no page
may log a console error, and no key secret is ever rendered but on the page that created it."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import openai
import pytest
from playwright.sync_api import expect

from console import PASSWORD

SECRET = re.compile(r"sk-r[km]-[A-Za-z0-9]{8,}")


class Seen:
    """Every page's HTML a tab showed, to prove which ones rendered a secret."""

    def __init__(self):
        self.pages: list[tuple[str, str]] = []

    def take(self, tab, name: str) -> str:
        html = tab.page.content()
        self.pages.append((name, html))
        tab.check(name)
        return html


def api_of(tab, gw) -> httpx.Client:
    """The management API as the tab's signed-in account (its session cookie's key)."""
    cookie = next(c for c in tab.context.cookies() if c["name"] == "router_one_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
    key = cookie["value"].split(".", 1)[1]
    return httpx.Client(base_url=gw.root, timeout=30, headers={"Authorization": f"Bearer {key}"})


def sign_up(tab, email: str, seen: Seen, name: str, invite_link: str | None = None) -> None:
    if invite_link:
        tab.open(invite_link.replace(tab.root, ""))
    else:
        tab.open("/signup")
    seen.take(tab, name)
    tab.page.get_by_label("Email").fill(email)
    tab.page.get_by_label("Password").fill(PASSWORD)
    tab.page.get_by_role("button", name="Sign up").click()
    tab.page.wait_for_url("**/console")


def test_a_new_user_walks_through_the_whole_console(new_tab, gw):
    seen = Seen()

    # The inviter: an account with an invite link.
    inviter = new_tab()
    sign_up(inviter, "inviter@example.com", seen, "signup")
    inviter.open("/console/referrals")
    seen.take(inviter, "referrals-inviter-before")
    link = inviter.page.input_value("#invite-link")
    assert re.fullmatch(re.escape(gw.root) + r"/signup\?invite=[A-Za-z0-9_-]+", link), link
    inviter_api = api_of(inviter, gw)
    assert link == inviter_api.get("/v1/referrals").json()["link"]

    # The new user follows the link: the code is filled in.
    user = new_tab()
    code = link.split("invite=", 1)[1]
    user.open(link.replace(gw.root, ""))
    assert user.page.get_by_label("Invite code").input_value() == code
    sign_up(user, "new-user@example.com", seen, "signup-invited", invite_link=link)
    seen.take(user, "overview-new")
    assert user.page.inner_text("#balance") == "$0"
    api = api_of(user, gw)
    assert api.get("/v1/account").json()["referred_by"] is not None

    # Top up 20 USD paid in EUR: the quote's lines, each as the API gives them.
    user.open("/console/top-up")
    seen.take(user, "top-up")
    user.page.get_by_label("Amount").fill("20")
    user.page.select_option("#currency", "EUR")
    channel = user.page.eval_on_selector("#channel", "s => s.value")
    user.page.get_by_role("button", name="Get a quote").click()
    user.page.wait_for_selector("#quote-total")
    seen.take(user, "top-up-quote")
    quote = api.post("/v1/checkout/quote", json={"amount_usd": "20", "currency": "EUR", "channel": channel}).json()
    for field, element in [("token_line_usd", "#quote-token-line"), ("fx_rate", "#quote-fx-rate"),
                           ("fx_cost", "#quote-fx-cost"), ("channel_fee", "#quote-channel-fee"),
                           ("total", "#quote-total")]:
        assert user.page.inner_text(element) == str(quote[field]), (field, quote)
    assert user.page.inner_text("#quote-fx-as-of") == quote["fx_as_of"]
    user.page.get_by_role("button", name="Continue to payment").click()
    user.page.wait_for_url(re.compile(r".*/console/top-up/cs_[0-9a-f]+$"))
    seen.take(user, "top-up-session-open")
    # Pay at the provider (the simulator's page, another origin), and come back.
    user.page.click("#pay-link")
    user.page.wait_for_url(re.compile(r".*/payments/pay/.*"))
    user.page.screenshot(path=str(_shots() / "provider-pay-page-desktop.png"), full_page=True)
    user.page.get_by_role("button", name="Pay").click()
    user.page.wait_for_url(re.compile(r".*/console/top-up/cs_[0-9a-f]+$"))
    assert user.page.get_attribute("#session-status", "data-status") == "paid"
    seen.take(user, "top-up-session-paid")
    user.open("/console")
    assert user.page.inner_text("#balance") == f"${Decimal(quote['token_line_usd']).normalize()}" \
        or Decimal(user.page.inner_text("#balance").lstrip("$")) == Decimal(quote["token_line_usd"])
    user.open("/console/top-up/history")
    seen.take(user, "top-up-history")
    assert "+$20" in user.page.inner_text("#payments")

    # The inviter sees the new account, masked, and 5% of its top-up.
    inviter.open("/console/referrals")
    seen.take(inviter, "referrals-inviter-after")
    referred = inviter.page.inner_text("#referred")
    assert "new-user@example.com" not in referred and "@example.com" in referred
    assert Decimal(inviter.page.inner_text("#commission-total").lstrip("$")) == Decimal("1.00")

    # A key with limits; its secret shown once, copied with the button.
    user.open("/console/keys/new")
    seen.take(user, "keys-new")
    user.page.get_by_label("Name").fill("customer-acme")
    user.page.get_by_label("Spending cap (USD)").fill("5")
    user.page.get_by_label("Requests per minute").fill("30")
    user.page.get_by_label("Tokens per minute").fill("100000")
    user.page.get_by_role("button", name="Create key").click()
    user.page.wait_for_selector("#key-secret")
    html = seen.take(user, "keys-created")
    secret = user.page.input_value("#key-secret")
    assert secret.startswith("sk-rk-") and SECRET.findall(html) == [secret], "the new secret, once"
    user.page.get_by_role("button", name="Copy").click()
    expect(user.page.locator("#key-secret-status")).to_have_text("Copied.")
    assert user.page.evaluate("navigator.clipboard.readText()") == secret

    # The official client with the copied secret.
    client = openai.OpenAI(base_url=f"{gw.root}/v1", api_key=secret, max_retries=0)
    model = next(m.id for m in client.models.list().data if "embed" not in m.id)
    made = []
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"console walk {i}"}])
        made.append(raw.headers["x-request-id"])

    # The usage table shows exactly those requests at their exact costs.
    user.open("/console/usage")
    rows = {}
    for _ in range(50):
        rows = {rid: user.page.inner_text(f"tr:has(a[href='/console/requests/{rid}']) td.cost")
                for rid in made if user.page.locator(f"a[href='/console/requests/{rid}']").count()}
        if len(rows) == 3:
            break
        user.page.wait_for_timeout(100)
        user.page.reload()
    seen.take(user, "usage")
    records = {r["request_id"]: r for r in api.get("/v1/usage", params={"limit": 100}).json()["data"]}
    for rid in made:
        assert rows[rid] == f"${records[rid]['cost']}", (rid, rows[rid], records[rid]["cost"])
    total = sum(Decimal(records[rid]["cost"]) for rid in made)
    user.open(f"/console/requests/{made[0]}")
    seen.take(user, "request")
    user.open("/console/usage/summary?group_by=model")
    seen.take(user, "usage-by-model")
    assert Decimal(user.page.inner_text("#total-cost").lstrip("$")) == total
    assert user.page.locator(".chart svg rect").count() >= 1
    user.open("/console")
    seen.take(user, "overview-with-usage")
    assert Decimal(user.page.inner_text("#spend-today").lstrip("$")) == total
    assert user.page.locator(".chart svg rect").count() >= 1

    # The key list shows its spend, never its secret.
    user.open("/console/keys")
    seen.take(user, "keys")
    assert "customer-acme" in user.page.inner_text("#keys")

    # The rest of the console, for the screenshots and checks.
    for path, name in [("/console/models", "models"), ("/console/docs", "docs")]:
        user.open(path)
        seen.take(user, name)

    # Revoke, confirmed; the next request is refused.
    user.open("/console/keys")
    user.page.get_by_role("link", name="customer-acme").first.click()
    seen.take(user, "key")
    user.page.get_by_role("link", name="Revoke this key").click()
    seen.take(user, "key-revoke-confirm")
    user.page.get_by_role("button", name="Revoke key").click()
    user.page.wait_for_url("**/console/keys*")
    seen.take(user, "keys-after-revoke")
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "after revoke"}])
    assert refused.value.status_code == 401

    # Log out ends the session: its key is revoked, the pages ask for a log-in again.
    user.page.get_by_role("button", name="Log out").click()
    user.page.wait_for_url("**/login")
    assert api.get("/v1/account").status_code == 401
    user.open("/console/keys")
    assert "/login" in user.page.url

    # No page but the key's creation rendered a secret.
    for name, html in seen.pages:
        if name != "keys-created":
            assert not SECRET.search(html), f"page {name} renders a key secret"


def _shots():
    from conftest import SHOTS
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
