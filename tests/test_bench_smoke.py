"""Smoke test of the benchmarks: `python -m bench --quick` runs and writes every JSON result.

In a subprocess, so the benchmarks' own Azurite, emulator and environment never collide with
the test session's. The numbers are not checked (tiny sizes say nothing); the shape is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "intake": {"sequential", "concurrent", "ratios", "target", "documents", "sources"},
    "reconcile": {"graph_calls", "wall", "errors", "delivery_latency", "by_category", "target"},
    "directory": {"runs", "graph_calls_minimum", "table_reads_per_message", "target"},
    "throughput": {"runs", "target", "configured_threads", "default_threads", "max_in_flight"},
    "coldstart": {"scenarios", "comparison", "package"},
    "memory": {"samples", "peak_rss_mb", "slope_mb_per_1000", "flat"},
    "listing": {"runs", "ratio", "target", "commit"},
}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_benchmarks_write_every_result(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name, keys in EXPECTED.items():
        path = tmp_path / f"{name}.json"
        assert path.exists(), f"{name}.json not written"
        result = json.loads(path.read_text())
        assert result["benchmark"] == name
        assert {"nproc", "python", "cpu_model"} <= set(result["machine"])
        assert keys <= set(result), f"{name}: missing {keys - set(result)}"
        assert result["quick"] is True
    reconcile = json.loads((tmp_path / "reconcile.json").read_text())
    assert reconcile["errors"] == 0
    assert reconcile["graph_calls"]["actual"] == reconcile["graph_calls"]["minimum"]
    intake = json.loads((tmp_path / "intake.json").read_text())
    assert {"hl7_s12", "calendly_created"} <= set(intake["sources"])
    assert {"hl7_s12", "calendly_created"} <= set(intake["sequential"])
    directory = json.loads((tmp_path / "directory.json").read_text())
    assert directory["target"]["zero_errors"], directory["runs"]
    assert directory["target"]["graph_calls_unchanged"], directory["runs"]
    assert directory["table_reads_per_message"] == 0, directory["table_calls"]
    throughput = json.loads((tmp_path / "throughput.json").read_text())
    assert throughput["target"]["zero_errors"]
    assert throughput["target"]["converged"]
    assert [r["threads"] for r in throughput["runs"]] == [
        throughput["configured_threads"],
        throughput["default_threads"],
    ]
