"""POST /v1/responses with the official openai Python client, for a GPT, a Claude and a Gemini model
of the demo catalog: plain, streamed (raw events and the SDK's stream helper), function tools over
two turns, JSON schema output, images, and the refusals of what needs stored bodies. Each request
has exactly one usage record (endpoint `responses`) whose tokens are the answer's and whose cost is
the formula's, and the served model is the requested one (header and record)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import openai
import pytest

from gateway import D, expected_cost, get_record, prompt_tokens_of, words

CLAUDE = "claude-sonnet-5-5"
GEMINI = "gemini-4-hydrogen"
# A 1x1 transparent PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "strict": False}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}, "strict": False}
SCHEMA = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"],
          "additionalProperties": False}


@pytest.fixture(scope="module", params=["gpt", "claude", "gemini"])
def model(request, chat_model):
    return {"gpt": chat_model, "claude": CLAUDE, "gemini": GEMINI}[request.param]


def exact(raw) -> dict:
    """The raw JSON body, numbers as exact decimals."""
    return json.loads(raw.http_response.text, parse_float=Decimal)


def check_record(mgmt, models, model, rid, usage: dict, streamed: bool = False) -> dict:
    """One usage record for the request: endpoint `responses`, the served model, the answer's
    tokens, and the formula's cost, which is also the answer's `usage.cost`, exactly."""
    rec = get_record(mgmt, rid)
    assert rec["endpoint"] == "responses", rec
    assert rec["served_model"] == model and rec["requested_model"] == model, rec
    assert rec["streamed"] is streamed, rec
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (
        usage["input_tokens"], cached, usage["output_tokens"]), (rec, usage)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"], usage
    want = expected_cost(models[model]["pricing"], usage["input_tokens"], cached, usage["output_tokens"])
    assert D(rec["cost"]) == want, (rec, want)
    assert D(usage["cost"]) == want, (usage, want)
    return rec


def test_plain(client, mgmt, models, model, made_ids):
    text = f"respond to me {uuid.uuid4().hex[:8]}"
    raw = client.responses.with_raw_response.create(model=model, input=text, instructions="You are terse.")
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    assert raw.headers["x-router-one-served-model"] == model
    resp = raw.parse()
    assert resp.object == "response" and resp.status == "completed" and resp.model == model
    assert resp.id.startswith("resp_")
    assert resp.output_text == f"Simulated reply from {model}. You said: {text}", resp.output_text
    [item] = resp.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text"
    body = exact(raw)
    # Nothing is stored, and the answer says so.
    assert body["store"] is False and body["instructions"] == "You are terse."
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    assert body["usage"]["input_tokens"] == prompt_tokens_of(messages)
    assert body["usage"]["output_tokens"] == words(resp.output_text)
    assert isinstance(body["usage"]["cost"], Decimal)
    check_record(mgmt, models, model, rid, body["usage"])


def test_message_items_and_images(client, mgmt, models, model, made_ids):
    content = [{"type": "input_text", "text": "What is in these pictures?"},
               {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
               {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}]
    inp = [{"role": "developer", "content": "Describe images."},
           {"role": "user", "content": "Hello"},
           {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi there"}]},
           {"role": "user", "content": content}]
    raw = client.responses.with_raw_response.create(model=model, input=inp, max_output_tokens=500, temperature=0.5)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    assert resp.output_text.endswith("You said: What is in these pictures?"), resp.output_text
    assert resp.max_output_tokens == 500 and resp.temperature == 0.5
    check_record(mgmt, models, model, rid, exact(raw)["usage"])


def stream_events(client, **kw):
    raw = client.responses.with_raw_response.create(stream=True, **kw)
    return raw.headers, list(raw.parse())


def check_sequence(events) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[0].response.status == "in_progress" and events[0].response.output == []


def test_stream(client, mgmt, models, model, made_ids):
    text = f"stream responses {uuid.uuid4().hex[:8]} [[sim:words=9]]"
    headers, events = stream_events(client, model=model, input=text)
    rid = headers["x-request-id"]
    made_ids.append(rid)
    assert headers["x-router-one-served-model"] == model
    check_sequence(events)
    types = [e.type for e in events]
    assert types[2:4] == ["response.output_item.added", "response.content_part.added"], types
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"], types
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert words(deltas) == 9, deltas
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    final = events[-1].response
    assert final.status == "completed" and final.output_text == deltas and final.model == model
    usage = final.usage.model_dump()
    assert usage["output_tokens"] == 9
    check_record(mgmt, models, model, rid, usage, streamed=True)


def test_stream_helper(client, mgmt, models, model, made_ids):
    """The SDK's own accumulator (`responses.stream`) reads every event we send."""
    text = f"helper {uuid.uuid4().hex[:8]} [[sim:words=6]]"
    with client.responses.stream(model=model, input=text, tools=[WEATHER], tool_choice="none") as stream:
        # The stream helper hides the HTTP response; its raw stream holds it.
        rid = stream._response.headers["x-request-id"]
        assert stream._response.headers["x-router-one-served-model"] == model
        seen = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.output_text.delta" in seen and seen[-1] == "response.completed", seen
    assert words(final.output_text) == 6, final.output_text
    assert final.tool_choice == "none" and final.tools[0].name == "get_weather"
    made_ids.append(rid)
    check_record(mgmt, models, model, rid, final.usage.model_dump(), streamed=True)


def test_function_tools_round_trip(client, mgmt, models, model, made_ids):
    ask = [{"role": "user", "content": "Weather and time in Paris?"}]
    raw = client.responses.with_raw_response.create(model=model, input=ask, tools=[WEATHER, TIME])
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    first = raw.parse()
    calls = [item for item in first.output if item.type == "function_call"]
    # The simulator calls the first two tools in parallel.
    assert [c.name for c in calls] == ["get_weather", "get_time"], first.output
    assert len({c.call_id for c in calls}) == 2 and all(c.status == "completed" for c in calls)
    assert all(json.loads(c.arguments) == {"echo": "Weather and time in Paris?"} for c in calls)
    assert first.output_text == ""
    check_record(mgmt, models, model, rid, exact(raw)["usage"])

    # Stateless continuation: the earlier output items go back as input, with the calls' outputs.
    second_input = ask + [item.model_dump(exclude_none=True) for item in first.output] + [
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny and 21 degrees"},
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "noon"}]
    raw2 = client.responses.with_raw_response.create(model=model, input=second_input, tools=[WEATHER, TIME])
    rid2 = raw2.headers["x-request-id"]
    made_ids.append(rid2)
    second = raw2.parse()
    assert second.output_text.startswith("Tool said: "), second.output_text
    check_record(mgmt, models, model, rid2, exact(raw2)["usage"])


def test_named_tool_choice_streamed(client, mgmt, models, model, made_ids):
    headers, events = stream_events(client, model=model, input="look it up", tools=[WEATHER, TIME],
                                    tool_choice={"type": "function", "name": "get_time"})
    rid = headers["x-request-id"]
    made_ids.append(rid)
    check_sequence(events)
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [(i.type, i.name) for i in added] == [("function_call", "get_time")], added
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == args and json.loads(args) == {"echo": "look it up"}
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert item_done.item.call_id == added[0].call_id and item_done.item.arguments == args
    final = events[-1]
    assert final.type == "response.completed", final
    assert final.response.output[0].call_id == added[0].call_id
    check_record(mgmt, models, model, rid, final.response.usage.model_dump(), streamed=True)


def test_json_schema(client, mgmt, models, model, made_ids):
    raw = client.responses.with_raw_response.create(
        model=model, input='Answer in JSON with "quotes"',
        text={"format": {"type": "json_schema", "name": "r", "schema": SCHEMA, "strict": True}})
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    obj = json.loads(resp.output_text)
    assert obj["reply"].endswith('You said: Answer in JSON with "quotes"'), obj
    assert resp.text.format.type == "json_schema"
    check_record(mgmt, models, model, rid, exact(raw)["usage"])


def test_json_schema_streamed(client, mgmt, models, model, made_ids):
    headers, events = stream_events(
        client, model=model, input="stream JSON please",
        text={"format": {"type": "json_schema", "name": "r", "schema": SCHEMA, "strict": True}})
    rid = headers["x-request-id"]
    made_ids.append(rid)
    final = events[-1].response
    assert json.loads(final.output_text)["reply"].endswith("You said: stream JSON please")
    check_record(mgmt, models, model, rid, final.usage.model_dump(), streamed=True)


def test_max_output_tokens_makes_an_incomplete_response(client, mgmt, models, model, made_ids):
    raw = client.responses.with_raw_response.create(model=model, input="long [[sim:words=40]]", max_output_tokens=5)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    resp = raw.parse()
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert words(resp.output_text) == 5
    check_record(mgmt, models, model, rid, exact(raw)["usage"])
    headers, events = stream_events(client, model=model, input="long [[sim:words=40]]", max_output_tokens=5)
    made_ids.append(headers["x-request-id"])
    assert events[-1].type == "response.incomplete", [e.type for e in events]
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    check_record(mgmt, models, model, headers["x-request-id"], events[-1].response.usage.model_dump(), streamed=True)


def test_reasoning_effort_is_served(client, mgmt, models, model, made_ids):
    raw = client.responses.with_raw_response.create(model=model, input="think [[sim:reasoning=7]]",
                                                     reasoning={"effort": "low"},
                                                     include=["reasoning.encrypted_content"], store=False)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    body = exact(raw)
    assert body["reasoning"]["effort"] == "low"
    # Anthropic reports no reasoning count (thinking is part of its output tokens), as on chat.
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == (0 if model == CLAUDE else 7)
    assert body["usage"]["output_tokens"] >= 7
    check_record(mgmt, models, model, rid, body["usage"])


@pytest.mark.parametrize("kw, param, words_", [
    ({"store": True}, "store", "stores no request or response bodies"),
    ({"previous_response_id": "resp_123"}, "previous_response_id", "no earlier response"),
    ({"background": True}, "background", "fetched later"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search'"),
    ({"tools": [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[1].type", "'file_search'"),
    ({"include": ["message.output_text.logprobs"]}, "include", "log probabilities"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type", "stores no request"),
], ids=["store", "previous_response_id", "background", "web_search", "file_search", "logprobs", "item_reference"])
def test_what_needs_storage_or_hosted_tools_is_refused(client, chat_model, kw, param, words_):
    args = {"model": chat_model, "input": "hi", **kw}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(**args)
    err = info.value
    assert err.status_code == 400 and err.param == param, err.body
    assert err.type == "invalid_request_error" and words_ in err.message, err.body


def test_a_refusal_of_the_chat_pipeline_keeps_the_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="no-such-model", input="hi")
    assert info.value.code == "model_not_found"


def test_a_broken_stream_ends_with_response_failed(client, mgmt, models, model, made_ids):
    """The upstream drops the stream after two chunks: the client gets `response.failed` saying
    so, and the record says the stream was cut. The usage billed is in the event when the chat
    stream carried one (Gemini reports usage in every chunk; OpenAI and Anthropic at the end)."""
    headers, events = stream_events(client, model=model, input="cut me [[sim:words=20,cut=2]]")
    rid = headers["x-request-id"]
    made_ids.append(rid)
    check_sequence(events)
    last = events[-1]
    assert last.type == "response.failed", [e.type for e in events]
    assert last.response.status == "failed" and "broke" in last.response.error.message, last.response.error
    assert last.response.output[0].status == "incomplete"
    rec = get_record(mgmt, rid)
    assert rec["endpoint"] == "responses" and rec["error_code"] == "upstream_stream_cut", rec
    want = expected_cost(models[model]["pricing"], rec["prompt_tokens"], 0, rec["completion_tokens"])
    assert D(rec["cost"]) == want, rec
    if last.response.usage is not None:
        usage = last.response.usage.model_dump()
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
        assert D(usage["cost"]) == want


def test_a_field_the_family_cannot_honour_is_refused_by_name(client, model):
    """`text.verbosity` goes on as chat's `verbosity`: OpenAI models take it, Claude and Gemini
    refuse it with a 400 naming it, as they do on chat."""
    if model in (CLAUDE, GEMINI):
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model=model, input="hi", text={"verbosity": "low"})
        assert info.value.param == "verbosity", info.value.body
    else:
        resp = client.responses.create(model=model, input="hi", text={"verbosity": "low"})
        assert resp.status == "completed" and resp.text.verbosity == "low"


def test_structured_output_with_the_sdks_parse(client, mgmt, models, model, made_ids):
    """`responses.parse(text_format=<pydantic model>)`: the SDK writes the strict JSON schema and
    parses the answer into the model."""
    from pydantic import BaseModel

    class Reply(BaseModel):
        reply: str

    raw = client.responses.with_raw_response.parse(model=model, input="parse me", text_format=Reply)
    rid = raw.headers["x-request-id"]
    made_ids.append(rid)
    parsed = raw.parse().output_parsed
    assert isinstance(parsed, Reply) and parsed.reply.endswith("You said: parse me"), parsed
    check_record(mgmt, models, model, rid, exact(raw)["usage"])
