"""The whole local stack, started as `make run` starts it, for black-box tests over HTTP.

Choice: the stack is the real `python -m devtools.run` in a subprocess, with its own Azurite
(temporary folder), its own Graph emulator and the local host, all on free ports. Why not the
session's Azurite and emulator in this process, which would save a few seconds:
* the app keeps process-wide state (settings read once, cached clients, the organizer cache in
  the `appointments` table); sharing the session's storage let these tests change what the
  integration tests observe (a UPN already cached), and sharing the process would tie both to
  the same cached settings. A separate process and storage account isolate both ways;
* it is what a developer runs, so these tests also cover `devtools.run` and the settings file.
The tests talk to it only over HTTP on 127.0.0.1: the app's routes, and the emulator's admin API
(`GET /_emulator/state`) for Graph's side. A burst of 200 still fits the time budget.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.azurite import free_port
from devtools.run import ROOT, SAMPLE_FILE, development_connection_string
from shared import signatures
from tests.support import encode

DEADLINE_SECONDS = 30.0
START_SECONDS = 60.0
SECRET = "e2e-secret-0123456789"
READY_LINE = "Press Ctrl-C to stop everything."
APP_SETTINGS = (
    "AzureWebJobsStorage",
    "WEBHOOK_SECRETS",
    "GRAPH_BASE_URL",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "GRAPH_CREDENTIAL",
    "MAIL_SENDER",
    "CALLBACK_RETRY_SCHEDULE",
)


@dataclass
class RunningStack:
    """A `python -m devtools.run` child and where it listens."""

    process: subprocess.Popen[bytes]
    base_url: str
    graph_origin: str
    storage_ports: tuple[int, int, int]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def callback_url(self) -> str:
        """The run's own callback receiver, as its banner names it (GET lists what arrived)."""
        found = re.search(r"^Callbacks: receiver (\S+)", self.output(), re.MULTILINE)
        if found is None:
            pytest.fail(f"the banner names no callback receiver:\n{self.output()}")
        return found.group(1)


def write_settings(folder: Path, storage_ports: tuple[int, int, int], graph_port: int) -> Path:
    """local.settings.json from the sample, moved to the given ports."""
    settings = json.loads(SAMPLE_FILE.read_text())
    settings["Values"].update(
        {
            "AzureWebJobsStorage": development_connection_string(storage_ports),
            "WEBHOOK_SECRETS": f"{SECRET},second-secret",
            "GRAPH_BASE_URL": f"http://127.0.0.1:{graph_port}/v1.0",
            "IDENTITY_ENDPOINT": f"http://127.0.0.1:{graph_port}/msi/token",
        }
    )
    path = folder / "local.settings.json"
    path.write_text(json.dumps(settings))
    return path


def start_stack(folder: Path) -> RunningStack:
    """Start `devtools.run` on free ports and wait until the app and the emulator answer."""
    storage_ports = (free_port(), free_port(), free_port())
    graph_port, app_port, callback_port = free_port(), free_port(), free_port()
    settings = write_settings(folder, storage_ports, graph_port)
    # The test process's own app settings must not leak into the child.
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in APP_SETTINGS and not k.upper().startswith("SOURCES__")
    }
    log = folder / "run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.run",
                "--port",
                str(app_port),
                "--settings",
                str(settings),
                "--azurite-location",
                str(folder / "azurite"),
                "--local-host",
                # Not 7072: a developer's own `make run` may hold it while the tests run.
                "--callback-port",
                str(callback_port),
            ],
            cwd=ROOT,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    stack = RunningStack(
        process,
        f"http://127.0.0.1:{app_port}",
        f"http://127.0.0.1:{graph_port}",
        storage_ports,
        log,
    )
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"devtools.run exited at start:\n{stack.output()}")
        try:
            # Up means what a developer sees: the app answers and the banner is printed (it
            # comes after the sample organizer directory is loaded).
            healthy = httpx.get(f"{stack.base_url}/api/health").status_code == 200
            if healthy and READY_LINE in stack.output():
                return stack
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_stack(stack)
            pytest.fail(
                f"devtools.run did not answer /api/health or print its banner:\n{stack.output()}"
            )
        time.sleep(0.2)


def stop_stack(stack: RunningStack, timeout: float = 30.0) -> int:
    """Ctrl-C, as a developer stops it; kill only if it does not stop in time."""
    if stack.process.poll() is None:
        stack.process.send_signal(signal.SIGINT)
    try:
        return stack.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        stack.process.wait()
        raise


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    stop_stack(running)


@pytest.fixture(scope="package")
def client(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="package")
def graph_admin(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.graph_origin, timeout=30.0) as http:
        yield http


def post_signed(
    client: httpx.Client,
    body: Any,
    *,
    content_type: str = "application/json",
    secret: str = SECRET,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else encode(body)
    headers = {
        "Content-Type": content_type,
        signatures.HEADER: signatures.sign(secret, int(time.time()), raw),
    }
    return client.post("/api/webhooks/appointments", content=raw, headers=headers)


def status_of(client: httpx.Client, external_id: str) -> httpx.Response:
    return client.get(f"/api/appointments/{external_id}")


def wait_for(
    client: httpx.Client,
    external_id: str,
    condition: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = DEADLINE_SECONDS,
) -> dict[str, Any]:
    """Poll the status record until `condition` holds; fail with the last record seen."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | int = 0
    while time.monotonic() < deadline:
        response = status_of(client, external_id)
        if response.status_code == 200:
            record: dict[str, Any] = response.json()
            if condition(record):
                return record
            last = record
        else:
            last = response.status_code
        time.sleep(0.1)
    pytest.fail(f"{external_id} did not reach the expected state in {timeout} s; last: {last}")


def settled(status: str) -> Callable[[dict[str, Any]], bool]:
    """The record shows `status` and no newer document waits."""
    return lambda record: record.get("status") == status and not record.get("pending")


def emulator_state(graph_admin: httpx.Client) -> dict[str, Any]:
    response = graph_admin.get("/_emulator/state")
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def meetings(graph_admin: httpx.Client, *, live: bool = True) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = emulator_state(graph_admin)["meetings"]
    return [m for m in found if not (live and m["deleted"])]
