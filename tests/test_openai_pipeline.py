"""`explain_neuron` end to end over real HTTP: the OpenAI backend talking to our own server on
127.0.0.1, named by ``openai:MODEL`` with ``OPENAI_BASE_URL`` pointing at the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from neuron_explainer import SimulationError, explain_neuron
from neuron_explainer.llm.usage import BudgetExceededError
from neuron_explainer.plugins import Registry
from neuron_explainer.testing import (
    Fault,
    OpenAITestServer,
    OracleResponder,
    number_neuron_record,
)

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAITestServer]:
    with OpenAITestServer(api_key=KEY, responder=OracleResponder()) as running:
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.delenv("NEURON_EXPLAINER_CACHE", raising=False)
        yield running


def fresh() -> Registry:
    return Registry(entry_points=False)  # a new LLM object per test (its cache/limits)


def test_explain_neuron_over_http_with_the_chat_logprob_simulator(
    server: OpenAITestServer,
) -> None:
    record = number_neuron_record()
    result = explain_neuron(
        record, explainer="openai:gpt-4o-mini", simulator="openai:gpt-4o-mini", registry=fresh()
    )
    assert result.explanation.text == "numbers"
    assert result.simulator.name == "llm-chat-logprob"
    assert result.score is not None and result.score > 0.95
    # Expected values come from the logprobs: 0.9 * 10 + 0.1 * 9 on numbers, 0.1 elsewhere.
    sims = {round(v, 6) for s in result.scored.sequences for v in s.simulation.expected_activations}
    assert sims <= {9.9, 0.1}
    chats = [r for r in server.requests if r.endpoint == "chat/completions"]
    assert all(r.body["model"] == "gpt-4o-mini" for r in chats)
    assert all(r.body.get("logprobs") for r in chats[1:])
    # Usage and cost: every request counted, priced at gpt-4o-mini's list price.
    assert result.usage.calls == len(chats) and result.usage.cache_hits == 0
    assert result.usage.prompt_tokens > 0 and result.usage.cost_usd > 0
    assert KEY not in result.model_dump_json()


def test_faults_are_retried_and_the_score_is_unchanged(server: OpenAITestServer) -> None:
    record = number_neuron_record()
    clean = explain_neuron(record, explainer="openai:m", simulator="openai:m", registry=fresh())
    for fault in (Fault.rate_limit(0.01), Fault.server_error(503), Fault.disconnect()):
        server.fail_next(fault)
    again = explain_neuron(record, explainer="openai:m", simulator="openai:m", registry=fresh())
    assert again.score == clean.score
    assert again.usage.calls == clean.usage.calls  # failed attempts are not answered calls


def test_a_completion_that_ignores_the_format_is_an_error_not_zeros(
    server: OpenAITestServer,
) -> None:
    server.responder = lambda request: (
        " numbers." if "Explanation of neuron behavior" in str(request.body) else None
    )
    server.default = "I'm sorry, but I can't help with that."
    with pytest.raises(SimulationError, match=r"no usable|unusable|could not"):
        explain_neuron(
            number_neuron_record(), explainer="openai:m", simulator="openai:m", registry=fresh()
        )


def test_the_cache_makes_a_rerun_free(
    server: OpenAITestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURON_EXPLAINER_CACHE", str(tmp_path / "cache.sqlite"))
    record = number_neuron_record()
    first = explain_neuron(record, explainer="openai:m", simulator="openai:m", registry=fresh())
    sent = server.request_count
    second = explain_neuron(record, explainer="openai:m", simulator="openai:m", registry=fresh())
    assert server.request_count == sent
    assert second.score == first.score
    assert second.usage.calls == 0 and second.usage.cost_usd == 0
    assert second.usage.cache_hits == first.usage.calls
    assert KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_a_budget_stops_before_it_is_exceeded(server: OpenAITestServer) -> None:
    with pytest.raises(BudgetExceededError, match="budget"):
        explain_neuron(
            number_neuron_record(),
            explainer="openai:gpt-4o",
            simulator="openai:gpt-4o",
            registry=fresh(),
            budget_usd=0.0005,
        )
    # The refused call was never sent, and nothing was sent past the cap.
    assert server.request_count <= 1


def test_best_of_k_scores_candidates_on_calibration_only(server: OpenAITestServer) -> None:
    record = number_neuron_record()
    result = explain_neuron(
        record, explainer="openai:m", simulator="openai:m", registry=fresh(), best_of=3
    )
    data = result.explanation.data
    assert data["best_of"]["scored_on"] == "calibration"
    assert len(data["candidates"]) >= 1
    explain_requests = [
        r for r in server.requests if "Explanation of neuron behavior" in str(r.body)
    ]
    assert any(r.body.get("n", 1) == 3 for r in explain_requests) or len(explain_requests) == 3
