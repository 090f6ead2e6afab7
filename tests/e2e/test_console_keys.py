"""The console's keys, models and docs pages (crates/server/src/console/pages/{keys,models,docs}.rs),
visited without a browser (console.Visitor) on the shared demo gateway: a key created with limits
through the form shows its secret once and is listed without it; the secret works with the
official openai client and its spend reaches the list; the API's refusals come back on the form
with the API's status and message; edit and revoke (with its confirmation) do what they say;
another account gets 404; a form without its token changes nothing; the models page shows the
catalog at the rates of GET /v1/models, and its "try it" box the exact cost of the record the
request made; the docs page names this deployment's base URL and every model id."""

from __future__ import annotations

import html
import re
import time
import uuid
from decimal import Decimal

import openai
import pytest

from console import Visitor
from gateway import D, get_record, model_pricing, pick_chat_model

SECRET = re.compile(r"sk-rk-[A-Za-z0-9_\-]{20,}")  # a whole secret, not a hint (`sk-rk-AbCd…`)


def text_of(page: str) -> str:
    """The page's text with tags removed and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def row(page: str, row_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', page, re.S)
    assert m, f"no row {row_id} on the page"
    return m.group(1)


def credited_visitor(gw, amount: str = "5") -> Visitor:
    """A new account, signed in, with `amount` USD to spend."""
    v = Visitor(gw.root)
    v.sign_up()
    with v.api() as api:
        account_id = api.get("/v1/account").json()["id"]
        res = gw.admin("credit", "--account", account_id, "--amount", amount, "--reason", "console test")
        assert res.returncode == 0, res.stderr
        deadline = time.monotonic() + 5
        while D(api.get("/v1/account").json()["balance"]) != D(amount):
            assert time.monotonic() < deadline, "the credit did not reach the gateway"
            time.sleep(0.1)
    return v


@pytest.fixture(scope="module")
def models(gw):
    with gw.http(gw.api_key) as c:
        return model_pricing(c)


@pytest.fixture(scope="module")
def chat_model(models):
    return pick_chat_model(models)


@pytest.fixture(scope="module")
def owner(gw):
    v = credited_visitor(gw)
    yield v
    v.close()


def create_key(v: Visitor, **fields) -> tuple[str, dict, str]:
    """Creates a key through the form; (secret, the key as the API shows it, the answer page)."""
    page = v.get("/console/keys/new")
    assert page.status_code == 200, page.text
    name = fields.pop("name", f"console-{uuid.uuid4().hex[:8]}")
    r = v.post("/console/keys/new", {"name": name, "budget_period": "none",
                                      "on_oversized_max_tokens": "clamp", "router_headers": "on", **fields})
    assert r.status_code == 200, r.text[:2000]
    secrets = SECRET.findall(r.text)
    assert len(set(secrets)) == 1, secrets
    with v.api() as api:
        key = next(k for k in api.get("/v1/keys").json()["data"] if k["name"] == name)
    return secrets[0], key, r.text


def test_a_key_created_with_limits_shows_its_secret_once_and_works(gw, owner, chat_model, models):
    other = next(m for m in models if m != chat_model)
    secret, key, answer = create_key(
        owner, max_spend="2.50", budget_period="daily", rpm_limit="100", tpm_limit="1000000",
        max_concurrency="4", models=[chat_model, other], expires_at="2099-01-02T03:04",
        metadata='{"customer": "acme"}', always_include_usage="on")
    # The answer: the secret in a read-only field with a copy button, and the warning.
    assert re.search(r'<input id="key-secret" type="text" readonly value="sk-rk-', answer), answer
    assert 'data-copy="key-secret"' in answer
    assert "will not be shown again" in answer
    assert key["hint"] and key["hint"] in answer
    # Every field reached the API.
    assert D(key["max_spend"]) == Decimal("2.50")
    assert key["budget_period"] == "daily"
    assert (key["rpm_limit"], key["tpm_limit"], key["max_concurrency"]) == (100, 1000000, 4)
    assert sorted(key["models"]) == sorted([chat_model, other])
    assert key["expires_at"] == "2099-01-02T03:04:00Z"
    assert key["metadata"] == {"customer": "acme"}
    assert key["always_include_usage"] is True and key["router_headers"] is True

    # The list shows the key, never its secret.
    listing = owner.get("/console/keys")
    assert listing.status_code == 200
    assert secret not in listing.text
    assert not SECRET.search(listing.text)
    cells = text_of(row(listing.text, f"key-{key['id']}"))
    assert key["name"] in cells and "active" in cells and "100 of 100 left" in cells, cells

    # The secret works with the official client; the spend reaches the list.
    client = gw.openai(api_key=secret)
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model, messages=[{"role": "user", "content": "Hello from the console test"}])
    request_id = raw.headers["x-request-id"]
    with owner.api() as api:
        record = get_record(api, request_id)
        assert D(record["cost"]) > 0
        spend = api.get(f"/v1/keys/{key['id']}").json()["spend"]
    assert D(spend) == D(record["cost"])
    listing = owner.get("/console/keys")
    spend_cell = re.search(r'<td class="num spend">([^<]*)</td>', row(listing.text, f"key-{key['id']}"))
    assert spend_cell and spend_cell.group(1) == f"${spend}", (spend_cell and spend_cell.group(1), spend)

    # No other page shows the secret.
    for path in ("/console", f"/console/keys/{key['id']}", f"/console/keys/{key['id']}/revoke",
                 "/console/models", "/console/docs"):
        page = owner.get(path)
        assert page.status_code == 200, (path, page.status_code)
        assert not SECRET.search(page.text), path


def test_a_refused_field_comes_back_marked_with_the_apis_message(owner):
    with owner.api() as api:
        before = len(api.get("/v1/keys").json()["data"])
    owner.get("/console/keys/new")
    r = owner.post("/console/keys/new", {"name": "kept name", "max_spend": "-1", "rpm_limit": "7",
                                         "budget_period": "weekly", "router_headers": "on"})
    assert r.status_code == 400, r.text[:1000]
    assert "max_spend must not be negative." in text_of(r.text)
    assert re.search(r'<input[^>]*name="max_spend"[^>]*aria-invalid="true"', r.text), r.text
    assert 'value="kept name"' in r.text and 'value="-1"' in r.text and 'value="7"' in r.text
    assert re.search(r'<option value="weekly" selected>', r.text)
    # A number the console cannot read goes to the API as typed: the refusal is the API's.
    r = owner.post("/console/keys/new", {"name": "x", "rpm_limit": "-5"})
    assert r.status_code == 400 and "`rpm_limit` must be a whole number" in text_of(r.text)
    assert re.search(r'<input[^>]*name="rpm_limit"[^>]*aria-invalid="true"', r.text)
    with owner.api() as api:
        assert len(api.get("/v1/keys").json()["data"]) == before


def test_edit_changes_a_field_and_a_refusal_keeps_the_values(owner):
    _, key, _ = create_key(owner, rpm_limit="10")
    path = f"/console/keys/{key['id']}"
    page = owner.get(path)
    assert page.status_code == 200 and 'value="10"' in page.text
    r = owner.post(path, {"name": "renamed", "rpm_limit": "20", "budget_period": "none",
                          "on_oversized_max_tokens": "refuse", "router_headers": "on"})
    assert r.status_code == 303 and r.headers["location"] == f"{path}?saved=1", r.text[:500]
    with owner.api() as api:
        now = api.get(f"/v1/keys/{key['id']}").json()
    assert (now["name"], now["rpm_limit"], now["on_oversized_max_tokens"]) == ("renamed", 20, "refuse")
    page = owner.get(f"{path}?saved=1")
    assert "Saved." in page.text and 'value="20"' in page.text

    r = owner.post(path, {"name": "renamed again", "expires_at": "someday"})
    assert r.status_code == 400 and "Invalid expires_at" in text_of(r.text)
    assert 'value="renamed again"' in r.text and 'value="someday"' in r.text
    with owner.api() as api:
        assert api.get(f"/v1/keys/{key['id']}").json()["name"] == "renamed"


def test_revoke_asks_first_then_the_key_is_refused(gw, owner, chat_model):
    secret, key, _ = create_key(owner, name=f"to-revoke-{uuid.uuid4().hex[:6]}")
    confirm = owner.get(f"/console/keys/{key['id']}/revoke")
    assert confirm.status_code == 200
    assert f"Revoke key {key['name']}? Requests with it will be refused." in re.sub(r"<[^>]+>", "", confirm.text)
    r = owner.post(f"/console/keys/{key['id']}/revoke")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/keys?revoked="), r.headers
    listing = owner.get(r.headers["location"])
    assert "was revoked" in listing.text
    assert "revoked" in text_of(row(listing.text, f"key-{key['id']}"))
    with pytest.raises(openai.AuthenticationError) as refused:
        gw.openai(api_key=secret).chat.completions.create(
            model=chat_model, messages=[{"role": "user", "content": "still there?"}])
    assert refused.value.status_code == 401


def test_another_accounts_key_is_not_found(gw, owner):
    _, key, _ = create_key(owner)
    stranger = Visitor(gw.root)
    try:
        stranger.sign_up()
        for path in (f"/console/keys/{key['id']}", f"/console/keys/{key['id']}/revoke"):
            assert stranger.get(path).status_code == 404, path
        stranger.get("/console/keys")  # a page of its own, for its form token
        assert stranger.post(f"/console/keys/{key['id']}/revoke").status_code == 404
        assert stranger.post(f"/console/keys/{key['id']}", {"name": "mine now"}).status_code == 404
    finally:
        stranger.close()
    with owner.api() as api:
        still = api.get(f"/v1/keys/{key['id']}").json()
    assert still["revoked_at"] is None and still["name"] == key["name"]


def test_a_form_without_its_token_changes_nothing(owner):
    _, key, _ = create_key(owner)
    with owner.api() as api:
        before = len(api.get("/v1/keys").json()["data"])
    # (A body of its own, as a browser's form has: an empty one is not a form at all, a 400.)
    assert owner.post(f"/console/keys/{key['id']}/revoke", {"go": "1"}, token="").status_code == 403
    assert owner.post(f"/console/keys/{key['id']}", {"name": "forged"}, token="").status_code == 403
    assert owner.post("/console/keys/new", {"name": "forged"}, token="").status_code == 403
    assert owner.post(f"/console/keys/{key['id']}/revoke", {"go": "1"}, token="0" * 40).status_code == 403
    with owner.api() as api:
        now = api.get(f"/v1/keys/{key['id']}").json()
        assert now["revoked_at"] is None and now["name"] == key["name"]
        assert len(api.get("/v1/keys").json()["data"]) == before


def test_the_models_page_shows_the_catalog_at_its_posted_rates(owner, models):
    page = owner.get("/console/models")
    assert page.status_code == 200
    for mid, m in models.items():
        cells = row(page.text, f"model-{mid}")
        rates = dict(re.findall(r'data-rate="(\w+)">([^<]*)<', cells))
        p = m["pricing"]
        assert rates == {"input": f"${p['input_per_mtok']}", "cached_input": f"${p['cached_input_per_mtok']}",
                         "output": f"${p['output_per_mtok']}"}, (mid, rates, p)
        words = text_of(cells)
        assert str(m["context_window"]) in words and str(m["max_output"]) in words, words
    # The try-it box offers every chat model and only those.
    offered = set(re.findall(r'<option value="([^"]+)"', page.text))
    assert offered == {mid for mid, m in models.items() if m["kind"] == "chat"}


def test_try_it_shows_the_reply_and_the_exact_record(owner, chat_model):
    with owner.api() as api:
        secret = api.post("/v1/keys", json={"name": "try-it"}).json()["key"]
    owner.get("/console/models")
    r = owner.post("/console/models/try", {"key": secret, "model": chat_model, "message": "Hi there"})
    assert r.status_code == 200, r.text[:2000]
    assert secret not in r.text
    request_id = re.search(r'<code id="request-id">([^<]+)</code>', r.text).group(1)
    shown_cost = re.search(r'<dd id="record-cost">([^<]+)</dd>', r.text).group(1)
    with owner.api() as api:
        record = get_record(api, request_id)
    assert shown_cost == f"${record['cost']}" and D(record["cost"]) > 0, (shown_cost, record)
    words = text_of(r.text)
    assert record["served_model"] in words
    assert re.search(r'<p class="reply" id="reply">[^<]+</p>', r.text), "no reply text"


def test_try_it_with_a_bad_key_shows_the_apis_refusal(gw, owner, chat_model):
    with gw.http("sk-rk-not-a-real-key") as c:
        refusal = c.post("/v1/chat/completions",
                         json={"model": chat_model, "messages": [{"role": "user", "content": "x"}]})
    assert refusal.status_code == 401
    owner.get("/console/models")
    r = owner.post("/console/models/try", {"key": "sk-rk-not-a-real-key", "model": chat_model, "message": "x"})
    assert r.status_code == 401
    assert refusal.json()["error"]["message"] in text_of(r.text)
    assert "sk-rk-not-a-real-key" not in r.text


def test_the_docs_page_has_this_deployments_values(gw, owner, models):
    page = owner.get("/console/docs")
    assert page.status_code == 200
    assert f'value="{gw.root}"' in page.text
    assert f"{gw.root}/v1" in page.text
    listed = re.search(r'<textarea id="model-list"[^>]*>([^<]*)</textarea>', page.text)
    assert listed and set(listed.group(1).split(",")) == set(models)
    assert 'href="/console/keys/new"' in page.text and 'data-copy="model-list"' in page.text
    assert "OpenAI" in page.text
