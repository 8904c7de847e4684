"""The journal (``journal=``): resume, identity, integrity, the writers' lock, the reader.

Identity and integrity run on the serial backend (no processes needed to prove them);
resume and the reader run real worker processes too. Durability under SIGKILL and Ctrl-C
is ``test_journal_durability.py``; the store's kill-point property is
``test_journal_store.py``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest
from _procs import kill_script, run_script, wait_until

import corral
from corral import JournalError, JournalLocked, Status, Task

SCRIPTS = Path(__file__).parent / "scripts"


def double(x):
    return 2 * x


def also_double(x):
    return 2 * x


def counted(x, marker_dir):
    """Leaves a marker per call, so a test can count what ran."""
    Path(marker_dir, f"ran-{x}-{os.urandom(4).hex()}").touch()
    if x == "fail" or x == 7:
        raise ValueError(f"bad {x}")
    return x * 3 if isinstance(x, int) else x


def runs(marker_dir):
    return sorted(p.name.split("-")[1] for p in Path(marker_dir).glob("ran-*"))


def serial(**options):
    return dict(backend="serial", **options)


# -- resume ------------------------------------------------------------------------------------
def test_map_resume_takes_successes_reruns_failures(tmp_path):
    journal, marks = tmp_path / "run.corral", tmp_path / "m"
    marks.mkdir()
    items = [(i, str(marks)) for i in range(10)]
    fn = lambda pair: counted(*pair)  # noqa: E731 - a __main__-style function, by value
    first = corral.map(fn, items, journal=journal, workers=2, errors="return")
    assert first[7].status == Status.FAILED and first[:3] == [0, 3, 6]
    assert len(runs(marks)) == 10
    second = corral.map(fn, items, journal=journal, workers=2, errors="return")
    assert second[:7] == first[:7] and second[8:] == first[8:]
    assert len(runs(marks)) == 11  # only the failure ran again
    assert runs(marks).count("7") == 2


def test_rerun_failed_false_keeps_journaled_failures(tmp_path):
    journal, marks = tmp_path / "run.corral", tmp_path / "m"
    marks.mkdir()
    tasks = [Task(counted, (x, str(marks)), key=f"t{x}") for x in (1, 7)]
    corral.run(tasks, journal=journal, errors="return", **serial())
    report = corral.run(tasks, journal=journal, errors="return", rerun_failed=False, **serial())
    assert [o.status for o in report.outcomes] == [Status.CACHED, Status.CACHED]
    assert report.outcomes[0].ok and report.outcomes[0].value == 3
    failed = report.outcomes[1]
    assert not failed.ok and isinstance(failed.error, ValueError)
    assert "bad 7" in str(failed.error) and "ValueError" in failed.traceback
    assert len(runs(marks)) == 2  # nothing ran the second time
    assert report.journal.cached == 2


def test_run_resumes_by_key_whatever_the_order(tmp_path):
    journal, marks = tmp_path / "run.corral", tmp_path / "m"
    marks.mkdir()
    tasks = [Task(counted, (x, str(marks)), key=f"t{x}") for x in range(5)]
    corral.run(tasks, journal=journal, **serial())
    report = corral.run(list(reversed(tasks)), journal=journal, **serial())
    assert [o.key for o in report.outcomes] == [f"t{x}" for x in reversed(range(5))]
    assert [o.value for o in report.outcomes] == [x * 3 for x in reversed(range(5))]
    assert all(o.status is Status.CACHED for o in report.outcomes)
    assert len(runs(marks)) == 5


def test_cached_value_is_the_journaled_value(tmp_path):
    journal = tmp_path / "run.corral"
    items = [{"a": [1, 2.5, None]}, ("x", b"y"), 10**30]
    first = corral.map(_identity, items, journal=journal, workers=2)
    report = corral.run([Task(_identity, (x,)) for x in items], journal=tmp_path / "t.corral")
    again = corral.map(_identity, items, journal=journal, workers=2)
    assert first == again == items and report.ok


def _identity(x):
    return x


def test_imap_resume_puts_journaled_results_in_place(tmp_path):
    journal, marks = tmp_path / "run.corral", tmp_path / "m"
    marks.mkdir()
    items = [(i, str(marks)) for i in range(30) if i != 7]
    first = list(corral.imap(_counted_pair, items, journal=journal, workers=2))
    more = items + [(i, str(marks)) for i in range(30, 40)]
    second = list(corral.imap(_counted_pair, more, journal=journal, workers=2))
    assert second[: len(first)] == first
    assert second == [i * 3 for i, _ in more]
    assert len(runs(marks)) == len(more)  # the first 29 ran once, the 10 new ones once
    unordered = list(corral.imap(_counted_pair, more, journal=journal, ordered=False, workers=2))
    assert sorted(unordered) == sorted(second)
    assert len(runs(marks)) == len(more)


def _counted_pair(pair):
    return counted(*pair)


def test_large_results_live_beside_the_journal(tmp_path):
    journal = tmp_path / "run.corral"
    first = corral.map(_big, [1, 2], journal=journal, chunksize=1, **serial())
    files = list((tmp_path / "run.corral.d").iterdir())
    assert len(files) == 2
    assert corral.map(_big, [1, 2], journal=journal, **serial()) == first
    assert journal.stat().st_size < 300_000


def _big(x):
    return bytes([x]) * 400_000


def test_pool_journals_each_call_in_turn(tmp_path):
    journal = tmp_path / "run.corral"
    with corral.Pool(2, journal=journal) as pool:
        assert pool.map(double, range(5)) == [0, 2, 4, 6, 8]
        assert pool.map(also_double, range(3)) == [0, 2, 4]
    with corral.Pool(2, journal=journal) as pool:  # the same calls in the same order: cached
        assert pool.map(double, range(5)) == [0, 2, 4, 6, 8]
        assert pool.map(also_double, range(3)) == [0, 2, 4]
    view = corral.open_journal(journal)
    assert view.counts["ok"] == 8
    assert [kind for _, kind, _ in view.calls] == ["map", "map"]


def test_calls_journaled_in_another_order_are_refused(tmp_path):
    journal = tmp_path / "run.corral"
    with corral.Pool(backend="serial", journal=journal) as pool:
        pool.map(double, range(5))
    with (
        corral.Pool(backend="serial", journal=journal) as pool,
        pytest.raises(JournalError, match="call #0 of the journaled run was a map"),
    ):
        pool.run([Task(double, (x,)) for x in range(5)])


# -- identity ----------------------------------------------------------------------------------
def test_changed_arguments_run_again_and_are_named(tmp_path, caplog):
    journal = tmp_path / "run.corral"
    corral.run([Task(double, (x,), key=x) for x in range(4)], journal=journal, **serial())
    report = corral.run(
        [Task(double, (x if x != 2 else 20,), key=x) for x in range(4)],
        journal=journal,
        **serial(),
    )
    assert [o.status for o in report.outcomes] == [Status.CACHED] * 2 + [Status.OK, Status.CACHED]
    assert report.outcomes[2].value == 40
    assert report.journal.changed == ((2, "arguments"),)
    assert "2 (arguments)" in caplog.text


def test_renamed_function_changes_identity_by_default(tmp_path):
    journal = tmp_path / "run.corral"
    corral.run([Task(double, (x,), key=x) for x in range(3)], journal=journal, **serial())
    mixed = [Task(also_double if x == 0 else double, (x,), key=x) for x in range(3)]
    report = corral.run(mixed, journal=journal, **serial())
    assert report.journal.changed == ((0, "function"),)
    assert report.outcomes[0].status is Status.OK


def test_journal_code_ignore_keeps_results_across_renames(tmp_path):
    journal = tmp_path / "run.corral"
    corral.map(double, range(3), journal=journal, journal_code="ignore", **serial())
    report_values = corral.map(
        also_double, range(3), journal=journal, journal_code="ignore", **serial()
    )
    assert report_values == [0, 2, 4]
    assert corral.open_journal(journal).counts["ok"] == 3


def test_a_wholly_different_batch_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    corral.map(double, range(3), journal=journal, **serial())
    before = journal.read_bytes()
    with pytest.raises(JournalError, match=r"run\.corral.*does not match.*another batch"):
        corral.map(also_double, [10, 11, 12], journal=journal, **serial())
    with pytest.raises(JournalError, match=r"run\.corral.*was a map.*this one is a tasks"):
        corral.run([Task(double, (1,))], journal=journal, **serial())
    assert corral.open_journal(journal).counts["ok"] == 3
    assert len(journal.read_bytes()) >= len(before)


def test_journal_code_source_sees_body_edits(tmp_path, monkeypatch):
    module = tmp_path / "jmod.py"
    module.write_text("def f(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import jmod  # type: ignore[import-not-found]

    source, named = tmp_path / "src.corral", tmp_path / "name.corral"

    def tasks():
        return [Task(jmod.f, (x,), key=x) for x in (1, 2)]

    corral.run(tasks(), journal=source, journal_code="source", **serial())
    assert corral.map(jmod.f, [1, 2], journal=named, **serial()) == [2, 3]
    module.write_text("def f(x):\n    return x + 100\n")
    importlib.reload(jmod)
    sys.modules.pop("jmod", None)
    report = corral.run(tasks(), journal=source, journal_code="source", **serial())
    assert [o.value for o in report.outcomes] == [101, 102]  # the body changed: they ran
    assert report.journal.changed == ((1, "function"), (2, "function"))
    # "name" (default): an edited body keeps the journaled results
    assert corral.map(jmod.f, [1, 2], journal=named, **serial()) == [2, 3]


def test_unstable_arguments_are_named_before_any_work(tmp_path):
    journal = tmp_path / "run.corral"
    with pytest.raises(corral.ConfigError, match=r"task 1 .*set of strings.*journal_inputs"):
        corral.map(len, [{1, 2}, {"a", "b"}], journal=journal, **serial())
    with pytest.raises(corral.ConfigError, match=r"task 0 .*do not pickle.*journal_inputs"):
        corral.map(callable, [lambda: 1], journal=journal, **serial())
    assert corral.map(
        len, [{1, 2}, {"a", "b"}], journal=journal, journal_inputs="key", **serial()
    ) == [2, 2]


def test_bad_journal_options_are_config_errors(tmp_path):
    with pytest.raises(corral.ConfigError, match="journal_code"):
        corral.map(double, [1], journal=tmp_path / "j", journal_code="body")
    with pytest.raises(corral.ConfigError, match="journal must be a file"):
        corral.map(double, [1], journal=tmp_path)
    with pytest.raises(corral.ConfigError, match="rerun_failed"):
        corral.map(double, [1], journal=tmp_path / "j", rerun_failed="yes")


# -- integrity ---------------------------------------------------------------------------------
def _refused(journal, match):
    before = journal.read_bytes()
    with pytest.raises(JournalError, match=match) as caught:
        corral.map(double, range(3), journal=journal, **serial())
    assert str(journal) in str(caught.value)
    assert journal.read_bytes() == before  # never overwritten
    with pytest.raises(JournalError, match=match):
        corral.open_journal(journal)


def test_a_foreign_file_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    journal.write_text("my thesis, chapter 1\n")
    _refused(journal, "not a corral journal .not an SQLite database")


def test_a_foreign_sqlite_database_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    with sqlite3.connect(journal) as conn:
        conn.execute("CREATE TABLE accounts(id INTEGER, balance REAL)")
    _refused(journal, "not a corral journal .it has no corral meta table; tables: accounts")


def test_a_truncated_journal_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    corral.map(double, range(2000), journal=journal, **serial())
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 2])
    _refused(journal, "truncated")


def test_a_damaged_journal_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    corral.map(double, range(2000), journal=journal, **serial())
    data = bytearray(journal.read_bytes())
    for i in range(4096 + 100, len(data) - 100, 997):  # garbage over pages past the first
        data[i : i + 40] = b"\xff" * 40
    journal.write_bytes(bytes(data))
    _refused(journal, "damaged")


def test_a_journal_of_another_format_version_is_refused(tmp_path):
    journal = tmp_path / "run.corral"
    corral.map(double, range(3), journal=journal, **serial())
    with sqlite3.connect(journal) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
    _refused(journal, "written in journal format v99 .by corral .*reads format v1")


def test_a_journal_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(JournalError, match=r"nowhere/run\.corral: cannot be written"):
        corral.map(double, [1], journal=tmp_path / "nowhere" / "run.corral", **serial())


def test_open_journal_of_a_missing_file(tmp_path):
    with pytest.raises(JournalError, match="no such journal"):
        corral.open_journal(tmp_path / "nope.corral")


# -- concurrency -------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    journal = tmp_path / "run.corral"
    proc = run_script(SCRIPTS / "journal_holder.py", journal)
    try:
        wait_until(lambda: (tmp_path / "run.corral.ready").exists(), "the holder", proc=proc)
        with pytest.raises(JournalLocked, match=rf"run\.corral is being written .*pid {proc.pid}"):
            corral.Pool(1, journal=journal)
        with pytest.raises(JournalLocked):
            corral.map(double, [1], journal=journal, **serial())
        assert corral.open_journal(journal).counts.get("ok", 0) == 3  # reading is fine
    finally:
        kill_script(proc, tmp_path)
    # the holder is gone (killed): its lock went with it ("ignore": its double is __main__'s)
    assert corral.map(double, range(3), journal=journal, journal_code="ignore", **serial()) == [
        0,
        2,
        4,
    ]


def test_a_reader_sees_consistent_snapshots_while_a_run_writes(tmp_path):
    journal = tmp_path / "run.corral"
    proc = run_script(SCRIPTS / "journal_batch.py", journal, tmp_path / "m", 600, "slow")
    seen = []
    try:
        wait_until(lambda: journal.exists() and journal.stat().st_size, "the journal", proc=proc)
        while proc.poll() is None or not seen:
            try:
                view = corral.open_journal(journal)
            except JournalError:  # created but its schema not committed yet
                continue
            outcomes = view.outcomes
            ok = [o for o in outcomes if o.status is Status.OK]
            assert view.counts.get("ok", 0) == len(ok)
            assert all(o.value == o.key * 2 for o in ok)  # whole rows, never half of one
            seen.append(len(ok))
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        kill_script(proc, tmp_path)
    assert seen == sorted(seen)  # committed results never disappear
    assert corral.open_journal(journal).counts["ok"] == 600
    assert len(set(seen)) > 2  # it did see the run in progress


# -- durable before reported -------------------------------------------------------------------
def test_map_returns_only_journaled_results(tmp_path):
    journal = tmp_path / "run.corral"
    with corral.Pool(2, journal=journal) as pool:
        for n in (1, 50, 500):
            pool.map(double, range(n))
            # the pool (and its writer) still runs: what map returned is committed already
            assert corral.open_journal(journal).counts["ok"] >= n
        assert pool._journal.stats.commits >= 1


def test_imap_yields_only_journaled_results(tmp_path):
    journal = tmp_path / "run.corral"
    seen = 0
    with corral.Pool(2, journal=journal) as pool:
        for value in pool.imap(double, range(40), ordered=False):
            seen += 1
            assert value % 2 == 0
            view = corral.open_journal(journal)
            assert view.counts["ok"] >= seen
            assert value in {o.value for o in view.outcomes}


def test_a_fully_resumed_run_reports_no_busy_time(tmp_path):
    journal = tmp_path / "run.corral"
    tasks = [corral.Task(abs, (-i,), key=i) for i in range(6)]
    first = corral.run(tasks, workers=2, journal=journal)
    again = corral.run(tasks, workers=2, journal=journal)
    assert first.busy_seconds > 0
    assert [o.status for o in again.outcomes] == [corral.Status.CACHED] * 6
    # the cached tasks ran in the first run: this one was not busy
    assert again.busy_seconds == 0 and again.utilisation == 0
