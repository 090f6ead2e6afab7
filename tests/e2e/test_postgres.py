"""The gateway on PostgreSQL (`--database postgres://…`): it serves and meters, its records and
ledger add up in SQL, a kill -9 loses no record, the admin commands reach the same database, the
demo account exists once per database, a second gateway on the same database is refused (until
budget leases let several share one), and /health follows the database's reachability.

Every test makes its own database on the test server (ROUTER_ONE_TEST_POSTGRES_URL, default the
machine's shared PostgreSQL); none of them stops that server: the outage test cuts a TCP proxy
of its own between the gateway and PostgreSQL instead."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import tracked
from gateway import (BIN, D, E2E_DB_PREFIX, Gateway, TcpProxy, UNIT, check_record_cost, create_database, list_usage, log_path,
                     model_pricing, pick_chat_model, psql)

PROMPT = "postgres test [[sim:ttft_ms=10,tpot_ms=5,words=20]]"


@pytest.fixture
def database():
    name = f"{E2E_DB_PREFIX}pg_{uuid.uuid4().hex[:12]}"
    url = create_database(name)
    yield name, url
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _chat(c: httpx.Client, model: str, n: int, stream: bool) -> tuple[str | None, bool]:
    """One request; returns (request id, whether the client saw it complete)."""
    body = {"model": model, "messages": [{"role": "user", "content": f"{PROMPT} #{n}"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            done = any(line.strip() == "data: [DONE]" for line in r.iter_lines())
            return r.headers.get("x-request-id"), r.status_code == 200 and done
    r = c.post("/v1/chat/completions", json=body)
    ok = r.status_code == 200 and "usage" in r.json()
    return r.headers.get("x-request-id"), ok


def _audit(db: str) -> None:
    """The invariants of the store, in SQL: one record per request id; per account balance =
    Σ ledger and Σ usage debits = Σ record costs; per key lifetime spend = Σ its record costs."""
    dup = psql("SELECT count(*) - count(DISTINCT request_id) FROM usage_records", db)
    assert dup == "0", f"{dup} duplicate usage records"
    bad_balance = psql("SELECT a.id FROM accounts a LEFT JOIN ledger_entries l ON l.account_id = a.id "
                       "GROUP BY a.id, a.balance_units HAVING a.balance_units <> COALESCE(sum(l.amount_units), 0) "
                       "OR a.balance_units < 0", db)
    assert bad_balance == "", f"accounts whose balance is not the sum of their ledger: {bad_balance}"
    debits = psql("SELECT COALESCE(-sum(amount_units), 0) FROM ledger_entries WHERE kind = 'usage'", db)
    costs = psql("SELECT COALESCE(sum(cost_units), 0) FROM usage_records", db)
    assert debits == costs, f"usage debits {debits} != record costs {costs}"
    bad_keys = psql("SELECT k.id FROM api_keys k LEFT JOIN usage_records u ON u.key_id = k.id "
                    "GROUP BY k.id, k.spend_units HAVING k.spend_units <> COALESCE(sum(u.cost_units), 0)", db)
    assert bad_keys == "", f"keys whose spend is not the sum of their records: {bad_keys}"


def test_serves_meters_and_loses_nothing_to_kill_9(tmp_path, database):
    name, url = database
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("pg-gateway", tmp_path), database=url))
    g.start()
    with g.http(g.api_key) as http:
        models = model_pricing(http)
        model = pick_chat_model(models)
        first = [_chat(http, model, n, stream=n % 2 == 0) for n in range(6)]
    assert all(ok for _, ok in first), first

    # 16 clients in flight, then kill -9 once some of both kinds completed.
    stop = threading.Event()
    completed: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        with g.http(g.api_key, timeout=30) as c:
            i = 0
            while not stop.is_set():
                try:
                    rid, ok = _chat(c, model, n * 1000 + i, stream=n % 2 == 0)
                except (httpx.HTTPError, json.JSONDecodeError):
                    return
                if ok:
                    with lock:
                        completed.append(rid)
                i += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(completed) < 30:
        time.sleep(0.05)
    g.kill()
    stop.set()
    for t in threads:
        t.join(35)
    assert len(completed) >= 30, f"only {len(completed)} requests completed before the kill"

    g2 = tracked(Gateway(g.data_dir, log_path=log_path("pg-gateway-restart", tmp_path), database=url))
    g2.start()
    try:
        assert g2.api_key == g.api_key, "the demo credentials were not reused"
        want = [rid for rid, _ in first] + completed
        with g2.http(g2.management_key) as mgmt:
            deadline = time.monotonic() + 10
            while True:
                records = list_usage(mgmt, limit=500)
                counts = Counter(r["request_id"] for r in records)
                missing = [rid for rid in want if counts[rid] != 1]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert not missing, f"{len(missing)} of {len(want)} completed requests lack exactly one record"
            for record in records:
                check_record_cost(models, record)
            # The database holds what the API shows, to the unit.
            stored = int(psql("SELECT COALESCE(sum(cost_units), 0) FROM usage_records", name))
            shown = sum((D(r["cost"]) for r in records), Decimal(0))
            assert Decimal(stored) * UNIT == shown, (stored, shown)
            balance = D(mgmt.get("/v1/account").json()["balance"])
            assert balance == Decimal(1000) - shown, (balance, shown)
        _audit(name)
        print(f"completed before kill -9: {len(completed)}; records after restart: {len(records)}")
    finally:
        g2.stop()
    _audit(name)


def test_a_second_gateway_on_the_same_database_is_refused_until_the_first_stops(tmp_path, database):
    name, url = database
    first = tracked(Gateway(tmp_path / "n1", log_path=log_path("pg-first", tmp_path), database=url))
    first.start()
    second = tracked(Gateway(tmp_path / "n2", log_path=log_path("pg-second", tmp_path), database=url))
    try:
        with pytest.raises(RuntimeError, match="exited with 1 during startup"):
            second.start(timeout=30)
        assert "another gateway already serves this PostgreSQL database" in second.log_path.read_text()
    finally:
        first.stop()
    # With the first one gone the second starts, on the same demo account with keys of its own.
    second.start()
    try:
        assert second.demo["account_id"] == first.demo["account_id"], "a second demo account was made"
        assert second.api_key != first.api_key
        for key in (first.api_key, second.api_key):
            with second.http(key) as c:
                r = c.post("/v1/chat/completions", json={
                    "model": pick_chat_model(model_pricing(c)),
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
        accounts = psql("SELECT count(*) FROM accounts WHERE email = 'demo@router-one.local'", name)
        assert accounts == "1"
    finally:
        second.stop()
    _audit(name)


def test_admin_commands_reach_the_database_and_the_running_gateway(tmp_path, database):
    name, url = database
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("pg-admin", tmp_path), database=url))
    g.start()
    try:
        with g.http(g.management_key) as mgmt:
            before = D(mgmt.get("/v1/account").json()["balance"])
            out = g.admin("credit", "--account", "demo@router-one.local", "--amount", "12.5", "--reason", "e2e")
            assert out.returncode == 0, out.stderr
            deadline = time.monotonic() + 5
            while D(mgmt.get("/v1/account").json()["balance"]) != before + Decimal("12.5"):
                assert time.monotonic() < deadline, "the running gateway did not see the credit"
                time.sleep(0.1)
        ledger = g.admin("ledger", "--account", "demo@router-one.local", "--json")
        assert ledger.returncode == 0, ledger.stderr
        assert any(json.loads(line).get("reason") == "e2e" for line in ledger.stdout.splitlines() if line.startswith("{"))
        # `--database` wins over the data directory: this data directory has no SQLite file.
        assert not (g.data_dir / "router-one.db").exists()
        # A URL that is not PostgreSQL's is refused before anything is opened, password hidden.
        bad = subprocess.run([str(BIN), "admin", "list-accounts", "--database", "mysql://root:hunter2@127.0.0.1/x"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "postgres://" in bad.stderr and "hunter2" not in bad.stderr, bad.stderr
    finally:
        g.stop()
    _audit(name)


def test_health_follows_the_database(tmp_path, database):
    name, url = database
    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    via_proxy = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("pg-health", tmp_path), database=via_proxy))
    g.start()
    try:
        with g.http() as c:
            health = c.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["database"]["reachable"] is True
            proxy.cut()
            deadline = time.monotonic() + 15
            while (health := c.get("/health")).status_code == 200:
                assert time.monotonic() < deadline, "health stayed 200 with the database unreachable"
                time.sleep(0.2)
            assert health.status_code == 503 and health.json()["database"]["reachable"] is False, health.text
            proxy.restore()
            deadline = time.monotonic() + 20
            while (health := c.get("/health")).status_code != 200:
                assert time.monotonic() < deadline, f"health did not recover: {health.text}"
                time.sleep(0.2)
        # Served again, and recorded.
        with g.http(g.api_key) as http:
            rid, ok = _chat(http, pick_chat_model(model_pricing(http)), 1, stream=False)
            assert ok
        deadline = time.monotonic() + 10
        while psql(f"SELECT count(*) FROM usage_records WHERE request_id = '{rid}'", name) != "1":
            assert time.monotonic() < deadline, "the record did not reach the database"
            time.sleep(0.2)
    finally:
        g.stop()
        proxy.cut()
    _audit(name)
