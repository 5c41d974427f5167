"""The benchmark runs end to end (tiny data): every section measured, every ratio a positive number."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.pubsub  # the benchmark starts its own emulator
def test_bench_runs_end_to_end_on_tiny_data(tmp_path):
    output = tmp_path / "latest.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--profile", "tiny",
                             "--output", str(output)], capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert {"aggregate_7", "aggregate_30", "window", "metrics", "reconcile", "memory", "ratios"} <= set(results)
    assert len(results["ratios"]) >= 12
    assert all(math.isfinite(v) and v > 0 for v in results["ratios"].values())
    assert results["reconcile"]["messages"] == 200
    assert results["memory"]["reconcile_full_backlog_mb"] > 0
    assert "invalid input syntax for type numeric" in results["metrics"]["seed_on_bad_totals"]
    assert "| aggregate rerun ÷ floor (30 days of history) |" in result.stdout
