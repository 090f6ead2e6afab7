"""Failover within one model (issue 13), through the official `openai` client against the real
binary. `--demo` serves every model over two simulated routes, `sim-a` (tried first) and `sim-b`;
`[[sim:route=sim-a,...]]` injects a fault on sim-a only, a fault without `route=` hits both.

The fault matrix: every fault the simulator injects × streamed or not × one failing route (the
other serves) or both failing. Asserted each time: what the client sees, exactly one usage
record, what it is billed, that nothing stays reserved, and that the model that served is the
model asked for (never another)."""
from __future__ import annotations

import concurrent.futures
import time
from decimal import Decimal

import openai
import pytest

from conftest import tracked
from gateway import D, Gateway, get_record, log_path, new_key, wait_settled

MODEL = "gpt-6.2-astra"
# The upstream deadline is shared by the routes left: 2 s each before the head.
CONFIG = "upstream_timeout_secs = 4\n"

#: fault directive → (status when every route fails, its error code)
BEFORE_FIRST_BYTE = {
    "status=500": (502, "upstream_error"),
    "status=502": (502, "upstream_error"),
    "status=503": (503, "upstream_overloaded"),
    "status=429": (429, "rate_limit_exceeded"),
    "timeout": (504, "upstream_timeout"),
    "reset": (502, "upstream_error"),
    "malformed": (502, "upstream_error"),
}


@pytest.fixture(scope="module")
def fo(tmp_path_factory):
    d = tmp_path_factory.mktemp("failover")
    g = tracked(Gateway(d / "data", log_path=log_path("failover", d), config_text=CONFIG)).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def fo_mgmt(fo):
    with fo.http(fo.management_key) as c:
        yield c


def _client(secret: str, root: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=f"{root}/v1", max_retries=0, timeout=60)


def _ask(client: openai.OpenAI, directive: str, stream: bool):
    """One request; returns (status, request id, provider, served model, text, error code)."""
    messages = [{"role": "user", "content": f"failover {directive} [[sim:{directive},words=6]]"}]
    try:
        if not stream:
            raw = client.chat.completions.with_raw_response.create(model=MODEL, max_tokens=20, messages=messages)
            reply = raw.parse()
            return (200, raw.headers["x-request-id"], raw.headers.get("x-router-one-provider"),
                    raw.headers.get("x-router-one-served-model"), reply.choices[0].message.content, None)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=20, messages=messages, stream=True, stream_options={"include_usage": True})
        text, error = "", None
        try:
            for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
        except openai.APIError as e:  # an error event after the first byte
            error = getattr(e, "code", None) or "stream_error"
        return (200, raw.headers["x-request-id"], raw.headers.get("x-router-one-provider"),
                raw.headers.get("x-router-one-served-model"), text, error)
    except openai.APIStatusError as e:
        body = e.response.json()["error"]
        return (e.status_code, e.response.headers["x-request-id"], None, None, "", body["code"])


# These two run before the matrix, whose failures open sim-a's breaker (sim-b would then be
# tried first for a few seconds).
def test_a_stream_cut_after_the_first_byte_is_never_retried(fo, fo_mgmt):
    key = new_key(fo_mgmt)
    client = _client(key["key"], fo.root)
    status, rid, provider, _, text, error = _ask(client, "route=sim-a,cut=2", stream=True)
    # The client already had bytes from sim-a: no second answer is spliced in.
    assert status == 200 and provider == "openai.sim-a", (status, provider)
    assert error is not None, "the cut stream must end with an error event"
    rec = get_record(fo_mgmt, rid)
    assert rec["provider"] == "openai.sim-a" and rec["error_code"] == "upstream_stream_cut", rec
    k = wait_settled(fo_mgmt, key["id"])
    assert D(k["reserved"]) == 0 and D(k["spend"]) == D(rec["cost"]), (k, rec)


def test_the_log_names_each_failed_attempt_and_its_cause(fo, fo_mgmt):
    key = new_key(fo_mgmt)
    status, rid, provider, _, _, _ = _ask(_client(key["key"], fo.root), "route=sim-a,reset", stream=False)
    assert (status, provider) == (200, "openai.sim-b")
    lines = [line for line in fo.log_tail(400_000).splitlines()
             if "upstream attempt failed" in line and rid in line]
    assert len(lines) == 1 and "route=openai.sim-a" in lines[0], lines
    assert "connection" in lines[0].lower(), lines
    # The trace shows both attempts; only the one that served is billed.
    get_record(fo_mgmt, rid)
    trace = fo_mgmt.get(f"/v1/requests/{rid}").json()
    attempts = [(a["route"], a["status"], a["error"], a["billed"]) for a in trace["attempts"]]
    assert attempts == [("openai.sim-a", 502, "upstream_error", False),
                        ("openai.sim-b", 200, None, True)], trace["attempts"]
    assert all(a["latency_us"] >= 0 for a in trace["attempts"])


def test_a_client_mistake_is_never_retried(fo, fo_mgmt):
    key = new_key(fo_mgmt)
    client = _client(key["key"], fo.root)
    status, rid, _, _, _, error = _ask(client, "status=400", stream=False)
    assert status == 400, (status, error)
    rec = get_record(fo_mgmt, rid)
    assert rec["provider"] == "openai.sim-a", rec


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "streamed"])
@pytest.mark.parametrize("fault", list(BEFORE_FIRST_BYTE))
def test_a_fault_before_the_first_byte_fails_over_to_the_other_route(fo, fo_mgmt, fault, stream):
    key = new_key(fo_mgmt)
    client = _client(key["key"], fo.root)
    # sim-a fails, sim-b serves: the client sees a plain success from the same model.
    status, rid, provider, served, text, error = _ask(client, f"route=sim-a,{fault}", stream)
    assert (status, error) == (200, None), (fault, status, error)
    assert provider == "openai.sim-b", provider
    assert served and served.startswith(MODEL.split("-")[0]), served
    rec = get_record(fo_mgmt, rid)
    assert rec["status"] == 200 and rec["provider"] == "openai.sim-b" and rec["requested_model"] == MODEL, rec
    assert rec["served_model"] == served, rec
    assert D(rec["cost"]) > 0 and rec["completion_tokens"] > 0, rec
    # Both fail: the client gets the documented error, once, recorded and billed nothing.
    want_status, want_code = BEFORE_FIRST_BYTE[fault]
    status, rid2, _, _, _, error = _ask(client, fault, stream)
    assert (status, error) == (want_status, want_code), (fault, status, error)
    rec2 = get_record(fo_mgmt, rid2)
    assert rec2["status"] == want_status and D(rec2["cost"]) == 0, rec2
    k = wait_settled(fo_mgmt, key["id"])
    assert D(k["reserved"]) == 0, k
    assert D(k["spend"]) == D(rec["cost"]), (k, rec)


def test_200_concurrent_requests_succeed_on_the_second_route_and_traffic_returns_when_the_first_recovers(tmp_path):
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("failover-load", tmp_path), config_text=CONFIG)).start()
    try:
        with g.http(g.management_key) as mgmt:
            key = new_key(mgmt)
            probe = new_key(mgmt)  # its spend is kept apart from the 200's

            def one(i: int):
                return _ask(_client(key["key"], g.root), f"route=sim-a,status=503,n{i}", stream=bool(i % 2))

            with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
                results = list(pool.map(one, range(200)))
            # At once, well inside sim-a's 5 s cool-down (the checks below can outlast it on a
            # loaded machine): a healthy request goes to sim-b while the breaker is open.
            status, _, first, _, _, _ = _ask(_client(probe["key"], g.root), "words=2", stream=False)
            assert (status, first) == (200, "openai.sim-b"), (status, first)
            failed = [r for r in results if r[0] != 200 or r[5] is not None]
            assert not failed, failed[:5]
            assert {r[2] for r in results} == {"openai.sim-b"}
            records = [get_record(mgmt, r[1]) for r in results]
            assert all(rec["status"] == 200 and rec["requested_model"] == MODEL for rec in records)
            k = wait_settled(mgmt, key["id"])
            assert D(k["reserved"]) == 0
            assert D(k["spend"]) == sum((D(rec["cost"]) for rec in records), Decimal(0))
            with g.http(None) as anon:
                health = anon.get("/health")
            assert health.status_code == 200, health.text

            # Once the cool-down has passed a probe finds sim-a answering again: traffic is back on sim-a.
            served = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status, _, provider, _, _, _ = _ask(_client(key["key"], g.root), "words=2", stream=False)
                assert status == 200
                served.append(provider)
                if served[-3:] == ["openai.sim-a"] * 3:
                    break
                time.sleep(0.25)
            assert served[-3:] == ["openai.sim-a"] * 3, served
    finally:
        g.stop()


def test_an_upstream_key_the_provider_rejects_leaves_the_pool_and_is_reported(tmp_path):
    """A provider with three keys (`api_key_env` and two `[[keys]]`), one of which the provider
    rejects: requests spread over the keys; the rejected one fails over once, is taken out of
    rotation (one log line per route), is named in /health, and no request is refused."""
    config = CONFIG + ('[providers.openai]\napi_key_env = "POOL_KEY_A"\n'
                       'keys = [{ env = "POOL_KEY_B" }, { env = "POOL_KEY_C", rpm = 100000 }]\n')
    env = {"POOL_KEY_A": "sim-good-a", "POOL_KEY_B": "sim-rejected-b", "POOL_KEY_C": "sim-good-c"}
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("failover-keys", tmp_path),
                        config_text=config, env=env)).start()
    try:
        with g.http(g.management_key) as mgmt:
            key = new_key(mgmt)
            results = [_ask(_client(key["key"], g.root), f"words=2,k{i}", stream=bool(i % 2)) for i in range(12)]
            assert all(r[0] == 200 and r[5] is None for r in results), results
            for r in results:
                assert get_record(mgmt, r[1])["requested_model"] == MODEL
        with g.http(None) as anon:
            health = anon.get("/health").json()
        rejected = health["rejected_upstream_keys"]
        assert "openai.sim-a:POOL_KEY_B" in rejected, health
        assert all(k.endswith(":POOL_KEY_B") for k in rejected), health
        log = g.log_tail(400_000)
        lines = [line for line in log.splitlines() if "upstream key rejected" in line]
        assert len(lines) == len(rejected), lines
        assert "sim-rejected" not in log, "a secret reached the log"
    finally:
        g.stop()
