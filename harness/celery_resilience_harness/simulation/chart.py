"""The PNG chart: for each scenario, before and after side by side, over time.

Requests by how they ended (by second of arrival), throttles, the provider's errors,
and shaded spans where the primary provider's breaker was open. Needs matplotlib (the
``simulate`` extra); without it the command says so and writes the JSON report only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .measures import RunSummary

__all__ = ["write_chart", "chart_available"]

SERIES = (
    ("primary", ("primary",), "#2e7d32"),
    (
        "fallback",
        (
            "fallback:alternative_provider",
            "fallback:cached_similar",
            "fallback:rule_based",
            "fallback:template",
        ),
        "#1565c0",
    ),
    ("rejected", ("rejected",), "#ef6c00"),
    ("failed", ("error", "timeout"), "#c62828"),
)


def chart_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_chart(
    path: Path, results: Mapping[str, Mapping[str, RunSummary]], errors: Mapping[str, Any]
) -> None:
    """``errors``: per run label, the primary provider's status timeline from the fake server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    figure, axes = plt.subplots(len(names), 2, figsize=(14, 3.6 * len(names)), squeeze=False, sharey="row")
    for row, name in enumerate(names):
        for column, mode in enumerate(("before", "after")):
            summary = results[name][mode]
            ax = axes[row][column]
            times = [bucket["t"] for bucket in summary.timeline]
            bottom = [0.0] * len(times)
            for label, keys, colour in SERIES:
                values = [float(sum(bucket.get(k, 0) for k in keys)) for bucket in summary.timeline]
                ax.bar(times, values, width=1.0, bottom=bottom, color=colour, label=label, align="edge")
                bottom = [b + v for b, v in zip(bottom, values, strict=True)]
            throttled = [bucket.get("throttled", 0) for bucket in summary.timeline]
            ax.plot(times, throttled, color="#6a1b9a", linestyle="--", linewidth=1, label="throttled")
            status = errors.get(f"{name} {mode}", [])
            per_second: dict[int, int] = {}
            for second, code, count in status:
                if int(code) >= 429:
                    per_second[int(second)] = per_second.get(int(second), 0) + int(count)
            if per_second:
                seconds = sorted(per_second)
                ax.plot(
                    seconds,
                    [per_second[s] for s in seconds],
                    color="black",
                    linewidth=1,
                    label="provider errors",
                )
            _shade_open(ax, summary.samples)
            for mark, at in summary.marks.items():
                ax.axvline(at, color="grey", linestyle=":", linewidth=1)
                ax.text(at, ax.get_ylim()[1] * 0.95, f" {mark}", fontsize=8, color="grey", va="top")
            ax.set_title(f"{name}: {mode} ({100 * summary.answered_share:.0f}% answered)", fontsize=10)
            ax.set_xlabel("seconds (by arrival)")
            if column == 0:
                ax.set_ylabel("requests per second")
    axes[0][1].legend(loc="upper left", fontsize=8)  # grey spans: the primary breaker open
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _shade_open(ax: Any, samples: list[dict[str, Any]]) -> None:
    start = None
    for sample in samples:
        is_open = sample.get("breaker") in ("open", "forced_open", "half_open")
        if is_open and start is None:
            start = sample["t"]
        elif not is_open and start is not None:
            ax.axvspan(start, sample["t"], color="grey", alpha=0.15, lw=0)
            start = None
    if start is not None and samples:
        ax.axvspan(start, samples[-1]["t"], color="grey", alpha=0.15, lw=0)
