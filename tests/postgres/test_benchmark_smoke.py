"""The PostgreSQL benchmark still runs: `benchmarks/postgres.py --smoke` end to end against the
test server (no timing checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from postgres_server import server_url

ROOT = Path(__file__).resolve().parent.parent.parent


def test_postgres_benchmark_smoke_run_exits_zero_and_writes_its_results(tmp_path: Path) -> None:
    url = server_url()
    output = tmp_path / "RESULTS-postgres.md"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "postgres.py"),
            "--smoke",
            "--url",
            url,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    text = output.read_text(encoding="utf-8")
    assert "## Targets" in text
    assert "ERROR" not in text
