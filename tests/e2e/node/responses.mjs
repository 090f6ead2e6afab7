// POST /v1/responses with the official openai Node client: plain, streamed (raw events and the
// SDK's stream helper), function tools over two turns, and JSON schema output, for each model
// named in MODELS. Shapes are asserted here; the usage records are checked by the caller,
// tests/e2e/test_responses_node.py, from the JSON report printed on stdout (one request each:
// its request id, served-model header, usage and whether it streamed).
//
// env: BASE_URL, API_KEY, MODELS (comma-separated)

import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: process.env.API_KEY, maxRetries: 0, timeout: 60_000 });
const models = process.env.MODELS.split(",");
const report = [];

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  strict: false,
};
const SCHEMA = {
  type: "object",
  properties: { reply: { type: "string" } },
  required: ["reply"],
  additionalProperties: false,
};

function record(model, kase, response, usage, streamed) {
  report.push({
    model,
    case: kase,
    request_id: response.headers.get("x-request-id"),
    served_model: response.headers.get("x-router-one-served-model"),
    usage,
    streamed,
  });
}

async function plain(model) {
  const text = `node plain ${Math.random().toString(16).slice(2, 10)}`;
  const { data, response } = await client.responses
    .create({ model, input: text, instructions: "You are terse." })
    .withResponse();
  assert.equal(data.object, "response");
  assert.equal(data.status, "completed");
  assert.equal(data.model, model);
  assert.equal(data.store, false);
  assert.equal(data.output_text, `Simulated reply from ${model}. You said: ${text}`);
  record(model, "plain", response, data.usage, false);
}

async function streamed(model) {
  const { data: stream, response } = await client.responses
    .create({ model, input: "node stream [[sim:words=7]]", stream: true })
    .withResponse();
  const events = [];
  for await (const event of stream) events.push(event);
  assert.deepEqual(
    events.map((e) => e.sequence_number),
    events.map((_, i) => i),
  );
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
  ]);
  assert.deepEqual(types.slice(-4), [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
  ]);
  const text = events
    .filter((e) => e.type === "response.output_text.delta")
    .map((e) => e.delta)
    .join("");
  assert.equal(text.split(/\s+/).filter(Boolean).length, 7, text);
  const final = events.at(-1).response;
  assert.equal(final.output[0].content[0].text, text);
  record(model, "stream", response, final.usage, true);
}

async function helper(model) {
  // The SDK's accumulator must accept every event and build the same final response.
  const stream = client.responses.stream({ model, input: "node helper [[sim:words=4]]" });
  const deltas = [];
  stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
  const final = await stream.finalResponse();
  assert.equal(final.status, "completed");
  assert.equal(final.output_text, deltas.join(""));
  assert.equal(final.output_text.split(/\s+/).length, 4);
}

async function tools(model) {
  const input = [{ role: "user", content: "Weather in Paris?" }];
  const { data: first, response } = await client.responses
    .create({ model, input, tools: [WEATHER], tool_choice: "required" })
    .withResponse();
  const calls = first.output.filter((item) => item.type === "function_call");
  assert.equal(calls.length, 1, JSON.stringify(first.output));
  assert.equal(calls[0].name, "get_weather");
  assert.deepEqual(JSON.parse(calls[0].arguments), { echo: "Weather in Paris?" });
  record(model, "tools-1", response, first.usage, false);

  const next = [...input, ...first.output, { type: "function_call_output", call_id: calls[0].call_id, output: "sunny" }];
  const { data: second, response: response2 } = await client.responses
    .create({ model, input: next, tools: [WEATHER] })
    .withResponse();
  // Gemini wraps a tool's text in an object ({"content": …}); the simulator echoes what it got.
  assert.ok(second.output_text.startsWith("Tool said: ") && second.output_text.includes("sunny"), second.output_text);
  record(model, "tools-2", response2, second.usage, false);
}

async function toolsStreamed(model) {
  const { data: stream, response } = await client.responses
    .create({ model, input: "node look it up", tools: [WEATHER], stream: true })
    .withResponse();
  const events = [];
  for await (const event of stream) events.push(event);
  const args = events
    .filter((e) => e.type === "response.function_call_arguments.delta")
    .map((e) => e.delta)
    .join("");
  const done = events.find((e) => e.type === "response.function_call_arguments.done");
  assert.equal(done.arguments, args);
  assert.deepEqual(JSON.parse(args), { echo: "node look it up" });
  const final = events.at(-1);
  assert.equal(final.type, "response.completed");
  assert.equal(final.response.output[0].type, "function_call");
  record(model, "tools-stream", response, final.response.usage, true);
}

async function jsonSchema(model) {
  const { data, response } = await client.responses
    .create({
      model,
      input: "node JSON",
      text: { format: { type: "json_schema", name: "r", schema: SCHEMA, strict: true } },
    })
    .withResponse();
  assert.ok(JSON.parse(data.output_text).reply.endsWith("You said: node JSON"), data.output_text);
  record(model, "json-schema", response, data.usage, false);
}

async function refusals(model) {
  for (const [extra, param] of [
    [{ store: true }, "store"],
    [{ previous_response_id: "resp_1" }, "previous_response_id"],
    [{ tools: [{ type: "web_search" }] }, "tools[0].type"],
  ]) {
    await assert.rejects(client.responses.create({ model, input: "hi", ...extra }), (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, String(err));
      assert.equal(err.param, param);
      return true;
    });
  }
}

for (const model of models) {
  for (const check of [plain, streamed, helper, tools, toolsStreamed, jsonSchema, refusals]) {
    try {
      await check(model);
    } catch (err) {
      console.error(`${check.name} failed for ${model}:`, err);
      process.exit(1);
    }
  }
}
console.log(JSON.stringify(report));
