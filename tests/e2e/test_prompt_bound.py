"""Prompt counts at admission (issue 15). An OpenAI model's exact prompt count needs
`o200k_base` (about 46 MiB of tables); its byte bound needs nothing and is never below it. The
gateway counts exactly only where that can change an outcome — a tokens-per-minute limit, a
budget within 64 worst cases of the request, a prompt past the context window — and builds the
tables only then. `router_one_tokenizer_loaded` on /metrics says whether they were built."""
from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import tracked
from gateway import D, metric_samples, metrics_gateway, model_pricing, new_key, pick_chat_model, pick_embedding_model

# 400 words of one token each: about 430 tokens counted exactly with the framing and margin,
# but 2,399 bytes.
LONG = " ".join(["hello"] * 400)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    g = tracked(metrics_gateway(tmp_path_factory.mktemp("prompt-bound"), "prompt-bound")).start()
    yield g
    g.stop()


def _tokenizer_loaded(g) -> float:
    loaded = metric_samples(g.metrics_url).get(("router_one_tokenizer_loaded", ()))
    assert loaded is not None, "router_one_tokenizer_loaded is not exposed"
    return loaded


def _cost(rates: dict, prompt: int, output: int) -> Decimal:
    return (D(rates["input_per_mtok"]) * prompt + D(rates["output_per_mtok"]) * output) / 1_000_000


def test_requests_with_room_to_spare_never_build_the_tables(fresh):
    g = fresh
    assert _tokenizer_loaded(g) == 0
    with g.http(g.api_key) as http:
        models = model_pricing(http)
        chat = {"model": pick_chat_model(models), "max_tokens": 20,
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": LONG + " [[sim:words=5]]"}]}
        r = http.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        with http.stream("POST", "/v1/chat/completions",
                         json=chat | {"stream": True, "stream_options": {"include_usage": True}}) as s:
            assert s.status_code == 200
            assert b"[DONE]" in b"".join(s.iter_bytes())
        r = http.post("/v1/embeddings", json={"model": pick_embedding_model(models), "input": [LONG, "hi"]})
        assert r.status_code == 200, r.text
    # The demo key has no limits and its account a balance far above these requests' worst cases.
    assert _tokenizer_loaded(g) == 0


def test_a_tight_budget_is_counted_exactly_and_pays_for_what_the_exact_count_allows(fresh):
    g = fresh
    with g.http(g.api_key) as http:
        models = model_pricing(http)
    model = pick_chat_model(models)
    rates = models[model]["pricing"]
    with g.http(g.management_key) as mgmt:
        # Room for 1,000 prompt tokens and 100 output: the exact count (~430) fits with max_tokens
        # 100; the byte bound (~2,450) would not, and this key refuses rather than clamps.
        key = new_key(mgmt, max_spend=str(_cost(rates, 1_000, 100)), on_oversized_max_tokens="refuse")
    body = {"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": LONG + " [[sim:words=5]]"}]}
    with g.http(key["key"]) as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 5
    assert _tokenizer_loaded(g) == 1


def test_a_tokens_per_minute_window_is_charged_the_exact_count(fresh):
    g = fresh
    with g.http(g.api_key) as http:
        model = pick_chat_model(model_pricing(http))
    with g.http(g.management_key) as mgmt:
        key = new_key(mgmt, tpm_limit=100_000)
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": LONG + " [[sim:words=3]]"}]}
    with g.http(key["key"]) as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "100000"
    held = 100_000 - int(r.headers["x-ratelimit-remaining-tokens"])
    # The prompt's exact count (~430) and the 10 output tokens; its byte count alone is 2,399.
    assert 400 < held < 600, r.headers
