"""Asking an LLM yes/no questions about numbered excerpts, several per request: what the
classification scorers (detection, fuzzing) share.

One request shows the explanation and up to ``per_request`` numbered excerpts and asks for a
JSON object with one property per excerpt, ``"1"`` .. ``"n"``, whose value is 1 (yes) or 0
(no). With ``json_schema`` the request's schema fixes every name, so the model writes only the
values; without it the names are read back from the text (the first value for a number
counts; numbers outside the request are ignored). With ``chat_logprobs`` the alternatives at
each value give the probability of "yes" (``p(1) / (p(0) + p(1))``), which AUROC needs; without
them ``p_yes`` is ``None``.

With ``answer="yesno"`` each request shows one excerpt and asks a plain question ("Does this
text contain <explanation>?") to be answered "yes" or "no"; the probability of "yes" is read
from the first answer token's alternatives (``p(yes) / (p(yes) + p(no))``). Small local models
judge far better this way than in a numbered JSON list (docs/classification-scorers.md).

An excerpt left without a usable value is asked again (with the others missing from its
request, in one request that says what was wrong) up to ``retries`` times; then it is a
failed judgement with its reason, counted by the scorer, never dropped and never scored as a
"no". A request that fails with one of `SEQUENCE_FAILURES` fails its excerpts the same way;
any other error (authentication, budget) propagates at once. All requests of a call run
concurrently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from neuron_explainer._aio import gather_or_cancel
from neuron_explainer.interfaces import (
    SEQUENCE_FAILURES,
    estimate_prompt_tokens,
    failure_of,
    record_retry,
)
from neuron_explainer.llm.base import LLM, Choice, Message, TokenLogprob
from neuron_explainer.llm.prompts import escape_token

__all__ = ["ANSWERS", "Verdict", "ask", "estimate_requests", "render"]

ANSWERS = ("json", "yesno")
"""How a judge answers: a numbered JSON object for several excerpts, or "yes"/"no" for one."""

_VALUE = re.compile(r'"\s*(\d+)\s*"\s*:\s*("?)(1|0|yes|no|true|false)\2', re.IGNORECASE)
_YES = {"1", "yes", "true"}
COMPLETION_PER_ITEM = 6
"""Estimated completion tokens per excerpt of an answer (``"12": 1, ``)."""
TOP_LOGPROBS = 5


@dataclass(frozen=True)
class Verdict:
    """One excerpt's judgement: ``answer`` (``None`` when it failed, with ``reason`` and
    ``message``) and the probability of "yes" when logprobs gave it."""

    answer: bool | None
    p_yes: float | None = None
    reason: str | None = None
    message: str = ""


def render(tokens: Sequence[str], highlight: Sequence[int] = ()) -> str:
    """An excerpt on one line: its tokens joined (control characters escaped, so no excerpt
    breaks the numbered list), each run of consecutive ``highlight`` positions between
    ``<<`` and ``>>``."""
    marked = set(highlight)
    out: list[str] = []
    for i, token in enumerate(tokens):
        shown = escape_token(token)
        if i in marked and i - 1 not in marked:
            shown = "<<" + shown
        if i in marked and i + 1 not in marked:
            shown += ">>"
        out.append(shown)
    return "".join(out)


def _schema(n: int) -> dict[str, object]:
    names = [str(i) for i in range(1, n + 1)]
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "judgements",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0, "maximum": 1} for k in names},
                "required": names,
                "additionalProperties": False,
            },
        },
    }


def _user(explanation: str, excerpts: Sequence[str]) -> str:
    lines = "\n".join(f"{i}. {text.lstrip(' ')}" for i, text in enumerate(excerpts, start=1))
    more = ", ..." if len(excerpts) > 1 else ""
    return (
        f'Explanation: {explanation}\n\nExcerpts:\n{lines}\n\nAnswer in JSON: {{"1": 0 or 1{more}}}'
    )


def _share(token: TokenLogprob, yes: str, no: str) -> float | None:
    """The probability of ``yes`` among ``yes`` and ``no`` at ``token`` (the token written and
    its alternatives, white space and quotes stripped, case ignored); ``None`` when neither
    is there."""
    mass = {yes: 0.0, no: 0.0}
    seen = {(token.token, token.logprob), *((t.token, t.logprob) for t in token.top_logprobs)}
    for text, logprob in seen:
        key = text.strip().strip('"').lower()
        if key in mass:
            mass[key] += math.exp(logprob)
    total = mass[yes] + mass[no]
    return mass[yes] / total if total > 0 else None


def _yesno_user(text: str, question: str) -> str:
    return f"Text: {text.strip()}\n\n{question} Answer yes or no."


def read_yesno(choice: Choice) -> Verdict | None:
    """The verdict of a "yes"/"no" answer (``None`` when it is neither), with the probability
    of "yes" from its first token's alternatives when it has logprobs."""
    word = re.match(r"\W*(yes|no)\b", choice.text, re.IGNORECASE)
    if word is None:
        return None
    p = _share(choice.logprobs[0], "yes", "no") if choice.logprobs else None
    return Verdict(answer=word.group(1).lower() == "yes", p_yes=p)


def _p_yes(choice: Choice, offset: int) -> float | None:
    """The probability of "1" among "0" and "1" at the value starting at ``offset`` of the
    answer, from its logprobs (``None`` without them or when neither is an alternative)."""
    if not choice.logprobs:
        return None
    position = 0
    for token in choice.logprobs:
        end = position + len(token.token)
        if position <= offset < end:
            if token.token[: offset - position].strip():
                return None  # the value shares its token with text before it
            return _share(token, "1", "0")
        position = end
    return None


def read(choice: Choice, n: int) -> dict[int, Verdict]:
    """The verdicts ``choice`` gives for excerpts 1..``n`` (by number; the first value for a
    number counts, numbers outside 1..n are ignored)."""
    found: dict[int, Verdict] = {}
    for match in _VALUE.finditer(choice.text):
        number = int(match.group(1))
        if not 1 <= number <= n or number in found:
            continue
        value = match.group(3).lower()
        p = _p_yes(choice, match.start(3)) if value in ("0", "1") else None
        found[number] = Verdict(answer=value in _YES, p_yes=p)
    return found


@dataclass
class _Request:
    llm: LLM
    system: str
    explanation: str
    question: str
    retries: int
    answer: str = "json"

    async def send(self, excerpts: Sequence[str], retry_note: str | None) -> Choice:
        capabilities = self.llm.capabilities
        logprobs = "chat_logprobs" in capabilities
        if self.answer == "yesno":
            (text,) = excerpts
            user = _yesno_user(text, self.question)
            if retry_note:
                user = f"{user} {retry_note}"
            response = await self.llm.acomplete(
                [Message(role="user", content=user)],
                temperature=0.0,
                max_tokens=4,
                logprobs=logprobs,
                top_logprobs=2 * TOP_LOGPROBS if logprobs else None,
            )
            return response.choices[0]
        user = _user(self.explanation, excerpts)
        if retry_note:
            user = f"{retry_note}\n\n{user}"
        response = await self.llm.acomplete(
            [Message(role="system", content=self.system), Message(role="user", content=user)],
            temperature=0.0,
            # twice the expected answer: a model may write white space between the values
            max_tokens=2 * COMPLETION_PER_ITEM * len(excerpts) + 32,
            logprobs=logprobs,
            top_logprobs=TOP_LOGPROBS if logprobs else None,
            response_format=_schema(len(excerpts)) if "json_schema" in capabilities else None,
        )
        return response.choices[0]

    def _read(self, choice: Choice, n: int) -> dict[int, Verdict]:
        if self.answer == "yesno":
            verdict = read_yesno(choice)
            return {} if verdict is None else {1: verdict}
        return read(choice, n)

    async def judge(self, excerpts: Sequence[str]) -> list[Verdict]:
        """Each of ``excerpts`` judged, retrying the ones left without a value."""
        verdicts: dict[int, Verdict] = {}
        pending = list(range(len(excerpts)))
        note: str | None = None
        last = Verdict(answer=None, reason="empty", message="no answer")
        for attempt in range(self.retries + 1):
            if attempt:
                for _ in pending:
                    record_retry(last.reason or "other")
            try:
                choice = await self.send([excerpts[i] for i in pending], note)
            except SEQUENCE_FAILURES as exc:
                failure = failure_of(exc)
                last = Verdict(answer=None, reason=failure.reason, message=failure.message)
                note = None
                continue
            got = self._read(choice, len(pending))
            for k, i in enumerate(pending, start=1):
                if k in got:
                    verdicts[i] = got[k]
            missing = [k for k in range(1, len(pending) + 1) if k not in got]
            if not missing:
                pending = []
                break
            last, note = self._problem(choice, missing)
            pending = [pending[k - 1] for k in missing]
        for i in pending:
            verdicts[i] = last
        return [verdicts[i] for i in range(len(excerpts))]

    def _problem(self, choice: Choice, missing: list[int]) -> tuple[Verdict, str]:
        """The failure an answer missing ``missing`` stands for, and the note of the retry."""
        cut = choice.finish_reason == "length" and self.answer == "json"
        reason = "truncated" if cut else ("unparseable" if choice.text.strip() else "empty")
        if self.answer == "yesno":
            message = f"the answer {choice.text[:200]!r} is neither yes nor no"
            return Verdict(answer=None, reason=reason, message=message), "Answer one word."
        message = f"no 0/1 value for excerpt(s) {missing} in the answer {choice.text[:200]!r}"
        note = (
            f"Your last answer gave no 0 or 1 for some excerpts. Answer again for these "
            f"{len(missing)}, numbered from 1."
        )
        return Verdict(answer=None, reason=reason, message=message), note


async def ask(
    llm: LLM,
    *,
    system: str,
    explanation: str,
    question: str,
    groups: Sequence[Sequence[str]],
    retries: int,
    answer: str = "json",
) -> list[Verdict]:
    """Judge the excerpts (rendered lines) of each of ``groups`` in one request, all requests
    at once; in the order of the groups and their excerpts, each excerpt's `Verdict`
    (``answer="yesno"``: groups of one excerpt each).

    Raises:
        Exception: any error outside `SEQUENCE_FAILURES` (authentication, budget, a bug); the
            other requests are cancelled.
    """
    request = _Request(llm, system, explanation, question, retries, answer)
    answers = await gather_or_cancel(*(request.judge(g) for g in groups))
    return [v for group in answers for v in group]


def estimate_requests(
    *,
    system: str,
    explanation: str,
    question: str,
    groups: Sequence[Sequence[str]],
    answer: str = "json",
) -> tuple[int, int, int]:
    """``(requests, prompt_tokens, completion_tokens)`` that `ask` would send at best (no
    retries), estimated from the text."""
    requests = prompt = completion = 0
    for group in groups:
        requests += 1
        if answer == "yesno":
            prompt += estimate_prompt_tokens([_yesno_user(group[0], question)])
            completion += 2
            continue
        prompt += estimate_prompt_tokens([system, _user(explanation, group)])
        completion += COMPLETION_PER_ITEM * len(group) + 2
    return requests, prompt, completion
