"""The Redis benchmark still runs: `benchmarks/redis.py --smoke` end to end (no timing checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = "EVQ_TEST_REDIS_URL"


def test_redis_benchmark_smoke_run_exits_zero_and_writes_its_results(tmp_path: Path) -> None:
    server = os.environ.get(ENV)
    if not server:
        pytest.skip(f"set {ENV} to run the Redis tests (e.g. {ENV}=redis://127.0.0.1:6379/9)")
    output = tmp_path / "RESULTS-redis.md"
    script = ROOT / "benchmarks" / "redis.py"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke", "--url", server, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    text = output.read_text(encoding="utf-8")
    assert "## Targets" in text
    assert "ERROR" not in text
