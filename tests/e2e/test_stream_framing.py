"""How the gateway splits an upstream's server-sent events (issue 10, item 12): an upstream event
that never ends is refused at the splitter's limit (4 MiB) as a malformed stream, with a clean
error event for the client and a usage record saying so, instead of being buffered without bound."""

from __future__ import annotations

import json

from gateway import get_record


def test_an_endless_upstream_event_ends_the_stream_as_malformed(http, mgmt, chat_model):
    body = {
        "model": chat_model,
        "stream": True,
        "messages": [{"role": "user", "content": "never stop [[sim:endless_event]]"}],
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()[:500]
        rid = r.headers["x-request-id"]
        text = r.read().decode()
    # SSE comments (`: receipt …`, the stream's signed receipt) are not events.
    events = [e for e in text.split("\n\n") if e.strip() and not e.startswith(":")]
    assert len(text) < 64 * 1024, "the endless event reached the client"
    assert events[0].startswith("data: ") and json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_error", error
    assert "malformed" in error["message"], error
    assert "[DONE]" not in text
    rec = get_record(mgmt, rid)
    assert rec["error_code"] == "upstream_malformed", rec
    assert rec["streamed"] is True
