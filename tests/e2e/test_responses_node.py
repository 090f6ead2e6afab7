"""POST /v1/responses with the official openai Node client (tests/e2e/node/responses.mjs, run
here so that a failure shows the gateway's log): for a GPT, a Claude and a Gemini model, plain,
streamed, the SDK's stream helper, function tools and JSON schema output. The script asserts the
shapes; this test checks each request's one usage record (endpoint `responses`, the served model,
the answer's tokens, the formula's cost, which the answer's `usage.cost` also says).

Needs `npm ci --prefix tests/e2e/node` (.ci/run does it); skipped when node is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway import D, expected_cost, get_record

NODE_DIR = Path(__file__).resolve().parent / "node"
CLAUDE = "claude-sonnet-5-5"
GEMINI = "gemini-4-hydrogen"


def test_openai_node_client(gw, mgmt, models, chat_model, made_ids):
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the Node client is not installed: run `npm ci --prefix tests/e2e/node`")
    wanted = [chat_model, CLAUDE, GEMINI]
    env = {**os.environ, "BASE_URL": gw.base_url, "API_KEY": gw.api_key, "MODELS": ",".join(wanted)}
    run = subprocess.run(["node", "responses.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"responses.mjs failed:\n{run.stderr[-4000:]}\n{run.stdout[-2000:]}"
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert {r["model"] for r in report} == set(wanted), report
    for r in report:
        rid, model, usage = r["request_id"], r["model"], r["usage"]
        made_ids.append(rid)
        assert r["served_model"] == model, r
        rec = get_record(mgmt, rid)
        assert rec["endpoint"] == "responses" and rec["served_model"] == model, rec
        assert rec["streamed"] is r["streamed"], (rec, r)
        cached = usage["input_tokens_details"]["cached_tokens"]
        assert (rec["prompt_tokens"], rec["cached_tokens"], rec["completion_tokens"]) == (
            usage["input_tokens"], cached, usage["output_tokens"]), (rec, r)
        want = expected_cost(models[model]["pricing"], usage["input_tokens"], cached, usage["output_tokens"])
        assert D(rec["cost"]) == want, (rec, want)
        # JSON.parse reads the cost as a double; its shortest text is the sent decimal (<= 15 digits).
        assert D(usage["cost"]) == want, (r, want)
