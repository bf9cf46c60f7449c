"""Generation for the ``hf`` provider: greedy or sampled decoding of left-padded chat prompts in
one batch with a KV cache, recording the raw logits' log-softmax at every step.

Written out rather than calling ``model.generate``: no setting comes from the model's
``generation_config`` (a hub model may ask for a repetition penalty or its own sampling
defaults), every step's logprobs are reduced to the top alternatives at once instead of keeping
every step's logits, and rows that finish leave the batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neuron_explainer.llm._hf_engine import Engine


@dataclass
class Generated:
    """One completion: generated ids (without the stopping EOS), whether an EOS or the token
    limit ended it, and per generated token its logprob and top alternatives."""

    ids: list[int]
    stopped: bool
    logprobs: list[float] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True)
class GenerationSettings:
    """What a generation batch shares (requests batch together only when these are equal)."""

    temperature: float
    top_p: float
    top_k: int
    n: int
    top_logprobs: int | None  # None: no logprobs
    stop: tuple[str, ...]
    seed: int | None


def _decode_step(
    engine: Engine, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
) -> tuple[torch.Tensor, Any]:
    """Float32 logits at the last position of each row, and the extended cache."""
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions,
        "use_cache": True,
    }
    if cache is not None:
        kwargs[engine._cache_arg] = cache
    if engine._keep_arg is not None:
        kwargs[engine._keep_arg] = 1
    out = engine.model(**kwargs)
    return out.logits[:, -1].float(), getattr(out, engine._cache_arg)


def _choose(logits: torch.Tensor, settings: GenerationSettings, generator: Any) -> torch.Tensor:
    """The next token of each row: the argmax, or a sample from the tempered logits cut to
    ``top_k`` and to the ``top_p`` nucleus."""
    if settings.temperature <= 0:
        return logits.argmax(dim=-1)
    scores = logits / settings.temperature
    if 0 < settings.top_k < scores.shape[-1]:
        kth = torch.topk(scores, settings.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if settings.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True, dim=-1)
        mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = mass - torch.softmax(ordered, dim=-1) >= settings.top_p  # keeps >= 1 token
        scores = scores.scatter(1, order, ordered.masked_fill(drop, -math.inf))
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def generate(
    engine: Engine,
    prompts: Sequence[tuple[Sequence[int], int]],
    settings: GenerationSettings,
    schemas: Sequence[str | None] | None = None,
) -> list[list[Generated]]:
    """Generate ``settings.n`` completions of each ``(prompt ids, token limit)``; each prompt
    may have a JSON schema (text, `neuron_explainer.llm._hf_grammar`) its output must follow.

    The prompts run left-padded in one batch with a KV cache; each step takes the argmax
    (temperature 0: one completion, repeated ``n`` times) or a sample, and records the
    raw logits' log-softmax (the chosen token's and the top alternatives). A row ends at
    an EOS token (not kept), at its token limit, or once its text holds a stop string;
    finished rows leave the batch.
    """
    with engine.lock, torch.inference_mode():
        copies = settings.n if settings.temperature > 0 else 1
        owners = [b for b in range(len(prompts)) for _ in range(copies)]
        width = max(len(p) for p, _ in prompts)
        ids = torch.full((len(owners), width), engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(owners), width), dtype=torch.long)
        for row, b in enumerate(owners):
            prompt = list(prompts[b][0])
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        ids, mask = ids.to(engine.device), mask.to(engine.device)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        generator = None
        if settings.seed is not None:
            generator = torch.Generator(device=engine.device).manual_seed(settings.seed)
        results = [Generated(ids=[], stopped=False) for _ in owners]
        limits = [prompts[b][1] for b in owners]
        grammars = None
        if schemas is not None and any(s is not None for s in schemas):
            from neuron_explainer.llm._hf_grammar import RowGrammars

            grammars = RowGrammars(engine, [schemas[b] for b in owners])
        logits, cache = _decode_step(engine, ids, mask, positions, None)
        active = list(range(len(owners)))  # rows still running, in the cache's order
        following = positions[:, -1] + 1
        while active:
            masked = logits if grammars is None else grammars.mask(logits, active)
            chosen = _choose(masked, settings, generator)
            step = _Step(engine, settings, logits, chosen, grammars)
            keep = [
                i for i, row in enumerate(active) if step.record(results[row], i, row, limits[row])
            ]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=engine.device)
                cache.batch_select_indices(index)
                mask, following, chosen = mask[index], following[index], chosen[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits, cache = _decode_step(engine, chosen[:, None], mask, following[:, None], cache)
            following = following + 1
        grouped: list[list[Generated]] = [[] for _ in prompts]
        for row, b in enumerate(owners):
            grouped[b].append(results[row])
        return [group * (settings.n // copies) for group in grouped]


class _Step:
    """One decoding step's choices and their logprobs (from the raw logits), recorded row by
    row into the completions."""

    def __init__(
        self,
        engine: Engine,
        settings: GenerationSettings,
        logits: torch.Tensor,
        chosen: torch.Tensor,
        grammars: Any,
    ) -> None:
        self.engine, self.settings, self.chosen, self.grammars = engine, settings, chosen, grammars
        self.eos = set(engine.eos_ids)
        self.k = k = settings.top_logprobs
        if k is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            self.own = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
            self.top = torch.topk(logprobs, k, dim=-1) if k > 0 else None

    def record(self, result: Generated, i: int, row: int, limit: int) -> bool:
        """Add the token chosen for batch index ``i`` (completion ``row``) to ``result``;
        whether the row goes on (no EOS, no stop string, under ``limit``, grammar not done)."""
        token = int(self.chosen[i])
        if token in self.eos:
            result.stopped = True
            return False
        result.ids.append(token)
        if self.k is not None:
            top = self.top
            result.logprobs.append(self.own[i])
            result.top_ids.append(top.indices[i].tolist() if top is not None else [])
            result.top_logprobs.append(top.values[i].tolist() if top is not None else [])
        if self.grammars is not None and self.grammars.accept(row, token):
            result.stopped = True
            return False
        return len(result.ids) < limit and not _has_stop(self.engine, result.ids, self.settings)


def _has_stop(engine: Engine, ids: list[int], settings: GenerationSettings) -> bool:
    if not settings.stop:
        return False
    tail = engine.tokenizer.decode(ids[-64:], skip_special_tokens=True)
    return any(stop in tail for stop in settings.stop)


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one request from the provider's seed and the request (so the result does not
    depend on the order requests arrive in)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**63)
