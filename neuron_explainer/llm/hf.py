"""A local LLM provider: a Hugging Face causal LM run in-process (provider ``"hf"``).

`HFLLM` loads a transformers model and its tokenizer once (a hub name, a local directory, or a
``.gguf`` file, as `neuron_explainer.models.loading.load_model` does) on CPU or CUDA, and
serves the `LLM` contract with no server and no network:

* `achat`: the tokenizer's chat template (``add_generation_prompt=True``), then generation:
  greedy at temperature 0, sampling otherwise (``top_p``/``top_k`` options), ``n`` candidates,
  stop strings, and per-token logprobs with top alternatives from the raw logits. A final
  assistant message is continued (a prefill); a ``response_format`` JSON schema is enforced by
  xgrammar's token masks when it is installed (the ``hf-json`` extra).
* `aprompt_logprobs`: one forward pass over the prompt; token ``i`` gets the log-softmax of the
  prediction made at position ``i - 1`` (the first token, which has no context, gets none).
  This is what the paper's "all at once" simulator reads, with no generation at all.

Batching: concurrent calls on one event loop are collected by a small queue and run together.
Prompts to score go into one right-padded forward pass with an attention mask, up to
``max_batch_tokens`` (padded) tokens; the prefix the batch's prompts share (the all-at-once
prompt's preamble and examples) runs once and its KV cache is reused, within the batch and by
later batches. Greedy chat requests with the same settings are generated together,
left-padded. Results equal unbatched ones to float precision. The model runs in a worker
thread, one batch at a time, so the event loop stays free.

Importing this module does not import torch or transformers; building an `HFLLM` does.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from neuron_explainer._aio import run_sync
from neuron_explainer.errors import InvalidInputError
from neuron_explainer.llm import _hf_grammar
from neuron_explainer.llm._prefill import check_chat_request, prefill_of
from neuron_explainer.llm.base import (
    LLM,
    Capability,
    ChatRequest,
    ChatResponse,
    Choice,
    PromptLogprobsRequest,
    PromptLogprobsResponse,
    PromptToken,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from neuron_explainer.llm.usage import record_usage
from neuron_explainer.results import ComponentInfo

__all__ = ["DEFAULT_MAX_BATCH_TOKENS", "DEFAULT_MAX_NEW_TOKENS", "HFLLM"]

DEFAULT_MAX_BATCH_TOKENS = 16_384
"""Padded tokens per forward batch unless told otherwise (batch size x longest prompt)."""
DEFAULT_MAX_NEW_TOKENS = 1_024
"""Generated tokens per request when the request sets no ``max_tokens``."""

_Kind = Literal["score", "values", "generate"]


@dataclass(eq=False)
class _Job:
    kind: _Kind
    key: Hashable
    cost: int
    payload: Any
    future: asyncio.Future[Any]


class _Batcher:
    """Collects the jobs submitted on one event loop and runs them in batches, one batch at a
    time, in a worker thread. Jobs submitted while a batch runs wait for the next one, so
    concurrent callers (``asyncio.gather``) share forward passes."""

    def __init__(self, run: Callable[[_Kind, Hashable, list[Any]], list[Any]], budget: int):
        self.run = run
        self.budget = budget
        self.pending: list[_Job] = []
        self.task: asyncio.Task[None] | None = None

    async def submit(self, kind: _Kind, key: Hashable, cost: int, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(kind, key, cost, payload, loop.create_future())
        self.pending.append(job)
        if self.task is None or self.task.done():
            # Starts after the tasks already scheduled have submitted theirs.
            self.task = loop.create_task(self._drain())
        return await job.future

    def _take(self) -> list[_Job]:
        head = self.pending[0]
        same = [j for j in self.pending if j.kind == head.kind and j.key == head.key]
        same.sort(key=lambda j: j.cost, reverse=True)
        batch = [same[0]]
        for job in same[1:]:
            if (len(batch) + 1) * batch[0].cost > self.budget:
                break
            batch.append(job)
        taken = set(map(id, batch))
        self.pending = [j for j in self.pending if id(j) not in taken]
        return batch

    async def _drain(self) -> None:
        while self.pending:
            batch = self._take()
            live = [j for j in batch if not j.future.done()]
            if not live:
                continue
            head = live[0]
            try:
                results = await asyncio.to_thread(
                    self.run, head.kind, head.key, [j.payload for j in live]
                )
            except asyncio.CancelledError:
                for job in live:
                    job.future.cancel()
                raise
            except Exception as exc:
                if len(live) == 1:
                    if not head.future.done():
                        head.future.set_exception(exc)
                    continue
                # Run each alone, so a job that fails does not take the others with it.
                self.pending[:0] = [
                    _Job(j.kind, (j.key, "alone", id(j)), j.cost, j.payload, j.future) for j in live
                ]
                continue
            for job, result in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)


class HFLLM(LLM):
    """A Hugging Face causal LM run in-process (provider ``"hf"``): chat generation and the
    prompt logprobs of the paper's all-at-once simulator, batched (see the module docstring).

    ``default_registry().llm("hf:Qwen/Qwen2.5-0.5B-Instruct")``, ``"hf:/path/to/dir"`` or
    ``"hf:/path/to/model.gguf"`` builds one; the options below go through as keyword
    arguments. The model is loaded when the `HFLLM` is built.

    Args:
        model: a hub name, a local directory (``save_pretrained``), a ``.gguf`` file, or a
            loaded transformers model (then pass ``tokenizer``).
        tokenizer: the tokenizer, for a model object (default: loaded with the model).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; default CUDA when available.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``.
        max_batch_tokens: the most (padded) tokens one forward batch may hold: batch size x
            longest prompt for scoring, batch size x (prompt + new tokens) x ``n`` for
            generation. A longer single request still runs, alone.
        max_new_tokens: generated tokens per request when it sets no ``max_tokens``; also
            the cap on a request's ``max_tokens``.
        seed: makes sampling reproducible: each sampled request is seeded from this and the
            request itself.
        top_p: nucleus sampling when sampling (1.0: off).
        top_k: top-k sampling when sampling (0: off).
        chat_template: a Jinja chat template replacing the tokenizer's (a model without one
            offers no chat).
        prefix_cache: reuse the KV cache of the prompt prefix a scoring batch shares.
        name: the model name shown in results (default: ``model`` as given).

    Raises:
        InvalidInputError: the model or tokenizer cannot be loaded, or an option is out of
            range.
    """

    provider = "hf"

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        tokenizer: Any = None,
        device: str | None = None,
        dtype: str = "float32",
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        seed: int | None = None,
        top_p: float = 1.0,
        top_k: int = 0,
        chat_template: str | None = None,
        prefix_cache: bool = True,
        name: str | None = None,
    ) -> None:
        if max_batch_tokens < 1 or max_new_tokens < 1:
            raise InvalidInputError(
                f"max_batch_tokens and max_new_tokens must be >= 1, got {max_batch_tokens} "
                f"and {max_new_tokens}"
            )
        if not 0 < top_p <= 1 or top_k < 0:
            raise InvalidInputError(f"need 0 < top_p <= 1 and top_k >= 0, got {top_p}, {top_k}")
        from neuron_explainer.llm._hf_engine import Engine
        from neuron_explainer.models.loading import load_model

        loaded = load_model(model, tokenizer=tokenizer, dtype=dtype, device=device)
        if chat_template is not None:
            loaded.tokenizer.chat_template = chat_template
        shown = name or (loaded.name if not isinstance(model, str | os.PathLike) else None)
        super().__init__(shown or os.fspath(model))
        self.device, self.dtype = loaded.device, dtype
        self.max_batch_tokens, self.max_new_tokens = max_batch_tokens, max_new_tokens
        self.seed, self.top_p, self.top_k = seed, top_p, top_k
        self.engine = Engine(loaded.model, loaded.tokenizer, prefix_cache=prefix_cache)
        offered: set[Capability] = set()
        if self.engine.has_offsets:
            offered.add("prompt_logprobs")
        if getattr(loaded.tokenizer, "chat_template", None):
            offered.update(("chat", "chat_logprobs", "prefill"))
            if _hf_grammar.available():  # the hf-json extra: constrained decoding
                offered.add("json_schema")
        self.capabilities = frozenset(offered)
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._values: tuple[list[int], list[int]] | None = None

    def __repr__(self) -> str:
        return f"HFLLM({self.model!r}, device={self.device!r}, dtype={self.dtype!r})"

    @property
    def hf_model(self) -> Any:
        """The transformers model."""
        return self.engine.model

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer."""
        return self.engine.tokenizer

    @property
    def info(self) -> ComponentInfo:
        """Name, capabilities, device, dtype and batching settings, recorded in results."""
        base = super().info
        return ComponentInfo(
            name=base.name,
            settings={
                **base.settings,
                "device": self.device,
                "dtype": self.dtype,
                "max_batch_tokens": self.max_batch_tokens,
                "max_new_tokens": self.max_new_tokens,
                "seed": self.seed,
                "top_p": self.top_p,
                "top_k": self.top_k,
            },
        )

    # -- batching ----------------------------------------------------------------------------

    def _batcher(self) -> _Batcher:
        loop = asyncio.get_running_loop()
        with self._lock:
            batcher = self._batchers.get(loop)
            if batcher is None:
                batcher = _Batcher(self._run_batch, self.max_batch_tokens)
                self._batchers[loop] = batcher
            return batcher

    def _run_batch(self, kind: _Kind, key: Hashable, payloads: list[Any]) -> list[Any]:
        if kind == "score":
            k = max(top for _, top in payloads)
            return list(self.engine.score([ids for ids, _ in payloads], k))
        if kind == "values":
            return self.engine.token_logprobs(payloads, self._value_tokens()[0])
        settings = payloads[0][2]
        from neuron_explainer.llm import _hf_generate

        prompts = [(ids, limit) for ids, limit, _, _ in payloads]
        schemas = [schema for _, _, _, schema in payloads]
        return _hf_generate.generate(self.engine, prompts, settings, schemas)

    # -- the LLM contract --------------------------------------------------------------------

    async def aprompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Score ``request.prompt`` in one forward pass (batched with concurrent calls).

        Prompt token ``i`` gets the logprob and top alternatives of the prediction made at
        position ``i - 1``; tokens carry their character offsets (from the tokenizer's offset
        mapping) and their texts concatenate to the prompt. A BOS token the tokenizer adds is
        fed to the model but not returned, and the first returned token has no logprob.

        Raises:
            CapabilityError: the tokenizer gives no offsets (not a fast tokenizer).
            BadRequestError: the prompt is longer than the model's context.
        """
        from neuron_explainer.llm._hf_engine import finite

        self.require("prompt_logprobs", by="a prompt-logprob request")
        encoded = self.engine.encode(request.prompt)
        self.engine.check_length(len(encoded.ids), "the prompt")
        k = request.top_logprobs
        scores = await self._batcher().submit("score", None, len(encoded.ids), (encoded.ids, k))
        text_of = self.engine.token_text
        tokens = []
        for n, (i, text, offset) in enumerate(
            zip(encoded.visible, encoded.texts, encoded.offsets, strict=True)
        ):
            if n == 0 or i == 0:
                tokens.append(PromptToken(token=text, offset=offset))
                continue
            tokens.append(
                PromptToken(
                    token=text,
                    offset=offset,
                    logprob=finite(scores.next_logprob[i - 1]),
                    top_logprobs=tuple(
                        TopLogprob(token=text_of(t), logprob=finite(lp))
                        for t, lp in zip(
                            scores.top_ids[i - 1][:k], scores.top_logprobs[i - 1][:k], strict=True
                        )
                    ),
                )
            )
        usage = Usage(prompt_tokens=len(encoded.ids))
        record_usage(usage)
        return PromptLogprobsResponse(tokens=tuple(tokens), usage=usage, model=self.model)

    def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResponse:
        """Sync twin of `aprompt_logprobs`."""
        return run_sync(self.aprompt_logprobs(request))

    def _value_tokens(self) -> tuple[list[int], list[int]]:
        """The vocabulary tokens that write an activation value (``"7"``, ``" 7"``, ``"10"``)
        and the value each writes; found once, by decoding the tokens that hold a digit."""
        with self._lock:
            if self._values is None:
                from neuron_explainer.llm.prompts import digit_value

                size = min(len(self.tokenizer), self.engine.vocab_size)
                raw = self.tokenizer.convert_ids_to_tokens(list(range(size)))
                ids, values = [], []
                for i, token in enumerate(raw):
                    if token and len(token) <= 8 and any(c.isdigit() for c in token):
                        value = digit_value(self.engine.token_text(i))
                        if value is not None:
                            ids.append(i)
                            values.append(value)
                self._values = (ids, values)
            return self._values

    async def aplaceholder_values(
        self, prompt: str, offsets: Sequence[int]
    ) -> list[dict[int, float]]:
        """For each character offset of ``prompt``: the probability of each activation value
        0..10 as the token that starts there, summed over the vocabulary tokens that write it,
        read from the logits of one forward pass (batched like `aprompt_logprobs`; logits are
        computed at those positions only). This makes `HFLLM` a
        `neuron_explainer.simulators.prompt_logprob.PlaceholderScorer`: the all-at-once
        simulator reads every value, not only those among the top logprobs.

        Raises:
            InvalidInputError: no prompt token starts at an offset (or one starts the prompt).
            BadRequestError: the prompt is longer than the model's context.
        """
        import math

        self.require("prompt_logprobs", by="reading placeholder values")
        encoded = self.engine.encode(prompt)
        self.engine.check_length(len(encoded.ids), "the prompt")
        starting: dict[int, int] = {}
        for i, text, offset in zip(encoded.visible, encoded.texts, encoded.offsets, strict=True):
            if text:
                starting.setdefault(offset, i)
        positions = []
        for n, offset in enumerate(offsets, start=1):
            index = starting.get(offset)
            if index is None or index == 0:
                near = [
                    (t, o)
                    for t, o in zip(encoded.texts, encoded.offsets, strict=True)
                    if abs(o - offset) <= 8
                ]
                raise InvalidInputError(
                    f"no prompt token starts at offset {offset} (placeholder {n}; tokens "
                    f"nearby: {near})"
                )
            positions.append(index - 1)  # the prediction made just before that token
        values = self._value_tokens()[1]
        rows = await self._batcher().submit(
            "values", None, len(encoded.ids), (encoded.ids, positions)
        )
        record_usage(Usage(prompt_tokens=len(encoded.ids)))
        distributions = []
        for row in rows:
            found: dict[int, float] = {}
            for value, logprob in zip(values, row, strict=True):
                found[value] = found.get(value, 0.0) + math.exp(logprob)
            distributions.append(found)
        return distributions

    def chat_prompt(self, request: ChatRequest) -> str:
        """The text the chat template makes of ``request.messages`` (with the assistant turn
        opened); a final assistant message (a prefill) is written after the opened turn as it
        is, with no end of turn, as llama.cpp's server does."""
        self.require("chat", by="a chat request")
        prefill = prefill_of(request)
        kept = request.messages[:-1] if prefill is not None else request.messages
        messages = [{"role": m.role, "content": m.content} for m in kept]
        text: str = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + (prefill or "")

    async def achat(self, request: ChatRequest) -> ChatResponse:
        """Generate ``request.n`` completions of the chat (batched with concurrent greedy
        requests that share its settings).

        Greedy at temperature 0 (``n`` identical choices), sampling otherwise. Generation ends
        at an EOS token (``finish_reason="stop"``), a stop string (cut off, ``"stop"``) or
        ``max_tokens`` (``"length"``). With ``logprobs``, each generated token carries its
        logprob and ``top_logprobs`` alternatives from the model's raw logits; the tokens'
        texts concatenate to the choice's text.

        A ``response_format`` (JSON schema or object) is held by xgrammar's token masks (see
        `neuron_explainer.llm._hf_grammar`); a final assistant message is continued (prefill).

        Raises:
            CapabilityError: the tokenizer has no chat template (pass ``chat_template=``), or
                the request asks for a ``response_format`` without xgrammar installed.
            InvalidInputError: a ``response_format`` that is not a JSON schema or object.
            BadRequestError: the prompt is longer than the model's context.
        """
        from neuron_explainer.llm._hf_generate import GenerationSettings, derive_seed

        check_chat_request(self, request)
        prompt = self.chat_prompt(request)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        self.engine.check_length(len(ids), "the chat prompt")
        limit = min(request.max_tokens or self.max_new_tokens, self.max_new_tokens)
        if self.engine.max_positions is not None:
            limit = max(1, min(limit, self.engine.max_positions - len(ids)))
        sample = request.temperature > 0
        seed = None
        if sample and self.seed is not None:
            seed = derive_seed(self.seed, prompt, request.temperature, request.n)
        settings = GenerationSettings(
            temperature=request.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            n=request.n,
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
            stop=request.stop or (),
            seed=seed,
        )
        schema = _hf_grammar.schema_text(request.response_format)
        # Sampled requests run alone (their seed must not depend on their batch); greedy ones
        # batch by their settings, each row with its own schema.
        key = (settings, object()) if sample else settings
        cost = (len(ids) + limit) * request.n
        completions = await self._batcher().submit(
            "generate", key, cost, (ids, limit, settings, schema)
        )
        choices = [self._choice(c, request) for c in completions]
        usage = Usage(
            prompt_tokens=len(ids), completion_tokens=sum(len(c.ids) for c in completions)
        )
        record_usage(usage)
        return ChatResponse(choices=tuple(choices), usage=usage, model=self.model)

    def _choice(self, generated: Any, request: ChatRequest) -> Choice:
        from neuron_explainer.llm._hf_engine import finite

        texts = self.engine.token_texts(generated.ids)
        text = "".join(texts)
        finish = "stop" if generated.stopped else "length"
        cut = min((i for i in (text.find(s) for s in request.stop or ()) if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        if not request.logprobs:
            return Choice(text=text, finish_reason=finish)
        logprobs, position = [], 0
        text_of = self.engine.token_text
        for j, token_text in enumerate(texts):
            if cut >= 0 and position >= cut:
                break
            shown = token_text if cut < 0 else token_text[: cut - position]
            position += len(token_text)
            logprobs.append(
                TokenLogprob(
                    token=shown,
                    logprob=finite(generated.logprobs[j]),
                    top_logprobs=tuple(
                        TopLogprob(token=text_of(t), logprob=finite(lp))
                        for t, lp in zip(
                            generated.top_ids[j], generated.top_logprobs[j], strict=True
                        )
                    ),
                )
            )
        return Choice(text=text, logprobs=tuple(logprobs), finish_reason=finish)
