"""The run database's file: looking at it before anything writes to it, opening it, and the
run lock beside it.

**Nothing is written to a file that is then rejected.** `inspect_database` decides what a path
holds with reads only: the SQLite header bytes, then a read-only connection
(``file:...?mode=ro``) that looks for the ``meta`` table and its ``schema_version``. Only a run
database of a version this library reads, or a path where a new one may be created, goes on to
`connect`, which opens it for writing and switches it to WAL. An empty (0-byte) file holds no
data: it is where a new database may be created when the caller asked to create one (SQLite
itself treats it so, and a process killed between creating the file and writing its schema
leaves one), and it is refused, untouched, when the caller only reads.

A path the process may not write (a read-only folder, a read-only file) raises
`DatabaseAccessError`, naming the path and the cause, instead of SQLite's ``unable to open
database file``.

**The run lock** (`take_run_lock`) is an advisory ``flock`` on ``<db>.lock`` beside the
database, held while a run writes it; the OS drops it when the process dies. The lock file is
removed when the lock is released (`release_run_lock`), so a clean exit leaves no ``.lock``
file behind. Removing a lock file is safe only with care: a process that opened the file just
before it was unlinked could then lock the unlinked file while a third process locks a new one
at the same path, and both would believe they hold the lock. So the holder unlinks the file
*while it still holds the lock*, and a process that gets the lock checks afterwards that the
path still names the very file it locked (same device and inode); if not, it lost a race with
a release and tries again on the new file. Only a holder ever unlinks, so two processes never
hold the lock at once. A process killed while holding the lock leaves the file behind; the
next run on the database takes it (the OS released the lock) and removes it when it is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

from neuron_explainer.errors import FormatError, InvalidInputError, UsageError
from neuron_explainer.runs._schema import check_version, create_schema, read_version

__all__ = [
    "SQLITE_MAGIC",
    "DatabaseAccessError",
    "access_error",
    "check_writable",
    "connect",
    "inspect_database",
    "is_empty",
    "open_database",
    "raise_access",
    "release_run_lock",
    "take_run_lock",
]

SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first bytes of every SQLite database file."""

_LOCK_TRIES = 20
"""How often `take_run_lock` tries again after losing a race with a release (each loss means
another process took and released the lock in between, so this is never reached in practice)."""


class DatabaseAccessError(InvalidInputError):
    """The run database's path cannot be read or written by this process (a read-only folder
    or file, a missing permission); the message names the path and the cause.

    Attributes:
        path: the database's path.
        cause: what is wrong with it, e.g. ``"its folder /data is not writable"``.
    """

    def __init__(self, path: Path, cause: str, writing: bool = True) -> None:
        self.path = path
        self.cause = cause
        self.writing = writing
        if writing:
            advice = "choose a path this process can write, or fix the permissions"
        else:  # SQLite writes beside a WAL database even to read it (its -shm file)
            advice = "copy it to a folder this process can write, or fix the permissions"
        super().__init__(f"cannot use the run database {path}: {cause}; {advice}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.cause, self.writing))


def _writable(path: Path) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, os.W_OK, effective_ids=True)
    return os.access(path, os.W_OK)  # pragma: no cover - platforms without effective ids


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")  # pragma: no cover - the root always exists


def _cause(path: Path) -> str | None:
    """Why this process cannot write the database ``path`` (and the files SQLite keeps beside
    it), or ``None`` when the permissions look fine."""
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not _writable(folder) and folder != path.parent:
        return f"{folder} is not writable (its folder {path.parent} would be made there)"
    if not _writable(folder):
        return f"its folder {folder} is not writable ({path.name}-wal and -shm go beside it)"
    if path.exists() and not _writable(path):
        return "the file is read-only"
    return None


def check_writable(path: Path) -> None:
    """Check, writing nothing, that a run database may be created or written at ``path``.

    Raises:
        DatabaseAccessError: the file or its folder is not writable (or the folder would have
            to be made inside a file).
    """
    cause = _cause(path)
    if cause is not None:
        raise DatabaseAccessError(path, cause)


_ACCESS_PROBLEMS = ("readonly", "read-only", "unable to open", "permission")
"""Words of the SQLite errors that mean the file or its folder cannot be opened or written."""


def access_error(
    path: Path, exc: sqlite3.Error, *, writing: bool = True
) -> DatabaseAccessError | None:
    """The `DatabaseAccessError` for SQLite's error ``exc`` on ``path``, with the cause found
    from the permissions (else SQLite's own message); ``None`` when ``exc`` is not about
    access (e.g. ``database is locked``)."""
    if not any(word in str(exc).lower() for word in _ACCESS_PROBLEMS):
        return None
    return DatabaseAccessError(path, _cause(path) or str(exc), writing=writing)


def raise_access(path: Path, exc: sqlite3.Error, *, writing: bool = True) -> NoReturn:
    """Raise `access_error` for ``exc`` if it is about access, else ``exc`` itself."""
    error = access_error(path, exc, writing=writing)
    if error is None:
        raise exc
    raise error from None


def is_empty(path: Path) -> bool:
    """Whether ``path`` is an empty file that holds no database: 0 bytes, and no WAL file with
    content beside it."""
    try:
        if path.stat().st_size != 0:
            return False
        wal = path.with_name(path.name + "-wal")
        return not wal.exists() or wal.stat().st_size == 0
    except FileNotFoundError:
        return False


def _read_header(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseAccessError(path, exc.strerror or str(exc), writing=False) from None


def _version_read_only(path: Path) -> Any:
    """The meta ``schema_version`` of the SQLite file ``path``, read through a read-only
    connection (nothing is written to the file).

    Raises:
        FormatError: the file is damaged, or it has no ``meta`` table.
        DatabaseAccessError: SQLite cannot open it for reading here.
    """
    # Without a WAL or rollback journal beside it, the whole database is in the file and no
    # writer is changing it: read it as immutable, so SQLite creates no -wal or -shm file.
    journals = (path.with_name(path.name + suffix) for suffix in ("-wal", "-journal"))
    query = "mode=ro" if any(j.exists() for j in journals) else "mode=ro&immutable=1"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True, timeout=30.0)
    except sqlite3.OperationalError as exc:
        raise_access(path, exc, writing=False)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        has_meta = found.fetchone() is not None
        row = None
        if has_meta:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as exc:
        if access_error(path, exc) is None:
            raise FormatError(f"{path} is not a run database: {exc}") from None
        raise_access(path, exc, writing=False)
    except sqlite3.DatabaseError as exc:
        raise FormatError(f"{path} is not a run database: {exc}") from None
    finally:
        db.close()
    if not has_meta:
        raise FormatError(f"{path} is an SQLite file but not a run database (no meta table)")
    try:
        return None if row is None else json.loads(row[0])
    except (TypeError, ValueError):
        raise FormatError(f"{path} is not a run database: its schema_version is not JSON") from None


def inspect_database(path: Path, *, create: bool, to_read: bool = True) -> bool:
    """Decide what ``path`` holds before anything writes to it; returns whether a new
    database is to be created there (nothing at ``path``, or an empty file, and ``create``).

    Reads only: the file's first bytes and, for an SQLite file, its meta through a read-only
    connection. A file it rejects is left exactly as it was. Without ``to_read``, a database
    of an older schema that must be migrated before it can be read is accepted (to migrate
    it).

    Raises:
        InvalidInputError: nothing at ``path`` and not ``create``, or ``path`` is a folder.
        FormatError: an empty file and not ``create``; a file that is not SQLite; an SQLite
            file without the run database's meta; a run database of a version this library
            cannot read (newer, or older and to be migrated first).
        DatabaseAccessError: the file cannot be read here.
    """
    if not path.exists():
        if not create:
            raise InvalidInputError(f"no run database at {path}")
        return True
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a run database")
    if is_empty(path):
        if not create:
            raise FormatError(f"{path} is an empty file (0 bytes), not a run database")
        return True
    if _read_header(path) != SQLITE_MAGIC:
        raise FormatError(f"{path} is not a run database: it is not an SQLite file")
    check_version(path, _version_read_only(path), to_read=to_read)
    return False


def connect(path: Path) -> sqlite3.Connection:
    """Open ``path`` for reading and writing (creating the file if missing) in autocommit
    mode, WAL journal, ``synchronous=NORMAL``; call `inspect_database` first.

    Raises:
        DatabaseAccessError: the file or its folder cannot be written here.
        FormatError: SQLite finds the file damaged.
    """
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    except sqlite3.OperationalError as exc:
        raise_access(path, exc)
    with _closed_on_error(db, path):
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    db.row_factory = sqlite3.Row
    return db


@contextlib.contextmanager
def _closed_on_error(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Run the block on ``db``; on any exception close ``db`` and raise, SQLite's errors as ours.

    Raises:
        DatabaseAccessError: SQLite cannot open or write the file (`raise_access`).
        FormatError: SQLite finds the file damaged or not a database.
    """
    try:
        yield
    except sqlite3.OperationalError as exc:
        db.close()
        raise_access(path, exc)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise FormatError(f"{path} is not a run database: {exc}") from None
    except BaseException:
        db.close()
        raise


def open_database(path: Path, *, create: bool) -> tuple[sqlite3.Connection, int]:
    """Open the run database ``path`` for reading and writing, after `inspect_database` (with
    ``create``: a new one, with its schema, where there is none or an empty file); returns the
    connection and the file's schema version.

    Raises:
        InvalidInputError, FormatError, DatabaseAccessError: see `inspect_database` and
            `connect`.
    """
    new = inspect_database(path, create=create)  # reads only: rejects before any write
    if new:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            cause = _cause(path) or f"cannot make its folder: {exc}"
            raise DatabaseAccessError(path, cause) from None
    db = connect(path)
    with _closed_on_error(db, path):
        if new:
            create_schema(db, path)
        version = check_version(path, read_version(db))
    return db, version


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _open_lock_file(lock: Path) -> IO[str]:
    return open(lock, "a+")


def _same_file(handle: IO[str], lock: Path) -> bool:
    """Whether ``lock`` still names the file ``handle`` has open."""
    try:
        named = os.stat(lock)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def take_run_lock(path: Path) -> IO[str] | None:
    """Take the run lock of the database ``path``: an advisory ``flock`` on ``<path>.lock``
    (see the module docstring), held until `release_run_lock` (or the process dies); ``None``
    where there is no ``flock`` (Windows).

    Raises:
        UsageError: another process holds it.
        DatabaseAccessError: the lock file cannot be created beside the database.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return None
    lock = _lock_path(path)
    for _ in range(_LOCK_TRIES):
        try:
            handle = _open_lock_file(lock)
        except OSError as exc:
            raise DatabaseAccessError(path, _cause(path) or str(exc)) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UsageError(
                f"another run is using {path}; wait for it to finish (or stop it)"
            ) from None
        if _same_file(handle, lock):
            return handle
        handle.close()  # a holder released (and removed) the file in between: try the new one
    raise UsageError(f"cannot take the run lock of {path}: it keeps changing hands")


def release_run_lock(path: Path, handle: IO[str] | None) -> None:
    """Release the run lock taken by `take_run_lock`, removing the lock file first (while the
    lock is still held, so no other process can be holding it)."""
    if handle is None:
        return
    try:
        if _same_file(handle, _lock_path(path)):
            with contextlib.suppress(OSError):  # a read-only folder: leave the file
                _lock_path(path).unlink()
    finally:
        handle.close()
