"""Benchmark reports: console table, JSON, Markdown, PNG bar chart, and the change against an old run.

A report is a JSON-ready dict ``{"format": "mfv2-bench", "version", "env", "peaks", "settings",
"notes", "results"}``; each result is one row of the matrix (see :data:`RESULT_FIELDS`). Rows that
could not run keep their place with a ``status`` other than ``ok``. Every file is written to a
temporary name and renamed, so nothing half-written is left behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mfv2.errors import ConfigError
from mfv2.fileio import atomic_write_bytes, atomic_write_text, read_json

__all__ = [
    "REPORT_FORMAT",
    "RESULT_FIELDS",
    "ROW_KEY",
    "format_table",
    "format_compare",
    "failure_lines",
    "auto_lines",
    "compare_results",
    "load_report",
    "write_json",
    "to_json",
    "to_markdown",
    "write_markdown",
    "plot_bars",
]

REPORT_FORMAT = "mfv2-bench"
_VERSION = 1

#: Fields every result row carries (numbers are None where they do not apply or the row failed).
RESULT_FIELDS: tuple[str, ...] = (
    "variant", "backend", "precision", "graph", "mode", "threads", "status",
    "median_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "first_ms", "count",
    "fps", "speedup", "gflops_per_frame", "pct_peak", "peak_rss_mb",
)  # fmt: skip

#: Fields that identify a row across runs (for ``--compare``).
# Torch GPU rows also carry ``device`` and ``cuda_graph`` (absent on CPU rows): rows that differ only there
# are different paths, for --compare too.
# ``background_load`` (rows run beside N busy processes) too; rows without it ran on the machine as it was.
ROW_KEY: tuple[str, ...] = ("variant", "backend", "precision", "graph", "mode", "threads", "device", "cuda_graph",
                            "background_load")


def _num(x: Any, fmt: str = ".2f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def _stages_text(row: Mapping[str, Any]) -> str:
    stages = row.get("stages") or {}
    return " ".join(f"{k} {v['median_ms']:.1f}" for k, v in stages.items())


def _fidelity_text(row: Mapping[str, Any]) -> str:
    fid = row.get("fidelity")
    if not fid:
        return "-"
    return f"{fid['iou_ge_0.9'] * 100:.0f}% / {fid['mean_iou']:.3f}"


def _columns(mode: str, loaded: bool = False) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = [
        ("Variant", lambda r: r["variant"]),
        ("Backend", lambda r: r["backend"] + (f" {r['device']}" if r.get("device") else "")
         + (" +graphs" if r.get("cuda_graph") else "")),
        ("Prec", lambda r: r["precision"]),
        ("Graph", lambda r: r["graph"]),
        ("Thr", lambda r: str(r["threads"])),
        *([("BG load", lambda r: str(r.get("background_load") or 0))] if loaded else []),
        ("Status", lambda r: r["status"] if len(r["status"]) <= 40 else r["status"][:37] + "..."),
        ("Median ms", lambda r: _num(r.get("median_ms"))),
        ("p90 ms", lambda r: _num(r.get("p90_ms"))),
        ("p99 ms", lambda r: _num(r.get("p99_ms"))),
        ("FPS", lambda r: _num(r.get("fps"), ".1f")),
        ("Speed-up", lambda r: _num(r.get("speedup")) + ("x" if r.get("speedup") else "")),
        ("CPU ms", lambda r: _num(r.get("cpu_ms"))),
        ("CPU x", lambda r: _num(r.get("cpu_speedup"))),
        ("GFLOP/f", lambda r: _num(r.get("gflops_per_frame"), ".2f")),
        ("% peak", lambda r: _num(r.get("pct_peak"), ".0f")),
        ("% peak CPU", lambda r: _num(r.get("pct_peak_cpu"), ".0f")),
        ("RSS MB", lambda r: _num(r.get("peak_rss_mb"), ".0f")),
        ("Load", lambda r: _num(r.get("load_1m"), ".1f")),
        *([("x idle", lambda r: _num(r.get("loaded_slowdown")) + ("x" if r.get("loaded_slowdown") else ""))] if loaded else []),
    ]
    if mode == "video":
        cols += [("Size", lambda r: r.get("size") or "-"), ("Update ms", lambda r: _num(r.get("update_ms"))),
                 ("Decode ms", lambda r: _num(r.get("decode_ms"))), ("IoU>=.9 / mean IoU", _fidelity_text)]
    elif mode == "tracker":
        cols += [("IoU>=.9 / mean IoU", _fidelity_text), ("Stages (median ms)", _stages_text)]
    else:
        cols += [("Templates ms", lambda r: _num(r.get("template_ms")))]
    return cols


def _rows_by_mode(results: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_mode: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)
    return by_mode


_MODE_TITLES = {"model": "Model only (one search frame per call)", "tracker": "Tracker loop (crop + model + post per frame)",
                "video": "End to end on a video file (decode + tracker per frame)"}


def _grid(header: Sequence[str], body: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(b) + " |" for b in body]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    lines = [line, "  ".join("-" * w for w in widths)]
    return lines + ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]


def format_table(results: Iterable[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """The results as one table per mode (trtexec/Ultralytics style); Markdown with ``markdown``."""
    out: list[str] = []
    for mode, rows in _rows_by_mode(results).items():
        cols = _columns(mode, any(r.get("background_load") for r in rows))
        title = _MODE_TITLES.get(mode, mode)
        out.append(f"### {title}" if markdown else f"{title}:")
        if markdown:
            out.append("")
        out += _grid([c[0] for c in cols], [[str(f(r)) for _, f in cols] for r in rows], markdown)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def failure_lines(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per distinct failure: which rows, and their full status (tables shorten it)."""
    seen: dict[tuple[Any, ...], list[str]] = {}
    for r in results:
        if r.get("status") != "ok":
            key = (r["variant"], r["backend"], r["precision"], r["graph"], r["status"])
            seen.setdefault(key, []).append(f"{r['mode']} t{r['threads']}")
    return [f"{v} {b} {p} {g} ({', '.join(where)}): {status}" for (v, b, p, g, status), where in seen.items()]


def auto_lines(report: Mapping[str, Any]) -> list[str]:
    """Per model: what ``backend="auto"`` picked and why, then every path it timed (fastest first)."""
    lines = []
    for model, c in (report.get("auto") or {}).items():
        if c.get("status") != "ok":
            lines.append(f"{model}: auto could not choose: {c.get('status')}")
            continue
        where = f"{c['backend']} {c['precision']} {c['graph']}, {c['threads']} thread(s)"
        load = "" if c.get("load_average") is None else f"; calibrated at load {c['load_average']}"
        lines.append(f"{model}: auto picked {where}: {c['reason']}{' (cached)' if c.get('cached') else ''}{load}")
        tried = "; ".join(f"{t['backend']} {t['precision']} t{t['threads']} "
                          + (f"{t['median_ms']:.2f} ms" if t.get("median_ms") is not None else t.get("status", "-"))
                          for t in c.get("trials", []))  # fmt: skip
        lines.append(f"{model}: timed {tried}")
    return lines


def _key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple((row.get(k) or None) if k == "background_load" else row.get(k) for k in ROW_KEY)


def compare_results(new: Iterable[Mapping[str, Any]], old: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Match rows by :data:`ROW_KEY` and give the change of median latency and FPS.

    Returns:
        One dict per new row: the key fields, ``old_median_ms``, ``new_median_ms``, ``change_pct``
        (latency change, negative = faster), ``old_speedup``, ``new_speedup``; None where a side is
        missing or failed.
    """
    old_by_key = {_key(r): r for r in old}
    out = []
    for r in new:
        o = old_by_key.get(_key(r))
        new_ms = r.get("median_ms") if r.get("status") == "ok" else None
        old_ms = o.get("median_ms") if o is not None and o.get("status") == "ok" else None
        change = (new_ms / old_ms - 1.0) * 100.0 if new_ms and old_ms else None
        out.append(
            {
                **{k: r.get(k) for k in ROW_KEY},
                "old_median_ms": old_ms,
                "new_median_ms": new_ms,
                "change_pct": change,
                "old_speedup": None if o is None else o.get("speedup"),
                "new_speedup": r.get("speedup"),
            }
        )
    return out


def format_compare(changes: Iterable[Mapping[str, Any]], *, markdown: bool = False) -> str:
    """A table of :func:`compare_results` output."""
    header = [*(k.capitalize() for k in ROW_KEY), "Old ms", "New ms", "Change", "Old speed-up", "New speed-up"]
    body = [
        [
            *("-" if c.get(k) is None else str(c.get(k)) for k in ROW_KEY),
            _num(c["old_median_ms"]),
            _num(c["new_median_ms"]),
            "-" if c["change_pct"] is None else f"{c['change_pct']:+.1f}%",
            _num(c["old_speedup"]),
            _num(c["new_speedup"]),
        ]
        for c in changes
    ]
    return "\n".join(_grid(header, body, markdown)) + "\n"


def _clean(x: Any) -> Any:
    """JSON has no NaN/inf: map them to None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def to_json(obj: Any) -> str:
    """Indented JSON text with NaN and infinities written as null (strict JSON)."""
    return json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write a report as JSON (NaN -> null), atomically."""
    body = {"format": REPORT_FORMAT, "version": _VERSION, **{k: v for k, v in report.items() if k not in ("format", "version")}}
    return atomic_write_text(path, to_json(body))


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report written by :func:`write_json`.

    Raises:
        ConfigError: missing file, invalid JSON, or not an mfv2 benchmark report.
    """
    p = Path(path)
    data = read_json(p, "benchmark report", "pass a JSON file written by 'mfv2 bench --json'")
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT or not isinstance(data.get("results"), list):
        raise ConfigError(f"{p} is not an mfv2 benchmark report; pass a file written by 'mfv2 bench --json'")
    return data


def _env_lines(env: Mapping[str, Any]) -> list[str]:
    cpu = env.get("cpu", {})
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    load = env.get("load_average")
    return [
        f"- Machine: {cpu.get('model')} ({cpu.get('arch')}), {cpu.get('physical_cores')} physical cores, "
        f"{cpu.get('usable_cpus')} usable CPUs, {env.get('memory_gb')} GB RAM",
        f"- Instruction set: {env.get('isa', '-')}; CPU flags: {' '.join(cpu.get('flags', [])) or '-'}",
        f"- GPU: {', '.join(env.get('gpus') or []) or 'none'}",
        f"- Threads: {env.get('threads')}; load average (1, 5, 15 min) at start {load}, at the end "
        f"{env.get('load_average_end')}",
        f"- Versions: {versions}",
        f"- OS: {env.get('os')}, Python {env.get('python')}, {env.get('time')}",
    ]


def to_markdown(report: Mapping[str, Any]) -> str:
    """The whole report as Markdown: environment, peaks, one table per mode, notes, the command."""
    lines = ["# mfv2 benchmark", ""]
    if report.get("command"):
        lines += ["Command:", "", f"    {report['command']}", ""]
    lines += ["## Environment", "", *_env_lines(report.get("env", {})), ""]
    peaks = report.get("peaks") or {}
    if peaks:
        lines += ["## Measured GEMM peak (same run)", "",
                  "| Threads | Precision | GOP/s | GOP per CPU-second | Engine | Status |", "|---|---|---|---|---|---|"]  # fmt: skip
        for threads, by_prec in peaks.items():
            for prec, p in by_prec.items():
                lines.append(f"| {threads} | {prec} | {_num(p.get('gops'), '.0f')} | {_num(p.get('gops_cpu'), '.0f')} | "
                             f"{p.get('engine')} | {p.get('status')} |")  # fmt: skip
        lines.append("")
    lines += ["## Results", "", format_table(report.get("results", []), markdown=True)]
    picked = auto_lines(report)
    if picked:
        lines += ["## What backend=auto picked", "", *(f"- {p}" for p in picked), ""]
    failed = failure_lines(report.get("results", []))
    if failed:
        lines += ["### Rows that did not run", "", *(f"- {f}" for f in failed), ""]
    if report.get("compare"):
        lines += ["## Change against the previous run", "", format_compare(report["compare"], markdown=True)]
    notes = report.get("notes") or []
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, to_markdown(report))


def _label(r: Mapping[str, Any]) -> str:
    return f"{r['variant']} {r['backend']} {r['precision']} {r['graph']} t{r['threads']}"


def plot_bars(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """A PNG bar chart: 1000 / median ms per row, one panel per mode, labelled with median and speed-up.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError('the bar chart needs matplotlib; install it with: pip install "mfv2[bench]"') from e
    import io

    by_mode = _rows_by_mode(report.get("results", []))
    if not by_mode:
        raise ConfigError("no results to plot")
    heights = [max(2.0, 0.35 * len(rows) + 1.2) for rows in by_mode.values()]
    fig, axes = plt.subplots(len(by_mode), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    cpu = report.get("env", {}).get("cpu", {}).get("model", "")
    for ax, (mode, rows) in zip(axes[:, 0], by_mode.items()):
        labels = [_label(r) for r in rows]
        fps = [1000.0 / r["median_ms"] if r.get("status") == "ok" and r.get("median_ms") else 0.0 for r in rows]
        colors = ["tab:gray" if r.get("baseline") else ("tab:blue" if r.get("status") == "ok" else "tab:red") for r in rows]
        y = list(range(len(rows)))[::-1]
        ax.barh(y, fps, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        top = max(fps) if any(fps) else 1.0
        for yi, r, f in zip(y, rows, fps):
            ok = r.get("status") == "ok"
            text = f"{r['median_ms']:.2f} ms" if ok else r.get("status", "")[:40]
            text += f", {r['speedup']:.2f}x" if ok and r.get("speedup") else ""
            ax.text(f + top * 0.01, yi, text, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.35)
        ax.set_xlabel("1000 / median latency, frames per second (higher is better); labels: median, speed-up")
        ax.set_title(f"{_MODE_TITLES.get(mode, mode)}; {cpu}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
