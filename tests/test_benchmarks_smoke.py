"""The benchmark suite still runs: `benchmarks/run.py --smoke` end to end (no timing checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run_exits_zero_and_writes_its_results(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert output.is_file()
    assert output.read_text(encoding="utf-8").strip()


def test_the_features_benchmark_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "features.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "tracing on, inside a span" in result.stdout


def test_dashboard_benchmark_smoke_run_exits_zero_and_writes_its_table(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS-dashboard.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dashboard.py"),
            *("--stored", "3000", "--repeats", "1", "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT / "benchmarks",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "| event log, the page after a cursor |" in output.read_text(encoding="utf-8")
