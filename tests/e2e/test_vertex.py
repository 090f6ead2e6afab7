"""Claude and Gemini on Google Cloud Vertex AI as provider types (issue 13), through the real
binary and the official `openai` client. Each provider authenticates with a throwaway service
account (an RSA key from `openssl`, in a key file given by path or inline): the gateway signs an
RS256 JWT and trades it at the token endpoint (the demo points it at the simulator, whose
`/token` checks the assertion and issues the only tokens its Vertex paths accept). Claude goes
to `…/publishers/anthropic/models/{model}:rawPredict` / `:streamRawPredict` (the simulator
refuses a body without `anthropic_version`), Gemini to `:generateContent` /
`:streamGenerateContent`; both are billed exactly, fail over between the demo's two routes, and
a provider whose token cannot be minted answers a clean 503 `provider_unavailable`."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from conftest import tracked
from gateway import D, Gateway, expected_cost, get_record, log_path, model_pricing

REPO = Path(__file__).resolve().parents[2]
CLAUDE = "claude-vertex-e2e"
GEMINI = "gemini-vertex-e2e"
BROKEN = "claude-vertex-broken-e2e"
CLAUDE_ID = "claude-sonnet-4-5@20250929"
GEMINI_ID = "gemini-2.5-flash"


def model(id_: str, family: str, provider: str, upstream_id: str) -> str:
    return f'''
[[model]]
id = "{id_}"
family = "{family}"
kind = "chat"
context_window = 200000
max_output = 8192
input_per_mtok = "3.00"
cached_input_per_mtok = "0.30"
output_per_mtok = "15.00"

[[model.route]]
provider = "{provider}"
upstream_id = "{upstream_id}"
'''


CATALOG_EXTRA = (model(CLAUDE, "claude", "vertex-claude", CLAUDE_ID)
                 + model(GEMINI, "gemini", "vertex-gemini", GEMINI_ID)
                 + model(BROKEN, "claude", "vertex-broken", CLAUDE_ID))


def key_file(d: Path, client_email: str) -> str:
    """A service-account key file as Google issues it, with a fresh RSA key. Its token_uri is
    Google's: the demo sends the assertion to the simulator instead."""
    pem = d / f"{client_email.split('@')[0]}.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(pem)], check=True, capture_output=True)
    return json.dumps({
        "type": "service_account", "project_id": "e2e-project", "private_key_id": "e2e-key-1",
        "private_key": pem.read_text(), "client_email": client_email, "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    })


@pytest.fixture(scope="module")
def vx(tmp_path_factory):
    d = tmp_path_factory.mktemp("vertex")
    catalog = d / "models.toml"
    catalog.write_text((REPO / "catalog" / "models.toml").read_text() + CATALOG_EXTRA)
    claude_key = d / "claude-sa.json"
    claude_key.write_text(key_file(d, "gateway@e2e-project.iam.gserviceaccount.com"))
    env = {
        "E2E_VERTEX_CLAUDE_SA": str(claude_key),                                  # a path
        "E2E_VERTEX_GEMINI_SA": key_file(d, "gemini@e2e-project.iam.gserviceaccount.com"),  # inline
        # The simulator refuses an `iss` that is not an email: minting fails.
        "E2E_VERTEX_BROKEN_SA": key_file(d, "not-an-email"),
    }
    section = ('[providers.{name}]\napi = "{api}"\nproject = "e2e-project"\nregion = "us-east5"\n'
               'credentials_env = "{env}"\n')
    config = (f'catalog = "{catalog}"\n'
              + section.format(name="vertex-claude", api="vertex-anthropic", env="E2E_VERTEX_CLAUDE_SA")
              + section.format(name="vertex-gemini", api="vertex-gemini", env="E2E_VERTEX_GEMINI_SA")
              + section.format(name="vertex-broken", api="vertex-anthropic", env="E2E_VERTEX_BROKEN_SA"))
    g = tracked(Gateway(d / "data", log_path=log_path("vertex", d), config_text=config, env=env)).start()
    yield g
    g.stop()


def check_billed(mgmt, raw, pricing, provider: str, served: str, usage) -> None:
    rec = get_record(mgmt, raw.headers["x-request-id"])
    assert rec["provider"] == provider and rec["served_model"] == served, rec
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens), rec
    assert D(rec["cost"]) == expected_cost(pricing, usage.prompt_tokens, 0, usage.completion_tokens) > 0, rec


@pytest.mark.parametrize("model_id,provider,served", [(CLAUDE, "vertex-claude", CLAUDE_ID),
                                                      (GEMINI, "vertex-gemini", GEMINI_ID)])
def test_chat_streamed_and_not_through_vertex_with_minted_tokens_and_failover(vx, model_id, provider, served):
    client = openai.OpenAI(api_key=vx.api_key, base_url=f"{vx.root}/v1", max_retries=0)
    with vx.http(vx.management_key) as mgmt, vx.http(vx.api_key) as http:
        pricing = model_pricing(http)[model_id]["pricing"]
        raw = client.chat.completions.with_raw_response.create(
            model=model_id, max_tokens=20, messages=[{"role": "user", "content": "hello vertex [[sim:words=5]]"}])
        reply = raw.parse()
        assert raw.headers["x-router-one-provider"] == f"{provider}.sim-a"
        assert reply.choices[0].message.content.startswith(f"Simulated reply from {served}.")
        check_billed(mgmt, raw, pricing, f"{provider}.sim-a", served, reply.usage)

        stream = client.chat.completions.with_raw_response.create(
            model=model_id, max_tokens=20, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream vertex [[sim:route=sim-a,status=503,words=4]]"}])
        chunks = list(stream.parse())
        assert stream.headers["x-router-one-provider"] == f"{provider}.sim-b", "sim-a failed: sim-b serves"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith(f"Simulated reply from {served}."), text
        check_billed(mgmt, stream, pricing, f"{provider}.sim-b", served, chunks[-1].usage)


def test_a_provider_whose_token_cannot_be_minted_is_unavailable_and_the_key_is_not_logged(vx):
    client = openai.OpenAI(api_key=vx.api_key, base_url=f"{vx.root}/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model=BROKEN, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    assert refused.value.body["code"] == "provider_unavailable", refused.value.body
    log = vx.log_tail(1_000_000)
    assert "could not mint a Google access token" in log and "invalid_grant" in log
    assert "PRIVATE KEY" not in log and "ya29." not in log
