"""The console's Top up section (crates/server/src/console/pages/top_up.rs), visited without a
browser (console.Visitor) on the shared demo gateway and its simulated payment provider: a quote
in a currency other than USD shows every line exactly as POST /v1/checkout/quote gives it;
continuing opens a checkout session whose page links to the provider's pay page; paying there as
a browser does (a form POST) comes back with 303 to the session's page, which says paid, and the
overview's balance rose by exactly the token line; the payment history lists the top-up, and the
refund when the provider refunds it. The API's refusals come back on the form with the API's
status and message; another account's session is 404; a form without its token is refused."""

from __future__ import annotations

import html
import re
from decimal import Decimal
from urllib.parse import urljoin

import httpx
import pytest

from console import Visitor
from gateway import D

#: The quote page's element ids and the quote fields they show.
QUOTE_LINES = {
    "quote-token-line": "token_line_usd",
    "quote-fx-rate": "fx_rate",
    "quote-fx-as-of": "fx_as_of",
    "quote-converted": "converted",
    "quote-fx-cost": "fx_cost",
    "quote-channel-fee": "channel_fee",
    "quote-total": "total",
}
AMOUNT = "25.55"
#: What a browser sends when a form without fields is submitted.
BROWSER_FORM = {"content-type": "application/x-www-form-urlencoded"}


def by_id(page: str, element_id: str) -> str:
    """The text of the element with `element_id` (one without child elements)."""
    m = re.search(rf'<[a-z]+\b[^>]*\bid="{re.escape(element_id)}"[^>]*>([^<]*)<', page)
    assert m, f"no #{element_id} on the page"
    return html.unescape(m.group(1)).strip()


def alerts(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'role="alert">([^<]*)<', page)]


def usd(text: str) -> Decimal:
    """An amount as the console shows it (`$25.55`, `−$1.5`)."""
    negative = text.startswith("−")
    value = D(text.lstrip("−").lstrip("$"))
    return -value if negative else value


def overview_balance(v: Visitor) -> Decimal:
    page = v.get("/console")
    assert page.status_code == 200, page.text[:500]
    return usd(by_id(page.text, "balance"))


def options(page: str, select_id: str) -> list[str]:
    m = re.search(rf'<select[^>]*\bid="{select_id}"[^>]*>(.*?)</select>', page, re.S)
    assert m, f"no select #{select_id}"
    return re.findall(r'<option value="([^"]+)"', m.group(1))


def foreign_choice(page: str) -> tuple[str, str]:
    """A currency other than USD that the top-up form offers (EUR if it can), and a channel that
    takes it (from the channel hint: `card takes EUR, GBP, …`)."""
    currencies = [c for c in options(page, "currency") if c != "USD"]
    assert currencies, "the demo offers no currency but USD"
    currency = "EUR" if "EUR" in currencies else currencies[0]
    hint = by_id(page, "channel-hint")
    for channel in options(page, "channel"):
        m = re.search(rf"\b{re.escape(channel)} takes ([A-Z, ]+)", hint)
        if m and currency in [c.strip() for c in m.group(1).split(",")]:
            return currency, channel
    raise AssertionError(f"no channel takes {currency}: {hint}")


@pytest.fixture
def visitor(gw):
    v = Visitor(gw.root)
    v.sign_up()
    yield v
    v.close()


def quote_page(v: Visitor, amount: str, currency: str, channel: str) -> httpx.Response:
    v.get("/console/top-up")
    return v.post("/console/top-up/quote", {"amount_usd": amount, "currency": currency, "channel": channel})


def open_session(v: Visitor, currency: str, channel: str) -> str:
    """Quote, then "Continue to payment": the checkout session's console path."""
    quoted = quote_page(v, AMOUNT, currency, channel)
    assert quoted.status_code == 200, quoted.text[:500]
    assert 'action="/console/top-up/pay"' in quoted.text and "Continue to payment" in quoted.text
    opened = v.post("/console/top-up/pay", {"amount_usd": AMOUNT, "currency": currency, "channel": channel})
    assert opened.status_code == 303, (opened.status_code, opened.text[:500])
    path = opened.headers["location"]
    assert re.fullmatch(r"/console/top-up/cs_[0-9a-f]+", path), path
    return path


def test_a_quote_shows_every_line_as_the_api_gives_it(visitor):
    form = visitor.get("/console/top-up")
    assert form.status_code == 200
    assert 'href="/console/top-up/history"' in form.text
    currency, channel = foreign_choice(form.text)
    page = quote_page(visitor, AMOUNT, currency, channel)
    assert page.status_code == 200, page.text[:500]
    with visitor.api() as api:
        r = api.post("/v1/checkout/quote", json={"amount_usd": AMOUNT, "currency": currency, "channel": channel})
    assert r.status_code == 200, r.text
    quote = r.json()
    for element_id, field in QUOTE_LINES.items():
        assert by_id(page.text, element_id) == quote[field], (element_id, quote)
    # Each line is on its own row of the quote table.
    table = re.search(r'<div class="table-wrap quote".*?</table>', page.text, re.S).group(0)
    rows = re.findall(r"<tr\b.*?</tr>", table, re.S)
    for element_id in QUOTE_LINES:
        assert sum(f'id="{element_id}"' in row for row in rows) == 1, element_id
    assert quote["currency"] != "USD" and D(quote["token_line_usd"]) == D(AMOUNT)


def test_pay_at_the_provider_and_come_back_credited(gw, visitor):
    before = overview_balance(visitor)
    currency, channel = foreign_choice(visitor.get("/console/top-up").text)
    path = open_session(visitor, currency, channel)
    cs_id = path.rsplit("/", 1)[1]

    page = visitor.get(path)
    assert page.status_code == 200, page.text[:500]
    assert 'data-status="open"' in page.text
    with visitor.api() as api:
        session = api.get(f"/v1/checkout/sessions/{cs_id}").json()
    for element_id, field in QUOTE_LINES.items():
        assert by_id(page.text, element_id) == session["quote"][field], element_id
    # The way to pay is a link (the CSP lets forms post only to the console), to payment_url.
    link = re.search(r'<a\b[^>]*\bid="pay-link"[^>]*>', page.text)
    assert link, page.text[:2000]
    href = html.unescape(re.search(r'href="([^"]+)"', link.group(0)).group(1))
    assert href == session["payment_url"]
    assert by_id(page.text, "pay-link") == f"Pay with {session['provider']}"

    # At the provider: its page, then its form posted as a browser does.
    pay_page = httpx.get(href, timeout=30)
    assert pay_page.status_code == 200, pay_page.text
    action = html.unescape(re.search(r'<form[^>]*action="([^"]+)"', pay_page.text).group(1))
    paid = httpx.post(urljoin(href, action), headers=BROWSER_FORM, timeout=30)
    assert paid.status_code == 303, (paid.status_code, paid.text)
    assert paid.headers["location"] == f"{gw.root}{path}"

    # Back at the console: paid, and the balance rose by exactly the token line.
    back = visitor.get(path)
    assert back.status_code == 200
    assert 'data-status="paid"' in back.text, back.text[:2000]
    assert 'id="pay-link"' not in back.text
    assert overview_balance(visitor) == before + D(AMOUNT)
    with visitor.api() as api:
        session = api.get(f"/v1/checkout/sessions/{cs_id}").json()
    assert session["status"] == "paid", session
    payment_id = session["payment_id"]

    history = visitor.get("/console/top-up/history")
    assert history.status_code == 200
    rows = re.findall(r'<tr data-kind="([a-z_]+)">(.*?)</tr>', history.text, re.S)
    topups = [r for k, r in rows if k == "topup" and payment_id in r]
    assert len(topups) == 1, rows
    assert f"+${AMOUNT}" in topups[0] and "Top-up" in topups[0]

    # The provider refunds it: the history shows the refund, the session page says so.
    with gw.http(gw.demo["payment_api_key"]) as sim:
        sim_base = re.match(r"https?://[^/]+", href).group(0)
        refunded = sim.post(f"{sim_base}/payments/v1/payments/{payment_id}/refund")
    assert refunded.status_code == 200, refunded.text
    assert refunded.json()["delivery"]["status"] == 200, refunded.text
    history = visitor.get("/console/top-up/history")
    rows = re.findall(r'<tr data-kind="([a-z_]+)">(.*?)</tr>', history.text, re.S)
    refunds = [r for k, r in rows if k == "refund" and payment_id in r]
    assert len(refunds) == 1 and f"−${AMOUNT}" in refunds[0], rows
    assert 'data-status="refunded"' in visitor.get(path).text
    assert overview_balance(visitor) == before


@pytest.mark.parametrize("amount", ["-5", "abc"])
def test_a_bad_amount_comes_back_on_the_form_with_the_api_message(visitor, amount):
    currency, channel = foreign_choice(visitor.get("/console/top-up").text)
    page = quote_page(visitor, amount, currency, channel)
    with visitor.api() as api:
        r = api.post("/v1/checkout/quote", json={"amount_usd": amount, "currency": currency, "channel": channel})
    assert r.status_code == 400
    assert page.status_code == 400, page.text[:500]
    assert alerts(page.text) == [r.json()["error"]["message"]]
    # The form again, as filled, its amount marked invalid; no quote.
    assert re.search(rf'name="amount_usd"[^>]*value="{re.escape(html.escape(amount))}"[^>]*aria-invalid="true"',
                     page.text), page.text[:2000]
    assert 'id="quote-total"' not in page.text
    # Opening a session with it is refused the same way.
    refused = visitor.post("/console/top-up/pay", {"amount_usd": amount, "currency": currency, "channel": channel})
    assert refused.status_code == 400 and alerts(refused.text) == [r.json()["error"]["message"]]


def test_another_accounts_session_is_not_found(gw, visitor):
    currency, channel = foreign_choice(visitor.get("/console/top-up").text)
    path = open_session(visitor, currency, channel)
    assert visitor.get(path).status_code == 200
    other = Visitor(gw.root)
    try:
        other.sign_up()
        seen = other.get(path)
        assert seen.status_code == 404, seen.text[:500]
        assert 'id="pay-link"' not in seen.text
        assert other.get("/console/top-up/cs_nonexistent").status_code == 404
    finally:
        other.close()


def test_forms_without_their_token_are_refused(visitor):
    visitor.get("/console/top-up")
    fields = {"amount_usd": "10", "currency": "USD", "channel": "card"}
    for path in ("/console/top-up/pay", "/console/top-up/quote"):
        r = visitor.post(path, fields, token="")
        assert r.status_code == 403, (path, r.status_code)
        assert "location" not in r.headers


def test_signed_out_visitors_are_sent_to_log_in(gw):
    v = Visitor(gw.root)
    try:
        for path in ("/console/top-up", "/console/top-up/history", "/console/top-up/cs_x"):
            r = v.get(path)
            assert r.status_code in (302, 303, 307) and r.headers["location"].startswith("/login"), path
    finally:
        v.close()
