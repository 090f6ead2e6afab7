"""Read your own writes (issue 14): `GET /v1/requests/{id}` and its receipt answer for a request
from the moment its response ended — never 404 for a request that happened. A request still running is
202 `pending` with `Retry-After`; an id that is not one of ours, or is old and unknown, is 404."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import httpx

from gateway import D, model_pricing, pick_chat_model


def _chat_body(model: str, i: int, stream: bool) -> dict:
    body = {"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": f"trace {i} [[sim:words=8]]"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _reported_cost(data: bytes) -> str:
    text = data.decode()
    if text.startswith("{"):
        return str(json.loads(text)["usage"]["cost"])
    for line in reversed(text.splitlines()):
        if line.startswith("data: {") and '"usage"' in line:
            usage = json.loads(line[6:]).get("usage")
            if usage:
                return str(usage["cost"])
    raise AssertionError(f"no usage in {text[-300:]}")


async def _one(c: httpx.AsyncClient, root: str, key: str, mgmt: str, body: dict):
    """The request, then its trace the moment the last byte arrived."""
    async with c.stream("POST", f"{root}/v1/chat/completions", json=body,
                        headers={"authorization": f"Bearer {key}"}) as r:
        data = await r.aread()
        status, request_id = r.status_code, r.headers["x-request-id"]
    trace = await c.get(f"{root}/v1/requests/{request_id}", headers={"authorization": f"Bearer {mgmt}"})
    receipt = await c.get(f"{root}/v1/requests/{request_id}/receipt", headers={"authorization": f"Bearer {mgmt}"})
    return status, request_id, data, trace, receipt


def test_the_trace_of_each_of_200_concurrent_requests_answers_the_moment_its_response_ends(gw):
    with gw.http(gw.api_key) as http:
        model = pick_chat_model(model_pricing(http))

    async def run():
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(timeout=120, limits=limits) as c:
            return await asyncio.gather(*(
                _one(c, gw.root, gw.api_key, gw.management_key, _chat_body(model, i, stream=bool(i % 2)))
                for i in range(200)))

    results = asyncio.run(run())
    # And one at a time, where the trace request follows the last byte within a millisecond or
    # two (before the writer's ~25 ms group commit: without reading through, 19 of 20 missed).
    async def one_by_one():
        async with httpx.AsyncClient(timeout=60) as c:
            return [await _one(c, gw.root, gw.api_key, gw.management_key, _chat_body(model, i, stream=bool(i % 2)))
                    for i in range(20)]

    results += asyncio.run(one_by_one())
    for status, request_id, data, trace, receipt in results:
        assert status == 200, data[:300]
        assert trace.status_code == 200, (request_id, trace.status_code, trace.text[:300])
        # The receipt too, and it is the one the response carried (header or the stream's last line).
        assert receipt.status_code == 200, (request_id, receipt.status_code, receipt.text[:300])
        jws = receipt.json()["receipt"]
        assert jws.encode() in data or data.startswith(b"{"), request_id
        record = trace.json()["record"]
        assert record["request_id"] == request_id
        # The record is the one the client was billed by.
        assert D(record["cost"]) == D(_reported_cost(data)), (record, data[-300:])


def test_a_running_request_is_pending_with_retry_after_then_found(gw):
    with gw.http(gw.api_key) as http:
        model = pick_chat_model(model_pricing(http))
    seen: dict = {}

    def stream():
        body = {"model": model, "max_tokens": 40, "stream": True,
                "messages": [{"role": "user", "content": "slow [[sim:words=40,tpot_ms=50]]"}]}
        with httpx.Client(timeout=60) as c:
            with c.stream("POST", f"{gw.root}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {gw.api_key}"}) as r:
                seen["id"] = r.headers["x-request-id"]
                r.read()
                seen["done"] = True

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 10
    while "id" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    with gw.http(gw.management_key) as mgmt:
        r = mgmt.get(f"/v1/requests/{seen['id']}")
        assert "done" not in seen, "the stream ended before the check: slow it down"
        assert r.status_code == 202, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json() == {"object": "request", "id": seen["id"], "status": "pending",
                            "message": r.json()["message"]}
        t.join(30)
        assert seen.get("done")
        r = mgmt.get(f"/v1/requests/{seen['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["record"]["status"] == 200


def test_ids_that_are_not_ours_or_are_old_are_404(gw):
    # A UUIDv7 minted 11 minutes ago (past the pending window), and shapes that are no id of ours.
    old_ms = int(time.time() * 1000) - 11 * 60 * 1000
    old = uuid.UUID(int=(old_ms << 80) | (0x7 << 76) | (0x2 << 62) | 12345)
    fresh_ms = int(time.time() * 1000)
    fresh = uuid.UUID(int=(fresh_ms << 80) | (0x7 << 76) | (0x2 << 62) | 6789)
    with gw.http(gw.management_key) as mgmt:
        for bad in [f"req_{old.hex}", "req_nothing", f"key_{fresh.hex}", f"req_{uuid.uuid4().hex}"]:
            r = mgmt.get(f"/v1/requests/{bad}")
            assert r.status_code == 404, (bad, r.status_code, r.text)
            assert r.json()["error"]["code"] == "not_found"
        # A fresh id of our shape that no request has: pending until the window passes (it may
        # be running, or recorded by another node); it says nothing about whose it would be.
        r = mgmt.get(f"/v1/requests/req_{fresh.hex}")
        assert r.status_code == 202 and r.headers["retry-after"] == "1", r.text
