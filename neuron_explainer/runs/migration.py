"""Upgrade stored files to the formats this library writes: run databases, collection folders
and result JSON files.

Each format carries its version: a run database its meta ``schema_version``
(`neuron_explainer.runs.store.SCHEMA_VERSION`), a collection its ``meta.json`` ``"format"``
(`neuron_explainer.subjects.collection.FORMAT_VERSION`), a result its ``format_version``
(`neuron_explainer.results.RESULT_FORMAT_VERSION`; 0.1.0 wrote none, which reads as 1). This
library reads every older version as it is, so migrating is never needed to read a file; it
makes a file current (and no longer readable by the older library) ahead of time. `migrate`
(``neuron-explainer migrate PATH...``) does it in place, keeping a copy of every file it
rewrites (``<name>.v<old>.bak`` beside it), and does nothing to a current file.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from neuron_explainer.errors import FormatError, InvalidInputError
from neuron_explainer.results import RESULT_FORMAT_VERSION, ExplanationResult
from neuron_explainer.runs._files import (
    SQLITE_MAGIC,
    inspect_database,
    release_run_lock,
    take_run_lock,
)
from neuron_explainer.runs._schema import SCHEMA_VERSION, backup_path, migrate_database
from neuron_explainer.subjects.collection import (
    FORMAT_VERSION,
    META,
    add_unknown_positions,
    check_format,
    read_json,
)

__all__ = ["COLLECTION_MIGRATIONS", "Migrated", "StoredKind", "migrate"]

StoredKind = Literal["run database", "collection", "result"]
"""What kind of stored file a path holds."""


def _same_files(folder: Path) -> None:
    """Collection format 2 → 3: an MLP collection's files are the same (format 3 adds unit
    collections), so only ``"format"`` changes."""


def _sampler_1(folder: Path) -> None:
    """Collection format 3 → 4: the states stay as they are, and ``meta.json`` says they were
    sampled by sampler 1 (``"sampler": 1``); an unfinished one resumes with sampler 1."""
    meta = read_json(folder / META)
    _replace_text(folder / META, json.dumps({**meta, "sampler": 1}, indent=1))


COLLECTION_MIGRATIONS: dict[int, Callable[[Path], None]] = {
    1: add_unknown_positions,
    2: _same_files,
    3: _sampler_1,
}
"""Collection format ``n`` → the step that rewrites a collection folder to format ``n + 1``.
1 → 2 adds ``window_positions.i64`` with every position unknown (`add_unknown_positions`:
they cannot be known without the corpus, so the records still have no window ids; resuming an
unfinished collection fills them in); 2 → 3 changes no file (`_same_files`); 3 → 4 records
``"sampler": 1`` in ``meta.json`` (`_sampler_1`). A step keeps a
copy of each file it rewrites; `migrate` updates ``meta.json``'s ``"format"`` afterwards
(keeping a copy of the old ``meta.json``)."""

_Outcome = tuple[int, int, Path | None]
"""The version before, the version now, and the backup (``None`` when nothing was written)."""


class Migrated(BaseModel):
    """What `migrate` did to one path.

    Attributes:
        path: the file or folder.
        kind: ``"run database"``, ``"collection"`` or ``"result"``.
        from_version: its version before.
        to_version: its version now (the one this library writes).
        backup: the copy of the old file (for a collection: of its old ``meta.json``), or
            ``None`` when nothing was rewritten.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    kind: StoredKind
    from_version: int
    to_version: int
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        """Whether the file was rewritten (it was of an older version)."""
        return self.from_version != self.to_version

    def describe(self) -> str:
        """One line: ``run.sqlite: run database 1 -> 2 (previous file kept as ...)`` or
        ``...: result 2, current (nothing to do)``."""
        if not self.changed:
            return f"{self.path}: {self.kind} {self.to_version}, current (nothing to do)"
        kept = f" (previous file kept as {self.backup})" if self.backup is not None else ""
        return f"{self.path}: {self.kind} {self.from_version} -> {self.to_version}{kept}"


def migrate(path: str | os.PathLike[str]) -> Migrated:
    """Upgrade the run database, collection folder or result JSON file at ``path`` in place to
    the version this library writes, keeping a copy of what it rewrites; a current one is left
    untouched (so running it twice is safe).

    A run database is migrated under its run lock, so never while a run writes it.

    Raises:
        InvalidInputError: nothing at ``path``, or it is none of the three.
        FormatError: the file is of a newer version than this library reads, or unreadable.
        UsageError: a run is writing the database right now.
        OSError: a file cannot be read or written.
    """
    target = Path(path)
    kind: StoredKind
    if target.is_dir():
        kind, (version, newest, backup) = "collection", _migrate_collection(target)
    elif not target.is_file():
        raise InvalidInputError(f"no such file or folder: {target}")
    elif _is_sqlite(target):
        kind, (version, newest, backup) = "run database", _migrate_run_database(target)
    else:
        kind, (version, newest, backup) = "result", _migrate_result(target)
    return Migrated(path=target, kind=kind, from_version=version, to_version=newest, backup=backup)


def _is_sqlite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _migrate_run_database(path: Path) -> _Outcome:
    inspect_database(path, create=False, to_read=False)  # reads only: refuses untouched
    lock = take_run_lock(path)
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    try:
        version, backup = migrate_database(db, path)
    finally:
        db.close()
        release_run_lock(path, lock)
    return version, SCHEMA_VERSION, backup


def _migrate_collection(folder: Path) -> _Outcome:
    meta = read_json(folder / META)
    version = check_format(folder, meta.get("format"))
    if version == FORMAT_VERSION:
        return version, version, None
    backup = _copy_aside(folder / META, version)
    for step in range(version, FORMAT_VERSION):
        COLLECTION_MIGRATIONS[step](folder)
    meta = read_json(folder / META)  # a step may have rewritten it
    _replace_text(folder / META, json.dumps({**meta, "format": FORMAT_VERSION}, indent=1))
    return version, FORMAT_VERSION, backup


def _migrate_result(path: Path) -> _Outcome:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{path} is neither a run database, a collection folder nor a result JSON file"
        )
    try:
        result = ExplanationResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise FormatError(f"{path} is not a readable result: {where}: {message}") from None
    version = data.get("format_version", 1)
    if version == RESULT_FORMAT_VERSION:
        return version, version, None
    backup = _copy_aside(path, version)
    _replace_text(path, result.model_dump_json())
    return version, RESULT_FORMAT_VERSION, backup


def _copy_aside(path: Path, version: int) -> Path:
    """Copy ``path`` to a free ``<name>.v<version>.bak`` beside it; returns the copy."""
    backup = backup_path(path, version)
    shutil.copy2(path, backup)
    return backup


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file, so a crash leaves the old
    file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
