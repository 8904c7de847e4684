"""The machine description and the markdown report, rendered from the raw results."""

from __future__ import annotations

import hashlib
import importlib.metadata
import multiprocessing
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("corral", "cloudpickle", "psutil", "numpy", "joblib", "loky", "mpire", "pebble")
WORKERS = 2


# -- the machine -------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        ).stdout.rstrip("\n")
    except (OSError, subprocess.SubprocessError):
        return ""


def tree_hash(root: Path) -> str:
    """A short hash of the files under ``root`` (names and contents; caches left out)."""
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def describe_machine(repo: Path) -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
         if ln.startswith("model name")),
        platform.processor() or "unknown CPU",
    )  # fmt: skip
    mem_kb = next(
        (int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines()
         if ln.startswith("MemTotal")),
        0,
    )  # fmt: skip
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import corral

        corral_cpus = corral.cpu_count()
    except Exception:  # pragma: no cover - reported, not fatal
        corral_cpus = None
    dirty = [ln[3:] for ln in _git(repo, "status", "--porcelain", "--", "src").splitlines()]
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "corral_cpu_count": corral_cpus,
        "cpu": cpu,
        "mem_gib": mem_kb / 2**20,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "mp_default": multiprocessing.get_start_method(),
        "versions": versions,
        "commit": _git(repo, "rev-parse", "--short", "HEAD"),
        "src_dirty": dirty,
        "load_start": os.getloadavg(),
    }


# -- formatting --------------------------------------------------------------------------------


def _sig(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def ftime(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{_sig(s * 1e6)} µs"
    if s < 1:
        return f"{_sig(s * 1e3)} ms"
    return f"{_sig(s)} s"


def frange(lo: float, hi: float, fmt: Any) -> str:
    return f"{fmt(lo)}\u2013{fmt(hi)}"


def frate(x: float) -> str:
    return f"{x:,.0f}"


def fratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.2f}" if x < 100 else f"{x:,.0f}"


def fpct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def table(
    headers: list[str], rows: list[list[str]], right_from: int = 1, left_last: bool = False
) -> list[str]:
    """A markdown table; columns from ``right_from`` on are right-aligned (numbers), except
    the last one with ``left_last`` (a note)."""
    align = ["---" if i < right_from else "---:" for i in range(len(headers))]
    if left_last:
        align[-1] = "---"
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


# -- statistics over one contender's repetitions -----------------------------------------------


class Rows:
    """One scenario's contenders, with the values of their successful repetitions."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.scenario = scenario
        self.contenders = scenario["contenders"]
        self.by_key = {c["key"]: c for c in self.contenders}
        self.baseline = scenario["baseline"]

    def values(self, key: str, field: str) -> list[float]:
        return [r["result"][field] for r in self.by_key[key]["records"]
                if "result" in r and r["result"].get(field) is not None]  # fmt: skip

    def med(self, key: str, field: str) -> float | None:
        vals = self.values(key, field)
        return statistics.median(vals) if vals else None

    def spread(self, key: str, field: str, fmt: Any) -> str:
        vals = self.values(key, field)
        return frange(min(vals), max(vals), fmt) if vals else "—"

    def n(self, key: str) -> int:
        return len(self.values(key, "wall" if self.scenario["scenario"] != "S4" else "first"))

    def failures(self, key: str) -> list[str]:
        return [r["error"] for r in self.by_key[key]["records"] if "error" in r]

    def keys(self, kind: str | None = None) -> list[str]:
        return [c["key"] for c in self.contenders if kind is None or c["kind"] == kind]

    def label(self, key: str) -> str:
        return self.by_key[key]["label"]


def _label_cell(c: dict[str, Any]) -> str:
    name = f"**{c['label']}**" if c["kind"] == "corral" else c["label"]
    return name


# -- S1 ----------------------------------------------------------------------------------------


def s1_rates(rows: Rows, key: str) -> list[float]:
    return [r["result"]["n"] / r["result"]["wall"]
            for r in rows.by_key[key]["records"] if "result" in r]  # fmt: skip


def render_s1(sc: dict[str, Any]) -> list[str]:
    rows = Rows(sc)
    n = sc["params"]["n"]
    base = rows.med(rows.baseline, "wall")
    out = [
        f"## S1 — dispatch overhead: {n:,} trivial tasks f(x)=x+1 (warm pool; start-up excluded)",
        "",
        "The pool is created and warmed with one map of 100 items before the timed map; "
        "results are checked against the expected list. tasks/s = "
        f"{n:,} / wall of the timed map.",
        "",
    ]
    body = []
    for c in rows.contenders:
        k = c["key"]
        rates = s1_rates(rows, k)
        if not rates:
            body.append([_label_cell(c), c["start_method"], "failed", "", "", "", "0"])
            continue
        wall = rows.med(k, "wall")
        body.append([
            _label_cell(c), c["start_method"], frate(statistics.median(rates)),
            frange(min(rates), max(rates), frate), ftime(wall),
            fratio(wall / base) if base and wall else "—", str(len(rates)),
        ])  # fmt: skip
    out += table(["contender", "start method", "tasks/s (median)", "min\u2013max tasks/s",
                  "wall median", "\u00d7 serial time", "n"], body, right_from=2)  # fmt: skip
    return out


# -- S2 ----------------------------------------------------------------------------------------


def render_s2(sc: dict[str, Any]) -> list[str]:
    rows = Rows(sc)
    p = sc["params"]
    base = rows.med(rows.baseline, "wall")
    base_start = rows.med(rows.baseline, "startup") or 0.0
    out = [
        f"## S2 — CPU-bound scaling: {p['tasks']} tasks \u00d7 ~{p['calibrated_s'] * 1e3:.0f} ms "
        "pure Python (warm pool; start-up excluded)",
        "",
        f"Task: `burn(item)`, {p['n_turns']:,} loop turns = {p['calibrated_s'] * 1e3:.1f} ms in "
        "the driver process at calibration; items `n_turns*1000+i`, all different. "
        f"Speedup = serial row's median wall / this row's; efficiency = speedup / {WORKERS}. "
        f"Paired efficiency = ({p['tasks']} \u00d7 per-task time of 10+10 serial calls in the same "
        f"process just before and after the batch) / ({WORKERS} \u00d7 wall), median over "
        "repetitions: it cancels most CPU-speed drift (the serial row, ideally 50%, shows the "
        "method's own error). Those 20 serial results are also compared with the batch's. "
        "'Incl. start-up' adds pool creation + warm-up to the wall.",
        "",
    ]
    body = []
    for c in rows.contenders:
        k = c["key"]
        wall = rows.med(k, "wall")
        if wall is None:
            body.append([_label_cell(c), c["start_method"], "failed", "", "", "", "", "", "0"])
            continue
        start = rows.med(k, "startup") or 0.0
        speedup = base / wall if base else None
        incl = (base + base_start) / (wall + start) if base else None
        body.append([
            _label_cell(c), c["start_method"], ftime(wall), rows.spread(k, "wall", ftime),
            f"{speedup:.2f}" if speedup else "—", fpct(speedup / WORKERS if speedup else None),
            fpct(rows.med(k, "paired_efficiency")),
            rows.spread(k, "paired_efficiency", fpct),
            f"{incl:.2f}" if incl else "—", str(rows.n(k)),
        ])  # fmt: skip
    out += table(["contender", "start method", "wall median", "min\u2013max",
                  f"speedup vs serial (ideal {WORKERS})", "efficiency", "paired efficiency",
                  "paired min\u2013max", "speedup incl. start-up", "n"],
                 body, right_from=2)  # fmt: skip
    return out


# -- S4 ----------------------------------------------------------------------------------------


def render_s4(sc: dict[str, Any]) -> list[str]:
    rows = Rows(sc)
    base = rows.med(rows.baseline, "first")
    out = [
        "## S4 — start-up: create pool → first result of a trivial task; then shut down",
        "",
        "Each repetition is a fresh process with the library already imported. 'Pool processes' "
        "= descendants right after the first result, not counting multiprocessing's fork server "
        "and resource tracker nor loky's resource tracker (they stay until the parent exits); "
        "'left' = such processes still alive 0.2 s after shutdown returned (max over "
        "repetitions). Total = start → first result + shutdown.",
        "",
    ]
    body = []
    for c in rows.contenders:
        k = c["key"]
        first = rows.med(k, "first")
        if first is None:
            body.append([_label_cell(c), c["start_method"], "failed"] + [""] * 6 + ["0", ""])
            continue
        totals = [r["result"]["first"] + (r["result"]["shutdown"] or 0.0)
                  for r in c["records"] if "result" in r]  # fmt: skip
        left = max(rows.values(k, "left"))
        procs = sorted(set(rows.values(k, "pool_processes")))
        body.append([
            _label_cell(c), c["start_method"], ftime(first), rows.spread(k, "first", ftime),
            fratio(first / base) if base else "—", ftime(rows.med(k, "shutdown")),
            ftime(statistics.median(totals)), "/".join(str(p) for p in procs), str(left),
            str(rows.n(k)), c["note"],
        ])  # fmt: skip
    out += table(["contender", "start method", "start → first (median)", "min\u2013max",
                  "\u00d7 baseline", "shutdown (median)", "total (median)", "pool processes",
                  "left after shutdown", "n", "note"], body, right_from=2,
                 left_last=True)  # fmt: skip
    return out


# -- targets -----------------------------------------------------------------------------------


def _overlap(a: list[float], b: list[float]) -> bool:
    return bool(a and b) and min(a) <= max(b) and min(b) <= max(a)


def targets(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    body: list[list[str]] = []
    if "S1" in scenarios:
        rows = Rows(scenarios["S1"])
        peers = {k: s1_rates(rows, k) for k in rows.keys("peer") if s1_rates(rows, k)}
        best = max(peers, key=lambda k: statistics.median(peers[k]), default=None)
        for key in ("corral-auto", "corral-auto-fork"):
            mine = s1_rates(rows, key) if key in rows.by_key else []
            if not mine or best is None:
                continue
            ratio = statistics.median(mine) / statistics.median(peers[best])
            verdict = "yes" if ratio >= 1 else "no"
            if ratio < 1 and _overlap(mine, peers[best]):
                verdict = "no (ranges overlap: within noise)"
            body.append([
                "S1: throughput ≥ fastest peer's best setting", rows.label(key),
                f"{frate(statistics.median(mine))} tasks/s",
                f"{rows.label(best)}: {frate(statistics.median(peers[best]))} tasks/s",
                f"{ratio:.2f}\u00d7 peer", verdict,
            ])  # fmt: skip
    if "S2" in scenarios:
        rows = Rows(scenarios["S2"])
        base = rows.med(rows.baseline, "wall")
        peers = {k: rows.med(k, "wall") for k in rows.keys("peer") if rows.med(k, "wall")}
        best = min(peers, key=lambda k: peers[k], default=None)
        for key in ("corral-auto", "corral-auto-fork"):
            wall = rows.med(key, "wall") if key in rows.by_key else None
            if wall is None or not base:
                continue
            eff = base / wall / WORKERS
            paired = rows.med(key, "paired_efficiency") or 0.0
            peer_txt = "—"
            if best is not None:
                peer_txt = (f"{rows.label(best)}: {fpct(base / peers[best] / WORKERS, 1)}, "
                            f"paired {fpct(rows.med(best, 'paired_efficiency'), 1)}")  # fmt: skip
            verdict = "yes" if eff >= 0.95 and paired >= 0.95 else (
                "paired only" if paired >= 0.95 else ("plain only" if eff >= 0.95 else "no"))
            body.append([
                "S2: parallel efficiency ≥ 95%", rows.label(key),
                f"{fpct(eff, 1)} (paired {fpct(paired, 1)})", peer_txt,
                f"{peers[best] / wall:.2f}\u00d7 best peer's speed" if best else "—", verdict,
            ])  # fmt: skip
    if "S4" in scenarios:
        rows = Rows(scenarios["S4"])
        peers = {k: rows.values(k, "first") for k in rows.keys("peer") if rows.values(k, "first")}
        best = min(peers, key=lambda k: statistics.median(peers[k]), default=None)
        for key in ("corral-pool", "corral-pool-fork"):
            mine = rows.values(key, "first") if key in rows.by_key else []
            if not mine or best is None:
                continue
            ratio = statistics.median(mine) / statistics.median(peers[best])
            verdict = "yes" if ratio <= 1 else "no"
            if ratio > 1 and _overlap(mine, peers[best]):
                verdict = "no (ranges overlap: within noise)"
            body.append([
                "S4: start → first result ≤ fastest peer", rows.label(key),
                ftime(statistics.median(mine)),
                f"{rows.label(best)}: {ftime(statistics.median(peers[best]))}",
                f"{ratio:.2f}\u00d7 peer time", verdict,
            ])  # fmt: skip
    if not body:
        return []
    return [
        "## Project targets",
        "",
        "Against the best peer *in this run* (medians; peers = every non-corral, non-serial row).",
        "",
        *table(["target", "corral row", "corral", "best peer", "ratio", "reached"], body,
               right_from=6),
        "",
    ]


# -- the whole report --------------------------------------------------------------------------


def _snapshot_text(m: dict[str, Any]) -> str:
    if not m.get("snapshot"):
        return "; repetitions imported corral from the working tree (`--no-snapshot`)"
    text = (f"; repetitions ran a copy of src/corral taken at the start (content hash "
            f"`{m['snapshot']}`)")  # fmt: skip
    if m.get("src_hash_end") not in (None, m["snapshot"]):
        text += " — src/ was edited by others during the run; the copy kept the run consistent"
    return text


def _machine_lines(data: dict[str, Any], scenarios: dict[str, dict[str, Any]]) -> list[str]:
    m = data["machine"]
    v = m["versions"]
    dirty = m["src_dirty"]
    commit = f"`{m['commit']}`" + (
        f" with uncommitted changes in {len(dirty)} src/ file(s) ({', '.join(dirty[:4])}"
        f"{', …' if len(dirty) > 4 else ''})" if dirty else " (src/ clean)"
    )
    loads = [r["load1"] for sc in scenarios.values() for c in sc["contenders"]
             for r in c["records"]]  # fmt: skip
    lines = [
        "## Machine",
        "",
        f"- nproc {m['nproc']} (affinity {m['affinity']}, corral.cpu_count() "
        f"{m['corral_cpu_count']}), {m['cpu']}, {m['mem_gib']:.1f} GiB RAM; {m['platform']}",
        f"- {m['implementation']} {m['python']}; multiprocessing default start method: "
        f"{m['mp_default']}",
        "- " + ", ".join(f"{k} {v[k]}" for k in v),
        f"- corral at commit {commit}" + _snapshot_text(m),
        f"- load average (1 min) at start {m['load_start'][0]:.2f}, at end "
        f"{m['load_end'][0]:.2f}; all contenders use {WORKERS} workers",
    ]
    if loads:
        lines.append(
            f"- 1-min load average seen at the start of the {len(loads)} repetitions: min "
            f"{min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f} "
            f"({m['nproc']} cores; it counts this harness's own processes too)"
        )
    recs = [r for sc in scenarios.values() for c in sc["contenders"] for r in c["records"]]
    busy = [r["busy_before"] for r in recs if "busy_before" in r]
    if busy:
        waited = sum(r.get("waited", 0.0) for r in recs)
        noisy = sum(1 for b in busy if b > 30)
        lines.append(
            f"- other processes' CPU use, sampled for 0.25 s before each repetition (none of "
            f"this harness's running): median {statistics.median(busy):.0f}%, max "
            f"{max(busy):.0f}% of the machine; {noisy} repetition(s) started above 30% "
            f"after waiting for quiet (up to {data.get('max_wait', 0):.0f} s each; waited "
            f"{waited:.0f} s in all)"
        )
        if noisy > len(busy) // 10:
            lines.append(
                f"- **warning: something else used the CPU during this run ({noisy} of "
                f"{len(busy)} repetitions started with >30% of the machine busy); absolute "
                "times and S2 efficiencies are depressed by it.**"
            )
    merged = [s for s, sc in scenarios.items() if sc["started"] < data["started"]]
    if merged:
        lines.append(
            "- merged report: " + ", ".join(f"{s} from the run of {scenarios[s]['started']}"
                                            for s in merged)
            + " (its machine line may differ; see the raw JSON)"
        )  # fmt: skip
    return lines


def _notes(scenarios: dict[str, dict[str, Any]]) -> list[str]:
    notes = []
    for name, sc in scenarios.items():
        rows = Rows(sc)
        for c in sc["contenders"]:
            k = c["key"]
            planned = sc["planned_reps"][k]
            errors = rows.failures(k)
            if errors:
                uniq = sorted(set(errors))
                notes.append(f"- {name} {c['label']}: {len(errors)} failed repetition(s): "
                             + "; ".join(e.replace("|", "/") for e in uniq[:3]))  # fmt: skip
            elif planned < max(sc["planned_reps"].values()):
                notes.append(f"- {name} {c['label']}: {planned} repetitions (slow contender).")
            orphans = [o for r in c["records"] for o in r.get("orphans", [])]
            if orphans:
                notes.append(f"- {name} {c['label']}: {len(orphans)} process(es) of its "
                             "repetitions still alive 1 s after the repetition's process "
                             f"ended (killed by the harness), e.g. `{orphans[0]}`")  # fmt: skip
            origins = {r["corral_from"] for r in c["records"] if r.get("corral_from")}
            expected = scenarios[name].get("corral_expected")
            if expected and origins - {expected}:
                notes.append(f"- {name} {c['label']}: **corral imported from "
                             f"{sorted(origins - {expected})}, not the snapshot**")  # fmt: skip
            if c["note"] and name != "S4":
                notes.append(f"- {name} {c['label']}: {c['note']}.")
            if name == "S4":
                for r in c["records"]:
                    if r.get("result", {}).get("left"):
                        cmds = r["result"]["left_cmdlines"]
                        notes.append(f"- S4 {c['label']}: left after shutdown: {cmds[:3]}")
                        break
    return notes


RENDER = {"S1": render_s1, "S2": render_s2, "S4": render_s4}


def render(data: dict[str, Any], scenarios: dict[str, dict[str, Any]]) -> str:
    title = "# corral benchmarks" + (" — QUICK SMOKE RUN, not for quoting" if data["quick"] else "")
    lines = [
        title,
        "",
        f"Run {data['started']} \u2013 {data['finished']}; `{data['command']}`. Each "
        "repetition runs in a fresh process; repetitions are interleaved round-robin across a "
        "scenario's contenders; medians with min\u2013max over repetitions; ratios are against "
        "the baseline row measured in the same run. Absolute times on this shared 2-core VM "
        "drift by tens of percent between runs: compare ratios within a table. corral rows are "
        "in bold.",
        "",
        *_machine_lines(data, scenarios),
        "",
        *targets(scenarios),
    ]
    for name, sc in scenarios.items():
        lines += [*RENDER[name](sc), ""]
    notes = _notes(scenarios)
    if notes:
        lines += ["## Notes (generated)", "", *notes, ""]
    return "\n".join(lines)
