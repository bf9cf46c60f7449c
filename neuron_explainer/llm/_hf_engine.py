"""The torch side of the ``hf`` provider: tokenising prompts, scoring them in right-padded
batches (with a shared-prefix KV cache), and generating from chat prompts.

Everything here is synchronous and holds the model's lock while it runs; `neuron_explainer.llm.hf`
calls it from a worker thread. Imported only when an `HFLLM` is built (it imports torch).
"""

from __future__ import annotations

import copy
import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neuron_explainer.errors import BadRequestError

MAX_TOP_LOGPROBS = 20  # the contract's upper bound; every scored position keeps this many
_MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a separate forward
_HEAD_CHUNK_ELEMENTS = 1 << 25  # logits computed at once (rows x vocab), ~128 MB in float32


@dataclass(frozen=True)
class Encoded:
    """A prompt's token ids (special tokens included) and, for each visible token (those that
    spell the prompt), its index among the ids, its text and its character offset."""

    ids: list[int]
    visible: list[int]
    texts: list[str]
    offsets: list[int]


@dataclass
class Scores:
    """Per position ``j`` (0 .. len - 2): the logprob of token ``j + 1`` given tokens ``0..j``
    and the top alternatives (ids and logprobs, best first) of that prediction."""

    next_logprob: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


@dataclass
class _Prefix:
    """A cached prompt prefix: its ids, its KV cache and the outputs at its positions."""

    ids: tuple[int, ...]
    cache: Any
    top_ids: torch.Tensor  # [p, K]
    top_logprobs: torch.Tensor  # [p, K]
    next_logprob: torch.Tensor  # [p - 1]
    last: torch.Tensor  # [V] log-softmax at the last position (predicts the token after it)


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Engine:
    """A loaded causal LM and its tokenizer, with the batched operations `HFLLM` needs.

    Args:
        model: a transformers causal LM, already on its device and in eval mode.
        tokenizer: its tokenizer.
        prefix_cache: keep the KV cache of prompt prefixes shared by a batch (and reuse them
            for later batches that start the same way).
        prefix_cache_entries: how many prefixes to keep.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        prefix_cache: bool = True,
        prefix_cache_entries: int = 4,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
        self.device = next(model.parameters()).device
        config = model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.pad_id = next(
            (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0
        )
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        self.eos_ids = sorted(eos_ids)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = next(
            (a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None
        )
        self._softcap = getattr(text_config, "final_logit_softcapping", None)
        self._split = self._check_split()
        sliding = getattr(text_config, "sliding_window", None) and (
            getattr(text_config, "use_sliding_window", True)
            or "sliding_attention" in (getattr(text_config, "layer_types", None) or ())
        )
        self.prefix_cache = prefix_cache and self._split and not sliding
        self._prefixes: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()
        self._prefix_entries = prefix_cache_entries
        self._texts: dict[int, str] = {}
        try:
            tokenizer("a", return_offsets_mapping=True)
            self.has_offsets = True
        except (NotImplementedError, ValueError, TypeError):
            self.has_offsets = False

    # -- tokens ------------------------------------------------------------------------------

    def token_text(self, token_id: int) -> str:
        """The text of one token (``"\\ufffd"`` for a fragment of a character)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._texts[token_id] = text
        return text

    def encode(self, prompt: str) -> Encoded:
        """Tokenise ``prompt`` as the model expects (with its BOS, if the tokenizer adds one);
        the visible tokens' texts, cut at their start offsets, concatenate to the prompt."""
        enc = self.tokenizer(prompt, return_offsets_mapping=True, return_special_tokens_mask=True)
        ids = list(enc["input_ids"])
        special = list(enc["special_tokens_mask"])
        spans = list(enc["offset_mapping"])
        visible = [
            i
            for i, (s, (a, b)) in enumerate(zip(special, spans, strict=True))
            if not (s and a == b)
        ]
        starts: list[int] = []
        for i in visible:
            start = min(max(spans[i][0], starts[-1] if starts else 0), len(prompt))
            starts.append(start)
        if starts:
            starts[0] = 0
        ends = [*starts[1:], len(prompt)]
        texts = [prompt[a:b] for a, b in zip(starts, ends, strict=True)]
        return Encoded(ids=ids, visible=visible, texts=texts, offsets=starts)

    def check_length(self, n_tokens: int, what: str) -> None:
        """Raise `BadRequestError` when ``n_tokens`` exceed the model's context."""
        if self.max_positions is not None and n_tokens > self.max_positions:
            raise BadRequestError(
                f"{what} needs {n_tokens} tokens but the model's context holds {self.max_positions}"
            )

    # -- forward passes ----------------------------------------------------------------------

    def _run(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        cache: Any = None,
        *,
        start: int = 0,
        keep_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Final hidden states (or, without a separable head, logits) for ``ids`` following
        ``start`` cached positions, and the cache (extended in place) when asked for."""
        batch, length = ids.shape
        positions = torch.arange(start, start + length, device=self.device).expand(batch, length)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            "use_cache": keep_cache or cache is not None,
        }
        if cache is not None:
            kwargs[self._cache_arg] = cache
        module = self.model.base_model if self._split else self.model
        out = module(**kwargs)
        hidden = out.last_hidden_state if self._split else out.logits
        new_cache = getattr(out, self._cache_arg, None) if keep_cache else None
        return hidden, new_cache

    def _head_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """Float32 logits from final hidden states (the output embedding, then soft-capping)."""
        logits: torch.Tensor = self.model.get_output_embeddings()(rows).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits

    def _check_split(self) -> bool:
        """Whether ``lm_head(base_model(x))`` reproduces the model's logits (then logits are
        computed only where needed, in chunks); checked once on a few tokens."""
        base = getattr(self.model, "base_model", None)
        if base is None or base is self.model or self.model.get_output_embeddings() is None:
            return False
        ids = torch.arange(1, 6, device=self.device).unsqueeze(0) % self.vocab_size
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            full = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            try:
                hidden = base(input_ids=ids, attention_mask=mask, use_cache=False)
                mine = self._head_logits(hidden.last_hidden_state)
            except (TypeError, AttributeError, RuntimeError):
                return False
        if mine.shape != full.shape:
            return False
        tolerance = 1e-3 * max(1.0, float(full.abs().max()))
        return bool(torch.allclose(full, mine, rtol=1e-3, atol=tolerance))

    def _head(
        self, rows: torch.Tensor, targets: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For hidden-state rows ``[N, H]`` (logits, without a separable head) and the token
        each row predicts: top-``k`` logprobs and ids, the targets' logprobs, and the whole
        log-softmax of the last row. Logits are made ``_HEAD_CHUNK_ELEMENTS`` at a time."""
        chunk = max(1, _HEAD_CHUNK_ELEMENTS // self.vocab_size)
        values, indices, chosen = [], [], []
        last = torch.empty(0)
        for i in range(0, rows.shape[0], chunk):
            part = rows[i : i + chunk]
            logits = self._head_logits(part) if self._split else part.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            top = torch.topk(logprobs, k, dim=-1)
            values.append(top.values)
            indices.append(top.indices)
            chosen.append(logprobs.gather(1, targets[i : i + chunk, None]).squeeze(1))
            last = logprobs[-1]
        return torch.cat(values), torch.cat(indices), torch.cat(chosen), last

    # -- shared prefixes ---------------------------------------------------------------------

    def _prefix(self, seqs: Sequence[Sequence[int]], limit: int) -> _Prefix | None:
        """The cached (or newly computed) prefix, at most ``limit`` tokens, that every sequence
        of the batch starts with; ``None`` when sharing is off or not worth it. Each sequence
        keeps at least one token after it."""
        if not self.prefix_cache:
            return None
        first = seqs[0]
        shortest = min(min(len(s) for s in seqs) - 1, limit)
        reuse, reuse_len = self._reusable(first, shortest)
        if len(seqs) == 1:
            shared = reuse_len  # one sequence: only reuse, never store
        else:
            shared = min(shortest, *(_common_length(first, other) for other in seqs[1:]))
        if shared < _MIN_SHARED_PREFIX:
            return None
        if reuse is not None and reuse_len == shared == len(reuse.ids):
            return reuse
        entry = self._extend(first[:shared], reuse, reuse_len)
        if len(seqs) > 1:
            self._prefixes[entry.ids] = entry
            while len(self._prefixes) > self._prefix_entries:
                self._prefixes.popitem(last=False)
        return entry

    def _reusable(self, first: Sequence[int], shortest: int) -> tuple[_Prefix | None, int]:
        """The cached prefix that shares the most tokens (at most ``shortest``) with ``first``,
        and how many, marked as recently used; ``(None, 0)`` when none shares enough."""
        best, best_len = None, 0
        for entry in self._prefixes.values():
            common = min(_common_length(entry.ids, first), shortest)
            if common > best_len:
                best, best_len = entry, common
        if best is None or best_len < _MIN_SHARED_PREFIX:
            return None, 0
        self._prefixes.move_to_end(best.ids)
        return best, best_len

    def _extend(self, ids: Sequence[int], reuse: _Prefix | None, reuse_len: int) -> _Prefix:
        """The prefix ``ids`` computed in one forward pass, on top of the first ``reuse_len``
        tokens of ``reuse`` (whose KV cache and outputs are copied) when given."""
        shared = len(ids)
        # Reuse the KV of the first r tokens and run tokens r..shared-1 on top (at least one,
        # so the whole log-softmax at the last shared position is at hand).
        r = max(0, min(reuse_len, shared) - 1)
        cache = None
        if r > 0 and reuse is not None:
            cache = copy.deepcopy(reuse.cache)
            if r < len(reuse.ids):
                cache.crop(r - len(reuse.ids))  # a negative count drops that many tokens
        tensor = torch.tensor([list(ids[r:])], device=self.device)
        mask = torch.ones((1, shared), dtype=torch.long, device=self.device)
        hidden, cache = self._run(tensor, mask, cache, start=r, keep_cache=True)
        targets = torch.tensor([*ids[r + 1 :], 0], device=self.device)
        top_values, top_ids, own, last = self._head(hidden[0], targets, MAX_TOP_LOGPROBS)
        own = own[:-1]  # the last row's target is the first token after the prefix
        if reuse is not None and r > 0:
            top_values = torch.cat([reuse.top_logprobs[:r], top_values])
            top_ids = torch.cat([reuse.top_ids[:r], top_ids])
            own = torch.cat([reuse.next_logprob[:r], own])
        return _Prefix(
            ids=tuple(ids),
            cache=cache,
            top_ids=top_ids,
            top_logprobs=top_values,
            next_logprob=own,
            last=last,
        )

    # -- scoring -----------------------------------------------------------------------------

    def _forward(
        self, seqs: Sequence[Sequence[int]], limit: int
    ) -> tuple[_Prefix | None, torch.Tensor, torch.Tensor]:
        """One right-padded forward over ``seqs`` after their shared prefix (at most ``limit``
        tokens): the prefix, the suffix ids ``[B, S]`` and their hidden states."""
        prefix = self._prefix(seqs, limit)
        p = len(prefix.ids) if prefix is not None else 0
        suffixes = [list(s[p:]) for s in seqs]
        batch, width = len(seqs), max(len(s) for s in suffixes)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros((batch, p + width), dtype=torch.long, device=self.device)
        mask[:, :p] = 1
        for b, suffix in enumerate(suffixes):
            ids[b, : len(suffix)] = torch.tensor(suffix, device=self.device)
            mask[b, p : p + len(suffix)] = 1
        cache = None
        if prefix is not None:
            cache = copy.deepcopy(prefix.cache)
            if batch > 1:
                cache.batch_repeat_interleave(batch)
        hidden, _ = self._run(ids, mask, cache, start=p)
        return prefix, ids, hidden

    def score(self, seqs: Sequence[Sequence[int]], k: int) -> list[Scores]:
        """Score token sequences in one right-padded batch (after their shared prefix).

        Position ``j`` of a sequence gets the prediction made from tokens ``0..j``: its top
        ``k`` alternatives and the logprob of token ``j + 1``.
        """
        with self.lock, torch.inference_mode():
            prefix, ids, hidden = self._forward(seqs, limit=max(len(s) for s in seqs))
            p = len(prefix.ids) if prefix is not None else 0
            # Suffix position t of sequence b predicts token p + t + 1 (= ids[b, t + 1]).
            counts = [len(s) - p - 1 for s in seqs]
            rows = [hidden[b, :n] for b, n in enumerate(counts) if n > 0]
            targets = [ids[b, 1 : n + 1] for b, n in enumerate(counts) if n > 0]
            values = indices = chosen = torch.empty(0, device=self.device)
            if rows:
                values, indices, chosen, _ = self._head(torch.cat(rows), torch.cat(targets), k)
            results = []
            offset = 0
            for b, n in enumerate(counts):
                top_v = values[offset : offset + n].reshape(n, k)
                top_i = indices[offset : offset + n].reshape(n, k)
                next_lp = chosen[offset : offset + n].reshape(n)
                offset += n
                if prefix is not None:
                    first = prefix.last[ids[b, 0]].reshape(1)
                    next_lp = torch.cat([prefix.next_logprob, first, next_lp])
                    top_v = torch.cat([prefix.top_logprobs[:, :k], top_v])
                    top_i = torch.cat([prefix.top_ids[:, :k], top_i])
                results.append(
                    Scores(
                        next_logprob=next_lp.tolist(),
                        top_ids=top_i.tolist(),
                        top_logprobs=top_v.tolist(),
                    )
                )
            return results

    def token_logprobs(
        self, jobs: Sequence[tuple[Sequence[int], Sequence[int]]], token_ids: Sequence[int]
    ) -> list[list[list[float]]]:
        """For each ``(ids, positions)``: at each position, the log-softmax (over the whole
        vocabulary) of the prediction made there, read at ``token_ids`` only. The logits are
        computed at those positions alone."""
        with self.lock, torch.inference_mode():
            seqs = [ids for ids, _ in jobs]
            earliest = min((min(pos) for _, pos in jobs if pos), default=0)
            prefix, _, hidden = self._forward(seqs, limit=earliest)
            p = len(prefix.ids) if prefix is not None else 0
            wanted = torch.tensor(list(token_ids), dtype=torch.long, device=self.device)
            results: list[list[list[float]]] = []
            for b, (_, positions) in enumerate(jobs):
                if not positions:
                    results.append([])
                    continue
                at = torch.tensor([q - p for q in positions], device=self.device)
                rows = hidden[b, at]
                logits = self._head_logits(rows) if self._split else rows.float()
                logprobs = torch.log_softmax(logits, dim=-1)
                results.append(logprobs[:, wanted].tolist())
            return results

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """The text each generated token adds: they concatenate to the decoded completion (a
        character split over several tokens goes to the token that completes it)."""
        texts, emitted = [], 0
        for i in range(len(ids)):
            text = self.tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
            if text.endswith("\ufffd") and i + 1 < len(ids):
                texts.append("")
                continue
            texts.append(text[emitted:])
            emitted = len(text)
        return texts


def finite(value: float) -> float:
    """``value``, with ``-inf`` (a token the model rules out) as ``-1e9`` (JSON-safe)."""
    return value if math.isfinite(value) else -1e9
