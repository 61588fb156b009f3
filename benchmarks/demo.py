"""The replay (``make demo``'s main job) on the embedded default, kept as data for the docs.

    python benchmarks/demo.py [any option of ``celery-resilience simulate``]

Runs ``celery-resilience simulate all`` as a user would, from an empty directory, then
keeps its before/after table, its scale and each run's outcomes in
``benchmarks/results/demo.json``, stamped with the commit and the machine
(``scripts/render-performance`` puts the table in the README from there), and its chart
as ``docs/simulation-chart.png``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stamp import ROOT, commit, day, machine

RESULTS = ROOT / "benchmarks" / "results" / "demo.json"
# What each run's outcome counts keep (the rest of the report stays in its directory).
KEPT = ("requests", "answered", "answered_share", "outcomes", "right_answers", "tasks_lost", "alerts")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "report"
        command = Path(sys.executable).with_name("celery-resilience")
        subprocess.run(
            [str(command), "simulate", "all", "--out", str(out), *sys.argv[1:]],
            cwd=scratch, check=True,
        )  # fmt: skip
        report = json.loads((out / "report.json").read_text())
        chart = out / "chart.png"
        if chart.exists():
            shutil.copyfile(chart, ROOT / "docs" / "simulation-chart.png")
    kept = {
        "stamp": f"make demo: commit {commit()}, {day()} (UTC), {machine()}, {report['mode']}",
        "scale": report["scale"],
        "table": report["table"],
        "scenarios": {
            name: {mode: {key: run.get(key) for key in KEPT} for mode, run in pair.items()}
            for name, pair in report["scenarios"].items()
        },
    }
    RESULTS.write_text(json.dumps(kept, indent=1) + "\n")
    print(f"\n(written to {RESULTS.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
