"""The inference API through the official openai client: chat (plain, streaming, tools, JSON
mode), embeddings and the model list, with exact-decimal cost checks."""

from __future__ import annotations

import base64
import json
import struct
import uuid

import pytest

from gateway import D, expected_cost, get_record, prompt_tokens_of, words


def usage_extra(usage, name):
    """A non-standard usage field (`cost`), kept by the openai client's pydantic models."""
    if usage is None:
        return None
    extra = getattr(usage, "model_extra", None) or {}
    return extra.get(name, getattr(usage, name, None))


def test_models_list(models):
    assert len(models) >= 25, f"only {len(models)} models: {sorted(models)}"
    for mid, m in models.items():
        assert m["object"] == "model"
        p = m["pricing"]
        for field in ("input_per_mtok", "cached_input_per_mtok", "output_per_mtok"):
            assert isinstance(p[field], str), f"{mid}.pricing.{field} must be a decimal string: {p}"
            assert D(p[field]) >= 0
        assert isinstance(m["context_window"], int) and m["context_window"] > 0, m
        assert isinstance(m["max_output"], int) and m["max_output"] >= 0, m


def test_models_list_carries_a_request_id(http):
    r = http.get("/v1/models")
    assert r.status_code == 200
    assert r.headers.get("x-request-id", "").startswith("req_"), dict(r.headers)


def test_models_list_openai_client(client, models):
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == sorted(models)


def test_chat_non_stream(client, models, chat_model, made_ids):
    text = f"hello there gateway {uuid.uuid4().hex[:8]}"
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    raw = client.chat.completions.with_raw_response.create(model=chat_model, messages=messages)
    rid = raw.headers.get("x-request-id")
    assert rid, f"no x-request-id header: {dict(raw.headers)}"
    served = raw.headers.get("x-router-one-served-model")
    assert served, f"no x-router-one-served-model header: {dict(raw.headers)}"
    resp = raw.parse()
    made_ids.append(rid)

    content = resp.choices[0].message.content
    assert content.startswith("Simulated reply from "), content
    assert content.endswith(f"You said: {text}"), content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == served, (resp.model, served)

    u = resp.usage
    assert u.prompt_tokens == prompt_tokens_of(messages)
    assert u.completion_tokens == words(content)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    cost = usage_extra(u, "cost")
    assert isinstance(cost, float), f"usage.cost must be a JSON number, got {cost!r}"
    assert D(cost) == expected_cost(models[chat_model]["pricing"], u.prompt_tokens, 0, u.completion_tokens)


def test_chat_cached_and_reasoning_tokens(http, mgmt, models, chat_model, made_ids):
    msgs = [{"role": "user", "content": "count cached tokens please [[sim:cached=4,reasoning=2]]"}]
    r = http.post("/v1/chat/completions", json={"model": chat_model, "messages": msgs})
    assert r.status_code == 200, r.text
    made_ids.append(r.headers["x-request-id"])
    body = r.json()
    u = body["usage"]
    assert u["prompt_tokens"] == prompt_tokens_of(msgs)
    assert u["prompt_tokens_details"]["cached_tokens"] == 4, u
    assert u["completion_tokens_details"]["reasoning_tokens"] == 2, u
    content = body["choices"][0]["message"]["content"]
    assert u["completion_tokens"] == words(content) + 2, u
    assert D(u["cost"]) == expected_cost(models[chat_model]["pricing"], u["prompt_tokens"], 4,
                                         u["completion_tokens"])
    rec = get_record(mgmt, r.headers["x-request-id"])
    assert rec["cached_tokens"] == 4 and rec["reasoning_tokens"] == 2, rec
    assert D(rec["cost"]) == D(u["cost"])


def test_chat_max_tokens_length(client, chat_model, made_ids):
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model, max_tokens=5,
        messages=[{"role": "user", "content": "write a long essay [[sim:words=40]]"}])
    made_ids.append(raw.headers["x-request-id"])
    resp = raw.parse()
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 5
    assert words(resp.choices[0].message.content) == 5


def _stream(client, model, messages, include_usage):
    kw = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True, **kw)
    rid = raw.headers.get("x-request-id")
    served = raw.headers.get("x-router-one-served-model")
    chunks = list(raw.parse())
    return rid, served, chunks


def test_chat_stream_with_usage(client, models, chat_model, made_ids):
    text = f"stream me please {uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": text}]
    rid, served, chunks = _stream(client, chat_model, messages, include_usage=True)
    assert rid and served
    made_ids.append(rid)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.endswith(f"You said: {text}"), content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1, f"expected exactly one usage chunk, got {len(usage_chunks)}"
    last = chunks[-1]
    assert last.usage is not None, "the usage chunk must be the final chunk"
    assert last.choices == []
    u = last.usage
    assert u.prompt_tokens == prompt_tokens_of(messages)
    assert u.completion_tokens == words(content)
    cost = usage_extra(u, "cost")
    assert isinstance(cost, float), f"final chunk usage.cost must be a JSON number, got {cost!r}"
    assert D(cost) == expected_cost(models[chat_model]["pricing"], u.prompt_tokens, 0, u.completion_tokens)


def test_stream_opening_with_keepalive_comments_still_names_the_served_model(client, chat_model, made_ids):
    """Some hosts open a stream with SSE comments; the response head must wait for the first data
    event so that x-router-one-served-model is known."""
    messages = [{"role": "user", "content": "keep me alive [[sim:keepalive,ttft_ms=80]]"}]
    rid, served, chunks = _stream(client, chat_model, messages, include_usage=True)
    made_ids.append(rid)
    assert served == chat_model
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("Simulated reply"), content
    assert chunks[-1].usage is not None


def test_chat_stream_without_usage_is_still_metered(client, mgmt, models, chat_model, made_ids):
    text = f"stream without usage {uuid.uuid4().hex[:8]} [[sim:words=12]]"
    messages = [{"role": "user", "content": text}]
    rid, served, chunks = _stream(client, chat_model, messages, include_usage=False)
    assert rid and served
    made_ids.append(rid)
    assert all(c.usage is None for c in chunks), "client did not ask for usage but got a usage chunk"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert words(content) == 12
    rec = get_record(mgmt, rid)
    assert rec["request_id"] == rid
    assert rec["streamed"] is True
    assert rec["prompt_tokens"] == prompt_tokens_of(messages)
    assert rec["completion_tokens"] == 12
    assert D(rec["cost"]) == expected_cost(models[chat_model]["pricing"], rec["prompt_tokens"], 0, 12)


def test_tools_round_trip(client, chat_model, made_ids):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(model=chat_model, messages=messages, tools=tools)
    made_ids.append(raw.headers["x-request-id"])
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert args == {"echo": "What is the weather in Paris?"}

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls]})
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny and 21 degrees"})
    raw2 = client.chat.completions.with_raw_response.create(model=chat_model, messages=messages, tools=tools)
    made_ids.append(raw2.headers["x-request-id"])
    second = raw2.parse()
    assert second.choices[0].message.content == "Tool said: sunny and 21 degrees"
    assert second.choices[0].finish_reason == "stop"


def test_tools_streaming(client, chat_model, made_ids):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model, stream=True, tools=tools, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "look it up"}])
    made_ids.append(raw.headers["x-request-id"])
    chunks = list(raw.parse())
    names = [tc.function.name for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])
             if tc.function and tc.function.name]
    assert names == ["lookup"], names
    assert chunks[-1].usage is not None


def test_json_mode(client, chat_model, made_ids):
    raw = client.chat.completions.with_raw_response.create(
        model=chat_model, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Answer in JSON with "quotes" and \\ backslashes'}])
    made_ids.append(raw.headers["x-request-id"])
    content = raw.parse().choices[0].message.content
    obj = json.loads(content)
    assert isinstance(obj, dict)
    assert obj["reply"].endswith('You said: Answer in JSON with "quotes" and \\ backslashes'), obj


def test_unknown_fields_pass_through(http, chat_model, made_ids):
    r = http.post("/v1/chat/completions", json={
        "model": chat_model, "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2, "top_p": 0.9, "seed": 7, "user": "cust-1", "stop": ["\n\n"],
        "some_future_field": {"x": 1}})
    assert r.status_code == 200, r.text
    made_ids.append(r.headers["x-request-id"])


def test_embeddings_default_base64(client, models, embedding_model, made_ids):
    raw = client.embeddings.with_raw_response.create(model=embedding_model, input=["hello world", "second input"])
    rid = raw.headers.get("x-request-id")
    assert rid and raw.headers.get("x-router-one-served-model")
    made_ids.append(rid)
    resp = raw.parse()
    assert len(resp.data) == 2
    dims = {len(d.embedding) for d in resp.data}
    assert len(dims) == 1 and dims.pop() > 0
    assert all(isinstance(x, float) for x in resp.data[0].embedding)
    assert resp.data[0].embedding != resp.data[1].embedding
    cost = usage_extra(resp.usage, "cost")
    assert isinstance(cost, float), f"embeddings usage.cost must be a JSON number, got {cost!r}"
    assert D(cost) == expected_cost(models[embedding_model]["pricing"], resp.usage.prompt_tokens, 0, 0)


def test_embeddings_float_and_base64_agree(http, embedding_model, made_ids):
    out = {}
    for fmt in ("float", "base64"):
        r = http.post("/v1/embeddings", json={"model": embedding_model, "input": "same text", "encoding_format": fmt})
        assert r.status_code == 200, r.text
        made_ids.append(r.headers["x-request-id"])
        emb = r.json()["data"][0]["embedding"]
        if fmt == "base64":
            assert isinstance(emb, str)
            raw = base64.b64decode(emb)
            emb = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        out[fmt] = emb
    assert len(out["float"]) == len(out["base64"])
    assert all(abs(a - b) < 1e-6 for a, b in zip(out["float"], out["base64"]))


def test_every_catalog_model_answers_in_demo(http, models, made_ids):
    """--demo points every provider at the simulator, which speaks all three wire formats: every
    model answers 200 and names its served model (the upstream's id, which the simulator echoes)."""
    failures = {}
    for mid, m in models.items():
        if m.get("kind") == "embedding":
            r = http.post("/v1/embeddings", json={"model": mid, "input": "hello"})
        else:
            r = http.post("/v1/chat/completions", json={"model": mid, "messages": [{"role": "user", "content": "hi"}]})
        if r.status_code == 200:
            made_ids.append(r.headers["x-request-id"])
            served = r.headers.get("x-router-one-served-model")
            if not served:
                failures[mid] = "no x-router-one-served-model header"
        else:
            failures[mid] = f"{r.status_code} {r.text[:160]}"
    assert not failures, f"{len(failures)} of {len(models)} models misbehave in demo mode: " + \
        "; ".join(f"{k}: {v}" for k, v in failures.items())
