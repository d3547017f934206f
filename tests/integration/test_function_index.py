"""What the Functions host sees when it indexes the app, checked in a clean interpreter.

A deployment that imports but registers nothing shows "0 functions found"; one whose webhook
path imports the Graph SDK pays over a second on every cold start. Both are caught here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

GRAPH_SDK = """
def graph_sdk_loaded():
    roots = ("msgraph", "kiota_http", "msgraph_core")
    return sorted(m for m in sys.modules if m.split(".")[0] in roots)
"""

INDEX_SCRIPT = (
    "import json, sys\n"
    + GRAPH_SDK
    + """
import function_app
functions = function_app.app.get_functions()
print(json.dumps({
    "functions": {f.get_function_name(): json.loads(f.get_function_json()) for f in functions},
    "graph_sdk_loaded": graph_sdk_loaded(),
}))
"""
)

WEBHOOK_SCRIPT = (
    "import json, sys, time\n"
    + GRAPH_SDK
    + """
import azure.functions as func
from shared import signatures
import function_app
from shared.http_api import receive_appointments
body = json.dumps({"externalAppointmentId": "cold-start", "status": "cancelled",
                   "lastModifiedDateTime": "2026-01-01T00:00:00Z"}).encode()
headers = {"Content-Type": "application/json",
           "X-Signature": signatures.sign(sys.argv[1], int(time.time()), body)}
request = func.HttpRequest(method="POST", url="http://localhost/api/webhooks/appointments",
                           headers=headers, body=body)
response = receive_appointments(request)
print(json.dumps({"status": response.status_code, "graph_sdk_loaded": graph_sdk_loaded()}))
"""
)


def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_the_host_finds_every_function_with_its_bindings() -> None:
    index = run(INDEX_SCRIPT)
    functions = index["functions"]
    assert set(functions) == {
        "receive_appointments",
        "receive_source",
        "save_organizers",
        "list_organizers",
        "delete_organizer",
        "list_appointments",
        "get_appointment",
        "reconcile_appointments",
        "reconcile_appointment",
        "resend_callback",
        "erase_appointment",
        "get_source_health",
        "health",
        "reconcile_appointment_event",
        "deliver_callback",
        "check_attendance",
        "apply_retention",
    }
    http = {
        name: next(b for b in spec["bindings"] if b["type"] == "httpTrigger")
        for name, spec in functions.items()
        if name
        not in (
            "reconcile_appointment_event",
            "deliver_callback",
            "check_attendance",
            "apply_retention",
        )
    }
    assert {name: (b["route"], b["methods"], b["authLevel"]) for name, b in http.items()} == {
        "receive_appointments": ("webhooks/appointments", ["POST"], "FUNCTION"),
        "receive_source": ("webhooks/{source}", ["POST"], "FUNCTION"),
        "save_organizers": ("organizers", ["PUT"], "FUNCTION"),
        "list_organizers": ("organizers", ["GET"], "FUNCTION"),
        "delete_organizer": ("organizers", ["DELETE"], "FUNCTION"),
        "list_appointments": ("appointments", ["GET"], "FUNCTION"),
        "get_appointment": ("appointments/{externalAppointmentId}", ["GET"], "FUNCTION"),
        "reconcile_appointments": ("appointments/reconcile", ["POST"], "FUNCTION"),
        "reconcile_appointment": (
            "appointments/{externalAppointmentId}/reconcile",
            ["POST"],
            "FUNCTION",
        ),
        "erase_appointment": ("appointments/{externalAppointmentId}", ["DELETE"], "FUNCTION"),
        "resend_callback": (
            "appointments/{externalAppointmentId}/callback",
            ["POST"],
            "FUNCTION",
        ),
        "get_source_health": ("sources/{source}", ["GET"], "FUNCTION"),
        "health": ("health", ["GET"], "ANONYMOUS"),
    }
    for name, queue in (
        ("reconcile_appointment_event", "appointment-events"),
        ("deliver_callback", "appointment-callbacks"),
        ("check_attendance", "appointment-attendance"),
    ):
        [trigger] = functions[name]["bindings"]
        assert trigger == {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "msg",
            "queueName": queue,
            "connection": "AzureWebJobsStorage",
        }
    [timer] = functions["apply_retention"]["bindings"]
    assert timer == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "0 30 2 * * *",  # daily, 02:30 UTC
        "runOnStartup": False,
    }
    assert all(spec["scriptFile"] == "function_app.py" for spec in functions.values())


def test_indexing_and_the_webhook_path_never_import_the_graph_sdk(
    app_environment: dict[str, str],
) -> None:
    assert run(INDEX_SCRIPT)["graph_sdk_loaded"] == []
    served = run(WEBHOOK_SCRIPT, app_environment["WEBHOOK_SECRETS"], env=app_environment)
    assert served == {"status": 202, "graph_sdk_loaded": []}


def test_host_json_reads_queue_messages_as_plain_text() -> None:
    with open("host.json") as handle:
        queues = json.load(handle)["extensions"]["queues"]
    # The intake sends plain JSON; base64 (the host's default) would fail every message.
    assert queues["messageEncoding"] == "none"
