"""Checkout quotes through the public API: the token line is exactly the USD bought, FX and the
channel fee are separate lines in the chosen currency, and the lines add up exactly to the total
under the documented rounding rule (each line rounded once to the currency's minor unit, half
away from zero). The rates are the built-in example config's (config/router-one.toml)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from gateway import D


def rounded(value: Decimal, minor_units: int) -> Decimal:
    # Half away from zero on the non-negative amounts quotes deal in.
    return value.quantize(Decimal(1).scaleb(-minor_units), rounding=ROUND_HALF_UP)


@pytest.mark.parametrize("amount,currency,channel,rate,markup,percent,fixed,minor", [
    ("25.55", "EUR", "card", "0.9234", "1.5", "2.9", "0.25", 2),
    ("10", "USD", "card", "1", "0", "2.9", "0.30", 2),
    ("33.33", "CNY", "alipay", "7.1234", "0.8", "1.2", "0", 2),
    ("20", "JPY", "card", "151.37", "1", "2.9", "40", 0),
    ("100.01", "CNY", "wechat_pay", "7.1234", "0.8", "1.0", "0", 2),
])
def test_quote_lines_add_up_exactly(mgmt, amount, currency, channel, rate, markup, percent, fixed, minor):
    r = mgmt.post("/v1/checkout/quote", json={"amount_usd": amount, "currency": currency, "channel": channel})
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["object"] == "checkout.quote"
    assert D(q["token_line_usd"]) == D(amount), q
    assert (q["currency"], q["channel"], q["minor_units"]) == (currency, channel, minor), q
    assert D(q["fx_rate"]) == D(rate) and q["fx_as_of"], q
    converted = rounded(D(amount) * D(rate), minor)
    fx_cost = rounded(converted * D(markup) / 100, minor)
    fee = rounded((converted + fx_cost) * D(percent) / 100 + D(fixed), minor)
    assert (D(q["converted"]), D(q["fx_cost"]), D(q["channel_fee"])) == (converted, fx_cost, fee), q
    assert D(q["total"]) == converted + fx_cost + fee == D(q["converted"]) + D(q["fx_cost"]) + D(q["channel_fee"])


def test_a_json_number_amount_is_read_exactly(mgmt):
    r = mgmt.post("/v1/checkout/quote", content=b'{"amount_usd": 19.99, "currency": "EUR", "channel": "card"}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["token_line_usd"] == "19.99"


@pytest.mark.parametrize("body,param", [
    ({"amount_usd": "0", "currency": "EUR", "channel": "card"}, "amount_usd"),
    ({"amount_usd": "10.001", "currency": "EUR", "channel": "card"}, "amount_usd"),
    ({"amount_usd": "ten", "currency": "EUR", "channel": "card"}, "amount_usd"),
    ({"amount_usd": "10", "currency": "XXX", "channel": "card"}, "currency"),
    ({"amount_usd": "10", "currency": "CNY", "channel": "card"}, "currency"),
    ({"amount_usd": "10", "currency": "EUR", "channel": "pigeon"}, "channel"),
])
def test_bad_quotes_are_400_naming_the_field(mgmt, body, param):
    r = mgmt.post("/v1/checkout/quote", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text


def test_quotes_need_a_management_key(http):
    r = http.post("/v1/checkout/quote", json={"amount_usd": "10", "currency": "USD", "channel": "card"})
    assert r.status_code == 401, r.text
