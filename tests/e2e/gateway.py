"""Helpers for the end-to-end suite: start/stop a real `router-one` process, talk to it, and
compute the expected cost of a request with exact decimals (never floats)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ROUTER_ONE_BIN", REPO / "target" / "debug" / "router-one"))
if not BIN.is_absolute():
    BIN = REPO / BIN

#: The PostgreSQL server the store tests and test_postgres.py make their databases on.
POSTGRES_SERVER = os.environ.get("ROUTER_ONE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
#: When set (`E2E_POSTGRES=1`), every gateway of the suite keeps its data in a PostgreSQL database
#: of its own instead of its data directory's SQLite file (one per data directory, so a restart
#: on the same directory finds its data again).
ON_POSTGRES = os.environ.get("E2E_POSTGRES") == "1"
#: Databases made by this suite are named with this prefix (and dropped at its start).
E2E_DB_PREFIX = "ro_e2e_"

#: Usage records are written durably before the response ends, but the DB insert is batched.
USAGE_WAIT_S = 3.0
#: One unit of money: 10^-10 USD.
UNIT = Decimal("0.0000000001")


def log_path(name: str, fallback_dir: Path) -> Path:
    """Where a gateway's captured stdout/stderr goes: $E2E_LOG_DIR (CI keeps it) or fallback_dir."""
    d = os.environ.get("E2E_LOG_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        return Path(d) / f"{name}.log"
    return Path(fallback_dir) / f"{name}.log"


def database_url(name: str) -> str:
    """The URL of database `name` on the test PostgreSQL server."""
    base, _, _db = POSTGRES_SERVER.rpartition("/")
    return f"{base}/{name}"


def psql(sql: str, database: str | None = None) -> str:
    """Runs SQL on the test PostgreSQL server (its default database, or `database`); returns the
    unaligned, tuples-only output."""
    url = database_url(database) if database else POSTGRES_SERVER
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qtAX", "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}\nSQL: {sql}")
    return out.stdout.strip()


def create_database(name: str) -> str:
    """Creates database `name` (dropping an earlier one of that name); returns its URL."""
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_suite_databases() -> None:
    """Drops every database an earlier run of this suite left behind."""
    names = psql(f"SELECT datname FROM pg_database WHERE datname LIKE '{E2E_DB_PREFIX}%'")
    for name in filter(None, names.splitlines()):
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_for(data_dir: Path) -> str:
    """The PostgreSQL database of a data directory under E2E_POSTGRES=1, created on first use."""
    name = E2E_DB_PREFIX + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:20]
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        psql(f'CREATE DATABASE "{name}"')
    return database_url(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_gateway(d: Path, name: str) -> "Gateway":
    """A demo gateway in `d` (not started) serving `/metrics` on a port of its own, at its
    `metrics_url`."""
    port = free_port()
    g = Gateway(d / "data", log_path=log_path(name, d), args=["--metrics-listen", f"127.0.0.1:{port}"])
    g.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return g


def metric_samples(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition at `url`, parsed with the Prometheus client's own parser:
    {(name, sorted labels): value}."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Gateway:
    """One `router-one serve --demo` process on a free port and its own data dir."""

    def __init__(self, data_dir: Path, *, log_path: Path, env: dict | None = None,
                 config_text: str | None = None, port: int | None = None, preexec_fn=None,
                 database: str | None = None, args: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A PostgreSQL URL (`--database`); None: the data directory's SQLite file.
        self.database = database or (database_for(self.data_dir) if ON_POSTGRES else None)
        self.args = list(args or [])  # more `serve` flags (e.g. --node-id, --redis)
        self.log_path = Path(log_path)
        self.extra_env = dict(env or {})
        self.config_path = None
        if config_text is not None:
            # The config lives beside (not inside) the data dir, so the canary walk sees only data.
            self.config_path = self.data_dir.parent / (self.data_dir.name + ".config.toml")
            self.config_path.write_text(config_text)
        self.port = port or free_port()
        self.preexec_fn = preexec_fn  # runs in the child before exec (e.g. to lower its fd limit)
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.demo: dict = {}

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.demo.get("base_url") or f"{self.root}/v1"

    @property
    def api_key(self) -> str:
        return self.demo["api_key"]

    @property
    def management_key(self) -> str:
        return self.demo["management_key"]

    def start(self, timeout: float = 60.0) -> "Gateway":
        if not BIN.exists():
            raise RuntimeError(f"router-one binary not found at {BIN}; run `cargo build -p router-one`")
        cmd = [str(BIN), "serve", "--demo", "--listen", f"127.0.0.1:{self.port}",
               "--data", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if self.database is not None:
            cmd += ["--database", self.database]
        cmd += self.args
        env = dict(os.environ)
        # The edge's connection closes (timeouts, errors) at debug: a cut request in a test says why.
        env.setdefault("RUST_LOG", "info,router_one_server::listener=debug")
        # Receipts are opt-in (`--receipts`); the suite runs with them on, except where a test says.
        env.setdefault("ROUTER_ONE_RECEIPTS", "true")
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== start {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(self.data_dir.parent), env=env,
                                     preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router-one exited with {self.proc.returncode} during startup; "
                                   f"log:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.root}/health", timeout=2)
                if r.status_code == 200 and (self.data_dir / "demo.json").exists():
                    self.demo = json.loads((self.data_dir / "demo.json").read_text())
                    return self
                last_err = f"/health -> {r.status_code}"
            except (httpx.HTTPError, json.JSONDecodeError) as e:  # not listening yet
                last_err = repr(e)
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"router-one not healthy after {timeout}s ({last_err}); log:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return "<no log>"
        return re.sub(r"\x1b\[[0-9;]*m", "", text)[-n:]

    # ---------------------------------------------------------------- clients

    def openai(self, api_key: str | None = None, **kw):
        import openai
        return openai.OpenAI(base_url=self.base_url, api_key=api_key or self.api_key,
                             max_retries=0, timeout=kw.pop("timeout", 60), **kw)

    def http(self, key: str | None = None, timeout: float = 60) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.root, headers=headers, timeout=timeout)

    def query(self, sql: str) -> list[tuple[str, ...]]:
        """Rows of a read-only SQL query on the gateway's database as it is now (its SQLite file
        or its PostgreSQL database), every value as text ('' for NULL)."""
        if self.database is not None:
            out = subprocess.run(["psql", self.database, "-v", "ON_ERROR_STOP=1", "-qtAX", "-F", "\t", "-c", sql],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"psql failed: {out.stderr.strip()}")
            return [tuple(line.split("\t")) for line in out.stdout.splitlines() if line]
        import sqlite3
        db = sqlite3.connect(f"file:{self.data_dir / 'router-one.db'}?mode=ro", uri=True)
        try:
            return [tuple("" if v is None else str(v) for v in row) for row in db.execute(sql)]
        finally:
            db.close()

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        database = ["--database", self.database] if self.database is not None else []
        return subprocess.run([str(BIN), "admin", *args, "--data", str(self.data_dir), *database],
                              capture_output=True, text=True, timeout=60)


# -------------------------------------------------------------------- money


def D(value) -> Decimal:
    """A decimal from a JSON value. The management API's money is a decimal string; a
    response's `usage.cost` is a JSON number whose text is the exact decimal (OpenRouter's
    convention), which a plain `json.loads` reads as a float: `repr` of that float is the
    shortest text that reads back to it, which is the sent text for any cost of at most 15
    significant digits (exact readers use `parse_float=Decimal`; test_relay_options checks
    that)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(str(value))


def expected_cost(pricing: dict, prompt: int, cached: int, completion: int, cache_write: int = 0) -> Decimal:
    """(prompt − cached − cache_write) × input + cached × cached_input + cache_write ×
    cache_write (the input rate for a model without one) + completion × output, per 1M tokens,
    rounded half away from zero to 10 decimal places."""
    cached = min(cached, prompt)
    cache_write = min(cache_write, prompt - cached)
    write_rate = D(pricing.get("cache_write_per_mtok") or pricing["input_per_mtok"])
    with localcontext() as ctx:
        ctx.prec = 60
        total = (Decimal(prompt - cached - cache_write) * D(pricing["input_per_mtok"])
                 + Decimal(cached) * D(pricing["cached_input_per_mtok"])
                 + Decimal(cache_write) * write_rate
                 + Decimal(completion) * D(pricing["output_per_mtok"]))
        # ROUND_HALF_UP in Python's decimal module rounds ties away from zero.
        return (total / Decimal(1_000_000)).quantize(UNIT, rounding=ROUND_HALF_UP)


def prompt_tokens_of(messages: list[dict]) -> int:
    """The simulator's rule: Σ over messages of (4 + whitespace words) + 3."""
    total = 3
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += 4 + len(content.split())
    return total


def words(text: str) -> int:
    return len(text.split())


# -------------------------------------------------------------------- refusals

#: Words one-api / new-api read as "this channel is dead" in an error message.
RELAY_DEAD_WORDS = ("credit", "balance", "quota")


def assert_money_refusal(status: int, error: dict, headers, permanent: tuple[int, str]) -> None:
    """A request a budget refused: either `permanent` (status, code) — the money is used up — or,
    while requests in flight still hold what is left, a transient 429 with `Retry-After` whose
    message never uses the words relays read as a dead channel."""
    if (status, error["code"]) == (429, "rate_limit_exceeded"):
        assert "in flight" in error["message"], error
        assert not any(w in error["message"].lower() for w in RELAY_DEAD_WORDS), error
        assert headers.get("retry-after"), dict(headers)
        return
    assert (status, error["code"]) == permanent, (status, error)


# -------------------------------------------------------------------- usage


def get_record(mgmt: httpx.Client, request_id: str, wait: float = USAGE_WAIT_S) -> dict:
    """GET /v1/requests/{id}, retried while the batched insert catches up; returns the record."""
    deadline = time.monotonic() + wait
    while True:
        r = mgmt.get(f"/v1/requests/{request_id}")
        if r.status_code == 200:
            body = r.json()
            return body.get("record", body)
        if time.monotonic() > deadline:
            raise AssertionError(f"no usage record for {request_id}: {r.status_code} {r.text[:500]}")
        time.sleep(0.1)


def list_pages(mgmt: httpx.Client, path: str, limit: int, **params) -> list[dict]:
    """Every item of a cursor-paged list (`after`, `limit`; `has_more`, `next_cursor`)."""
    out: list[dict] = []
    after = None
    for _ in range(10_000):
        q = {"limit": limit, **params}
        if after:
            q["after"] = after
        r = mgmt.get(path, params=q)
        assert r.status_code == 200, f"GET {path} {q} -> {r.status_code} {r.text[:500]}"
        body = r.json()
        out.extend(body["data"])
        if not body.get("has_more"):
            return out
        after = body.get("next_cursor")
        assert after, f"has_more without next_cursor: {body}"
    raise AssertionError(f"{path} pagination does not end")


def list_usage(mgmt: httpx.Client, limit: int = 200, **params) -> list[dict]:
    """Every usage record matching params, following the cursor."""
    return list_pages(mgmt, "/v1/usage", limit, **params)


def wait_for_ids(mgmt: httpx.Client, ids, wait: float = USAGE_WAIT_S) -> list[dict]:
    """All usage records, once every id in ids has at least one (or the wait is over)."""
    ids = set(ids)
    deadline = time.monotonic() + wait
    while True:
        records = list_usage(mgmt)
        seen = Counter(r["request_id"] for r in records)
        if all(seen[i] >= 1 for i in ids) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def list_keys(mgmt: httpx.Client, limit: int = 1000) -> list[dict]:
    """Every inference key of the account, newest first, following the cursor."""
    return list_pages(mgmt, "/v1/keys", limit)


def model_pricing(client: httpx.Client) -> dict[str, dict]:
    r = client.get("/v1/models")
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}


def is_embedding(model: dict) -> bool:
    if "kind" in model:
        return model["kind"] == "embedding"
    mid = model["id"].lower()
    return "embed" in mid or D(model["pricing"]["output_per_mtok"]) == 0


def pick_chat_model(models: dict[str, dict]) -> str:
    override = os.environ.get("E2E_MODEL")
    if override:
        return override
    for preferred in ("gpt-6.2-sol",):
        if preferred in models:
            return preferred
    return next(mid for mid, m in models.items() if not is_embedding(m))


def pick_embedding_model(models: dict[str, dict]) -> str:
    return next(mid for mid, m in models.items() if is_embedding(m))


def record_rates(models: dict[str, dict], record: dict) -> dict:
    """The catalog pricing that applies to a record: its requested model's posted rates."""
    mid = record.get("requested_model") or record.get("served_model")
    assert mid in models, f"record's model {mid!r} not in /v1/models"
    return models[mid]["pricing"]


def check_record_cost(models: dict[str, dict], record: dict) -> None:
    tokens = [int(record[f]) for f in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens")]
    mid = record.get("requested_model") or record.get("served_model")
    if not any(tokens) and mid not in models:
        # Refused before a catalog model was resolved (a 400 without a model, a 404): nothing to price.
        assert D(record["cost"]) == 0, f"record {record['request_id']} has no tokens but costs {record['cost']}"
        return
    want = expected_cost(record_rates(models, record), int(record["prompt_tokens"]),
                         int(record["cached_tokens"]), int(record["completion_tokens"]),
                         cache_write=int(record.get("cache_write_tokens") or 0))
    got = D(record["cost"])
    assert got == want, (f"record {record['request_id']}: cost {record['cost']} != formula {want} "
                         f"on its tokens {record}")


def check_key_spend_matches_records(mgmt: httpx.Client, records: list[dict]) -> dict:
    """Each key's `spend` (GET /v1/keys) equals the sum of its usage records' costs; returns
    {key_id: (spend, sum)} for reporting."""
    sums: dict[str, Decimal] = {}
    for rec in records:
        sums[rec["key_id"]] = sums.get(rec["key_id"], Decimal(0)) + D(rec["cost"])
    out = {}
    for key in list_keys(mgmt):
        if "spend" not in key or key["spend"] is None:
            continue
        want = sums.get(key["id"], Decimal(0))
        assert D(key["spend"]) == want, (f"key {key['id']} ({key.get('name')}) reports spend {key['spend']} "
                                         f"but its usage records sum to {want}")
        out[key["id"]] = (key["spend"], want)
    return out


# -------------------------------------------------------------------- keys


def new_key(mgmt: httpx.Client, **fields) -> dict:
    """POST /v1/keys with a random name and `fields`; the created key (with its secret)."""
    r = mgmt.post("/v1/keys", json={"name": f"e2e-{uuid.uuid4().hex[:8]}", **fields})
    assert r.status_code == 201, r.text
    return r.json()


def key_state(mgmt: httpx.Client, key_id: str) -> dict:
    r = mgmt.get(f"/v1/keys/{key_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_settled(mgmt: httpx.Client, key_id: str, timeout: float = 20) -> dict:
    """The key once nothing is reserved any more (streams drain in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        k = key_state(mgmt, key_id)
        if D(k["reserved"]) == 0 or time.monotonic() > deadline:
            return k
        time.sleep(0.1)


class TcpProxy:
    """A TCP proxy (to PostgreSQL, Redis, …) that a test can cut (every connection closed, new
    ones refused) and restore: an outage of one gateway's link without stopping a shared server."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.open.set()
