"""LiteLLM's typed client (what many resellers' own apps use) reads Router One's answers without a
warning: `usage.cost` is a JSON number (OpenRouter's convention, which LiteLLM's `Usage.cost:
float` models); as a string it drew a pydantic serializer warning on every response (issue 12).
The exact cost is still there for exact readers (test_relay_options).

LiteLLM runs in a process of its own: it changes logging and global client state at import, which
no other test should inherit."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from gateway import D, get_record

#: Sends one complete and one streamed chat completion through LiteLLM and prints, as JSON, the
#: warnings raised while it parsed them, the cost it read and the request id.
CLIENT = r'''
import json, sys, warnings
import litellm  # its import-time warnings are about its own types, not our answers
base, key, model = sys.argv[1:4]
ask = {"model": f"openai/{model}", "api_base": base, "api_key": key, "max_tokens": 12,
       "messages": [{"role": "user", "content": "hello litellm"}]}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    reply = litellm.completion(**ask)
    reply.model_dump_json()
    chunks = list(litellm.completion(**ask, stream=True, stream_options={"include_usage": True}))
    built = litellm.stream_chunk_builder(chunks)
    built.model_dump_json()
print(json.dumps({
    "warnings": [str(w.message) for w in caught],
    "cost": reply.usage.cost, "cost_type": type(reply.usage.cost).__name__,
    "request_id": reply._hidden_params["additional_headers"]["llm_provider-x-request-id"],
    "streamed_completion_tokens": built.usage.completion_tokens,
}))
'''


def _about_our_answers(message: str) -> bool:
    """LiteLLM warns about its own TypedDicts and pydantic deprecations on every call, whatever it
    parses; a serializer warning, or one naming the usage object, is about our answers."""
    text = message.lower()
    return "serializ" in text or "unexpectedvalue" in text or "cost" in text or "usage" in text


def test_litellm_reads_complete_and_streamed_answers_without_warnings(gw, mgmt, chat_model):
    # LiteLLM fetches its price map from GitHub at import unless told to use its bundled copy.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    run = subprocess.run([sys.executable, "-c", CLIENT, f"{gw.root}/v1", gw.api_key, chat_model],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    ours = [w[:300] for w in out["warnings"] if _about_our_answers(w)]
    assert ours == [], ours
    assert out["cost_type"] == "float", out
    # The float's repr is the JSON text for a cost this short: the record's exact decimal.
    assert D(out["cost"]) == D(get_record(mgmt, out["request_id"])["cost"]) > 0
    assert out["streamed_completion_tokens"] > 0
