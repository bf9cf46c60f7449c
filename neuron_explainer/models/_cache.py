"""The model cache: a dequantised copy of each ``.gguf`` file `load_model` loads, so the next
load skips the dequantisation and the GGUF tokenizer conversion (for Gemma 3 270M: ~30 s and
~14 s on 2 cores, against a few seconds from the copy).

Where: `model_cache_dir` (``$XDG_CACHE_HOME/neuron_explainer/models``, else
``~/.cache/neuron_explainer/models``; `MODEL_CACHE_ENV` moves it or, set to ``0``, turns it off).
Inside it::

    <sha256 of the .gguf file>/
        model-float32-<versions>/    config.json, generation_config.json, model.safetensors
        tokenizer-<versions>/        tokenizer.json, tokenizer_config.json, ...
    hashes/<stamp>                   the file's sha256, remembered by its stat (below)

Each entry is what ``save_pretrained`` writes, plus ``neuron_explainer_cache.json`` (the
manifest: the source file's hash, the library versions, each file's size). ``<versions>`` is a
fingerprint of the transformers, torch, gguf and tokenizers versions (the manifest spells them
out): the conversion is theirs, so another version writes its own entry instead of trusting
one it did not make. A model entry holds the weights in the dtype asked for, exactly as loading
the file in that dtype gives them (transformers may dequantise straight into that dtype, so a
float32 copy cast later could differ in the last bit).

Keyed by the full sha256 of the file, so a changed file never meets an old entry. Hashing
costs ~0.2 s for Gemma's 253 MB but seconds for a 7B GGUF, so the digest is remembered in
``hashes/`` under a stamp of the file's real path, size, mtime_ns, ctime_ns, inode and device;
any change to the file changes its ctime (which no program can set back), so a stale digest is
never used.

An entry is written into a temporary folder beside it, flushed to disk, and renamed into place:
a crash leaves at most a ``.tmp-...`` folder, which is never read (and is removed by a later
write after a day). An entry whose files do not match its manifest, or that fails to load, is
set aside and rewritten. Failing to write the cache (read-only, disk full) never fails a load:
it warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MODEL_CACHE_ENV", "load_gguf", "model_cache_dir"]

MODEL_CACHE_ENV = "NEURON_EXPLAINER_MODEL_CACHE"
"""The environment variable that places the model cache (a folder) or turns it off (``0``)."""

FORMAT = 1
MANIFEST = "neuron_explainer_cache.json"
_OFF = {"0", "false", "no", "off"}
_ON = {"", "1", "true", "yes", "on"}
_STALE_SECONDS = 24 * 3600


def model_cache_dir(cache: bool | str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of the model cache, or ``None`` when it is off.

    ``cache=None`` follows `MODEL_CACHE_ENV`: unset (or ``1``) means the default folder,
    ``$XDG_CACHE_HOME/neuron_explainer/models`` (``~/.cache/neuron_explainer/models`` without
    ``XDG_CACHE_HOME``); ``0`` (or ``false``, ``no``, ``off``) turns the cache off; anything else
    is the folder. ``cache=False`` turns it off, ``cache=True`` turns it on even when the
    variable says ``0`` (in the variable's folder if it names one), and a path is the folder.
    Nothing is created here.
    """
    if cache is False:
        return None
    if cache is not None and cache is not True:
        return Path(os.fspath(cache)).expanduser()
    value = os.environ.get(MODEL_CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None if cache is None else _default_dir()
    if value.lower() in _ON:
        return _default_dir()
    return Path(value).expanduser()


def _default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "neuron_explainer" / "models"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("transformers", "torch", "gguf", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - all four come with the package
            found[package] = "none"
    return found


def file_sha256(path: Path, root: Path) -> str:
    """The sha256 of file ``path``, remembered under ``root / "hashes"`` by the file's stat
    (read again when any of its real path, size, mtime, ctime, inode or device changed).

    Raises:
        OSError: the file cannot be read.
    """
    st = path.stat()
    seen = [os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    stamp = json.dumps([*seen, st.st_dev]).encode()
    memo = root / "hashes" / hashlib.sha256(stamp).hexdigest()
    try:
        known = memo.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
        return known
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temporary = memo.with_name(f".tmp-{memo.name}-{secrets.token_hex(4)}")
        temporary.write_text(digest, encoding="ascii")
        os.replace(temporary, memo)
    except OSError:
        pass  # not remembered: hashed again next time
    return digest


def _manifest(entry: Path, digest: str) -> dict[str, Any] | None:
    """The manifest of ``entry`` if the entry is complete and its files have the sizes it lists;
    ``None`` for no entry.

    Raises:
        ValueError: the entry exists but is not a complete entry for ``digest``.
    """
    if not entry.exists():
        return None
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        wrong = [n for n, size in files.items() if (entry / n).stat().st_size != size]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"unreadable manifest ({type(error).__name__}: {error})") from None
    if manifest.get("format") != FORMAT or manifest.get("sha256") != digest:
        raise ValueError("the manifest is for another file or format")
    if wrong:
        raise ValueError(f"files differ from the manifest: {', '.join(sorted(wrong))}")
    return dict(manifest)


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=5)  # load_model's caller


def _set_aside(entry: Path) -> None:
    """Move ``entry`` out of the way (one atomic rename) and delete it."""
    aside = entry.with_name(f".tmp-{entry.name}-broken-{secrets.token_hex(4)}")
    try:
        os.rename(entry, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _read(entry: Path, digest: str, load: Callable[[str], Any]) -> Any:
    """What ``load`` makes of ``entry``, or ``None`` when there is no usable entry (a broken
    one is set aside, with a warning)."""
    try:
        if _manifest(entry, digest) is None:
            return None
        return load(str(entry))
    except Exception as error:  # whatever the failure, the .gguf file is the truth
        _warn(f"model cache entry {entry} is unusable ({error}); loading the .gguf file instead")
        _set_aside(entry)
        return None


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # pragma: no cover - directories cannot be opened on Windows
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_stale(parent: Path) -> None:
    """Delete temporary folders a crashed writer left in ``parent`` over a day ago."""
    for leftover in parent.glob(".tmp-*"):
        try:
            if time.time() - leftover.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def _write(entry: Path, digest: str, save: Callable[[Path], None], source: Path) -> None:
    """Write ``entry`` atomically: ``save`` fills a temporary folder, its files and manifest are
    flushed to disk, then one rename publishes it. Warns instead of raising."""
    temporary = entry.with_name(f".tmp-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        temporary.mkdir(parents=True)
        _remove_stale(entry.parent)
        save(temporary)
        files = {p.name: p.stat().st_size for p in sorted(temporary.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "sha256": digest,
            "source": str(source),
            "versions": _versions(),
            "files": files,
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for path in (*temporary.iterdir(), temporary):
            _fsync(path)
        os.rename(temporary, entry)  # fails if another process published it first
        _fsync(entry.parent)
    except Exception as error:  # the cache is an optimisation: it never fails a load
        if not entry.is_dir():
            _warn(
                f"could not write the model cache entry {entry} ({type(error).__name__}: "
                f"{error}); the model loaded, but the next load converts the .gguf file again"
            )
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _save_model(model: Any, folder: Path) -> None:
    """``save_pretrained`` a model loaded from a GGUF file (and dequantised): transformers
    refuses to save a model that went through its GGUF quantizer, so the quantizer and its
    config entry are detached for the save and put back.

    Raises:
        ValueError: some weights are still packed GGUF blocks (not saved).
    """
    import torch

    if any(p.dtype == torch.uint8 for p in model.parameters()):
        raise ValueError("some weights are still packed GGUF blocks")
    config = model.config
    quantizer = getattr(model, "hf_quantizer", None)
    had_config = "quantization_config" in vars(config)
    quantization = vars(config).pop("quantization_config", None)
    model.hf_quantizer = None
    try:
        model.save_pretrained(folder)
    finally:
        model.hf_quantizer = quantizer
        if had_config:
            config.quantization_config = quantization


def load_gguf(path: Path, root: Path, dtype: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The model of GGUF file ``path`` in torch ``dtype``, and its tokenizer (``tokenizer``
    itself when given), from the cache under ``root``; on a miss, loaded from the file and
    written to the cache.

    Raises:
        OSError, ValueError: the file cannot be read or loaded (as ``from_pretrained`` raises).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = file_sha256(path, root)
    fingerprint = hashlib.sha256(json.dumps(_versions(), sort_keys=True).encode()).hexdigest()
    folder = root / digest
    dtype_name = str(dtype).removeprefix("torch.")
    source, gguf = str(path.parent), {"gguf_file": path.name}

    def from_entry(entry: str) -> Any:
        return AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, local_files_only=True)

    model_entry = folder / f"model-{dtype_name}-{fingerprint[:12]}"
    model = _read(model_entry, digest, from_entry)
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **gguf)
        _write(model_entry, digest, lambda into: _save_model(model, into), path)
    model.config._name_or_path = source  # as when loaded from the file
    if tokenizer is None:
        tokenizer_entry = folder / f"tokenizer-{fingerprint[:12]}"
        tokenizer = _read(
            tokenizer_entry,
            digest,
            lambda entry: AutoTokenizer.from_pretrained(entry, local_files_only=True),
        )
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(source, **gguf)
            _write(tokenizer_entry, digest, tokenizer.save_pretrained, path)
    return model, tokenizer
