"""A journal is created whole or not at all: a coordinator killed while it creates one (during
its start-up) leaves no SQLite file without tables that the next start would refuse.

Found by the 20-kill loop (test_journal_durability): a SIGKILL between SQLite writing the new
file's header and its schema's commit left "an SQLite database, but not a corral journal".
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import wait_until

from corral._journal import store

CREATOR = """
import sys
from pathlib import Path
from corral._journal import store
folder = Path(sys.argv[1])
i = 0
while True:
    store.check(folder / f"j{i}.corral", create=True)
    i += 1
    if i == 3:
        print("ready", flush=True)
"""


@pytest.mark.slow
def test_a_creator_sigkilled_at_random_moments_leaves_whole_journals_only(tmp_path: Path) -> None:
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    for kill in range(12):
        folder = tmp_path / f"k{kill}"
        folder.mkdir()
        proc = subprocess.Popen(
            [sys.executable, "-c", CREATOR, str(folder)], env=env, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        # a few more creations, then the kill lands somewhere inside one of them
        more = 3 + rng.randrange(5)
        wait_until(lambda f=folder, n=more: len(list(f.glob("j*.corral"))) >= n, "creations")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        journals = sorted(folder.glob("j*.corral"))
        assert journals
        for journal in journals:
            store.check(journal, create=False)  # whole: a JournalError otherwise
        drafts = list(folder.glob(".*.new"))
        # the next creation of a journal whose draft the killed process left removes it
        for draft in drafts:
            name = draft.name[1:].rsplit(".", 2)[0]
            store.check(folder / name, create=True)
            store.check(folder / name, create=False)
        assert not list(folder.glob(".*.new*"))


def test_a_creation_that_fails_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "run.corral"
    monkeypatch.setattr(store, "SCHEMA", store.SCHEMA + ";\nCREATE TABLE broken (")
    with pytest.raises(Exception, match=r"syntax|incomplete"):
        store.check(journal, create=True)
    assert not journal.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    store.check(journal, create=True)
    store.check(journal, create=False)


def test_a_draft_of_a_live_creator_is_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "run.corral"
    live = tmp_path / f".run.corral.{os.getppid()}.new"
    live.write_bytes(b"")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.corral.{dead.pid}.new"
    stale.write_bytes(b"")
    store.check(journal, create=True)
    assert live.exists() and not stale.exists()
