"""Promise 2: no prompt or completion storage. A unique canary goes through every kind of
request (the simulator echoes it into completions, tool arguments and errors); after the server
stops, the canary must appear in no file under the data dir, nowhere in its stdout/stderr (even
with RUST_LOG=debug), in no metric and in no byte of the trace spans it exported over OTLP."""

from __future__ import annotations

import os
import uuid

import httpx

from gateway import Gateway, free_port, log_path, get_record, pick_chat_model, pick_embedding_model, model_pricing
from otlp import OtlpReceiver


def test_no_prompt_or_completion_is_stored(tmp_path):
    canary = f"canary-{uuid.uuid4()}"
    metrics_port = free_port()
    spans = OtlpReceiver()
    g = Gateway(tmp_path / "data", log_path=log_path("canary-gateway", tmp_path),
                env={"RUST_LOG": "debug", "RUST_BACKTRACE": "1", "OTEL_BSP_SCHEDULE_DELAY": "100"},
                args=["--metrics-listen", f"127.0.0.1:{metrics_port}", "--otlp-endpoint", spans.endpoint])
    g.start()
    ids = []
    try:
        with g.http(g.api_key) as http, g.http(g.management_key) as mgmt:
            models = model_pricing(http)
            chat_model = pick_chat_model(models)
            emb_model = pick_embedding_model(models)
            client = g.openai()

            # Non-streaming, the canary echoed into the completion.
            raw = client.chat.completions.with_raw_response.create(
                model=chat_model, messages=[{"role": "system", "content": f"system {canary}"},
                                            {"role": "user", "content": f"remember {canary}"}])
            assert canary in raw.parse().choices[0].message.content
            ids.append(raw.headers["x-request-id"])

            # Streaming, with and without usage.
            for include in (True, False):
                kw = {"stream_options": {"include_usage": True}} if include else {}
                raw = client.chat.completions.with_raw_response.create(
                    model=chat_model, stream=True, messages=[{"role": "user", "content": f"stream {canary}"}], **kw)
                text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
                assert canary in text
                ids.append(raw.headers["x-request-id"])

            # Tools: the canary in tool arguments and in a tool result.
            tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
            r = client.chat.completions.create(model=chat_model, tools=tools,
                                               messages=[{"role": "user", "content": f"{canary} call"}])
            call = r.choices[0].message.tool_calls[0]
            assert canary in call.function.arguments
            r2 = client.chat.completions.create(model=chat_model, tools=tools, messages=[
                {"role": "user", "content": f"{canary} call"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": "f", "arguments": call.function.arguments}}]},
                {"role": "tool", "tool_call_id": call.id, "content": f"result {canary}"}])
            assert canary in r2.choices[0].message.content

            # JSON mode and embeddings.
            r = client.chat.completions.create(model=chat_model, response_format={"type": "json_object"},
                                               messages=[{"role": "user", "content": canary}])
            assert canary in r.choices[0].message.content
            client.embeddings.create(model=emb_model, input=[f"embed {canary}"])

            # Failures: upstream errors, cut streams, and client mistakes that carry the canary.
            for directive in ("status=503", "status=400", "malformed", "reset", "cut=2"):
                body = {"model": chat_model, "messages": [{"role": "user", "content": f"{canary} [[sim:{directive}]]"}]}
                if directive.startswith("cut"):
                    body["stream"] = True
                try:
                    http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError:
                    pass
            http.post("/v1/chat/completions", content=f'{{"model": "{chat_model}", "messages": [{{"role": "user", "content": "{canary}"',
                      headers={"content-type": "application/json"})
            http.post("/v1/chat/completions", json={"model": chat_model, "messages": [{"role": canary, "content": canary}]})
            http.post("/v1/chat/completions", json={"model": chat_model, "messages": canary})
            http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": canary}]})
            # A model name the client chose: kept in its usage record (metadata), never a metric label.
            unknown_model = f"model-{uuid.uuid4()}"
            http.post("/v1/chat/completions", json={"model": unknown_model, "messages": [{"role": "user", "content": "x"}]})

            for rid in ids:
                get_record(mgmt, rid)
            client.close()
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
            assert "router_one_requests_total" in metrics
            assert canary not in metrics and canary.upper() not in metrics, "the canary is in /metrics"
            assert unknown_model not in metrics, "a client-chosen model name is a metric label"
    finally:
        g.stop()
        spans.close()

    needle = canary.encode()
    exported = spans.raw()
    assert {s.attributes["request_id"] for s in spans.spans() if s.name == "request"} >= set(ids), \
        "every request's span was exported"
    assert needle not in exported and needle.upper() not in exported, "the canary is in an exported span"
    hits = []
    for root, _dirs, files in os.walk(g.data_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            if needle in data or needle.upper() in data or canary.encode("utf-16-le") in data:
                hits.append(path)
    assert not hits, f"the canary was written to disk: {hits}"
    log = g.log_path.read_bytes()
    assert log, "the server logged nothing at all with RUST_LOG=debug; is the log captured?"
    assert needle not in log, "the canary appears in the server's stdout/stderr:\n" + "\n".join(
        ln for ln in log.decode("utf-8", "replace").splitlines() if canary in ln)[:3000]
