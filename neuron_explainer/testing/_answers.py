"""The JSON bodies the OpenAI test server answers with: chat completions, and text completions
that echo and score the prompt (the completions API's ``logprobs``, or vLLM's
``prompt_logprobs``), built from a `Reply` or text and the server's tokenizer and scorer."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from neuron_explainer.testing._replies import (
    PromptLogprobFunction,
    Reply,
    _crc,
    default_prompt_logprob,
)


@dataclass(frozen=True)
class Answers:
    """Builds answers with the server's settings at the time of a request.

    Attributes:
        tokenize: splits a text into tokens.
        prompt_logprob: scores token ``i`` of a prompt given the ones before it.
        offset_shift: added to every echoed ``text_offset``.
        logprob_shift: every echoed value moved one token earlier.
        model: the model name reported when the request names none.
    """

    tokenize: Callable[[str], list[str]]
    prompt_logprob: PromptLogprobFunction
    offset_shift: int
    logprob_shift: bool
    model: str

    def chat(self, body: dict[str, Any], answer: Reply | str, ident: str) -> dict[str, Any]:
        """The chat completion answering ``body`` with ``answer``: ``n`` choices, cut at
        ``max_tokens`` and ``stop``, with token logprobs if asked for."""
        reply = answer if isinstance(answer, Reply) else Reply(content=answer)
        n = body.get("n", 1)
        contents = [reply.content] * n if isinstance(reply.content, str) else list(reply.content)
        contents = [contents[i % len(contents)] for i in range(n)] if contents else [""] * n
        k = int(body.get("top_logprobs") or 0)
        max_tokens, stops = body.get("max_tokens"), body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        choices, completion_tokens = [], 0
        for i, content in enumerate(contents):
            tokens = list(reply.tokens) if reply.tokens is not None else self.tokenize(content)
            text, finish = content, reply.finish_reason
            if max_tokens is not None and len(tokens) > max_tokens:
                tokens = tokens[:max_tokens]
                text, finish = "".join(tokens), "length"
            for stop in stops:
                if stop and stop in text:
                    text, finish = text[: text.index(stop)], "stop"
                    tokens = self.tokenize(text)
            completion_tokens += len(tokens)
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            if body.get("logprobs"):
                choice["logprobs"] = {"content": self._token_logprobs(tokens, reply, k)}
            choices.append(choice)
        prompt_tokens = sum(
            len(self.tokenize(m.get("content") or ""))
            for m in body["messages"]
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        )
        return {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body.get("model") or self.model,
            "choices": choices,
            "usage": _usage(
                prompt_tokens if reply.prompt_tokens is None else reply.prompt_tokens,
                completion_tokens if reply.completion_tokens is None else reply.completion_tokens,
                reply.cached_tokens,
            ),
        }

    def chunks(self, answer: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` events that stream ``answer`` (a chat completion made
        by `chat`): for each choice a first chunk with the role, one chunk per token (its text
        and, when the answer has logprobs, its logprob entry) and one with the finish reason,
        the choices interleaved; then, with ``include_usage``, a chunk with the usage and no
        choices. Put back together they give ``answer``."""
        base = {
            "id": answer.get("id"),
            "object": "chat.completion.chunk",
            "created": answer.get("created"),
            "model": answer.get("model"),
        }
        per_choice = [self._choice_chunks(choice) for choice in answer["choices"]]
        events = [
            {**base, "choices": [choice]}
            for row in itertools.zip_longest(*per_choice)
            for choice in row
            if choice is not None
        ]
        if include_usage:
            events.append({**base, "choices": [], "usage": answer.get("usage")})
        return events

    def _choice_chunks(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks of one choice of a chat completion."""
        index, text = choice["index"], choice["message"]["content"] or ""
        entries = (choice.get("logprobs") or {}).get("content")
        if entries and "".join(entry["token"] for entry in entries) == text:
            pieces = [(entry["token"], [entry]) for entry in entries]
        elif entries:  # tokens that do not spell the text: all in one piece
            pieces = [(text, list(entries))]
        else:
            pieces = [(token, []) for token in (self.tokenize(text) or ([text] if text else []))]

        def chunk(delta: dict[str, Any], logprobs: Any = None, finish: Any = None) -> Any:
            return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}

        wanted = entries is not None
        first = chunk({"role": "assistant", "content": ""}, {"content": []} if wanted else None)
        tokens = [chunk({"content": t}, {"content": e} if wanted else None) for t, e in pieces]
        return [first, *tokens, chunk({}, None, choice["finish_reason"])]

    def _token_logprobs(self, tokens: list[str], reply: Reply, k: int) -> list[dict[str, Any]]:
        """The chat ``logprobs.content`` of ``tokens``: the reply's values, else the defaults."""
        entries = []
        for j, token in enumerate(tokens):
            if reply.top_logprobs is not None and j < len(reply.top_logprobs):
                top = dict(reply.top_logprobs[j])
                own = top.get(token, min(top.values(), default=0.0) - 1.0)
            else:
                own, top = default_prompt_logprob(tokens, j)
            if reply.logprobs is not None and j < len(reply.logprobs):
                own = reply.logprobs[j]
            ranked = sorted(top.items(), key=lambda item: -item[1])[:k]
            entries.append(
                {
                    "token": token,
                    "logprob": own,
                    "bytes": list(token.encode("utf-8")),
                    "top_logprobs": [
                        {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))}
                        for t, v in ranked
                    ],
                }
            )
        return entries

    def completion(
        self, body: dict[str, Any], answer: Reply | str | None, ident: str
    ) -> dict[str, Any]:
        """The text completion answering ``body``: ``answer`` (or `` ok`` repeated) as the
        generated text, the prompt echoed and scored if asked for (``echo`` + ``logprobs``, or
        vLLM's ``prompt_logprobs``)."""
        prompt = body["prompt"] if isinstance(body["prompt"], str) else str(body["prompt"][0])
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else max_tokens
        if isinstance(answer, Reply):
            answer = answer.content if isinstance(answer.content, str) else answer.content[0]
        generated = self.tokenize(" ok" * max_tokens if answer is None else answer)[:max_tokens]
        prompt_tokens = self.tokenize(prompt)
        echo = bool(body.get("echo"))
        shown = (prompt_tokens if echo else []) + generated
        context = prompt_tokens + generated
        first = 0 if echo else len(prompt_tokens)
        choice: dict[str, Any] = {
            "index": 0,
            "text": "".join(shown),
            "logprobs": None,
            "finish_reason": "length",
        }
        k = body.get("logprobs")
        if isinstance(k, int) and k >= 0:
            values: list[float | None] = []
            tops: list[dict[str, float] | None] = []
            offsets, position = [], 0 if echo else len(prompt)
            for i, token in enumerate(shown, start=first):
                offsets.append(position + self.offset_shift)
                position += len(token)
                if i == 0:
                    values.append(None)
                    tops.append(None)
                    continue
                own, alternatives = self.prompt_logprob(context, i)
                values.append(own)
                tops.append(dict(sorted(alternatives.items(), key=lambda item: -item[1])[:k]))
            if self.logprob_shift:
                values, tops = [*values[1:], None], [*tops[1:], None]
            choice["logprobs"] = {
                "tokens": shown,
                "token_logprobs": values,
                "top_logprobs": tops,
                "text_offset": offsets,
            }
        if isinstance(body.get("prompt_logprobs"), int):
            choice["prompt_logprobs"] = self._vllm_prompt_logprobs(
                prompt_tokens, body["prompt_logprobs"]
            )
        return {
            "id": ident,
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [choice],
            "usage": _usage(len(prompt_tokens), len(generated), 0),
        }

    def native_completion(
        self, body: dict[str, Any], answer: Reply | str | None, cached: int
    ) -> dict[str, Any]:
        """llama.cpp's answer to ``POST /completion``: ``answer`` (or `` ok`` repeated) as the
        ``n_predict`` generated tokens and, with ``n_probs: k``, each one's top ``k``
        alternatives in ``completion_probabilities`` (from a `Reply`'s ``top_logprobs``, else
        the server's scorer); ``cached`` of the prompt's tokens came from the slot's cache."""
        prompt = body["prompt"] if isinstance(body["prompt"], str) else str(body["prompt"][0])
        limit = body.get("n_predict", -1)
        limit = 16 if not isinstance(limit, int) or limit < 0 else limit
        reply = answer if isinstance(answer, Reply) else Reply(content=answer or " ok" * limit)
        text = reply.content if isinstance(reply.content, str) else reply.content[0]
        generated = list(reply.tokens) if reply.tokens is not None else self.tokenize(text)
        generated = generated[:limit]
        prompt_tokens = self.tokenize(prompt)
        k = body.get("n_probs")
        probabilities = []
        for j, token in enumerate(generated):
            if reply.top_logprobs is not None and j < len(reply.top_logprobs):
                top: Mapping[str, float] = reply.top_logprobs[j]
                own = top.get(token, min(top.values(), default=0.0) - 1.0)
            else:
                own, top = self.prompt_logprob([*prompt_tokens, *generated], len(prompt_tokens) + j)
            ranked = sorted(top.items(), key=lambda item: -item[1])[
                : k if isinstance(k, int) else 0
            ]
            probabilities.append(
                {
                    "id": _crc(token) % 1_000_003,
                    "token": token,
                    "bytes": list(token.encode("utf-8")),
                    "logprob": own,
                    "top_logprobs": [
                        {"id": _crc(t) % 1_000_003, "token": t, "logprob": v} for t, v in ranked
                    ],
                }
            )
        answered: dict[str, Any] = {
            "index": 0,
            "content": "".join(generated),
            "id_slot": 0,
            "stop": True,
            "model": body.get("model") or self.model,
            "tokens_predicted": len(generated),
            "tokens_evaluated": len(prompt_tokens),
            "generation_settings": {"n_predict": limit, "n_probs": k or 0},
            "prompt": prompt,
            "stop_type": "limit",
            "tokens_cached": len(prompt_tokens) + len(generated),
            "timings": {"cache_n": cached, "prompt_n": len(prompt_tokens) - cached},
        }
        if isinstance(k, int) and k > 0:
            answered["completion_probabilities"] = probabilities
        return answered

    def _vllm_prompt_logprobs(
        self, tokens: list[str], k: int
    ) -> list[dict[str, dict[str, Any]] | None]:
        """vLLM's format: ``null``, then per token ``{token_id: {logprob, rank,
        decoded_token}}`` holding the top ``k`` and the prompt's own token."""
        entries: list[dict[str, dict[str, Any]] | None] = [None]
        for i in range(1, len(tokens)):
            own, alternatives = self.prompt_logprob(tokens, i)
            ranked = sorted({**alternatives, tokens[i]: own}.items(), key=lambda item: -item[1])
            entry = {}
            for rank, (text, value) in enumerate(ranked, start=1):
                if rank <= k or text == tokens[i]:
                    entry[str(_crc(text) % 1_000_003)] = {
                        "logprob": value,
                        "rank": rank,
                        "decoded_token": text,
                    }
            entries.append(entry)
        return entries


class SlotPromptCache:
    """The prompt each of a llama.cpp-like server's slots evaluated last, for its native
    ``/completion``'s ``cache_prompt``."""

    def __init__(self, slots: int) -> None:
        self._prompts: list[list[str]] = [[] for _ in range(slots)]
        self._lock = threading.Lock()

    def take(self, tokens: list[str], body: dict[str, Any]) -> int:
        """How many of ``tokens`` (a prompt's) come from a slot's cache: the slot whose last
        prompt shares the most leading tokens, which then holds this prompt. All but the last
        token at most (it is evaluated again for its logits); none when ``body`` says
        ``cache_prompt: false``."""
        with self._lock:
            best, shared = 0, 0
            for slot, held in enumerate(self._prompts):
                common = next(
                    (i for i, (a, b) in enumerate(zip(held, tokens, strict=False)) if a != b),
                    min(len(held), len(tokens)),
                )
                if common > shared:
                    best, shared = slot, common
            if self._prompts:
                self._prompts[best] = list(tokens)
        if body.get("cache_prompt") is False:
            return 0
        return max(0, min(shared, len(tokens) - 1))


def _usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    """An OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


# -- the wire ----------------------------------------------------------------------------
