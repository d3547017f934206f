"""Cold start: a fresh interpreter that imports the app and serves its first webhook, or its first
reconciliation (token + Graph client + first Graph calls), against the local stack.

Each scenario runs in a new subprocess `REPEATS` times; the median is reported. In the child,
`import_s` is the import of the app (or of `azure.functions` alone, the floor every Python
function pays), `first_call_s` the first invocation, `modules` is `len(sys.modules)` right
after it and `peak_rss_mb` is the process's VmHWM (/proc/self/status). `ru_maxrss` is recorded
too but is not this process's own peak on Linux: the kernel carries the parent's peak across
fork and exec, so a child of a big parent reports the parent's figure. `process_s` is what
the parent sees from spawn to exit (interpreter start-up included); `interpreter` (an empty
`python -c pass`) is its floor. The queue and table exist beforehand (the app creates them on
first use, once per account).

Also the deployment package: `pip install --target <tmp> -r requirements.txt` (the real set, with
dependencies), its total size and the five biggest distributions.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ALEX, ROOT, SECRET, Stack, ensure_storage, table
from bench.reconcile import message_text

REPEATS = 5

_REPORT = """
_n = len(sys.modules)
_graph = any(m == "msgraph" or m.startswith("msgraph.") for m in sys.modules)
import resource, json
_status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
print(json.dumps({"import_s": _t1 - _t0, "first_call_s": _t2 - _t1, "modules": _n,
    "msgraph_loaded": _graph,
    "peak_rss_mb": int(_status["VmHWM"].split()[0]) / 1024,
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SCRIPTS = {
    "interpreter": "import sys, time\n_t0 = _t1 = _t2 = time.perf_counter()\n" + _REPORT,
    "import_azure_functions": (
        "import sys, time\n_t0 = time.perf_counter()\nimport azure.functions\n"
        "_t1 = _t2 = time.perf_counter()\n" + _REPORT
    ),
    "first_webhook": (
        "import sys, time\n_t0 = time.perf_counter()\nimport function_app\n"
        "_t1 = time.perf_counter()\n"
        "import azure.functions as func\n"
        "from shared import signatures\n"
        "from shared.http_api import receive_appointments\n"
        "_body = sys.argv[1].encode()\n"
        "_req = func.HttpRequest(method='POST', url='http://localhost/api/webhooks/appointments',"
        " headers={'Content-Type': 'application/json', 'X-Signature': "
        "signatures.sign(sys.argv[2], int(time.time()), _body)}, body=_body)\n"
        "_resp = receive_appointments(_req)\n"
        "assert _resp.status_code == 202, _resp.get_body()\n"
        "_t2 = time.perf_counter()\n" + _REPORT
    ),
    "first_reconcile": (
        "import sys, time\n_t0 = time.perf_counter()\nimport function_app\n"
        "_t1 = time.perf_counter()\n"
        "from azure.functions.queue import QueueMessage\n"
        "from shared.queue_functions import reconcile_appointment_event\n"
        "reconcile_appointment_event(QueueMessage(id='m', body=sys.argv[1].encode(), "
        "dequeue_count=1, pop_receipt='r'))\n"
        "_t2 = time.perf_counter()\n" + _REPORT
    ),
}


def _document() -> dict[str, Any]:
    return {
        "externalAppointmentId": f"cold-{uuid.uuid4().hex[:12]}",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": ALEX,
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "subject": "Cold start",
    }


def _once(stack: Stack, scenario: str) -> dict[str, Any]:
    argv = [sys.executable, "-c", SCRIPTS[scenario]]
    if scenario == "first_webhook":
        argv += [json.dumps(_document()), SECRET]
    elif scenario == "first_reconcile":
        argv += [message_text(_document(), "cold")]
    tokens = stack.graph.token_requests()
    calls = sum(v for k, v in stack.graph.call_counts().items() if k != "token")
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=stack.child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = process_s
    result["token_requests"] = stack.graph.token_requests() - tokens
    result["graph_calls"] = (
        sum(v for k, v in stack.graph.call_counts().items() if k != "token") - calls
    )
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in runs), 4)


def package_size() -> dict[str, Any]:
    """Install the runtime requirements into an empty folder and measure it."""
    target = Path(tempfile.mkdtemp(prefix="bench-package-"))
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(target),
                "-r",
                str(ROOT / "requirements.txt"),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        install_s = time.perf_counter() - started
        total = 0
        files = 0
        pycache = 0
        for path in target.rglob("*"):
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                total += size
                files += 1
                if "__pycache__" in path.parts:
                    pycache += size
        distributions: dict[str, int] = {}
        for record in target.glob("*.dist-info/RECORD"):
            name = record.parent.name.split("-")[0]
            size = 0
            for line in record.read_text().splitlines():
                relative = line.split(",", 1)[0]
                candidate = target / relative
                if relative and candidate.is_file():
                    size += candidate.stat().st_size
            distributions[name] = size
        top = sorted(distributions.items(), key=lambda item: item[1], reverse=True)[:5]
        return {
            "install_s": round(install_s, 1),
            "total_mb": round(total / 1e6, 1),
            "without_pycache_mb": round((total - pycache) / 1e6, 1),
            "files": files,
            "distributions": len(distributions),
            "top5": [{"name": n, "mb": round(s / 1e6, 1)} for n, s in top],
        }
    finally:
        shutil.rmtree(target, ignore_errors=True)


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    repeats = 1 if quick else REPEATS
    stack.graph.latency = 0.0
    ensure_storage(stack.connection_string)
    scenarios: dict[str, Any] = {}
    for scenario in SCRIPTS:
        runs = [_once(stack, scenario) for _ in range(repeats)]
        scenarios[scenario] = {
            "repeats": repeats,
            "import_s": _median(runs, "import_s"),
            "first_call_s": _median(runs, "first_call_s"),
            "in_process_s": round(
                statistics.median(r["import_s"] + r["first_call_s"] for r in runs), 4
            ),
            "process_s": _median(runs, "process_s"),
            "modules": int(statistics.median(r["modules"] for r in runs)),
            "peak_rss_mb": round(_median(runs, "peak_rss_mb"), 1),
            "ru_maxrss_mb": round(_median(runs, "ru_maxrss_mb"), 1),
            "msgraph_loaded": bool(runs[-1]["msgraph_loaded"]),
            "token_requests": max(r["token_requests"] for r in runs),
            "graph_calls": max(r["graph_calls"] for r in runs),
        }
    base = scenarios["import_azure_functions"]
    comparison = {
        name: {
            "in_process_vs_azure_functions": round(
                scenarios[name]["in_process_s"] / base["in_process_s"], 2
            ),
            "extra_modules": scenarios[name]["modules"] - base["modules"],
            "extra_rss_mb": round(scenarios[name]["peak_rss_mb"] - base["peak_rss_mb"], 1),
        }
        for name in ("first_webhook", "first_reconcile")
    }
    return {
        "scenarios": scenarios,
        "comparison": comparison,
        "package": None if quick else package_size(),
    }


def report(results: dict[str, Any]) -> str:
    rows = []
    for name, s in results["scenarios"].items():
        rows.append(
            [
                name,
                s["import_s"],
                s["first_call_s"],
                s["in_process_s"],
                s["process_s"],
                s["modules"],
                s["peak_rss_mb"],
                "yes" if s["msgraph_loaded"] else "no",
            ]
        )
    repeats = next(iter(results["scenarios"].values()))["repeats"]
    text = table(
        f"Cold start (median of {repeats} fresh interpreters)",
        [
            "scenario",
            "import s",
            "1st call s",
            "in-proc s",
            "process s",
            "modules",
            "RSS MB",
            "msgraph",
        ],
        rows,
    )
    comparison = [
        [name, c["in_process_vs_azure_functions"], c["extra_modules"], c["extra_rss_mb"]]
        for name, c in results["comparison"].items()
    ]
    text += "\n\n" + table(
        "Against `import azure.functions` alone",
        ["scenario", "time x", "+modules", "+RSS MB"],
        comparison,
    )
    package = results["package"]
    if package:
        text += (
            f"\n\nDeployment package (pip install --target, requirements.txt): "
            f"{package['total_mb']} MB ({package['without_pycache_mb']} MB without "
            f"__pycache__), {package['files']} files, {package['distributions']} distributions"
        )
        text += "\n" + table(
            "Largest distributions", ["name", "MB"], [[t["name"], t["mb"]] for t in package["top5"]]
        )
    else:
        text += "\n\nDeployment package: skipped in --quick"
    return text
