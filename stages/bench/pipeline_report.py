"""The report of the pipeline benchmark (``msagg.stages.bench.pipeline``): memory growth, the disk check, the table."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import TYPE_CHECKING, Any, Sequence

from msagg.stages.bench.measure import lay_out
from msagg.stages.bench.pipeline_steps import DATASET

if TYPE_CHECKING:
    from msagg.stages.bench.pipeline import Settings

logger = logging.getLogger(__name__)

RSS_GROWTH_LIMIT = 1.2
"""A step whose peak RSS at 4N exceeds this multiple of that at N is flagged."""
DISK_PEAK_LIMIT = 1.05
"""A prepare whose disk use peaked above this multiple of its final size is flagged."""


def summarize(settings: Settings, rows: Sequence[dict], *, environment: dict, isolated: bool,
              work_dir: str | None, seconds: float) -> dict[str, Any]:
    """The report of ``run_benchmark`` from its rows: memory growth per step and the disk check."""
    small, large = settings.sizes
    growth = []
    flags = []
    for step in dict.fromkeys(r["step"] for r in rows if r["num_tracks"] is not None):
        by_size = {r["num_tracks"]: r["peak_rss_mb"] for r in rows if r["step"] == step}
        if small not in by_size or large not in by_size:
            continue
        ratio = round(by_size[large] / by_size[small], 3) if by_size[small] else None
        grows = ratio is not None and ratio > RSS_GROWTH_LIMIT
        growth.append({"step": step, "small_mb": by_size[small], "large_mb": by_size[large], "ratio": ratio,
                       "grows": grows})
        if grows:
            flags.append(f"{step}: peak RSS grows {ratio:.2f}x from {small} to {large} tracks "
                         f"(limit {RSS_GROWTH_LIMIT:.2f})")
    for row in rows:
        ratio = row.get("disk_peak_ratio")
        if ratio is not None and ratio > DISK_PEAK_LIMIT:
            flags.append(f"prepare of {row['num_tracks']} tracks: disk peaked at {ratio:.3f}x the final size "
                         f"(limit {DISK_PEAK_LIMIT:.2f})")
    for flag in flags:
        logger.warning("%s", flag)
    return {
        "settings": dataclasses.asdict(settings),
        "sizes": [small, large],
        "rows": list(rows),
        "rss_growth": growth,
        "disk_ok": all(r.get("disk_peak_ratio") is None or r["disk_peak_ratio"] <= DISK_PEAK_LIMIT for r in rows),
        "flags": flags,
        "limits": {"rss_growth": RSS_GROWTH_LIMIT, "disk_peak_ratio": DISK_PEAK_LIMIT},
        "environment": environment,
        "isolated": isolated,
        "work_dir": work_dir,
        "seconds": round(seconds, 1),
    }


def _figure(value: float | None) -> str:
    """A rate with three significant digits at most, never in exponent form: 0.0771, 15.2, 1,234."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.1e}"


def _rate_text(row: dict) -> str:
    for key, unit in (("files_per_sec", "files/s"), ("tracks_per_sec", "tracks/s"), ("segments_per_sec", "seg/s")):
        if row.get(key) is not None:
            return f"{_figure(row[key])} {unit}"
    return "-"


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a ``run_benchmark`` report: a row per step and size, then the memory
    ratios of the two sizes per step, then the flags."""
    s = report["settings"]
    env = report.get("environment") or {}
    rows = report["rows"]
    workers = next((r.get("decode_workers") for r in rows if r["step"] == "prepare"), None)
    plural = "" if workers == 1 else "s"
    head = (f"backend {env.get('backend', '?')} on {env.get('device', '?')}; {DATASET}, {s['track_sec']:g} s "
            f"tracks at {s['sample_rate']} Hz, {workers} decoding worker{plural}; crops batch {s['crop_batch_size']}; "
            f"extract {len(s['scales'])} scales at width {s['width']:g} in {s.get('precision', 'float32')}, "
            f"batch {s['extract_batch_size']}; "
            "RTF = audio seconds per wall second")
    columns = ("tracks", "step", "rate", "RTF", "wall s", "peak RSS MB", "cache MB", "peak disk MB", "peak/final")
    cells = [list(columns)]
    for r in rows:
        cells.append([
            _number(r.get("num_tracks"), "{:d}"), r["step"], _rate_text(r), _figure(r.get("realtime_factor")),
            _number(r.get("wall_sec"), "{:.1f}"), _number(r.get("peak_rss_mb"), "{:.0f}"),
            _number(r.get("cache_bytes") and r["cache_bytes"] / 1e6, "{:.1f}"),
            _number(r.get("disk_peak_bytes") and r["disk_peak_bytes"] / 1e6, "{:.1f}"),
            _number(r.get("disk_peak_ratio"), "{:.3f}"),
        ])
    text = [False, True, False, False, False, False, False, False, False]  # labels left, numbers right
    lines = lay_out(cells, text)
    small, large = report["sizes"]
    growth_cells = [["step", f"peak RSS MB at {small}", f"at {large}", "ratio", ""]]
    for g in report["rss_growth"]:
        verdict = f"GROWS (> {RSS_GROWTH_LIMIT:.2f})" if g["grows"] else "ok"
        growth_cells.append([g["step"], _number(g["small_mb"], "{:.0f}"), _number(g["large_mb"], "{:.0f}"),
                             _number(g["ratio"], "{:.3f}"), verdict])
    out = [head, *lines, "", *lay_out(growth_cells, [True, False, False, False, True])]
    out.append(f"disk: peak / final size of each prepare run folder {'within' if report['disk_ok'] else 'ABOVE'} "
               f"{DISK_PEAK_LIMIT:.2f}; peak RSS = the largest of a step's processes")
    out.extend(f"FLAG: {flag}" for flag in report["flags"])
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
    if versions:
        out.append(versions)
    return "\n".join(out)
