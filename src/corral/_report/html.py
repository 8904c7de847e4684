"""``Report.to_html(path)``: one self-contained HTML file that explains a run, offline.

Everything is drawn here, in Python, as static HTML and SVG: no script or style is fetched
(no CDN, no font, no image; the only script is a few lines that switch the timeline's
colours between status and group). The file opens from disk, in any browser, years later.

    section            from
    ─────────────────  ─────────────────────────────────────────────────────────────────────
    summary            counts, wall, utilisation, speedup, tasks/s, CPU, start-up, idle
    groups             Report.by_group(), when tasks have groups
    timeline           one SVG row per worker slot: its start-ups and one bar per attempt,
                       coloured by status or by group (a switch); a tooltip per bar
    utilisation        Report.concurrency(bins) ÷ workers, as an area over the run
    workers            each worker process: pid, start-up, how it ended; busy and idle time
    slowest tasks      Report.slowest()
    failures           each failed task: reason, full traceback, captured output and the
                       stack of a hung or crashed task when the Outcome or error has them
    captured output    tasks that succeeded but wrote something (when output is captured)

Size. Up to ``DETAILED_ATTEMPTS`` attempts the timeline has a bar (and a tooltip) per
attempt. Beyond, each row is cut into ``SLICES`` slices of time, each drawn once with the
share of it spent running tasks as its opacity and the colour of the status (or group) that
took most of it; attempts that did not succeed are still drawn one by one (up to
``DETAILED_ATTEMPTS``), so a failure never disappears in an aggregate. Failures listed in
full: ``FAILURES_SHOWN``, each text cut to ``TEXT_LIMIT`` characters (its end kept). So the
file stays well under 10 MB at 100,000 tasks (a test checks it).
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .._outcome import Outcome, Status
from .telemetry import idle_seconds, run_window

if TYPE_CHECKING:
    from .report import Report

DETAILED_ATTEMPTS = 5_000
SLICES = 600
FAILURES_SHOWN = 100
OUTPUTS_SHOWN = 50
SLOWEST_SHOWN = 20
TEXT_LIMIT = 20_000
PLOT_WIDTH = 1000
LABEL_WIDTH = 110
ROW_HEIGHT = 20
UTILISATION_BINS = 200

STATUS_COLOURS = {
    "ok": "#2e7d32",
    "failed": "#c62828",
    "timeout": "#ef6c00",
    "crashed": "#6a1b9a",
    "cancelled": "#9e9e9e",
    "skipped": "#bdbdbd",
    "cached": "#00838f",
}
GROUP_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
)  # fmt: skip

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:420px;font-size:12px;white-space:pre-wrap}
details{margin:6px 0;border:1px solid #e4e4e4;border-radius:4px;padding:4px 8px}
summary{cursor:pointer} .muted{color:#777} .legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
svg text{font:11px system-ui,sans-serif;fill:#333} .startup{fill:#b0bec5}
.row-bg{fill:#fafafa} .area{fill:#42a5f5;fill-opacity:.5;stroke:#1e88e5}
"""


def write_html(report: Report, path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(report))


def render(report: Report) -> str:
    groups = _group_index(report.outcomes)
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<link rel='icon' href='data:,'>",  # or the browser asks the server for /favicon.ico
        f"<title>corral report: {len(report.outcomes)} tasks</title>",
        f"<style>{CSS}{_colour_css(groups)}</style></head><body>",
        "<h1>corral run report</h1>",
        f"<div class='muted'>written {html.escape(time.strftime('%Y-%m-%d %H:%M:%S'))}</div>",
        _summary(report),
        _groups(report),
        _timeline(report, groups),
        _utilisation(report),
        _workers(report),
        _slowest(report),
        _failures(report),
        _outputs(report),
        f"<script>{SCRIPT}</script></body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


SCRIPT = """
document.querySelectorAll('input[name=colour]').forEach(function (input) {
  input.addEventListener('change', function () {
    document.getElementById('timeline').setAttribute('class', 'by-' + input.value);
  });
});
"""


def _colour_css(groups: dict[Hashable, int]) -> str:
    rules = [f".by-status .s-{s},.legend .s-{s}{{fill:{c};background:{c}}}"
             for s, c in STATUS_COLOURS.items()]  # fmt: skip
    for index in sorted(set(groups.values())):
        colour = GROUP_COLOURS[index % len(GROUP_COLOURS)]
        rules.append(
            f".by-group .g-{index},.legend .g-{index}{{fill:{colour};background:{colour}}}"
        )
    rules.append(".by-group .g-none{fill:#90a4ae}")
    return "\n".join(rules)


def _group_index(outcomes: Sequence[Outcome]) -> dict[Hashable, int]:
    index: dict[Hashable, int] = {}
    for o in outcomes:
        if o.group is not None and o.group not in index:
            index[o.group] = len(index)
    return index


# -- sections ---------------------------------------------------------------------------------


def _summary(report: Report) -> str:
    counts = {s.value: n for s, n in report.counts().items() if n}
    cpu = sum(a.cpu or 0.0 for _, _, a, _, _ in report._timed)
    startups = [s.seconds for s in report.worker_startup() if s.seconds is not None]
    idle = report.idle_seconds()
    rows = [
        ("tasks", f"{len(report.outcomes):,}"),
        *((f"&nbsp;&nbsp;{_badge(s)} {s}", f"{n:,}") for s, n in counts.items()),
        ("wall", _seconds(report.wall)),
        ("workers", str(report.workers)),
        ("utilisation", f"{100 * report.utilisation:.1f} %"),
        ("speedup", f"{report.speedup:.2f}&times;"),
        ("tasks per second", f"{report.tasks_per_second:,.1f}"),
        ("busy worker time", _seconds(report.busy_seconds)),
        ("CPU time (workers and children)", _seconds(cpu)),
        (
            "worker start-up (mean)",
            _seconds(sum(startups) / len(startups)) if startups else "&ndash;",
        ),
        ("idle worker time", _seconds(sum(idle.values())) if idle else "&ndash;"),
    ]
    body = "".join(f"<tr><th>{k}</th><td class='n'>{v}</td></tr>" for k, v in rows)
    return f"<h2 id='summary'>Summary</h2><table class='summary'>{body}</table>"


def _groups(report: Report) -> str:
    groups = report.by_group()
    if not any(g is not None for g in groups):
        return ""
    statuses = [s.value for s in Status if any(c[s.value] for c in groups.values())]
    head = "".join(f"<th class='n'>{s}</th>" for s in statuses)
    rows = "".join(
        f"<tr><td>{_e(g if g is not None else '(none)')}</td>"
        + "".join(f"<td class='n'>{c[s]:,}</td>" for s in statuses)
        + "</tr>"
        for g, c in groups.items()
    )
    return f"<h2 id='groups'>Groups</h2><table><tr><th>group</th>{head}</tr>{rows}</table>"


def _timeline(report: Report, groups: dict[Hashable, int]) -> str:
    start, end = _extent(report)
    scale = PLOT_WIDTH / (end - start) if end > start else 1.0
    attempts = report._timed
    seen = {a.worker for _, _, a, _, _ in attempts if a.worker is not None}
    seen |= {s.worker for s in report.worker_spans}
    # every slot gets a row, idle ones too; in the calling process there is only that one
    workers = sorted(seen if -1 in seen else seen | set(range(report.workers)))
    row_of = {w: i for i, w in enumerate(workers)}
    height = ROW_HEIGHT * len(workers) + 24
    out = [
        "<h2 id='timeline-title'>Timeline</h2>",
        "<div class='legend'>colour by: <label><input type='radio' name='colour' "
        "value='status' checked> status</label> <label><input type='radio' name='colour' "
        "value='group'> group</label> &nbsp; "
        + "".join(f"<span><i class='s-{s}'></i>{s}</span>" for s in STATUS_COLOURS)
        + "".join(f"<span><i class='g-{i}'></i>{_e(g)}</span>" for g, i in groups.items())
        + "<span><i class='startup' style='background:#b0bec5'></i>worker start-up</span></div>",
        f"<svg id='timeline' class='by-status' width='{LABEL_WIDTH + PLOT_WIDTH + 10}' "
        f"height='{height}' xmlns='http://www.w3.org/2000/svg'>",
    ]
    for w, i in row_of.items():
        y = i * ROW_HEIGHT
        label = "in-process" if w < 0 else f"worker {w}"
        out.append(
            f"<g class='row' data-worker='{w}'><rect class='row-bg' x='{LABEL_WIDTH}' y='{y}' "
            f"width='{PLOT_WIDTH}' height='{ROW_HEIGHT - 2}'/>"
            f"<text x='4' y='{y + ROW_HEIGHT - 6}'>{label}</text></g>"
        )

    def x(t: float) -> float:
        return round(LABEL_WIDTH + (t - start) * scale, 2)

    for s in report._startups:
        if s.ready is not None and s.worker in row_of:
            y = row_of[s.worker] * ROW_HEIGHT
            out.append(
                f"<rect class='startup' x='{x(s.started)}' y='{y}' "
                f"width='{max(0.5, x(s.ready) - x(s.started))}' height='{ROW_HEIGHT - 2}'>"
                f"<title>worker {s.worker} (pid {s.pid}) start-up: {_seconds(s.seconds)}</title>"
                "</rect>"
            )
    detailed = len(attempts) <= DETAILED_ATTEMPTS
    if detailed:
        shown = attempts
    else:
        out.extend(_aggregated(attempts, row_of, groups, start, scale))
        shown = [a for a in attempts if a[2].status is not Status.OK][:DETAILED_ATTEMPTS]
    for outcome, number, attempt, s0, f0 in shown:
        if attempt.worker not in row_of:
            continue
        y = row_of[attempt.worker] * ROW_HEIGHT
        cls = f"s-{attempt.status.value} {_group_class(outcome.group, groups)}"
        tip = (
            f"{_e(_short(outcome.key))} · attempt {number} · {attempt.status.value} · "
            f"{_seconds(f0 - s0)}" + (f" · {_e(attempt.error)}" if attempt.error else "")
        )
        out.append(
            f"<rect class='{cls}' x='{x(s0)}' y='{y + 1}' width='{max(0.5, x(f0) - x(s0))}' "
            f"height='{ROW_HEIGHT - 4}'><title>{tip}</title></rect>"
        )
    axis_y = len(workers) * ROW_HEIGHT + 14
    for k in range(6):
        t = start + (end - start) * k / 5
        left = x(t) - (40 if k == 5 else 0)
        out.append(f"<text x='{left}' y='{axis_y}'>{_seconds(t - start)}</text>")
    out.append("</svg>")
    if not detailed:
        out.append(
            f"<p class='muted'>{len(attempts):,} attempts: each row is cut into {SLICES} slices, "
            "drawn with the share of the slice spent running tasks as opacity and the colour "
            "of what took most of it; attempts that did not succeed are drawn one by one.</p>"
        )
    return "\n".join(out)


def _aggregated(
    attempts: list[Any], row_of: dict[int, int], groups: dict[Hashable, int], start: float,
    scale: float,
) -> Iterable[str]:  # fmt: skip
    width = PLOT_WIDTH / SLICES
    busy: dict[tuple[int, int], float] = {}
    what: dict[tuple[int, int], dict[str, float]] = {}
    classes: dict[tuple[str, Hashable], str] = {}
    for outcome, _, attempt, s0, f0 in attempts:
        row = row_of.get(attempt.worker)
        if row is None:
            continue
        status = attempt.status.value
        cls = classes.get((status, outcome.group))
        if cls is None:
            cls = f"s-{status} {_group_class(outcome.group, groups)}"
            classes[status, outcome.group] = cls
        a, b = (s0 - start) * scale, (f0 - start) * scale
        first, last = max(0, int(a / width)), min(SLICES - 1, int(b / width))
        for k in range(first, last + 1):
            if first == last:
                share = (b - a) / width
            else:
                share = max(min(b, (k + 1) * width) - max(a, k * width), 0.0) / width
            cell = (row, k)
            busy[cell] = busy.get(cell, 0.0) + share
            kinds = what.get(cell)
            if kinds is None:
                kinds = what[cell] = {}
            kinds[cls] = kinds.get(cls, 0.0) + share + 1e-9
    for (row, k), share in busy.items():
        cls = max(what[row, k].items(), key=lambda kv: kv[1])[0]
        yield (
            f"<rect class='{cls}' x='{round(LABEL_WIDTH + k * width, 2)}' "
            f"y='{row * ROW_HEIGHT + 1}' width='{round(width, 2)}' height='{ROW_HEIGHT - 4}' "
            f"fill-opacity='{round(min(1.0, max(0.15, share)), 2)}'/>"
        )


def _utilisation(report: Report) -> str:
    if report.wall <= 0 or not report.workers:
        return ""
    bins = report.concurrency(bins=UTILISATION_BINS)
    height = 120
    span = report.wall
    pts: list[tuple[float, float]] = [(LABEL_WIDTH, height)]
    for t, level in bins:
        share = min(1.0, level / report.workers)
        xa = LABEL_WIDTH + t / span * PLOT_WIDTH
        xb = LABEL_WIDTH + (t + span / UTILISATION_BINS) * PLOT_WIDTH / span
        y = height - share * (height - 10)
        pts += [(xa, y), (xb, y)]
    pts.append((LABEL_WIDTH + PLOT_WIDTH, height))
    poly = " ".join(f"{round(a, 1)},{round(b, 1)}" for a, b in pts)
    return (
        "<h2 id='utilisation'>Utilisation over time</h2>"
        f"<svg width='{LABEL_WIDTH + PLOT_WIDTH + 10}' height='{height + 20}' "
        "xmlns='http://www.w3.org/2000/svg'>"
        f"<text x='4' y='14'>100 %</text><text x='4' y='{height}'>0 %</text>"
        f"<polygon class='area' points='{poly}'/>"
        f"<text x='{LABEL_WIDTH}' y='{height + 14}'>0 s</text>"
        f"<text x='{LABEL_WIDTH + PLOT_WIDTH - 40}' y='{height + 14}'>{_seconds(span)}</text>"
        "</svg>"
        f"<p class='muted'>tasks running at once ÷ {report.workers} workers, "
        f"mean over {UTILISATION_BINS} slices of the run; overall "
        f"{100 * report.utilisation:.1f} %</p>"
    )


def _workers(report: Report) -> str:
    startups = {(s.worker, s.pid): s for s in report._startups}
    idle = idle_seconds(report)
    start, _ = run_window(report)
    rows = []
    for span in report.worker_spans:
        s = startups.get((span.worker, span.pid))
        how = span.how or "running"
        if span.exitcode is not None:
            how += f" (exit code {span.exitcode})"
        if span.signal is not None:
            how += f" (signal {span.signal})"
        rows.append(
            f"<tr><td>{span.worker}</td><td>{span.pid}</td>"
            f"<td class='n'>{_seconds(span.started - start)}</td>"
            f"<td class='n'>{_seconds(s.seconds if s else None)}</td>"
            f"<td>{_e(how)}</td></tr>"
        )
    busy_rows = "".join(
        f"<tr><td>{w}</td><td class='n'>{_seconds(b)}</td>"
        f"<td class='n'>{_seconds(idle.get(w, 0.0))}</td></tr>"
        for w, b in sorted(_busy(report).items())
    )
    return (
        "<h2 id='workers'>Workers</h2><table><tr><th>slot</th><th>pid</th><th class='n'>"
        "started at</th><th class='n'>start-up</th><th>ended</th></tr>"
        + "".join(rows)
        + "</table><p></p><table><tr><th>slot</th><th class='n'>busy</th><th class='n'>idle"
        "</th></tr>" + busy_rows + "</table>"
    )


def _busy(report: Report) -> dict[int, float]:
    from .telemetry import busy_by_worker

    return busy_by_worker(report)


def _slowest(report: Report) -> str:
    slow = report.slowest(SLOWEST_SHOWN)
    if not slow:
        return ""
    rows = "".join(
        f"<tr><td>{_e(_short(o.key))}</td><td>{_e(o.group) if o.group is not None else ''}</td>"
        f"<td class='n'>{_seconds(o.duration)}</td><td class='n'>{o.worker}</td>"
        f"<td class='n'>{o.attempts}</td><td>{_badge(o.status.value)} {o.status.value}</td>"
        f"<td class='n'>{_mib(o.history[-1].peak_rss if o.history else None)}</td></tr>"
        for o in slow
    )
    return (
        "<h2 id='slowest'>Slowest tasks</h2><table><tr><th>key</th><th>group</th>"
        "<th class='n'>duration</th><th class='n'>worker</th><th class='n'>attempts</th>"
        "<th>status</th><th class='n'>peak RSS</th></tr>" + rows + "</table>"
    )


def _failures(report: Report) -> str:
    failures = report.failures
    if not failures:
        return "<h2 id='failures'>Failures</h2><p>None.</p>"
    out = [f"<h2 id='failures'>Failures ({len(failures):,})</h2>"]
    for o in failures[:FAILURES_SHOWN]:
        error = o.error
        reason = f"{type(error).__name__}: {error}" if error is not None else o.status.value
        parts = [
            f"<details class='failure' open><summary>{_badge(o.status.value)} "
            f"<b>{_e(_short(o.key))}</b> · {o.status.value} · {_e(_short(reason, 200))}</summary>"
        ]
        if o.history:
            attempts = "; ".join(
                f"{n}: {a.status.value} on worker {a.worker} (pid {a.pid})"
                + (f", exit code {a.exitcode}" if a.exitcode is not None else "")
                + (f", signal {a.signal}" if a.signal is not None else "")
                for n, a in enumerate(o.history, 1)
            )
            parts.append(f"<div class='muted'>attempts: {_e(attempts)}</div>")
        parts.append(f"<div>{_e(reason)}</div>" if len(reason) > 200 else "")
        parts.append(_pre("traceback", o.traceback))
        parts.append(_pre("stack where it was stopped", getattr(error, "stack", None)))
        parts.append(_pre("stdout", getattr(o, "stdout", None)))
        parts.append(_pre("stderr", getattr(o, "stderr", None)))
        parts.append("</details>")
        out.append("".join(parts))
    if len(failures) > FAILURES_SHOWN:
        out.append(
            f"<p class='muted'>… and {len(failures) - FAILURES_SHOWN:,} more "
            "(Report.failures has them all).</p>"
        )
    return "\n".join(out)


def _outputs(report: Report) -> str:
    shown = []
    for o in report.outcomes:
        if not o.ok:
            continue
        out, err = getattr(o, "stdout", None), getattr(o, "stderr", None)
        if out or err:
            shown.append(
                f"<details><summary>{_e(_short(o.key))}</summary>"
                f"{_pre('stdout', out)}{_pre('stderr', err)}</details>"
            )
            if len(shown) >= OUTPUTS_SHOWN:
                break
    if not shown:
        return ""
    return "<h2 id='output'>Captured output</h2>" + "\n".join(shown)


# -- small pieces -----------------------------------------------------------------------------


def _extent(report: Report) -> tuple[float, float]:
    start, end = run_window(report)
    for s in report.worker_spans:
        start = min(start, s.started)
    for _, _, _, s0, f0 in report._timed:
        start, end = min(start, s0), max(end, f0)
    return start, end


def _pre(title: str, text: Any) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text)
    if len(text) > TEXT_LIMIT:
        text = f"[… {len(text) - TEXT_LIMIT:,} characters cut …]\n" + text[-TEXT_LIMIT:]
    return f"<div class='muted'>{title}</div><pre class='{title.split()[0]}'>{_e(text)}</pre>"


def _badge(status: str) -> str:
    return f"<span class='legend'><i class='s-{status}'></i></span>"


def _group_class(group: Hashable | None, groups: dict[Hashable, int]) -> str:
    return "g-none" if group is None else f"g-{groups[group]}"


def _short(value: Any, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: float | None) -> str:
    if value is None:
        return "&ndash;"
    if value < 0:
        return "-" + _seconds(-value)
    if value == 0:
        return "0 s"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def _mib(value: int | None) -> str:
    return "&ndash;" if value is None else f"{value / 2**20:.1f} MiB"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
