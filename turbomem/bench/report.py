"""Shared by every suite: statistics, the text table, JSON and the chart.

A suite returns a *suite result*, a plain dict (JSON-serialisable)::

    {"suite": "core",
     "skipped": None or "why the whole suite did not run",
     "notes": ["free text shown under the table", ...],
     "columns": [{"key": "cache", "title": "cache", "fmt": "d"}, ...],
     "rows": [{"cache": 256, ...}, ...],
     "goals": [{"goal": "...", "target": 1.5, "measured": 1.2, "met": False,
                "detail": "..."}, ...],
     "chart": {"title": ..., "labels": [...], "series": {name: [values]}, "unit": ...},
     "raw": [...]}
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, TextIO


def summarize(values: Iterable[float]) -> Dict[str, Any]:
    """median / min / max / n of a sample (empty -> all None)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---- formatting --------------------------------------------------------------

def fmt_value(v: Any, fmt: str = "") -> str:
    """A table cell: "-" for missing values, else the value in ``fmt``."""
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if fmt == "d":
        return str(int(v))
    if fmt == "x":  # a ratio
        return "%.2fx" % v
    if fmt == "ns":
        return "%.2f" % v if v < 100 else "%.0f" % v
    if fmt == "M":  # millions
        x = v / 1e6
        return "%.1f" % x if x < 1000 else "%.0f" % x
    if fmt == "ms":
        return "%.1f" % (v * 1e3)
    if fmt == "%":
        return "%.0f%%" % (v * 100)
    if fmt == "f":
        return "%.2f" % v
    if isinstance(v, float):
        return "%.3g" % v
    return str(v)  # fmt "" (left-aligned text) and "r" (right-aligned text)


def render_table(columns: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]]) -> str:
    """A plain fixed-width table; numbers right-aligned, text left-aligned."""
    heads = [c.get("title", c["key"]) for c in columns]
    cells = [[fmt_value(r.get(c["key"]), c.get("fmt", "")) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(heads)]
    numeric = [c.get("fmt", "") in ("d", "x", "ns", "M", "ms", "%", "f", "r") for c in columns]

    def line(vals: Sequence[str]) -> str:
        out = []
        for i, v in enumerate(vals):
            out.append(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(heads), sep] + [line(r) for r in cells])


def render_goals(goals: Sequence[Dict[str, Any]]) -> str:
    """The goal lines of a suite (met / missed, measured against target)."""
    if not goals:
        return ""
    lines = ["goals:"]
    for g in goals:
        met = g.get("met")
        mark = "MET " if met else ("MISS" if met is False else "n/a ")
        meas = g.get("measured")
        meas_s = "-" if meas is None else ("%.2f" % meas)
        lines.append("  [%s] %s: measured %s (target %s)%s" % (
            mark, g["goal"], meas_s, g.get("target_text", g.get("target")),
            ("  -- " + g["detail"]) if g.get("detail") else ""))
    return "\n".join(lines)


def render_suite(res: Dict[str, Any]) -> str:
    """One suite as text: title, skip reason, table, goals, notes."""
    title = "== %s ==" % res.get("suite", "?")
    parts = [title]
    if res.get("skipped"):
        parts.append("skipped: %s" % res["skipped"])
    if res.get("rows"):
        parts.append(render_table(res.get("columns", []), res["rows"]))
    g = render_goals(res.get("goals") or [])
    if g:
        parts.append(g)
    for n in res.get("notes") or []:
        parts.append("note: %s" % n)
    return "\n".join(parts)


def render_report(report: Dict[str, Any]) -> str:
    """The whole report as text: the machine, then every suite."""
    from . import machine

    out = ["TurboMem benchmark  (command: %s)" % report.get("command", "?")]
    out.extend(machine.summary_lines(report.get("machine") or {}))
    for s in report.get("suites", []):
        out.append("")
        out.append(render_suite(s))
    return "\n".join(out) + "\n"


def write_json(report: Dict[str, Any], path: str) -> None:
    """Write the report as JSON to ``path`` ("-": stdout)."""
    text = json.dumps(report, indent=1, sort_keys=False, default=str)
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    with open(path, "w") as f:
        f.write(text + "\n")


# ---- chart -------------------------------------------------------------------

def plot(report: Dict[str, Any], path: str) -> Optional[str]:
    """Draw one bar chart per suite that has a "chart".  Returns None on
    success, else a message saying why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # ImportError, or a broken backend
        return "no chart: matplotlib is not importable (%s); pip install matplotlib" % e.__class__.__name__
    charts = [s["chart"] for s in report.get("suites", []) if s.get("chart") and s["chart"].get("labels")]
    if not charts:
        return "no chart: no suite produced chartable data"
    fig, axes = plt.subplots(len(charts), 1, figsize=(12, 4.5 * len(charts)), squeeze=False)
    for ax, ch in zip(axes[:, 0], charts):
        labels = ch["labels"]
        series = ch["series"]
        width = 0.8 / max(1, len(series))
        for i, (name, vals) in enumerate(series.items()):
            xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(labels))]
            ax.bar(xs, [0 if v is None else v for v in vals], width=width, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ch.get("unit", ""))
        ax.set_title(ch.get("title", ""))
        if ch.get("log"):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    m = report.get("machine") or {}
    fig.suptitle("TurboMem benchmarks - %s - %s" % (m.get("cpu_model", "?"), m.get("date", "")), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---- progress bar --------------------------------------------------------------

class Progress:
    """A one-line text progress bar on stderr (no dependency).  Redraws in
    place on a terminal; elsewhere prints a line every 10%."""

    stream: TextIO
    tty: bool

    def __init__(self, stream: Optional[TextIO] = None, width: int = 30, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._drawn = False

    def update(self, done: int, total: int, label: str = "") -> None:
        """Redraw the bar at done/total."""
        if not self.enabled or total <= 0:
            return
        frac = min(1.0, max(0.0, done / total))
        if not self.tty:
            dec = int(frac * 10)
            if dec == self._last_decile:
                return
            self._last_decile = dec
        fill = int(round(frac * self.width))
        bar = "#" * fill + "." * (self.width - fill)
        text = "[%s] %3d%% %s" % (bar, int(frac * 100), label)
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150)[:150].rstrip() + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        """Finish the bar (a newline on a terminal)."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        self._drawn = False
        self._last_decile = -1
