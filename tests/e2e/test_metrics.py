"""Prometheus metrics (issue 14): `GET /metrics` on `--metrics-listen`, never on the public port.
After a known mix of requests — successes streamed and not, refusals (unknown model, RPM),
failovers and an upstream outage — the counters and histogram counts match the mix and the
usage records exactly, and the exposition parses with the Prometheus client's own parser."""
from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from conftest import tracked
from gateway import D, UNIT, list_usage, metric_samples, metrics_gateway, model_pricing, new_key, pick_chat_model


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    g = tracked(metrics_gateway(tmp_path_factory.mktemp("metrics"), "metrics")).start()
    yield g
    g.stop()



def _sum(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def test_counters_match_a_known_mix_of_requests_and_the_usage_records(metered):
    g = metered
    with g.http(g.api_key) as http:
        pricing = model_pricing(http)
        model = pick_chat_model(pricing)

        def chat(text: str, stream: bool = False, key: str | None = None, model_id: str = model):
            body = {"model": model_id, "max_tokens": 6, "messages": [{"role": "user", "content": text}]}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            headers = {"authorization": f"Bearer {key}"} if key else {}
            r = http.post("/v1/chat/completions", json=body, headers=headers)
            r.read()
            return r.status_code

        statuses = Counter()
        for i in range(5):
            statuses[chat(f"plain {i} [[sim:words=6]]")] += 1
        for i in range(3):
            statuses[chat(f"streamed {i} [[sim:words=6]]", stream=True)] += 1
        for _ in range(2):
            statuses[chat("who", model_id="no-such-model")] += 1
        # Two failovers: sim-a fails, sim-b serves.
        for i in range(2):
            statuses[chat(f"failover {i} [[sim:route=sim-a,status=503]]")] += 1
        # An outage of both routes: one request, two failed attempts, a 503 to the client.
        statuses[chat("outage [[sim:status=500]]")] += 1
        with g.http(g.management_key) as mgmt:
            limited = new_key(mgmt, rpm_limit=1)
        for _ in range(2):
            statuses[chat("limited [[sim:words=6]]", key=limited["key"])] += 1
        # Refused for money: a key's spending limit, and (another account) a balance of zero —
        # both `insufficient_quota` to the client, told apart in the metric.
        with g.http(g.management_key) as mgmt:
            capped = new_key(mgmt, max_spend="0.000001")
        statuses[chat("capped", key=capped["key"])] += 1
        made = g.admin("create-account", "--email", f"broke-{time.time_ns()}@example.com", "--credit", "0")
        assert made.returncode == 0, made.stderr
        with g.http(json.loads(made.stdout.strip().splitlines()[-1])["management_key"]) as broke:
            broke_key = new_key(broke)
        statuses[chat("broke", key=broke_key["key"])] += 1
    assert statuses == {200: 11, 404: 2, 502: 1, 429: 1, 402: 2}, statuses

    # The counters are fed as records commit (~25 ms): wait for all 17.
    deadline = time.monotonic() + 10
    while True:
        samples = metric_samples(g.metrics_url)
        total = _sum(samples, "router_one_requests_total")
        if total >= 17 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert total == 17, total
    assert _sum(samples, "router_one_requests_total", status_class="2xx") == 11
    assert _sum(samples, "router_one_requests_total", status_class="4xx") == 5
    assert _sum(samples, "router_one_requests_total", status_class="5xx") == 1
    assert _sum(samples, "router_one_requests_total", model="other") == 2  # no unbounded label
    assert _sum(samples, "router_one_requests_total", model=model, route="openai.sim-b") >= 2
    assert _sum(samples, "router_one_refusals_total", reason="model_not_found") == 2
    assert _sum(samples, "router_one_refusals_total", reason="rate_limit") == 1
    assert _sum(samples, "router_one_refusals_total", reason="budget") == 1
    assert _sum(samples, "router_one_refusals_total", reason="balance") == 1
    assert _sum(samples, "router_one_refusals_total") == 5
    # Failed attempts: two failovers on sim-a, and the outage's attempt on each route.
    errors = Counter()
    for (n, ls), v in samples.items():
        if n == "router_one_upstream_errors_total":
            errors[(dict(ls)["route"], dict(ls)["class"])] += v
    assert errors == {("openai.sim-a", "upstream_overloaded"): 2, ("openai.sim-a", "upstream_error"): 1,
                      ("openai.sim-b", "upstream_error"): 1}, errors
    assert _sum(samples, "router_one_request_duration_seconds_count", endpoint="chat_completions") == 17
    assert _sum(samples, "router_one_request_duration_seconds_bucket", endpoint="chat_completions", le="+Inf") == 17

    # Tokens and cost equal the usage records, to the unit (the broke account's one refusal
    # used and cost nothing).
    with g.http(g.management_key) as mgmt:
        records = list_usage(mgmt, limit=100)
    assert len(records) == 16
    for kind, field in [("prompt", "prompt_tokens"), ("completion", "completion_tokens")]:
        assert _sum(samples, "router_one_tokens_total", kind=kind) == sum(r[field] for r in records), kind
    cost = sum((D(r["cost"]) for r in records), Decimal(0))
    assert Decimal(int(_sum(samples, "router_one_cost_units_total"))) * UNIT == cost
    assert _sum(samples, "router_one_usage_pending_records") == 0
    assert _sum(samples, "router_one_usage_journal_bytes") > 0
    assert _sum(samples, "router_one_breaker_open") == 0  # one failure per route: nothing opened

    # No key id, account id or request id in any label.
    text = httpx.get(g.metrics_url, timeout=10).text
    for secret in [limited["id"], g.demo["account_id"], records[0]["request_id"]]:
        assert secret not in text


def test_metrics_are_not_on_the_public_port(metered):
    r = httpx.get(f"{metered.root}/metrics", timeout=10)
    assert r.status_code == 404


def test_open_streams_counts_the_streams_in_flight(metered):
    g = metered
    with g.http(g.api_key) as http:
        model = pick_chat_model(model_pricing(http))
        assert _sum(metric_samples(g.metrics_url), "router_one_open_streams") == 0
        body = {"model": model, "max_tokens": 10, "stream": True,
                "messages": [{"role": "user", "content": "slow [[sim:tpot_ms=100]]"}]}
        # Two slow streams held open: the gauge counts them while they run, and not after.
        with http.stream("POST", "/v1/chat/completions", json=body) as first, \
                http.stream("POST", "/v1/chat/completions", json=body) as second:
            assert first.status_code == second.status_code == 200
            assert _sum(metric_samples(g.metrics_url), "router_one_open_streams") == 2
            first.read()
        deadline = time.monotonic() + 10
        while _sum(metric_samples(g.metrics_url), "router_one_open_streams") != 0:
            assert time.monotonic() < deadline, "a finished or abandoned stream is still counted"
            time.sleep(0.05)
