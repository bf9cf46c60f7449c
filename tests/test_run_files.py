"""The run database's files: a path the process cannot write is refused with one typed error
naming it, and the run lock excludes a second process yet leaves no ``.lock`` file behind."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from _batch_worker import unit_record, units

from neuron_explainer import UsageError
from neuron_explainer.runs import DatabaseAccessError, RunStore, RunSummary, explain_neurons
from neuron_explainer.runs import _files as files
from neuron_explainer.runs.migration import migrate

V1_COLLECTION = Path(__file__).parent / "data" / "v1" / "collection"


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: immutable (``chattr +i``) when running as root,
    whom permissions do not stop, else mode 0o555."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    RunStore(folder / "existing.sqlite", create=True).close()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root, and this filesystem has no immutable folders")
    try:
        yield folder
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


def test_a_read_only_folder_is_refused_with_the_path_and_the_cause(read_only: Path) -> None:
    new = read_only / "run.sqlite"
    for attempt in (
        lambda: RunStore(new, create=True),
        lambda: RunStore(read_only / "sub" / "run.sqlite", create=True),
        lambda: RunStore(read_only / "existing.sqlite"),
        lambda: explain_neurons(records={u: unit_record(u) for u in units(2)}, db=new),
    ):
        with pytest.raises(DatabaseAccessError) as refused:
            attempt()
        assert refused.value.cause.startswith(
            (f"its folder {read_only} is not writable", f"{read_only} is not writable")
        )
        assert str(refused.value).startswith(f"cannot use the run database {read_only}")
        copy = pickle.loads(pickle.dumps(refused.value))
        assert str(copy) == str(refused.value) and copy.path == refused.value.path
    assert sorted(p.name for p in read_only.iterdir()) == ["existing.sqlite"]


def test_the_run_command_exits_2_naming_a_read_only_database_path(
    read_only: Path, tmp_path: Path
) -> None:
    collection = shutil.copytree(V1_COLLECTION, tmp_path / "collection")
    db = read_only / "run.sqlite"
    ran = subprocess.run(
        [sys.executable, "-m", "neuron_explainer", "run", str(collection), "--db", str(db),
         "--layers", "0", "--neurons", "0-1", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert ran.stderr.startswith(f"error: cannot use the run database {db}: its folder")
    assert "unexpected" not in ran.stderr and "OperationalError" not in ran.stderr
    assert not db.exists()


# --- the run lock ---------------------------------------------------------------------------


def test_a_clean_run_leaves_no_lock_file(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    summary = explain_neurons(records={u: unit_record(u) for u in units(3)}, db=db)
    assert isinstance(summary, RunSummary) and summary.done == 3
    migrate(db)
    assert list(tmp_path.glob("*.lock")) == []
    with RunStore(db) as store:
        store.lock()
        assert (tmp_path / "run.sqlite.lock").exists()  # while held, it is there
    assert list(tmp_path.glob("*.lock")) == []


HOLDER = """
import sys
from neuron_explainer.runs import RunStore
store = RunStore(sys.argv[1])
store.lock()
print("locked", flush=True)
sys.stdin.readline()
store.close()
"""


def test_two_processes_exclude_each_other(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    RunStore(db, create=True).close()
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            with RunStore(db) as store, pytest.raises(UsageError, match="another run is using"):
                store.lock()
            with pytest.raises(UsageError, match="another run is using"):
                explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
            with pytest.raises(UsageError, match="another run is using"):
                migrate(db)
        finally:
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=60) == 0
    assert list(tmp_path.glob("*.lock")) == []  # the holder removed it on its way out
    summary = explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
    assert isinstance(summary, RunSummary) and summary.done == 2


def test_a_lock_taken_on_a_file_just_removed_is_not_a_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the removal must survive: a process opens the lock file, the holder removes it
    and releases, a third process locks a new file at the path; the first one then gets its
    flock on the removed file, and must notice and try the new one (held: refused)."""
    db = tmp_path / "run.sqlite"
    lock_file = tmp_path / "run.sqlite.lock"
    first = RunStore(db, create=True)
    first.lock()
    stale = lock_file.open("a+")  # opened while the first holder still has the file
    first.close()  # removes the file and releases the lock
    assert not lock_file.exists()
    second = RunStore(db)
    second.lock()  # a new file at the same path
    opened: list[IO[str]] = []

    def open_stale_first(path: Path) -> IO[str]:
        opened.append(stale if not opened else path.open("a+"))
        return opened[-1]

    monkeypatch.setattr(files, "_open_lock_file", open_stale_first)
    with RunStore(db) as third, pytest.raises(UsageError, match="another run is using"):
        third.lock()
    assert len(opened) == 2 and stale.closed  # the stale file was locked, seen, let go
    second.close()
    assert not lock_file.exists()


def test_a_lock_left_by_a_killed_process_is_taken_and_removed(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    RunStore(db, create=True).close()
    dies_holding_it = (
        "import os, sys\nfrom neuron_explainer.runs import RunStore\n"
        "RunStore(sys.argv[1]).lock()\nos._exit(9)\n"
    )
    killed = subprocess.run([sys.executable, "-c", dies_holding_it, str(db)], timeout=60)
    assert killed.returncode == 9
    assert (tmp_path / "run.sqlite.lock").exists()  # the OS released the lock, not the file
    summary = explain_neurons(records={u: unit_record(u) for u in units(2)}, db=db)
    assert isinstance(summary, RunSummary) and summary.done == 2
    assert list(tmp_path.glob("*.lock")) == []


def test_a_lock_file_that_cannot_be_made_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: Path) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    db = tmp_path / "run.sqlite"
    monkeypatch.setattr(files, "_open_lock_file", refuse)
    with (
        RunStore(db, create=True) as store,
        pytest.raises(DatabaseAccessError, match=rf"run database {db}: .*Permission denied"),
    ):
        store.lock()
