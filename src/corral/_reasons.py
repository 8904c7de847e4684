"""How a failure reads: an exception's reason lines, and the message of a ``BatchError``.

``BatchError``'s message and the summary table's reason column are both built from
``reason_lines``, so they keep and cut the same way:

- a reason keeps its lines: a ``ServiceError`` says on its first line only that the program
  did not start, and on the lines after it why (the program's last output, such as argparse's
  "the following arguments are required: --port"). Past ``max_lines``, lines are left out in
  the middle; the first and the last ones stay;
- a line is cut only when it is longer than ``LINE_CHARS``, and then in its middle: corral's
  errors end with the fix ("use `with corral.share(x) as h:` ..."), so the end always stays;
- the later lines of a reason are shown once: a failure whose later lines are those of one
  listed before it (but for numbers: ports, pids) says so in one line;
- a ``map`` item is shown by a short repr (``reprlib``: a list of a million numbers is not
  rendered in full to be cut).

A failed task is one that ``failed``, timed out or crashed; ``skipped`` tasks (``after=`` a task
that did not succeed) and ``cancelled`` ones are counted and named apart, as what they are.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._status import Status

if TYPE_CHECKING:
    from ._outcome import Outcome
    from ._report.report import Report

FAILURES_LISTED = 10
"""Failures a BatchError message lists; ``.report`` holds them all."""

REASON_LINES = 30
"""Lines of one failure's reason in a BatchError message (a ServiceError has up to 28)."""

MESSAGE_LINES = 150
"""Past this many lines, the next failures of a BatchError message get their first line only."""

LINE_CHARS = 1000
"""A longer line is cut in its middle."""

ITEM_CHARS = 80
"""The most a ``map`` item's repr takes in a message."""

KEYS_LISTED = 10
"""Keys of skipped or cancelled tasks a BatchError message names."""

FAILED = (Status.FAILED, Status.TIMEOUT, Status.CRASHED)

_DIGITS = re.compile(r"\d+")

_ENDED = {
    Status.OK: "succeeded",
    Status.FAILED: "failed",
    Status.TIMEOUT: "timed out",
    Status.CRASHED: "crashed (its worker died)",
    Status.CANCELLED: "was cancelled",
    Status.SKIPPED: "was skipped",
    Status.CACHED: "failed in an earlier run",
}


def ended(status: Status) -> str:
    """How a task ended, as the end of a sentence: ``f"its dependency 'a' {ended(s)}"``."""
    return _ENDED[status]


def reason_lines(error: BaseException | None, max_lines: int) -> list[str]:
    """``"Type: message"`` as lines: at most ``max_lines`` (the middle left out) of at most
    about ``LINE_CHARS`` characters each (cut in the middle). Empty for no error."""
    if error is None:
        return []
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not hide the failure itself
        text = "(its message could not be shown: str() raised)"
    name = type(error).__name__
    lines = f"{name}: {text}".splitlines() if text else [name]
    if len(lines) > max_lines:
        head = max(1, max_lines // 3)
        tail = max(1, max_lines - head - 1)
        left_out = len(lines) - head - tail
        lines = [*lines[:head], f"... ({left_out} lines left out)", *lines[-tail:]]
    return [_cut(line) for line in lines]


def _cut(line: str) -> str:
    if len(line) <= LINE_CHARS:
        return line
    head = LINE_CHARS // 4
    tail = LINE_CHARS - head
    return f"{line[:head]} [... {len(line) - head - tail} characters ...] {line[-tail:]}"


def short_repr(value: Any) -> str:
    """A repr of at most ``ITEM_CHARS`` characters that never renders a huge container."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = ITEM_CHARS
    try:
        text = shortener.repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} object; repr() raised>"
    return text if len(text) <= ITEM_CHARS else text[: ITEM_CHARS - 3] + "..."


def first_cause(report: Report) -> BaseException | None:
    """The exception of the first task that failed (else of the first that did not succeed):
    the ``__cause__`` of the BatchError, so that its traceback is shown."""
    for outcome in report.outcomes:
        if _failed(outcome) and outcome.error is not None:
            return outcome.error
    for outcome in report.outcomes:
        if not outcome.ok and outcome.error is not None:
            return outcome.error
    return None


def _failed(outcome: Outcome) -> bool:
    """Failed, timed out or crashed, in this run or (``cached``) in an earlier one."""
    status = outcome.status
    return status in FAILED or (status is Status.CACHED and outcome.error is not None)


def batch_message(report: Report, items: Sequence[Any] | None = None) -> str:
    """What a BatchError says. ``items``: the input of ``map``, whose keys are positions."""
    outcomes = report.outcomes
    failed = [o for o in outcomes if _failed(o)]
    skipped = [o for o in outcomes if o.status is Status.SKIPPED]
    cancelled = [o for o in outcomes if o.status is Status.CANCELLED]
    lines = [_headline(len(outcomes), len(failed), len(skipped), len(cancelled))]
    shown: dict[str, str] = {}  # the later lines of a reason already shown, by whom
    for outcome in failed[:FAILURES_LISTED]:
        who = _who(outcome, items)
        reason = reason_lines(outcome.error, REASON_LINES) or [outcome.status.value]
        if len(reason) > 1:
            # 20 tasks that failed because one server would not start: its output once
            later = _DIGITS.sub("#", "\n".join(reason[1:]))
            if later in shown:
                reason = [f"{reason[0]} [+{len(reason) - 1} lines, as for {shown[later]}]"]
            elif len(lines) + len(reason) > MESSAGE_LINES:
                reason = [f"{reason[0]} [+{len(reason) - 1} lines: see .report]"]
            else:
                shown[later] = repr(outcome.key)
        lines.append(f"  {who}: {outcome.status.value}: {reason[0]}")
        lines += [f"      {line}" for line in reason[1:]]
    if len(failed) > FAILURES_LISTED:
        lines.append(f"  ... and {len(failed) - FAILURES_LISTED} more failed (see .report)")
    if skipped:
        lines.append(f"  skipped, after a task that did not succeed: {_keys(skipped)}")
    if cancelled:
        lines.append(f"  cancelled: {_keys(cancelled)}")
    return "\n".join(lines)


def _headline(total: int, failed: int, skipped: int, cancelled: int) -> str:
    """``"3 of 168 tasks failed, 165 were skipped:"``: each status counted as itself."""
    counts = [(n, what) for n, what in ((failed, "failed"), (skipped, "skipped"),
              (cancelled, "cancelled")) if n] or [(0, "failed")]  # fmt: skip
    (n, what), rest = counts[0], counts[1:]
    return (
        f"{n} of {total} tasks {_verb(n, what)}"
        + "".join(f", {m} {_verb(m, w)}" for m, w in rest)
        + ":"
    )


def _verb(n: int, what: str) -> str:
    return what if what == "failed" else f"{'was' if n == 1 else 'were'} {what}"


def _who(outcome: Outcome, items: Sequence[Any] | None) -> str:
    """The task's key, and for ``map`` (keys are positions) its item."""
    key = outcome.key
    if items is not None and type(key) is int and 0 <= key < len(items):
        return f"{key!r} ({short_repr(items[key])})"
    return repr(key)


def _keys(outcomes: Sequence[Outcome]) -> str:
    shown = ", ".join(short_repr(o.key) for o in outcomes[:KEYS_LISTED])
    more = len(outcomes) - KEYS_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
