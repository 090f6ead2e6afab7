"""Claude and Gemini behind the OpenAI-compatible endpoint: the official openai client talks to
the gateway, which translates to the simulated Anthropic Messages and Gemini generateContent
upstreams over real sockets. Every answer's usage must match what the simulator reported (its
token rule), and every usage record's tokens and cost must match the answer, exactly."""

from __future__ import annotations

import json
import uuid

import pytest

from gateway import D, expected_cost, get_record, prompt_tokens_of, words

CLAUDE = "claude-sonnet-5-5"
GEMINI = "gemini-4-hydrogen"
FAMILIES = [pytest.param(CLAUDE, id="claude"), pytest.param(GEMINI, id="gemini")]
# The demo serves every model over two routes; sim-a, the first, serves unless it fails.
PROVIDER = {CLAUDE: "anthropic.sim-a", GEMINI: "gemini.sim-a"}
# A 1x1 transparent PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def cost_of(usage) -> str:
    extra = getattr(usage, "model_extra", None) or {}
    return extra.get("cost")


def check_record(mgmt, models, model, rid, prompt, completion, cached=0, cost=None):
    """The usage record carries exactly the tokens the simulator reported, priced by the formula."""
    rec = get_record(mgmt, rid)
    assert rec["provider"] == PROVIDER[model], rec
    assert rec["served_model"] == model, rec
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (prompt, cached, completion), rec
    want = expected_cost(models[model]["pricing"], prompt, cached, completion)
    assert D(rec["cost"]) == want, (rec, want)
    if cost is not None:
        assert D(cost) == want
    return rec


@pytest.mark.parametrize("model", FAMILIES)
def test_chat(client, mgmt, models, model, made_ids):
    text = f"translate me {uuid.uuid4().hex[:8]}"
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    assert raw.headers["x-router-one-served-model"] == model
    assert raw.headers["x-router-one-provider"] == PROVIDER[model]
    resp = raw.parse()
    content = resp.choices[0].message.content
    assert content == f"Simulated reply from {model}. You said: {text}", content
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion" and resp.model == model
    u = resp.usage
    assert u.prompt_tokens == prompt_tokens_of(messages)
    assert u.completion_tokens == words(content)
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    check_record(mgmt, models, model, rid, u.prompt_tokens, u.completion_tokens, cost=cost_of(u))


@pytest.mark.parametrize("model", FAMILIES)
def test_cached_tokens_are_billed_at_the_cache_rate(http, mgmt, models, model, made_ids):
    msgs = [{"role": "user", "content": "mostly cached prompt [[sim:cached=4]]"}]
    r = http.post("/v1/chat/completions", json={"model": model, "messages": msgs})
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    made_ids.append(rid)
    u = r.json()["usage"]
    assert u["prompt_tokens"] == prompt_tokens_of(msgs), u
    assert u["prompt_tokens_details"]["cached_tokens"] == 4, u
    check_record(mgmt, models, model, rid, u["prompt_tokens"], u["completion_tokens"], cached=4, cost=u["cost"])


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("include_usage", [True, False], ids=["with-usage", "without-usage"])
def test_stream(client, mgmt, models, model, include_usage, made_ids):
    text = f"stream translated {uuid.uuid4().hex[:8]} [[sim:words=9]]"
    messages = [{"role": "user", "content": text}]
    kw = {"stream_options": {"include_usage": True}} if include_usage else {}
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True, **kw)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    assert raw.headers["x-router-one-served-model"] == model
    chunks = list(raw.parse())
    assert all(c.object == "chat.completion.chunk" and c.model == model for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert words(content) == 9, content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], finishes
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
        u = chunks[-1].usage
        assert (u.prompt_tokens, u.completion_tokens) == (prompt_tokens_of(messages), 9)
        check_record(mgmt, models, model, rid, u.prompt_tokens, 9, cost=cost_of(u))
    else:
        assert not usage_chunks
        rec = check_record(mgmt, models, model, rid, prompt_tokens_of(messages), 9)
        assert rec["streamed"] is True and rec["error_code"] is None, rec


@pytest.mark.parametrize("model", FAMILIES)
def test_tool_call_round_trip(client, mgmt, models, model, made_ids):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "Weather and time in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=tools)
    made_ids.append(raw.headers["x-request-id"])
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    # The simulator calls the first two tools in parallel.
    assert [c.function.name for c in calls] == ["get_weather", "get_time"], calls
    assert len({c.id for c in calls}) == 2
    for c in calls:
        assert json.loads(c.function.arguments) == {"echo": "Weather and time in Paris?"}

    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in calls]})
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny and 21 degrees"})
    messages.append({"role": "tool", "tool_call_id": calls[1].id, "content": "noon"})
    raw2 = client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=tools)
    rid = raw2.headers["x-request-id"]
    made_ids.append(rid)
    second = raw2.parse()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("Tool said: "), second.choices[0].message.content
    u = second.usage
    check_record(mgmt, models, model, rid, u.prompt_tokens, u.completion_tokens, cost=cost_of(u))


@pytest.mark.parametrize("model", FAMILIES)
def test_tool_call_streaming(client, mgmt, models, model, made_ids):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    raw = client.chat.completions.with_raw_response.create(
        model=model, stream=True, tools=tools, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "look it up"}])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    chunks = list(raw.parse())
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or tc.id
            if tc.function and tc.function.name:
                call["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                call["arguments"] += tc.function.arguments
    assert [c["name"] for c in calls.values()] == ["lookup"], calls
    assert calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"echo": "look it up"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"], finishes
    u = chunks[-1].usage
    check_record(mgmt, models, model, rid, u.prompt_tokens, u.completion_tokens, cost=cost_of(u))


@pytest.mark.parametrize("model", FAMILIES)
def test_image_input(client, mgmt, models, model, made_ids):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    assert resp.choices[0].message.content.endswith("You said: What is in these pictures?")
    u = resp.usage
    # Images add no tokens in the simulator's rule; the text does.
    assert u.prompt_tokens == prompt_tokens_of(messages)
    check_record(mgmt, models, model, rid, u.prompt_tokens, u.completion_tokens, cost=cost_of(u))


@pytest.mark.parametrize("model", FAMILIES)
def test_json_schema_mode(client, mgmt, models, model, made_ids):
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"],
              "additionalProperties": False}
    raw = client.chat.completions.with_raw_response.create(
        model=model, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        messages=[{"role": "user", "content": 'Answer in JSON with "quotes"'}])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    obj = json.loads(resp.choices[0].message.content)
    assert obj["reply"].endswith('You said: Answer in JSON with "quotes"'), obj
    u = resp.usage
    check_record(mgmt, models, model, rid, u.prompt_tokens, u.completion_tokens, cost=cost_of(u))


def test_gemini_json_object_mode(client, made_ids):
    raw = client.chat.completions.with_raw_response.create(
        model=GEMINI, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Answer in JSON"}])
    made_ids.append(raw.headers["x-request-id"])
    assert json.loads(raw.parse().choices[0].message.content)["reply"].endswith("You said: Answer in JSON")


def test_claude_json_object_mode_is_refused_with_the_field(http, made_ids):
    r = http.post("/v1/chat/completions", json={"model": CLAUDE, "response_format": {"type": "json_object"},
                                                "messages": [{"role": "user", "content": "hi"}]})
    made_ids.append(r.headers["x-request-id"])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format", r.text


@pytest.mark.parametrize("model", FAMILIES)
def test_untranslatable_fields_are_refused_not_dropped(http, model, made_ids):
    for extra, param in [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"some_vendor_knob": 1}, "some_vendor_knob")]:
        r = http.post("/v1/chat/completions",
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})
        made_ids.append(r.headers["x-request-id"])
        assert r.status_code == 400, (extra, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error", (extra, err)


@pytest.mark.parametrize("model", FAMILIES)
def test_max_tokens_length(client, model, made_ids):
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "a long essay [[sim:words=40]]"}])
    made_ids.append(raw.headers["x-request-id"])
    resp = raw.parse()
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 5 and words(resp.choices[0].message.content) == 5


@pytest.mark.parametrize("model,status,kind,code", [
    (CLAUDE, 529, 503, "upstream_overloaded"),
    (CLAUDE, 429, 429, "rate_limit_exceeded"),
    (CLAUDE, 400, 400, "invalid_request"),
    (CLAUDE, 500, 502, "upstream_error"),
    (GEMINI, 429, 429, "rate_limit_exceeded"),
    (GEMINI, 503, 503, "upstream_overloaded"),
    (GEMINI, 400, 400, "invalid_request"),
], ids=lambda v: str(v))
def test_vendor_errors_become_openai_errors(http, model, status, kind, code, made_ids):
    r = http.post("/v1/chat/completions",
                  json={"model": model, "messages": [{"role": "user", "content": f"fail [[sim:status={status}]]"}]})
    made_ids.append(r.headers["x-request-id"])
    assert r.status_code == kind, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    if kind == 429:
        assert r.headers.get("retry-after"), dict(r.headers)
        assert "credit" not in err["message"] and "balance" not in err["message"]
    else:
        # The vendor's own message is kept.
        assert "simulated" in err["message"].lower() or str(status) in err["message"], err


@pytest.mark.parametrize("model", FAMILIES)
def test_stream_cut_midway_is_recorded(http, mgmt, model, made_ids):
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": "cut me [[sim:cut=3,words=30]]"}]}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        rid = r.headers["x-request-id"]
        text = "".join(r.iter_text())
    made_ids.append(rid)
    assert '"error"' in text and "data: [DONE]" not in text, text[-400:]
    rec = get_record(mgmt, rid)
    assert rec["error_code"] == "upstream_stream_cut", rec


def test_gemini_embeddings(client, mgmt, models, made_ids):
    raw = client.embeddings.with_raw_response.create(model="gemini-embedding-001", input=["one two", "three"])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 768 for d in resp.data)
    rec = get_record(mgmt, rid)
    assert rec["prompt_tokens"] == resp.usage.prompt_tokens > 0, rec
    assert D(rec["cost"]) == expected_cost(models["gemini-embedding-001"]["pricing"], rec["prompt_tokens"], 0, 0)
