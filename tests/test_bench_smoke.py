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
    "retention": {"records", "purge", "second_pass", "days"},
}


def _quick(tmp_path: Path, only: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", only, "--results", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_benchmarks_write_every_result(tmp_path: Path) -> None:
    # The callbacks benchmark has a test of its own (below), so that neither passes 2 minutes.
    done = _quick(tmp_path, ",".join(EXPECTED), timeout=110)
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
    retention = json.loads((tmp_path / "retention.json").read_text())
    assert retention["purge"]["report"]["purged"] == retention["records"]
    assert retention["second_pass"]["report"]["purged"] == 0
    throughput = json.loads((tmp_path / "throughput.json").read_text())
    assert throughput["target"]["zero_errors"]
    assert throughput["target"]["converged"]
    assert [r["threads"] for r in throughput["runs"]] == [
        throughput["configured_threads"],
        throughput["default_threads"],
    ]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_attendance_benchmark_checks_each_appointment_with_the_fewest_graph_calls(
    tmp_path: Path,
) -> None:
    done = _quick(tmp_path, "attendance", timeout=80)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "attendance.json").read_text())
    assert result["benchmark"] == "attendance"
    assert result["quick"] is True
    assert {"graph_calls", "before_end", "early_wakes", "outcomes", "target"} <= set(result)
    # Counts are exact at any size: one reports list per check plus one records read per
    # report, none before the end, none for an appointment weeks out.
    assert result["before_end"] == 0
    assert result["far_future_calls"] == 0
    assert result["graph_calls"]["actual"] == result["graph_calls"]["minimum"]
    assert all(result["target"].values()), result


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_quick_callbacks_benchmark_writes_its_result(tmp_path: Path) -> None:
    done = _quick(tmp_path, "callbacks", timeout=80)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "callbacks.json").read_text())
    assert result["benchmark"] == "callbacks"
    assert result["quick"] is True
    assert {"runs", "throughput", "latency", "notifications", "target"} <= set(result)
    assert {"reconcile_appointment_event", "deliver_callback"} <= set(result["queue_functions"])
    assert [r["mode"] for r in result["runs"]] == result["order"]
    assert {"off_per_s", "hang_per_s", "answer_per_s", "hang_ratio"} <= set(result["throughput"])
    target = result["target"]
    # Counts are exact at any size (the benchmark raises otherwise); timings are not checked.
    assert target["notifications_exact"] is True
    assert target["zero_errors"], result["runs"]
    assert target["every_callback_received"], result["latency"]
    assert target["every_callback_verified"], result["latency"]
    steps = {s["step"]: s for s in result["notifications"]["steps"]}
    assert [steps[k]["sendMail_per_version"] for k in steps] == [2, 2, 0, 2]
    assert [steps[k]["sendReminderSms_per_version"] for k in steps] == [1, 1, 0, 0]
    light = result["latency"]["light_load"]
    for key in ("accepted_to_receipt", "decided_to_receipt", "commit_to_receipt"):
        assert {"count", "p50_ms", "p95_ms"} <= set(light[key])
        assert light[key]["count"] == light["appointments"]
