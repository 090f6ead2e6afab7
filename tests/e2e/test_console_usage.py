"""The console's usage, request and referrals pages (crates/server/src/console/pages/usage.rs,
pages/usage/, pages/referrals.rs) against the shared demo gateway, as a visitor without a
browser (console.Visitor): every figure a page shows is the API's own, compared with what the
management API answers for the same account — request ids, exact costs, filters, cursor pages,
the CSV and JSON Lines exports byte for byte, summaries, a request's record and receipt, the
invite link, the masked referred account and its 5% commission. Another account's request is
404 like an unknown one."""

from __future__ import annotations

import html
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import openai
import pytest

from console import Visitor
from gateway import D, get_record, is_embedding, model_pricing

# ----------------------------------------------------------------------------- helpers


def top_up(api: httpx.Client, amount: str) -> None:
    """A paid top-up at the demo's simulated provider, its webhook delivered and credited."""
    r = api.post("/v1/checkout/sessions", json={"amount_usd": amount, "currency": "USD", "channel": "card"})
    assert r.status_code == 201, r.text
    paid = httpx.post(r.json()["payment_url"], timeout=30)
    assert paid.status_code == 200, paid.text
    delivery = paid.json()["delivery"]
    assert delivery and delivery["body"]["outcome"] == "credited", delivery


def table_rows(page: str) -> dict[str, str]:
    """{request id: cost as shown, without its `$`} of the usage table, in page order."""
    rows = re.findall(r'<a href="/console/requests/(req_[0-9a-f]+)">.*?<td class="num cost">\$([^<]+)</td>',
                      page, re.S)
    return dict(rows)


def link(page: str, text: str) -> str | None:
    """The href of the link reading exactly `text`."""
    m = re.search(r'<a (?:rel="next" )?href="([^"]+)"[^>]*>' + re.escape(text) + "</a>", page)
    return html.unescape(m.group(1)) if m else None


def api_usage(api: httpx.Client, **params) -> dict:
    r = api.get("/v1/usage", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def two_chat_models(gw) -> tuple[str, str]:
    with gw.http(gw.api_key) as c:
        models = model_pricing(c)
    chat = [m for m, info in models.items() if not is_embedding(info)]
    preferred = [m for m in ("gpt-6-luna", "claude-sonnet-5-5") if m in chat]
    picked = preferred + [m for m in chat if m not in preferred]
    assert len(picked) >= 2, models.keys()
    return picked[0], picked[1]


@dataclass
class Spender:
    visitor: Visitor
    api: httpx.Client
    key_id: str
    model_a: str
    model_b: str
    a_ids: list[str]
    b_ids: list[str]
    error_id: str

    @property
    def ids(self) -> set[str]:
        return {*self.a_ids, *self.b_ids, self.error_id}


@pytest.fixture(scope="module")
def spender(gw):
    """A new console account with credit and one key: three requests to one model, two to
    another and one refused (an unknown model, 404), all recorded."""
    v = Visitor(gw.root)
    v.sign_up()
    api = v.api()
    top_up(api, "5")
    key = api.post("/v1/keys", json={"name": "console usage"})
    assert key.status_code == 201, key.text
    key = key.json()
    model_a, model_b = two_chat_models(gw)
    client = gw.openai(key["key"])

    def chat(model: str) -> str:
        deadline = time.monotonic() + 5
        while True:
            try:
                r = client.chat.completions.with_raw_response.create(
                    model=model, max_tokens=16, messages=[{"role": "user", "content": "hello console"}])
                return r.headers["x-request-id"]
            except openai.APIStatusError as e:  # the credit may take a moment to reach the key
                if e.status_code != 402 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    a_ids = [chat(model_a) for _ in range(3)]
    b_ids = [chat(model_b) for _ in range(2)]
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="no-such-model-console", messages=[{"role": "user", "content": "x"}])
    error_id = refused.value.response.headers["x-request-id"]
    # Each has its record (checked here: test_zz_records reads the demo account's records only).
    for rid in [*a_ids, *b_ids, error_id]:
        get_record(api, rid)
    yield Spender(v, api, key["id"], model_a, model_b, a_ids, b_ids, error_id)
    client.close()
    api.close()
    v.close()


# ----------------------------------------------------------------------------- usage table


def test_the_usage_table_lists_exactly_the_accounts_requests_at_the_apis_costs(spender):
    page = spender.visitor.get("/console/usage")
    assert page.status_code == 200, page.text
    shown = table_rows(page.text)
    assert set(shown) == spender.ids
    api = {r["request_id"]: r["cost"] for r in api_usage(spender.api)["data"]}
    assert shown == api, "the page shows each cost exactly as the API gives it"
    assert D(shown[spender.error_id]) == 0
    assert all(D(shown[i]) > 0 for i in spender.a_ids + spender.b_ids)
    # Links to the other views and to each request.
    for view in ("group_by=key", "group_by=model", "group_by=day"):
        assert f'href="/console/usage/summary?{view}"' in page.text
    assert "content-security-policy" in page.headers


def test_filters_narrow_the_table_as_the_api_does(spender):
    v = spender.visitor
    by_model = table_rows(v.get("/console/usage", params={"model": spender.model_b}).text)
    assert set(by_model) == set(spender.b_ids)
    errors = v.get("/console/usage", params={"status": "error"})
    assert set(table_rows(errors.text)) == {spender.error_id}
    assert set(table_rows(v.get("/console/usage", params={"status": "404"}).text)) == {spender.error_id}
    ok = table_rows(v.get("/console/usage", params={"status": "success", "key_id": spender.key_id}).text)
    assert set(ok) == set(spender.a_ids + spender.b_ids)
    today = datetime.now(timezone.utc).date()
    same_day = v.get("/console/usage", params={"from": str(today), "to": str(today)})
    assert set(table_rows(same_day.text)) == spender.ids, "`to` includes its whole day"
    before = v.get("/console/usage", params={"to": str(today - timedelta(days=1))})
    assert table_rows(before.text) == {} and "No requests match these filters" in before.text
    # The filters stay in the form and in the links to the summaries.
    page = v.get("/console/usage", params={"model": spender.model_b}).text
    assert f'<option value="{spender.model_b}" selected>' in page
    assert f'href="/console/usage/summary?model={spender.model_b}&amp;group_by=key"' in page
    # A filter the API refuses shows its message with its status.
    bad = v.get("/console/usage", params={"status": "sometimes"})
    assert bad.status_code == 400 and "Invalid status `sometimes`" in bad.text


def test_pages_follow_the_apis_cursor(spender):
    v = spender.visitor
    every = [r["request_id"] for r in reversed(api_usage(spender.api)["data"])]
    seen: list[str] = []
    page = v.get("/console/usage", params={"limit": "2"})
    assert link(page.text, "First page") is None
    for _ in range(10):
        assert page.status_code == 200, page.text
        rows = list(table_rows(page.text))
        assert len(rows) <= 2
        seen.extend(rows)
        following = link(page.text, "Next page")
        if following is None:
            break
        assert "limit=2" in following and "after=" in following
        page = v.get(following)
        assert link(page.text, "First page") == "/console/usage?limit=2"
    assert seen == every, "pages of two hold every record once, newest first"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_download_is_the_apis_export_byte_for_byte(spender, fmt):
    v = spender.visitor
    page = v.get("/console/usage", params={"model": spender.model_a, "limit": "2"})
    href = link(page.text, "CSV" if fmt == "csv" else "JSON Lines")
    # Every record the filters match, whatever page the table shows, oldest first.
    assert href == f"/console/usage/download?model={spender.model_a}&format={fmt}"
    got = v.get(href)
    want = spender.api.get("/v1/usage", params={"model": spender.model_a, "limit": "1000", "format": fmt})
    matching = [r for r in api_usage(spender.api)["data"] if r["requested_model"] == spender.model_a]
    assert got.status_code == 200 == want.status_code, got.text
    assert got.content == want.content
    assert got.headers["content-type"] == want.headers["content-type"]
    assert got.headers["content-disposition"] == f"attachment; filename=usage.{fmt}"
    assert len(got.content.strip().splitlines()) == len(matching) + (1 if fmt == "csv" else 0)
    assert len(matching) > 2, "more records than the table's page of two"


def test_summaries_show_the_apis_totals(spender):
    v = spender.visitor
    page = v.get("/console/usage/summary", params={"group_by": "model"})
    assert page.status_code == 200, page.text
    rows = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td class="num">\d+</td>'
                           r'(?:<td class="num">\d+</td>){4}<td class="num cost">\$([^<]+)</td>', page.text))
    api = spender.api.get("/v1/usage/summary", params={"group_by": "model"}).json()["data"]
    assert rows == {r["group"]: r["cost"] for r in api}
    total = re.search(r'id="total-cost">\$([^<]+)<', page.text).group(1)
    assert D(total) == sum(D(r["cost"]) for r in api)
    requests = re.search(r'id="total-requests">(\d+)<', page.text).group(1)
    assert int(requests) == sum(r["requests"] for r in api) == len(spender.ids)
    assert "<svg" in page.text and "Cost by model" in page.text
    for group in ("key", "day"):
        other = v.get("/console/usage/summary", params={"group_by": group, "model": spender.model_a})
        assert other.status_code == 200 and 'aria-current="page">By ' + group in other.text
        assert re.search(r'id="total-requests">3<', other.text), "the filters apply to summaries too"
    assert v.get("/console/usage/summary", params={"group_by": "week"}).status_code == 400


# ----------------------------------------------------------------------------- one request


def test_the_request_page_shows_the_record_timeline_and_receipt(spender):
    v = spender.visitor
    rid = spender.a_ids[0]
    page = v.get(f"/console/requests/{rid}")
    assert page.status_code == 200, page.text
    record = get_record(spender.api, rid)
    facts = page.text[page.text.index('id="record"'):page.text.index('id="timeline"')]
    assert f"${record['cost']}<" in facts and rid in facts and record["served_model"] in facts
    assert "sent upstream" in page.text and "completed" in page.text
    r = spender.api.get(f"/v1/requests/{rid}/receipt")
    if r.status_code == 404:
        pytest.skip("this gateway signs no receipts")
    receipt = r.json()["receipt"]
    shown = re.search(r'<textarea id="receipt"[^>]*>([^<]*)</textarea>', page.text).group(1)
    assert html.unescape(shown) == receipt
    assert 'data-copy="receipt"' in page.text and 'href="/.well-known/jwks.json"' in page.text
    assert "router-one verify RECEIPT" in page.text
    assert "Checked here: signed by key" in page.text, "the page checked it against the published keys"
    claims = page.text[page.text.index('id="claims"'):]
    assert f"<dd>{record['cost']}</dd>" in claims and f"<dd>{rid}</dd>" in claims
    # A refused request has a record and no receipt.
    refused = v.get(f"/console/requests/{spender.error_id}")
    assert refused.status_code == 200 and 'id="no-receipt"' in refused.text


def recent_request_id() -> str:
    """An id of the gateway's shape minted now (a UUIDv7), which no request has."""
    raw = bytearray(int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return "req_" + raw.hex()


def test_another_accounts_request_is_not_found(gw, spender):
    other = Visitor(gw.root)
    try:
        other.sign_up()
        theirs = other.get(f"/console/requests/{spender.a_ids[0]}")
        assert theirs.status_code == 404
        assert spender.a_ids[0] in theirs.text and "in this account" in theirs.text
        assert other.get("/console/requests/req_nothing").status_code == 404
        assert table_rows(other.get("/console/usage").text) == {}
        # An id minted moments ago that nobody recorded yet: "pending", never whose it is.
        pending = other.get(f"/console/requests/{recent_request_id()}")
        assert pending.status_code == 202 and "still being recorded" in pending.text
    finally:
        other.close()


def test_usage_pages_need_a_session(gw):
    with httpx.Client(base_url=gw.root, follow_redirects=False) as anon:
        for path in ("/console/usage", "/console/usage/summary", "/console/usage/download?format=csv",
                     "/console/requests/req_x", "/console/referrals"):
            r = anon.get(path)
            assert r.status_code in (302, 303) and r.headers["location"].startswith("/login"), (path, r.status_code)


# ----------------------------------------------------------------------------- referrals


def test_an_inviter_sees_the_invitee_masked_and_a_five_percent_commission(gw):
    inviter = Visitor(gw.root)
    invitee = Visitor(gw.root)
    try:
        inviter.sign_up()
        api = inviter.api()
        referrals = api.get("/v1/referrals").json()
        page = inviter.get("/console/referrals")
        assert page.status_code == 200, page.text
        shown = re.search(r'<input id="invite-link" type="text" readonly value="([^"]+)"', page.text).group(1)
        assert html.unescape(shown) == referrals["link"]
        assert f'id="invite-code">{referrals["code"]}<' in page.text
        assert 'data-copy="invite-link"' in page.text
        assert "Nobody has signed up with your link yet" in page.text

        # The invitee follows the link: the sign-up form has the code filled in.
        path = httpx.URL(referrals["link"]).raw_path.decode()
        form = invitee.get(path)
        assert f'name="invite_code" value="{referrals["code"]}"' in form.text
        email = f"invitee-{os.urandom(5).hex()}@example.com"
        signed = invitee.post("/signup", {"email": email, "password": "correct horse battery staple",
                                          "invite_code": referrals["code"]})
        assert signed.status_code == 303, signed.text
        invitee_api = invitee.api()
        assert invitee_api.get("/v1/account").json()["referred_by"] is not None
        top_up(invitee_api, "20")
        invitee_api.close()

        after = api.get("/v1/referrals").json()
        assert D(after["commission_total"]) == Decimal("1"), after  # 5% of the $20 token line
        page = inviter.get("/console/referrals").text
        masked = after["referred"][0]["email"]
        assert masked != email and masked.endswith("@example.com")
        assert f'<th scope="row">{html.escape(masked)}</th>' in page
        assert email not in page, "the invitee's email is never shown whole"
        assert f'id="commission-total">${after["commission_total"]}<' in page
        ledger = [e for e in api.get("/v1/account/ledger").json()["data"] if e["kind"] == "commission"]
        assert len(ledger) == 1
        commissions = page[page.index('id="commissions"'):]
        assert f'<td class="num cost">${ledger[0]["amount"]}</td>' in commissions
        assert ledger[0]["reference"] in commissions
        # The invitee has an inviter (and has topped up): no form to name one.
        assert 'action="/console/referrals/claim"' not in invitee.get("/console/referrals").text
        api.close()
    finally:
        inviter.close()
        invitee.close()


def test_an_account_without_an_inviter_can_name_one_once(gw):
    inviter = Visitor(gw.root)
    late = Visitor(gw.root)
    try:
        inviter.sign_up()
        with inviter.api() as api:
            code = api.get("/v1/referrals").json()["code"]
        late.sign_up()
        page = late.get("/console/referrals")
        assert 'action="/console/referrals/claim"' in page.text
        unknown = late.post("/console/referrals/claim", {"invite_code": "NOSUCHCODE"})
        assert unknown.status_code == 400 and "No account has this invite code." in unknown.text
        assert late.post("/console/referrals/claim", {"invite_code": code}, token="").status_code == 403
        late.get("/console/referrals")
        claimed = late.post("/console/referrals/claim", {"invite_code": code})
        assert claimed.status_code == 303 and claimed.headers["location"] == "/console/referrals?claimed=1"
        page = late.get(claimed.headers["location"])
        assert "Your inviter is recorded." in page.text
        assert 'action="/console/referrals/claim"' not in page.text
        with late.api() as api:
            assert api.get("/v1/account").json()["referred_by"] is not None
    finally:
        inviter.close()
        late.close()
