"""The in-process Hugging Face provider (``hf:``) on tiny randomly initialised Llama- and
Qwen2-shaped models built here (no downloads), with GPT-2's tokenizer and a chat template.

The equality tests compare what the provider returns (one batched, right-padded forward pass
with a shared-prefix KV cache) with the model run the plain way: one forward pass per scored
position, on the prompt up to it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2_tokenizer import write_gpt2_tokenizer  # noqa: E402

import neuron_explainer.llm._hf_generate as _hf_generate  # noqa: E402
from neuron_explainer import (  # noqa: E402
    CapabilityError,
    ComponentInfo,
    Explanation,
    ExplanationError,
    InvalidInputError,
    SimulationError,
    explain_neuron,
)
from neuron_explainer.explainers.llm import LLMExplainer  # noqa: E402
from neuron_explainer.llm import (  # noqa: E402
    ChatRequest,
    Message,
    PromptLogprobsRequest,
    _hf_grammar,
)
from neuron_explainer.llm.hf import HFLLM  # noqa: E402
from neuron_explainer.llm.usage import track_usage  # noqa: E402
from neuron_explainer.plugins import Registry  # noqa: E402
from neuron_explainer.scorers.correlation import correlation  # noqa: E402
from neuron_explainer.simulators._common import digit_value, expectation  # noqa: E402
from neuron_explainer.simulators.chat_logprob import ChatLogprobSimulator  # noqa: E402
from neuron_explainer.simulators.json_output import JSONSimulator  # noqa: E402
from neuron_explainer.simulators.prompt_logprob import (  # noqa: E402
    PlaceholderScorer,
    PromptLogprobSimulator,
    build_all_at_once_prompt,
)
from neuron_explainer.testing import ScriptedLLM, number_neuron_record  # noqa: E402

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
EXPLANATION = Explanation(text="numbers and digits", explainer=ComponentInfo(name="test"))
EXCERPTS = [
    [" The", " year", " 1999", " was", " long", "."],
    [" 42", " cats", " and", " 7", " dogs"],
    ["A", " red", " house", " on", " the", " hill", " by", " 3", " trees", "."],
    [" of", " course"],
]
ATOL = 1e-5
XGRAMMAR = importlib.util.find_spec("xgrammar") is not None


def _config(arch: str, vocab_size: int) -> Any:
    shape = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 64,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "pad_token_id": 50256,
    }
    if arch == "llama":
        return transformers.LlamaConfig(**shape)
    return transformers.Qwen2Config(**shape, tie_word_embeddings=True)


def build_model_dir(folder: Path, arch: str, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A tiny random ``arch`` model and GPT-2's tokenizer (with ``chat_template``) in
    ``folder``, loadable as ``hf:<folder>``."""
    write_gpt2_tokenizer(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = _config(arch, len(tokenizer))
    model_class = (
        transformers.LlamaForCausalLM if arch == "llama" else transformers.Qwen2ForCausalLM
    )
    model = model_class(config)
    with torch.no_grad():  # spread the logits so that rankings are not near-ties
        model.get_output_embeddings().weight.mul_(20.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def llm(model_dir: Path) -> HFLLM:
    return HFLLM(model_dir, device="cpu")


@pytest.fixture(scope="module")
def plain(model_dir: Path) -> HFLLM:
    """No shared-prefix cache, and every call alone: the unbatched reference."""
    return HFLLM(model_dir, device="cpu", prefix_cache=False)


@pytest.fixture(scope="module")
def llama(llama_dir: Path) -> HFLLM:
    return HFLLM(llama_dir, device="cpu")


def log_softmax_after(llm: HFLLM, ids: list[int]) -> Any:
    """The plain way: one forward pass over ``ids`` and the log-softmax of the last position."""
    with torch.inference_mode():
        logits = llm.hf_model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)


class Spy:
    """Wraps a function and records the sizes of the batches it ran (its argument ``arg``)."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, arg: int = 0
    ) -> None:
        self.batches: list[int] = []
        original: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any) -> Any:
            self.batches.append(len(args[arg]))
            return original(*args)

        monkeypatch.setattr(owner, name, wrapper)


# -- the provider --------------------------------------------------------------------------


def test_the_registry_builds_hf_models(llama_dir: Path) -> None:
    registry = Registry(entry_points=False)
    llm = registry.llm(f"hf:{llama_dir}")
    assert isinstance(llm, HFLLM)
    assert llm.name == f"hf:{llama_dir}"
    json_schema = {"json_schema"} if XGRAMMAR else set()
    assert llm.capabilities == {"chat", "chat_logprobs", "prompt_logprobs", "prefill"} | json_schema
    assert isinstance(llm, PlaceholderScorer)
    assert llm.info.settings["device"] == "cpu" and llm.info.settings["dtype"] == "float32"
    assert registry.llm(f"hf:{llama_dir}") is llm  # shared by explainer and simulator
    custom = registry.llm(f"hf:{llama_dir}", max_batch_tokens=64, dtype="bfloat16", seed=3)
    assert isinstance(custom, HFLLM) and custom.max_batch_tokens == 64
    assert next(custom.hf_model.parameters()).dtype == torch.bfloat16
    with pytest.raises(InvalidInputError, match="no such file"):
        registry.llm("hf:/nonexistent/model.gguf")
    with pytest.raises(InvalidInputError, match="max_batch_tokens"):
        registry.llm(f"hf:{llama_dir}", max_batch_tokens=0)


def test_importing_the_provider_does_not_import_torch() -> None:
    code = (
        "import sys, neuron_explainer.llm.hf, neuron_explainer.plugins\n"
        "neuron_explainer.plugins.default_registry().entry('llm_provider', 'hf')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_model_without_a_chat_template_only_scores_prompts(tmp_path: Path) -> None:
    folder = build_model_dir(tmp_path, "llama", chat_template=None)
    llm = HFLLM(folder, device="cpu")
    assert llm.capabilities == {"prompt_logprobs"}
    with pytest.raises(CapabilityError, match="'chat'"):
        llm.chat(ChatRequest(messages=(Message(role="user", content="hi"),)))
    templated = HFLLM(folder, device="cpu", chat_template=CHAT_TEMPLATE)
    assert {"chat", "prefill"} <= templated.capabilities
    request = ChatRequest(messages=(Message(role="user", content="hi"),), response_format={})
    if XGRAMMAR:  # constrained decoding: a format that is not a JSON schema is refused
        with pytest.raises(InvalidInputError, match="json_schema"):
            templated.chat(request)
    else:
        with pytest.raises(CapabilityError, match="json_schema"):
            templated.chat(request)


# -- chat ----------------------------------------------------------------------------------

MESSAGES = (
    Message(role="system", content="You explain neurons."),
    Message(role="user", content="What does a neuron that fires on 7 and 42 find?"),
)


def test_greedy_chat_is_deterministic_and_matches_a_plain_greedy_decode(llm: HFLLM) -> None:
    request = ChatRequest(messages=MESSAGES, max_tokens=8, logprobs=True, top_logprobs=5, n=2)
    first, second = llm.chat(request), llm.chat(request)
    assert first == second
    assert len(first.choices) == 2 and first.choices[0] == first.choices[1]
    choice = first.choices[0]
    assert choice.logprobs is not None and choice.finish_reason == "length"
    assert "".join(t.token for t in choice.logprobs) == choice.text
    assert "<|assistant|>\n" in llm.chat_prompt(request)
    # The plain way: a full forward pass per step, picking the argmax.
    ids = llm.tokenizer(llm.chat_prompt(request), add_special_tokens=False)["input_ids"]
    assert first.usage.prompt_tokens == len(ids) and first.usage.completion_tokens == 16
    for position in choice.logprobs:
        logprobs = log_softmax_after(llm, ids)
        top = torch.topk(logprobs, 5)
        best = int(top.indices[0])
        assert position.logprob == pytest.approx(float(logprobs[best]), abs=1e-4)
        assert [t.token for t in position.top_logprobs] == [
            llm.tokenizer.decode([int(i)]) for i in top.indices
        ]
        assert [t.logprob for t in position.top_logprobs] == pytest.approx(
            top.values.tolist(), abs=1e-4
        )
        ids.append(best)
    assert llm.tokenizer.decode(ids[-8:]) == choice.text


def test_sampling_is_reproducible_with_a_seed(llama_dir: Path) -> None:
    llm = HFLLM(llama_dir, device="cpu", seed=7, top_k=50)
    request = ChatRequest(messages=MESSAGES, max_tokens=6, temperature=1.0, n=3)
    first = llm.chat(request)
    assert first == llm.chat(request)
    assert len(first.choices) == 3 and len({c.text for c in first.choices}) > 1
    other = HFLLM(llama_dir, device="cpu", seed=8, top_k=50).chat(request)
    assert other != first


def test_sampling_cut_to_one_token_is_greedy(llama_dir: Path, llama: HFLLM) -> None:
    greedy = llama.chat(ChatRequest(messages=MESSAGES, max_tokens=6)).choices[0].text
    for options in ({"top_k": 1}, {"top_p": 1e-6}):
        llm = HFLLM(llama_dir, device="cpu", seed=1, **options)
        sampled = llm.chat(ChatRequest(messages=MESSAGES, max_tokens=6, temperature=2.0, n=2))
        assert [c.text for c in sampled.choices] == [greedy, greedy]


def test_stop_strings_cut_the_answer(llama: HFLLM) -> None:
    plain = llama.chat(ChatRequest(messages=MESSAGES, max_tokens=10, logprobs=True))
    assert plain.choices[0].logprobs is not None
    tokens = [t.token for t in plain.choices[0].logprobs]
    stop = next(t for t in tokens[3:] if t.strip() and plain.choices[0].text.count(t) == 1)
    cut = llama.chat(ChatRequest(messages=MESSAGES, max_tokens=10, logprobs=True, stop=(stop,)))
    choice = cut.choices[0]
    assert choice.text == plain.choices[0].text.split(stop)[0]
    assert choice.finish_reason == "stop"
    assert choice.logprobs is not None
    assert "".join(t.token for t in choice.logprobs) == choice.text


def test_a_prefill_is_continued_after_the_opened_assistant_turn(llama: HFLLM) -> None:
    """The chat template without the final assistant message, its turn opened, then that text
    with no end of turn (as llama.cpp's server writes it); the answer is what comes after."""
    prefill = "The neuron finds"
    request = ChatRequest(
        messages=(*MESSAGES, Message(role="assistant", content=prefill)),
        max_tokens=6,
        logprobs=True,
    )
    opened = llama.chat_prompt(ChatRequest(messages=MESSAGES))
    assert llama.chat_prompt(request) == opened + prefill
    answer = llama.chat(request).choices[0]
    # The plain way: greedy steps after the prompt with the prefill in it.
    ids = llama.tokenizer(opened + prefill, add_special_tokens=False)["input_ids"]
    for _ in range(6):
        ids.append(int(torch.argmax(log_softmax_after(llama, ids))))
    assert answer.text == llama.tokenizer.decode(ids[-6:])
    assert answer.logprobs is not None and "".join(t.token for t in answer.logprobs) == answer.text
    assert not answer.text.startswith(prefill)


@pytest.mark.skipif(not XGRAMMAR, reason="needs xgrammar (the hf-json extra)")
def test_a_json_schema_holds_the_answer_of_a_random_model(llm: HFLLM) -> None:
    """Unconstrained, a random model writes no JSON; held by the schema, every answer parses
    and follows it, even sampled."""
    schema = {
        "type": "object",
        "properties": {
            "activations": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0, "maximum": 10},
                "minItems": 3,
                "maxItems": 3,
            }
        },
        "required": ["activations"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema, "strict": True}}
    free = llm.chat(ChatRequest(messages=MESSAGES, max_tokens=20)).choices[0].text
    with pytest.raises(json.JSONDecodeError):
        json.loads(free)
    for temperature in (0.0, 1.0):
        request = ChatRequest(
            messages=MESSAGES, max_tokens=400, response_format=fmt, temperature=temperature, n=2
        )
        for choice in llm.chat(request).choices:
            assert choice.finish_reason == "stop", choice.text
            values = json.loads(choice.text)["activations"]
            assert len(values) == 3 and all(0 <= v <= 10 for v in values)
    anything = {"type": "json_object"}  # any object: a random model may write a key forever
    (choice,) = llm.chat(
        ChatRequest(messages=MESSAGES, max_tokens=60, response_format=anything)
    ).choices
    assert choice.text.startswith("{")
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.text), dict)


@pytest.mark.skipif(not XGRAMMAR, reason="needs xgrammar (the hf-json extra)")
def test_a_schema_xgrammar_cannot_compile_is_refused(llama: HFLLM) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "nonsense"}}}
    with pytest.raises(InvalidInputError, match="cannot compile the JSON schema"):
        llama.chat(ChatRequest(messages=MESSAGES, max_tokens=5, response_format=bad))
    ok = llama.chat(ChatRequest(messages=MESSAGES, max_tokens=3))  # the model still answers
    assert ok.choices[0].finish_reason == "length"


def test_concurrent_greedy_chats_are_generated_in_one_batch(
    llama: HFLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = ["hi", "What is 7 + 42?", "Name a colour that is not red, nor green."]
    requests = [
        ChatRequest(
            messages=(Message(role="user", content=q),),
            max_tokens=4 + i,
            logprobs=True,
            top_logprobs=3,
        )
        for i, q in enumerate(questions)
    ]
    alone = [llama.chat(r) for r in requests]
    spy = Spy(monkeypatch, _hf_generate, "generate", arg=1)

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(llama.achat(r) for r in requests)))

    batched = asyncio.run(together())
    assert spy.batches == [3]  # left-padded into one generate call
    for one, many, request in zip(alone, batched, requests, strict=True):
        a, b = one.choices[0], many.choices[0]
        assert a.text == b.text and a.finish_reason == b.finish_reason == "length"
        assert a.logprobs is not None and b.logprobs is not None
        assert len(b.logprobs) == request.max_tokens
        assert [t.logprob for t in a.logprobs] == pytest.approx(
            [t.logprob for t in b.logprobs], abs=1e-4
        )


@pytest.mark.skipif(not XGRAMMAR, reason="needs xgrammar (the hf-json extra)")
def test_chats_with_different_schemas_share_one_batch_each_held_by_its_own(
    llm: HFLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat simulators' schemas name each excerpt's tokens, so no two are alike: they must
    still batch, each row held by its own schema (and a row without one left free)."""

    def keyed(names: list[str]) -> dict[str, Any]:
        body = {
            "type": "object",
            "properties": {n: {"type": "integer", "minimum": 0, "maximum": 10} for n in names},
            "required": names,
            "additionalProperties": False,
        }
        return {"type": "json_schema", "json_schema": {"name": "a", "schema": body}}

    names = [["1 The", "2 cat"], ["1 dog", "2 ran", "3 away"], ["1 x"]]
    requests = [
        ChatRequest(messages=MESSAGES, max_tokens=80, response_format=keyed(n), logprobs=True)
        for n in names
    ] + [ChatRequest(messages=MESSAGES, max_tokens=12, logprobs=True)]
    alone = [llm.chat(r) for r in requests]
    spy = Spy(monkeypatch, _hf_generate, "generate", arg=1)

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(llm.achat(r) for r in requests)))

    batched = asyncio.run(together())
    assert spy.batches == [4]
    for expected, one, many in zip([*names, None], alone, batched, strict=True):
        a, b = one.choices[0], many.choices[0]
        assert a.text == b.text
        if expected is None:
            assert b.finish_reason == "length"
            continue
        assert b.finish_reason == "stop"
        assert list(json.loads(b.text)) == expected


def test_usage_is_recorded_at_no_cost(llama: HFLLM) -> None:
    with track_usage() as meter:
        llama.chat(ChatRequest(messages=MESSAGES, max_tokens=3))
        llama.prompt_logprobs(PromptLogprobsRequest(prompt="one two three"))
    assert meter.summary.calls == 2
    assert meter.summary.completion_tokens == 3
    assert meter.summary.prompt_tokens > 3
    assert meter.summary.cost_usd == 0.0


# -- prompt logprobs -----------------------------------------------------------------------


def test_prompt_logprobs_equal_scoring_each_position_alone(llm: HFLLM) -> None:
    prompt = "The cat sat on the mat.\tunknown\n 42 is a number, é and 日本 are not."
    response = llm.prompt_logprobs(PromptLogprobsRequest(prompt=prompt, top_logprobs=7))
    assert "".join(t.token for t in response.tokens) == prompt
    assert [t.offset for t in response.tokens] == [
        sum(len(t.token) for t in response.tokens[:i]) for i in range(len(response.tokens))
    ]
    ids = llm.tokenizer(prompt)["input_ids"]
    assert len(ids) == len(response.tokens) == response.usage.prompt_tokens
    first = response.tokens[0]
    assert first.logprob is None and first.top_logprobs == ()
    for i in range(1, len(ids)):
        # PromptToken i holds the prediction made at position i - 1, i.e. from ids[:i].
        logprobs = log_softmax_after(llm, ids[:i])
        top = torch.topk(logprobs, 7)
        token = response.tokens[i]
        assert token.logprob == pytest.approx(float(logprobs[ids[i]]), abs=ATOL)
        assert [t.logprob for t in token.top_logprobs] == pytest.approx(
            top.values.tolist(), abs=ATOL
        )
        assert [t.token for t in token.top_logprobs] == [
            llm.tokenizer.decode([int(j)]) for j in top.indices
        ]


def all_at_once_prompts() -> list[str]:
    return [build_all_at_once_prompt(EXPLANATION, tokens)[0] for tokens in EXCERPTS]


def scored(llm: HFLLM, prompts: list[str], k: int = 5) -> list[Any]:
    async def run() -> list[Any]:
        return list(
            await asyncio.gather(
                *(
                    llm.aprompt_logprobs(PromptLogprobsRequest(prompt=p, top_logprobs=k))
                    for p in prompts
                )
            )
        )

    return asyncio.run(run())


def assert_same_scores(a: Any, b: Any) -> None:
    assert [(t.token, t.offset) for t in a.tokens] == [(t.token, t.offset) for t in b.tokens]
    for x, y in zip(a.tokens[1:], b.tokens[1:], strict=True):
        assert x.logprob == pytest.approx(y.logprob, abs=ATOL)
        assert [t.logprob for t in x.top_logprobs] == pytest.approx(
            [t.logprob for t in y.top_logprobs], abs=ATOL
        )
        assert [t.token for t in x.top_logprobs] == [t.token for t in y.top_logprobs]


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix-cache", "padding-only"])
def test_concurrent_prompts_run_as_one_right_padded_batch_equal_to_unbatched(
    model_dir: Path, plain: HFLLM, prefix_cache: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = all_at_once_prompts()
    alone = [scored(plain, [p])[0] for p in prompts]
    batched_llm = HFLLM(model_dir, device="cpu", prefix_cache=prefix_cache)
    spy = Spy(monkeypatch, batched_llm.engine, "score")
    masks: list[Any] = []
    run = batched_llm.engine._run

    def watch(ids: Any, mask: Any, *args: Any, **kwargs: Any) -> Any:
        masks.append(mask.clone())
        return run(ids, mask, *args, **kwargs)

    monkeypatch.setattr(batched_llm.engine, "_run", watch)
    batched = scored(batched_llm, prompts)
    assert spy.batches == [len(prompts)]
    mask = masks[-1]
    assert mask.shape[0] == len(prompts)
    lengths = mask.sum(dim=1).tolist()
    assert len(set(lengths)) > 1, "the prompts differ in length, so some rows are padded"
    for row, length in zip(mask.tolist(), lengths, strict=True):
        assert row == [1] * length + [0] * (len(row) - length)  # right-padded
    if prefix_cache:
        assert len(masks) == 2  # the shared prefix once, then the suffixes
        assert masks[0].shape[0] == 1 and masks[0].shape[1] > 400
    for a, b in zip(alone, batched, strict=True):
        assert_same_scores(a, b)
    # A second round reuses the cached prefix (one forward, no prefix pass).
    masks.clear()
    again = scored(batched_llm, prompts[:2])
    assert len(masks) == 1
    for a, b in zip(alone[:2], again, strict=True):
        assert_same_scores(a, b)


def test_a_cached_prefix_is_cut_back_for_prompts_that_start_the_same_way(
    model_dir: Path, plain: HFLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = HFLLM(model_dir, device="cpu")
    other = Explanation(text="colours", explainer=ComponentInfo(name="test"))
    first = all_at_once_prompts()
    second = [build_all_at_once_prompt(other, tokens)[0] for tokens in EXCERPTS]
    scored(llm, first)
    (cached,) = llm.engine._prefixes.values()
    lengths: list[int] = []
    run = llm.engine._run

    def watch(ids: Any, mask: Any, *args: Any, **kwargs: Any) -> Any:
        lengths.append(ids.shape[1])
        return run(ids, mask, *args, **kwargs)

    monkeypatch.setattr(llm.engine, "_run", watch)
    again = scored(llm, second)
    # The preamble and examples come from the cache: the new prefix pass runs only the part
    # after them (the explanation), not the whole prompt.
    assert len(llm.engine._prefixes) == 2
    new = next(e for e in llm.engine._prefixes.values() if e is not cached)
    assert lengths[0] < len(new.ids) - 100
    for a, b in zip([scored(plain, [p])[0] for p in second], again, strict=True):
        assert_same_scores(a, b)


def test_the_token_budget_splits_batches(
    model_dir: Path, plain: HFLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = all_at_once_prompts()
    longest = max(len(plain.tokenizer(p)["input_ids"]) for p in prompts)
    small = HFLLM(model_dir, device="cpu", max_batch_tokens=2 * longest)
    spy = Spy(monkeypatch, small.engine, "score")
    batched = scored(small, prompts)
    assert sorted(spy.batches) == [2, 2]
    tiny = HFLLM(model_dir, device="cpu", max_batch_tokens=10)
    spy = Spy(monkeypatch, tiny.engine, "score")
    one_by_one = scored(tiny, prompts)
    assert spy.batches == [1, 1, 1, 1]  # a prompt over the budget still runs, alone
    for a, b, c in zip([scored(plain, [p])[0] for p in prompts], batched, one_by_one, strict=True):
        assert_same_scores(a, b)
        assert_same_scores(a, c)


# -- the all-at-once simulator -------------------------------------------------------------


def value_tokens(llm: HFLLM) -> dict[int, int]:
    """Every vocabulary token that writes an activation value, and the value."""
    vocab = {i: digit_value(llm.tokenizer.decode([i])) for i in range(len(llm.tokenizer))}
    values = {i: v for i, v in vocab.items() if v is not None}
    assert set(values.values()) == set(range(11))  # GPT-2 has "10" as one token
    return values


def expected_values_one_position_at_a_time(
    llm: HFLLM, tokens: list[str], values: dict[int, int]
) -> list[float]:
    """The all-at-once expected values the plain way: for each placeholder, a forward pass over
    the prompt up to it; the probability of every token that writes a value, renormalised."""
    prompt, offsets = build_all_at_once_prompt(EXPLANATION, tokens)
    encoded = llm.tokenizer(prompt, return_offsets_mapping=True)
    starts = [a for a, _ in encoded["offset_mapping"]]
    ids = encoded["input_ids"]
    expected = []
    for offset in offsets:
        index = starts.index(offset)
        probs = log_softmax_after(llm, ids[:index]).exp()
        found: dict[int, float] = {}
        for i, v in values.items():
            found[v] = found.get(v, 0.0) + float(probs[i])
        expected.append(expectation(found)[0])
    return expected


def test_all_at_once_expected_values_equal_a_computation_one_position_at_a_time(
    llm: HFLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    simulator = PromptLogprobSimulator(llm)
    assert simulator.digits == "logits"
    assert simulator.info.settings == {
        "llm": llm.name,
        "top_logprobs": 15,
        "examples": "contrasting",
        "digits": "logits",
    }
    spy = Spy(monkeypatch, llm.engine, "token_logprobs")
    simulations = asyncio.run(simulator.asimulate_many(EXPLANATION, EXCERPTS))
    assert spy.batches == [len(EXCERPTS)]  # every excerpt in one forward pass
    values = value_tokens(llm)
    for tokens, simulation in zip(EXCERPTS, simulations, strict=True):
        want = expected_values_one_position_at_a_time(llm, tokens, values)
        assert simulation.expected_activations == pytest.approx(want, abs=ATOL)
        assert simulation.distribution_probabilities is not None
        for probs in simulation.distribution_probabilities:
            assert sum(probs) == pytest.approx(1.0)


def test_the_top_logprobs_reading_works_over_prompt_logprobs(llm: HFLLM) -> None:
    simulator = PromptLogprobSimulator(llm, digits="top_logprobs", top_logprobs=20)
    assert simulator.info.settings == {
        "llm": llm.name,
        "top_logprobs": 20,
        "examples": "contrasting",
    }
    outcomes: list[Any] = []
    for tokens in EXCERPTS:
        try:
            outcomes.append(simulator.simulate(EXPLANATION, tokens))
        except SimulationError as exc:  # a random model rarely puts a digit in its top 20
            outcomes.append(str(exc))
    for outcome in outcomes:
        if isinstance(outcome, str):
            assert "no activation number among the top logprobs" in outcome
        else:
            assert all(math.isfinite(v) for v in outcome.expected_activations)


def test_the_direct_reading_reports_alignment_failures(llama: HFLLM) -> None:
    with pytest.raises(InvalidInputError, match="no prompt token starts at offset 2"):
        asyncio.run(llama.aplaceholder_values("unknown", [2]))
    scripted = ScriptedLLM(capabilities=("prompt_logprobs",))
    assert "prompt_logprobs" in scripted.capabilities
    with pytest.raises(CapabilityError, match="PlaceholderScorer"):
        PromptLogprobSimulator(scripted, digits="logits")
    assert PromptLogprobSimulator(scripted).digits == "top_logprobs"


# -- end to end ----------------------------------------------------------------------------


def test_explain_neuron_all_at_once_gives_a_finite_score(llama_dir: Path) -> None:
    registry = Registry(entry_points=False)
    llm = registry.llm(f"hf:{llama_dir}")
    simulator = registry.simulator("all-at-once", llm=llm)
    record = number_neuron_record(n_excerpts=80, length=8)
    try:
        result = explain_neuron(record, explainer=f"hf:{llama_dir}", simulator=simulator)
    except ExplanationError:  # a random model may write no usable explanation
        result = explain_neuron(record, explainer="token-table", simulator=simulator)
    assert result.score is not None and math.isfinite(result.score)
    assert result.simulator.settings["digits"] == "logits"


@pytest.mark.parametrize("simulator", [ChatLogprobSimulator, JSONSimulator])
def test_chat_simulators_run_end_to_end(llama_dir: Path, simulator: type[Any]) -> None:
    llm = HFLLM(llama_dir, device="cpu", max_new_tokens=48)
    record = number_neuron_record(n_excerpts=80, length=4)
    try:
        result = explain_neuron(
            record, explainer=LLMExplainer(llm), simulator=simulator(llm, retries=0)
        )
    except (SimulationError, ExplanationError):  # garbage from a random model: a typed failure
        return
    # or, by chance, something usable: a real score, never zeros
    assert result.score is None or math.isfinite(result.score)
    assert any(v != 0 for s in result.scored.sequences for v in s.simulation.expected_activations)


# -- the chat simulators through hf, on a model wired to write the right answer ----------------


def forced_gpt2(tokenizer: Any, prompt_length: int, answer: list[int]) -> Any:
    """A one-block GPT-2 whose blocks add nothing and whose next token depends on the position
    alone: from position ``prompt_length - 1 + i`` it predicts ``answer[i]`` with probability
    ~1 (a one-hot position embedding read by the LM head), so greedy generation after a
    prompt of that length writes ``answer`` whatever the prompt says."""
    width = len(answer) + 8
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=prompt_length + len(answer) + 16,
        n_embd=width,
        n_layer=1,
        n_head=1,
        tie_word_embeddings=False,
        bos_token_id=50256,
        eos_token_id=50256,
        pad_token_id=50256,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(
                1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
            )
        for i, token in enumerate(answer):
            model.transformer.wpe.weight[prompt_length - 1 + i, i] = 10.0
            model.lm_head.weight[token, i] += 10.0
    return model


def oracle_answer(request: ChatRequest) -> str:
    from neuron_explainer.testing import OracleResponder
    from neuron_explainer.testing.server import ReceivedRequest

    body = {"messages": [{"role": m.role, "content": m.content} for m in request.messages]}
    reply = OracleResponder(confidence=1.0)(
        ReceivedRequest("POST", "/v1/chat/completions", "", {}, body)
    )
    assert reply is not None
    return reply if isinstance(reply, str) else reply.content


@pytest.mark.parametrize("simulator_class", [ChatLogprobSimulator, JSONSimulator])
def test_chat_simulators_read_the_answer_hf_generates(
    tmp_path: Path, simulator_class: type[Any]
) -> None:
    tokens = [" The", " year", " 1999", " had", " 12", " months"]
    truth = [10.0 if t.strip().isdigit() else 0.0 for t in tokens]
    # The request the simulator sends (captured from a scripted model that answers badly).
    # It offers what HFLLM offers here (``json_schema`` with the hf-json extra), so both
    # requests use the same answer format.
    offered = ("chat", "chat_logprobs") + (("json_schema",) if _hf_grammar.available() else ())
    scripted = ScriptedLLM(capabilities=offered, default="?")
    with pytest.raises(SimulationError):
        asyncio.run(simulator_class(scripted, retries=0).asimulate(EXPLANATION, tokens))
    request = scripted.requests[0]
    write_gpt2_tokenizer(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    tokenizer.chat_template = CHAT_TEMPLATE
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = tokenizer(oracle_answer(request), add_special_tokens=False)["input_ids"]
    model = forced_gpt2(tokenizer, len(prompt_ids), [*answer, tokenizer.eos_token_id])
    llm = HFLLM(model, tokenizer=tokenizer, device="cpu")
    assert {"chat", "chat_logprobs"} <= llm.capabilities

    simulation = asyncio.run(simulator_class(llm, retries=0).asimulate(EXPLANATION, tokens))
    assert simulation.expected_activations == pytest.approx(truth, abs=1e-3)
    if simulator_class is ChatLogprobSimulator:  # read from hf's logprobs at the value tokens
        values, probabilities = (
            simulation.distribution_values,
            simulation.distribution_probabilities,
        )
        assert values is not None and probabilities is not None
        for level, at, probs in zip(truth, values, probabilities, strict=True):
            assert at[max(range(len(probs)), key=probs.__getitem__)] == level
            assert max(probs) > 0.999
    score = correlation(truth, list(simulation.expected_activations))
    assert score.value == pytest.approx(1.0)


def test_a_detection_scorer_judges_with_the_in_process_provider(llama: HFLLM) -> None:
    from neuron_explainer.records.splits import split_records
    from neuron_explainer.results import ComponentInfo, Explanation
    from neuron_explainer.scorers.base import ScoringData
    from neuron_explainer.scorers.classification import DetectionScorer
    from neuron_explainer.testing import number_neuron_record

    record = number_neuron_record(silent_fraction=0.5)
    data = ScoringData(record, split_records(record), "valid")
    explanation = Explanation(text="numbers", explainer=ComponentInfo(name="test"))
    score = DetectionScorer(llama, n_positives=4, n_negatives=4, retries=0).score(explanation, data)
    assert len(score.judgements) == 8
    failed = [j for j in score.judgements if j.answer is None]
    assert all(j.failure is not None and j.failure.reason for j in failed)  # counted, with why
    if XGRAMMAR:
        # the schema holds the random model's answer: each value it reaches is 0 or 1, with a
        # probability; the one way left to fail is white space (which the schema allows
        # between values) until the token limit, and that is counted as truncated
        answered = [j for j in score.judgements if j.answer is not None]
        assert answered and all(j.p_yes is not None and 0 <= j.p_yes <= 1 for j in answered)
        assert {j.failure.reason for j in failed if j.failure} <= {"truncated"}
