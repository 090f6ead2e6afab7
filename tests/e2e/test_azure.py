"""Azure OpenAI as a provider type (issue 13), through the real binary and the official `openai`
client: a catalog model routed to an `api = "azure"` provider goes to the simulator's
`/openai/deployments/{deployment}/chat/completions?api-version=…` (the simulator refuses a path
without `api-version`, as Azure does), streamed and not, embeddings too, billed exactly, and fails
over between the demo's two routes like any other provider."""
from __future__ import annotations

from pathlib import Path

import openai
import pytest

from conftest import tracked
from gateway import D, Gateway, expected_cost, get_record, log_path, model_pricing

REPO = Path(__file__).resolve().parents[2]
MODEL = "gpt-azure-e2e"
EMBEDDER = "embedding-azure-e2e"
CATALOG_EXTRA = f'''
[[model]]
id = "{MODEL}"
family = "gpt"
kind = "chat"
context_window = 128000
max_output = 16384
input_per_mtok = "2.50"
cached_input_per_mtok = "1.25"
output_per_mtok = "10.00"

[[model.route]]
provider = "azure"
upstream_id = "my-gpt-deployment"

[[model]]
id = "{EMBEDDER}"
family = "gpt"
kind = "embedding"
context_window = 8191
max_output = 0
input_per_mtok = "0.13"
cached_input_per_mtok = "0.13"
output_per_mtok = "0"

[[model.route]]
provider = "azure"
upstream_id = "my-embedding-deployment"
'''


@pytest.fixture(scope="module")
def az(tmp_path_factory):
    d = tmp_path_factory.mktemp("azure")
    catalog = d / "models.toml"
    catalog.write_text((REPO / "catalog" / "models.toml").read_text() + CATALOG_EXTRA)
    config = (f'catalog = "{catalog}"\n'
              '[providers.azure]\napi = "azure"\nbase_url = "https://example.openai.azure.com"\n'
              'api_key_env = "AZURE_OPENAI_API_KEY"\n')
    g = tracked(Gateway(d / "data", log_path=log_path("azure", d), config_text=config)).start()
    yield g
    g.stop()


def test_chat_streamed_and_not_and_embeddings_through_an_azure_deployment(az):
    client = openai.OpenAI(api_key=az.api_key, base_url=f"{az.root}/v1", max_retries=0)
    with az.http(az.management_key) as mgmt, az.http(az.api_key) as http:
        pricing = model_pricing(http)[MODEL]["pricing"]
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hello azure [[sim:words=5]]"}])
        reply = raw.parse()
        assert raw.headers["x-router-one-provider"] == "azure.sim-a"
        rec = get_record(mgmt, raw.headers["x-request-id"])
        assert rec["provider"] == "azure.sim-a" and rec["requested_model"] == MODEL, rec
        assert rec["served_model"] == "my-gpt-deployment", rec
        assert D(rec["cost"]) == expected_cost(pricing, reply.usage.prompt_tokens, 0, reply.usage.completion_tokens) > 0

        stream = client.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=20, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream azure [[sim:route=sim-a,status=503,words=4]]"}])
        chunks = list(stream.parse())
        assert stream.headers["x-router-one-provider"] == "azure.sim-b", "sim-a failed: sim-b serves"
        usage = chunks[-1].usage
        rec = get_record(mgmt, stream.headers["x-request-id"])
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)

        emb = client.embeddings.with_raw_response.create(model=EMBEDDER, input="embed me on azure")
        rec = get_record(mgmt, emb.headers["x-request-id"])
        assert rec["provider"] == "azure.sim-a" and rec["prompt_tokens"] > 0 and D(rec["cost"]) > 0, rec
