"""The benchmark runs end to end (tiny data): every section measured, every ratio a positive number."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
    assert results["scores_without_statistics"]["tables_analysed_before"] == 0   # the step really ran unanalysed
    assert "carried-forward score step, never analysed ÷ after ANALYZE" in results["ratios"]
    assert results["reconcile"]["messages"] == 200
    assert results["memory"]["reconcile_full_backlog_mb"] > 0
    assert "invalid input syntax for type numeric" in results["metrics"]["seed_on_bad_totals"]
    assert "| aggregate rerun ÷ floor (30 days of history) |" in result.stdout
    assert results["status"]["check_complete_library_s"] > 0 and "check-complete --date " in result.stdout
    assert len(results["ratios"]) >= 19
    inserts = results["consumer_inserts"]
    assert inserts["change_rows_written"] > 0
    for variant in ("single_row", "multi_row_500", "executemany_500"):
        assert_positive(inserts[variant], "with_rows_per_s", "without_rows_per_s", "ratio")
    migrate = results["inserts_during_migrate"]
    assert_positive(migrate, "migrate_s", "worst_insert_during_migrate_ms", "worst_insert_before_migrate_ms")
    assert migrate["inserts_during_migrate"] > 0
    assert migrate["failed_inserts"] == 0, migrate["first_failure"]
    assert_positive(results["status"], "cli_startup_s", "cli_s", "library_s", "cli_backlog_today_s",
                    "cli_backlog_in_window_s")
    year = results["year_of_history"]
    assert_positive(year, "build_s", "migrate_s", "status_before_runs_s", "aggregate_s", "metrics_s",
                    "status_after_runs_s", "status_backlog_in_window_s")
    assert year["days"] == year["aggregate_days_succeeded"] == year["metrics_days_succeeded"] == 365
    assert "| consumer inserts, 4 writers" in result.stdout


def assert_positive(section: dict, *keys: str) -> None:
    for key in keys:
        assert math.isfinite(section[key]) and section[key] > 0, (key, section[key])


def test_results_md_is_the_latest_results_rendered():
    """bench/RESULTS.md is generated from bench/results/latest.json (`make bench` writes both; `bench/run.py
    --render` rewrites the page): an edit of either alone fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    latest = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    assert (REPO / "bench" / "RESULTS.md").read_text() == bench.results_page(latest, "bench/results/latest.json")
