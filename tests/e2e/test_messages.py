"""POST /v1/messages and /v1/messages/count_tokens with the official anthropic SDK, for a GPT, a
Claude and a Gemini model of the demo catalog. Claude goes to the simulated Anthropic upstream
keeping what only Messages carries (cache_control, thinking with signatures); the others are
translated. Every request has exactly one usage record (endpoint `messages`) whose tokens and
cost match the answer exactly, cache writes priced at the cache-write rate."""

from __future__ import annotations

import csv
import io
import json
import uuid

import anthropic
import pytest

from gateway import D, expected_cost, get_record, new_key, words

GPT = "gpt-6.1-sol"
CLAUDE = "claude-sonnet-5-5"
GEMINI = "gemini-4-hydrogen"
ALL = [pytest.param(GPT, id="gpt"), pytest.param(CLAUDE, id="claude"), pytest.param(GEMINI, id="gemini")]
# The demo serves every model over two routes; sim-a, the first, serves unless it fails.
PROVIDER = {GPT: "openai.sim-a", CLAUDE: "anthropic.sim-a", GEMINI: "gemini.sim-a"}
# A 1x1 transparent PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
TOOLS = [
    {"name": "get_weather", "description": "Weather for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "input_schema": {"type": "object"}},
]


@pytest.fixture(scope="session")
def claude_sdk(gw):
    """The anthropic SDK with the demo key as `x-api-key` (its default)."""
    return anthropic.Anthropic(base_url=gw.root, api_key=gw.api_key, max_retries=0, timeout=60)


def cost_of(usage) -> str | None:
    extra = getattr(usage, "model_extra", None) or {}
    return extra.get("cost")


def prompt_of(usage) -> int:
    """Anthropic splits the prompt: plain input, cache writes, cache reads."""
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def check_record(mgmt, models, model, rid, usage, streamed=False, cost=None):
    """One record, endpoint `messages`, with the answer's tokens, priced by the formula."""
    rec = get_record(mgmt, rid)
    assert rec["endpoint"] == "messages", rec
    assert rec["provider"] == PROVIDER[model], rec
    assert rec["served_model"] == model, rec
    assert rec["streamed"] is streamed and rec["status"] == 200 and rec["error_code"] is None, rec
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    prompt = prompt_of(usage)
    got = (rec["prompt_tokens"], rec["cached_tokens"], rec.get("cache_write_tokens", 0), rec["completion_tokens"])
    assert got == (prompt, read, write, usage.output_tokens), rec
    want = expected_cost(models[model]["pricing"], prompt, read, usage.output_tokens, cache_write=write)
    assert D(rec["cost"]) == want, (rec, want)
    if cost is not None:
        assert D(cost) == want, (cost, want)
    return rec


@pytest.mark.parametrize("model", ALL)
def test_create(claude_sdk, mgmt, models, model, made_ids):
    text = f"messages please {uuid.uuid4().hex[:8]}"
    raw = claude_sdk.messages.with_raw_response.create(
        model=model, max_tokens=200, system="You are terse.", messages=[{"role": "user", "content": text}])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    assert raw.headers["x-router-one-served-model"] == model
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == model
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"], msg.content
    assert msg.content[0].text == f"Simulated reply from {model}. You said: {text}"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == words(msg.content[0].text)
    assert cost_of(msg.usage) is not None
    check_record(mgmt, models, model, rid, msg.usage, cost=cost_of(msg.usage))


@pytest.mark.parametrize("model", ALL)
def test_stream(claude_sdk, mgmt, models, model, made_ids):
    text = f"stream messages {uuid.uuid4().hex[:8]} [[sim:words=9]]"
    with claude_sdk.messages.stream(model=model, max_tokens=200,
                                    messages=[{"role": "user", "content": text}]) as stream:
        rid = stream.response.headers["x-request-id"]
        made_ids.append(rid)
        assert stream.response.headers["x-router-one-served-model"] == model
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.model == model and final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]
    assert words(final.content[0].text) == 9, final.content
    assert final.usage.output_tokens == 9
    delta = next(e for e in events if e.type == "message_delta")
    check_record(mgmt, models, model, rid, final.usage, streamed=True, cost=cost_of(delta.usage))


@pytest.mark.parametrize("model", ALL)
def test_stop_sequences(claude_sdk, mgmt, models, model, made_ids):
    """Claude names the stop sequence that ended the answer; the others say only that it stopped."""
    text = "stop at the marker [[sim:words=12]]"
    raw = claude_sdk.messages.with_raw_response.create(
        model=model, max_tokens=200, stop_sequences=["lorem"], messages=[{"role": "user", "content": text}])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    msg = raw.parse()
    if model == CLAUDE:
        assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "lorem"), msg
    else:
        assert msg.stop_reason == "end_turn" and msg.stop_sequence is None, msg
    check_record(mgmt, models, model, rid, msg.usage, cost=cost_of(msg.usage))


@pytest.mark.parametrize("model", ALL)
def test_tools_round_trip(claude_sdk, mgmt, models, model, made_ids):
    messages = [{"role": "user", "content": "Weather and time in Paris?"}]
    raw = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=300, tools=TOOLS, messages=messages)
    made_ids.append(raw.headers["x-request-id"])
    first = raw.parse()
    assert first.stop_reason == "tool_use", first
    calls = [b for b in first.content if b.type == "tool_use"]
    # The simulator calls the first two tools in parallel.
    assert [c.name for c in calls] == ["get_weather", "get_time"], first.content
    assert all(c.input == {"echo": "Weather and time in Paris?"} for c in calls), calls
    check_record(mgmt, models, model, raw.headers["x-request-id"], first.usage, cost=cost_of(first.usage))

    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny and 21 degrees"},
        {"type": "tool_result", "tool_use_id": calls[1].id, "content": [{"type": "text", "text": "noon"}]},
    ]})
    raw2 = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=300, tools=TOOLS, messages=messages)
    rid = raw2.headers["x-request-id"]
    made_ids.append(rid)
    second = raw2.parse()
    assert second.stop_reason == "end_turn"
    assert second.content[0].text.startswith("Tool said: "), second.content
    check_record(mgmt, models, model, rid, second.usage, cost=cost_of(second.usage))


@pytest.mark.parametrize("model", ALL)
def test_tool_stream(claude_sdk, mgmt, models, model, made_ids):
    with claude_sdk.messages.stream(model=model, max_tokens=300, tools=TOOLS[1:],
                                    tool_choice={"type": "any"},
                                    messages=[{"role": "user", "content": "look it up"}]) as stream:
        rid = stream.response.headers["x-request-id"]
        made_ids.append(rid)
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    calls = [b for b in final.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["get_time"] and calls[0].id
    assert calls[0].input == {"echo": "look it up"}, calls
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    delta = next(e for e in events if e.type == "message_delta")
    check_record(mgmt, models, model, rid, final.usage, streamed=True, cost=cost_of(delta.usage))


@pytest.mark.parametrize("model", ALL)
def test_image(claude_sdk, mgmt, models, model, made_ids):
    raw = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=200, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
    ]}])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    msg = raw.parse()
    assert msg.content[0].text.startswith(f"Simulated reply from {model}."), msg.content
    check_record(mgmt, models, model, rid, msg.usage, cost=cost_of(msg.usage))


@pytest.mark.parametrize("model", ALL)
def test_count_tokens(claude_sdk, http, mgmt, model):
    messages = [{"role": "user", "content": "count these words please"}]
    before = http.get("/v1/models").status_code
    n = claude_sdk.messages.count_tokens(model=model, system="terse", messages=messages, tools=TOOLS)
    assert n.input_tokens > 0 and before == 200
    # The same estimate admission reserves for; it bounds what the simulator counts.
    assert n.input_tokens >= 4 + 4 + 3


def test_count_tokens_refuses_an_unknown_model(claude_sdk):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude_sdk.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("model", ALL)
def test_thinking(claude_sdk, mgmt, models, model, made_ids):
    """Claude answers with a signed thinking block, which goes back in the next turn; the others
    think by a reasoning effort (their reasoning, where shown, is an unsigned block)."""
    thinking = {"type": "enabled", "budget_tokens": 2048}
    messages = [{"role": "user", "content": "think about it"}]
    raw = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=4096, thinking=thinking, messages=messages)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    msg = raw.parse()
    check_record(mgmt, models, model, rid, msg.usage, cost=cost_of(msg.usage))
    if model != CLAUDE:
        return
    blocks = [b for b in msg.content if b.type == "thinking"]
    assert len(blocks) == 1 and blocks[0].signature and blocks[0].thinking, msg.content
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
                 {"role": "user", "content": "go on"}]
    with claude_sdk.messages.stream(model=model, max_tokens=4096, thinking=thinking, messages=messages) as stream:
        rid = stream.response.headers["x-request-id"]
        made_ids.append(rid)
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert "thinking_delta" in deltas and "signature_delta" in deltas, deltas
    assert final.content[0].type == "thinking" and final.content[0].signature, final.content
    # The earlier signed block reached the upstream: the simulator says it verified it.
    assert "signature ok" in final.content[0].thinking, final.content[0].thinking
    delta = next(e for e in events if e.type == "message_delta")
    check_record(mgmt, models, model, rid, final.usage, streamed=True, cost=cost_of(delta.usage))


@pytest.mark.parametrize("model", ALL)
def test_cache_control(claude_sdk, mgmt, models, model, made_ids):
    """Claude writes the prompt up to the breakpoint to the cache on first sight (billed at the
    cache-write rate) and reads it on a repeat; elsewhere cache_control is an ignored hint."""
    system = [{"type": "text", "text": f"long shared context {uuid.uuid4().hex} " * 5,
               "cache_control": {"type": "ephemeral"}}]
    usages, rids = [], []
    for _ in range(2):
        raw = claude_sdk.messages.with_raw_response.create(
            model=model, max_tokens=100, system=system, messages=[{"role": "user", "content": "hello"}])
        rid = raw.headers["x-request-id"]
        rids.append(rid)
        made_ids.append(rid)
        msg = raw.parse()
        check_record(mgmt, models, model, rid, msg.usage, cost=cost_of(msg.usage))
        usages.append(msg.usage)
    if model == CLAUDE:
        assert usages[0].cache_creation_input_tokens > 0 and usages[0].cache_read_input_tokens == 0, usages[0]
        assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens, usages[1]
        assert usages[1].cache_creation_input_tokens == 0, usages[1]
        pricing = models[CLAUDE]["pricing"]
        assert D(pricing["cache_write_per_mtok"]) == D(pricing["input_per_mtok"]) * D("1.25")
        # The CSV export carries the cache writes too (its last column).
        r = mgmt.get("/v1/usage", params={"format": "csv", "model": CLAUDE, "limit": 200})
        assert r.status_code == 200, r.text
        rows = {row["request_id"]: row for row in csv.DictReader(io.StringIO(r.text))}
        assert int(rows[rids[0]]["cache_write_tokens"]) == usages[0].cache_creation_input_tokens, rows[rids[0]]
    else:
        assert not usages[0].cache_creation_input_tokens


def test_bearer_auth_works_too(gw, mgmt, made_ids):
    c = anthropic.Anthropic(base_url=gw.root, auth_token=gw.api_key, api_key=None, max_retries=0)
    raw = c.messages.with_raw_response.create(model=GPT, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    made_ids.append(raw.headers["x-request-id"])
    assert raw.parse().content[0].text.startswith("Simulated reply")


def test_auth_refusals_are_anthropic_shaped(gw):
    bad = anthropic.Anthropic(base_url=gw.root, api_key="sk-rk-not-a-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=GPT, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    assert e.value.response.headers.get("x-request-id")
    with gw.http(None) as anon:
        r = anon.post("/v1/messages", json={"model": GPT, "max_tokens": 5, "messages": []})
    assert r.status_code == 401 and r.json()["type"] == "error", r.text


def test_errors_are_anthropic_shaped(claude_sdk, mgmt):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude_sdk.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        claude_sdk.messages.create(model=GPT, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0]" in e.value.body["error"]["message"]
    # The 1-hour cache is billed at another rate than the one posted: refused, never under-billed.
    with pytest.raises(anthropic.BadRequestError) as e:
        claude_sdk.messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}])
    assert "cache_control" in e.value.body["error"]["message"], e.value.body
    # A key that may not use the model: 404, like an unknown model.
    key = new_key(mgmt, models=[GEMINI])
    narrow = anthropic.Anthropic(base_url=str(claude_sdk.base_url), api_key=key["key"], max_retries=0)
    with pytest.raises(anthropic.NotFoundError):
        narrow.messages.create(model=GPT, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError):
        narrow.messages.count_tokens(model=GPT, messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize("model", ALL)
def test_upstream_error_mid_stream(claude_sdk, model, made_ids):
    with claude_sdk.messages.stream(model=model, max_tokens=100,
                                    messages=[{"role": "user", "content": "cut me [[sim:cut=2]]"}]) as stream:
        made_ids.append(stream.response.headers["x-request-id"])
        with pytest.raises(anthropic.APIStatusError) as e:
            list(stream)
    assert e.value.body["type"] == "error", e.value.body


def test_exact_cost_text_survives(gw, made_ids):
    """usage.cost is a JSON number whose text is the exact decimal."""
    with gw.http(None) as c:
        r = c.post("/v1/messages", headers={"x-api-key": gw.api_key, "anthropic-version": "2023-06-01"},
                   json={"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "exact"}]})
    assert r.status_code == 200, r.text
    made_ids.append(r.headers["x-request-id"])
    body = json.loads(r.text, parse_float=D)
    assert body["usage"]["cost"] > 0
