"""Before transformers reaches for the Hugging Face hub: is the repository there, or cached?

Given no network, transformers retries the hub for ~25 s (huggingface_hub's backoff: 5 retries,
1 + 2 + 4 + 8 + 8 s) before saying a name is unknown. `hub_access` decides first, with at most
one request and no retry:

* ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set: a repository in the local hub cache
  loads from it; any other name fails at once.
* otherwise one ``GET /api/models/<repo>`` (huggingface_hub's ``model_info``, timeout
  ``HF_HUB_ETAG_TIMEOUT``, 10 s by default): found, the load goes ahead; no such repository, or
  no answer (refused, unresolvable, a timeout, a 5xx), a cached repository loads from the cache
  and any other name fails at once.

The error names the close matches (`difflib`) among the known model names and the repositories
in the local hub cache (``scan_cache_dir``). (huggingface_hub itself may ask the hub once a day
for its list of AI-agent harnesses, ``/api/agent-harnesses``, with a 3 s timeout, when it first
builds request headers.) huggingface_hub reads ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` and ``HF_HOME`` when it is imported; the environment variables are read here
too, so setting ``HF_HUB_OFFLINE`` later still counts.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from typing import Any

from neuron_explainer.errors import InvalidInputError

__all__ = ["hub_access", "suggestions"]

_TRUE = {"1", "on", "yes", "true"}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline() -> bool:
    """Whether hub access is turned off (the environment now, or huggingface_hub's setting)."""
    if any(os.environ.get(v, "").strip().lower() in _TRUE for v in _OFFLINE_VARIABLES):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _cached(repo: str) -> bool:
    """Whether the local hub cache holds ``repo``'s ``config.json``."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # an invalid repository id, an unreadable cache: not cached
        return False


def _cached_repos() -> list[str]:
    """The model repositories in the local hub cache (none if it cannot be scanned)."""
    try:
        from huggingface_hub import scan_cache_dir

        return sorted(r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder, an unreadable one: nothing to suggest from it
        return []


def suggestions(name: str, known: Sequence[str]) -> list[str]:
    """Up to three names close to ``name`` (case aside) among ``known`` and the repositories in
    the local hub cache, closest first; a hub id's name without its owner (``owner/name``) is
    matched too. ``name`` itself is never suggested."""
    candidates = {c.lower(): c for c in [*_cached_repos(), *known]}
    close: list[str] = []
    for wanted in dict.fromkeys([name.lower(), name.lower().rpartition("/")[2]]):
        close += difflib.get_close_matches(wanted, list(candidates), n=4, cutoff=0.6)
    found = [candidates[c] for c in dict.fromkeys(close)]
    return [c for c in found if c != name][:3]


def _probe(repo: str) -> str | None:
    """``None`` when the hub has ``repo`` (or answers in a way transformers should handle),
    else why it cannot be loaded from the hub: no such repository, or no answer."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    endpoint = constants.ENDPOINT
    missing = (
        f"the hub at {endpoint} has no repository {repo!r} (or it is private and you are not "
        "logged in)"
    )
    try:
        HfApi(endpoint=endpoint).model_info(repo, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (RepositoryNotFoundError, HFValidationError):
        return missing
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", 0)
        if status == 404:
            return missing
        if status >= 500:
            return f"the hub cannot be reached at {endpoint} (it answered HTTP {status})"
        return None  # 401, 403, 429, ...: transformers says what they mean
    except Exception as error:  # refused, unresolvable, a timeout: no answer at all
        reason = " ".join(str(error).split()) or "no answer"
        return f"the hub cannot be reached at {endpoint} ({type(error).__name__}: {reason})"
    return None


def _unavailable(name: str, repo: str, known: Sequence[str], reason: str) -> InvalidInputError:
    if name in known:
        message = (
            f"could not load model {name!r} from Hugging Face hub repository {repo!r}: it is not "
            f"in the local Hugging Face cache and {reason}"
        )
    else:
        message = (
            f"could not load model {name!r}: it is not a local file or folder, a known model or "
            f"a model in the local Hugging Face cache, and {reason}"
        )
    close = [] if name in known else suggestions(name, known)
    if close:
        quoted = [repr(c) for c in close]
        either = " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)
        message += f". Did you mean {either}?"
    elif name not in known:
        message += f". Known models: {', '.join(known)}."
    else:
        message += "."
    return InvalidInputError(
        f"{message} Without hub access, pass a local directory (save_pretrained) or a .gguf file"
    )


def hub_access(name: str, repo: str, known: Sequence[str]) -> dict[str, Any]:
    """Check that hub repository ``repo`` (what model name ``name`` means) can be loaded,
    before transformers tries: from the local hub cache when the hub is off or cannot be
    reached, else from the hub (one request, no retry; see the module docstring).

    Args:
        name: the model name as given.
        repo: the hub repository it means.
        known: the model names the library knows (offered as suggestions).

    Returns:
        Keyword arguments for ``from_pretrained``: ``{"local_files_only": True}`` when the
        repository must load from the local cache, else none.

    Raises:
        InvalidInputError: the repository is not in the local cache and the hub is off, cannot
            be reached, or has no such repository; the message names close model names.
    """
    if _offline():
        if _cached(repo):
            return {"local_files_only": True}
        raise _unavailable(name, repo, known, "the hub cannot be reached (HF_HUB_OFFLINE is set)")
    reason = _probe(repo)
    if reason is None:
        return {}
    if _cached(repo):
        return {"local_files_only": True}
    raise _unavailable(name, repo, known, reason)
