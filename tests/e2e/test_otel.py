"""OpenTelemetry traces (issue 14): with `--otlp-endpoint`, every request is one trace exported
over OTLP/HTTP to a receiver in this process — a `request` span with children for admission,
each upstream attempt and the usage write — carrying ids and metadata, never a body. (The
canary test also runs with an exporter, and finds its canary in no exported byte.)"""

from __future__ import annotations

import httpx
import pytest

from conftest import tracked
from gateway import Gateway, free_port, get_record, log_path, model_pricing, pick_chat_model, pick_embedding_model
from otlp import OtlpReceiver

# The batch exporter's delay: spans reach the receiver within a fraction of a second (and every
# span left is sent when the gateway stops).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


@pytest.fixture
def traced(tmp_path):
    receiver = OtlpReceiver()
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("otel", tmp_path), env=FAST_EXPORT,
                        args=["--otlp-endpoint", receiver.endpoint]))
    g.start()
    yield g, receiver
    g.stop()
    receiver.close()


def _by_request(spans):
    """The `request` span of each request id, and every span by its parent's id."""
    roots = {s.attributes["request_id"]: s for s in spans if s.name == "request"}
    children: dict[bytes, list] = {}
    for s in spans:
        children.setdefault(s.parent_span_id, []).append(s)
    return roots, children


def test_each_request_is_one_trace_of_admission_attempts_and_usage_write(traced):
    g, receiver = traced
    ids = {}
    with g.http(g.api_key) as http, g.http(g.management_key) as mgmt:
        models = model_pricing(http)
        chat = pick_chat_model(models)
        embedding = pick_embedding_model(models)

        def post(kind, path, body):
            r = http.post(path, json=body)
            ids[kind] = (r.headers["x-request-id"], r.status_code)

        post("complete", "/v1/chat/completions", {"model": chat, "messages": [{"role": "user", "content": "hi"}]})
        post("stream", "/v1/chat/completions", {"model": chat, "stream": True,
                                                "messages": [{"role": "user", "content": "hi"}]})
        post("failover", "/v1/chat/completions", {"model": chat, "messages": [
            {"role": "user", "content": "x [[sim:route=sim-a,status=503]]"}]})
        post("refused", "/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
        post("embedding", "/v1/embeddings", {"model": embedding, "input": ["hi"]})
        records = {kind: get_record(mgmt, rid) for kind, (rid, _status) in ids.items()}
    g.stop()  # the exporter sends what it still holds before the process exits

    spans = receiver.spans()
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert all(s.resource.get("service.name") == "router-one" for s in spans)
    roots, children = _by_request(spans)
    for kind, (rid, status) in ids.items():
        root = roots[rid]
        record = records[kind]
        assert root.parent_span_id == b"", f"{kind}: the request span is the trace's root"
        a = root.attributes
        assert a["endpoint"] == record["endpoint"]
        assert a["account_id"].startswith("acct_") and a["key_id"] == record["key_id"]
        assert a["gen_ai.request.model"] == record["requested_model"]
        assert a["http.response.status_code"] == status == record["status"]
        assert a["gen_ai.usage.input_tokens"] == record["prompt_tokens"]
        assert a["gen_ai.usage.output_tokens"] == record["completion_tokens"]
        assert a["cost_usd"] == record["cost"]
        assert a["stream"] is (kind == "stream")
        mine = children.get(root.span_id, [])
        assert all(c.trace_id == root.trace_id for c in mine)
        names = sorted(c.name for c in mine)
        attempts = [c for c in mine if c.name == "upstream_attempt"]
        expected_attempts = {"refused": 0, "failover": 2}.get(kind, 1)
        assert names == sorted(["admission", "usage_write"] + ["upstream_attempt"] * expected_attempts), kind
        for c in mine:
            assert root.start_ns <= c.start_ns <= c.end_ns, f"{kind}: {c.name} inside its request"
        usage_write = next(c for c in mine if c.name == "usage_write")
        assert usage_write.attributes["batch_records"] >= 1
        if kind == "failover":
            first, second = sorted(attempts, key=lambda c: c.attributes["attempt"])
            assert first.attributes["route"] == "openai.sim-a"
            assert first.attributes["error.type"] == "upstream_overloaded"
            assert second.attributes["route"] == "openai.sim-b" and "error.type" not in second.attributes
            assert a["route"] == "openai.sim-b" and a["failed_attempts"] == 1
        if kind == "refused":
            assert a["error.type"] == "model_not_found"
        if kind not in ("refused",):
            assert a["route"] == record["provider"]
            assert a["gen_ai.response.model"] == record["served_model"]
    # Nothing but these four span names, and never a body-shaped attribute.
    assert {s.name for s in spans} == {"request", "admission", "upstream_attempt", "usage_write"}
    allowed = {"request_id", "endpoint", "account_id", "key_id", "gen_ai.request.model", "gen_ai.response.model",
               "route", "stream", "http.response.status_code", "error.type", "gen_ai.usage.input_tokens",
               "gen_ai.usage.output_tokens", "cost_usd", "failed_attempts", "attempt", "batch_records"}
    extra = {k for s in spans for k in s.attributes} - allowed
    # tracing-opentelemetry adds its own code-location and thread attributes.
    assert all(k.startswith(("code.", "thread.", "target", "level", "busy_ns", "idle_ns")) for k in extra), extra


def test_a_collector_that_is_down_costs_the_requests_nothing(tmp_path):
    """Spans for a collector nobody listens at are dropped by the exporter's thread: every
    request is served as usual and the gateway still stops cleanly on SIGTERM."""
    dead = free_port()
    g = tracked(Gateway(tmp_path / "data", log_path=log_path("otel-dead", tmp_path), env=FAST_EXPORT,
                        args=["--otlp-endpoint", f"http://127.0.0.1:{dead}"]))
    g.start()
    with g.http(g.api_key) as http:
        chat = pick_chat_model(model_pricing(http))
        for i in range(20):
            r = http.post("/v1/chat/completions", json={"model": chat, "stream": i % 2 == 1,
                                                        "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
    g.stop()
    assert g.proc.returncode == 0, "the gateway did not exit cleanly with its collector down"
