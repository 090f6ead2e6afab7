"""JSON logs (issue 14): `--log-format json` writes one JSON object per log line and one access
line per request (target `router_one::access`) with its request id and metadata — never a
prompt or a completion."""
from __future__ import annotations

import json
import uuid

from gateway import Gateway, log_path, model_pricing, pick_chat_model


def test_json_logs_have_one_access_line_per_request_and_no_body(tmp_path):
    canary = f"canary-{uuid.uuid4()}"
    g = Gateway(tmp_path / "data", log_path=log_path("json-logs", tmp_path),
                env={"ROUTER_ONE_LOG_FORMAT": "json"})
    g.start()
    ids = {}
    try:
        with g.http(g.api_key) as http:
            model = pick_chat_model(model_pricing(http))
            for i, stream in enumerate([False, True, False]):
                body = {"model": model, "max_tokens": 5, "stream": stream,
                        "messages": [{"role": "user", "content": f"{canary} {i} [[sim:words=5]]"}]}
                r = http.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                ids[r.headers["x-request-id"]] = (200, stream)
            r = http.post("/v1/chat/completions", json={"model": "no-such-model",
                                                         "messages": [{"role": "user", "content": canary}]})
            assert r.status_code == 404
            ids[r.headers["x-request-id"]] = (404, False)
        with g.http(g.management_key) as mgmt:
            for rid in ids:
                assert mgmt.get(f"/v1/requests/{rid}").status_code == 200
    finally:
        g.stop()
    text = g.log_path.read_text()
    assert canary not in text
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))  # every log line is a JSON object
    assert any(e.get("message") == "Router One is serving" for e in events)
    access = [e for e in events if e.get("target") == "router_one::access"]
    assert sorted(e["request_id"] for e in access) == sorted(ids), access
    for e in access:
        status, streamed = ids[e["request_id"]]
        assert e["status"] == status and e["streamed"] == streamed, e
        assert e["level"] == "INFO" and e["message"] == "request"
        if status == 200:
            assert e["model"] == model and e["completion_tokens"] == 5 and e["route"], e
