"""`python -m devtools.run` as a developer runs it, and the signing CLI against the stack."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from devtools import cli
from devtools.run import ROOT, port_in_use
from tests.e2e.conftest import SECRET, settled, start_stack, stop_stack, wait_for

EXAMPLES = ROOT / "examples"


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process tree checks read /proc")
def test_devtools_run_starts_answers_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        children = descendants(stack.process.pid)
        assert children, "Azurite should run as a child process"
        state = httpx.get(f"{stack.graph_origin}/_emulator/state").json()
        assert any(not user["access_policy"] for user in state["users"])
    finally:
        code = stop_stack(stack)

    assert code == 0, stack.output()
    output = stack.output()
    assert "Local development host (not Azure Functions Core Tools)" in output
    assert "alex.wilber@contoso.onmicrosoft.com" in output
    assert "devtools.cli send examples/appointment.json" in output
    assert not [pid for pid in children if alive(pid)], "a child process outlived devtools.run"
    app_port = int(stack.base_url.rsplit(":", 1)[1])
    graph_port = int(stack.graph_origin.rsplit(":", 1)[1])
    for port in (*stack.storage_ports, graph_port, app_port):
        assert not port_in_use(port), f"port {port} still in use after SIGINT"
    assert (tmp_path / "azurite").is_dir()  # Azurite's data stays for the next run


# --- the CLI against the in-process stack ---------------------------------------------------


def test_cli_send_and_status(client: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(client.base_url).rstrip("/")
    assert (
        cli.main(["send", str(EXAMPLES / "appointment.json"), "--url", url, "--secret", SECRET])
        == 0
    )
    assert "HTTP 202" in capsys.readouterr().out

    record = wait_for(client, "example-appt-1001", settled("scheduled"))
    assert record["appointmentClientJoinWebUrl"]

    assert cli.main(["status", "example-appt-1001", "--url", url]) == 0
    printed = capsys.readouterr().out
    assert '"status": "scheduled"' in printed

    assert (
        cli.main(["send", str(EXAMPLES / "cloudevent.json"), "--url", url, "--secret", SECRET]) == 0
    )
    assert cli.main(["send", str(EXAMPLES / "batch.json"), "--url", url, "--secret", SECRET]) == 0
    assert (
        cli.main(["send", str(EXAMPLES / "appointment.json"), "--url", url, "--secret", "x"]) == 1
    )
    assert "HTTP 401" in capsys.readouterr().out


def test_cli_picks_the_content_type_and_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.infer_content_type(b"[]") == "application/cloudevents-batch+json"
    assert cli.infer_content_type(b'{"specversion": "1.0"}') == "application/cloudevents+json"
    assert cli.infer_content_type(b'{"externalAppointmentId": "a"}') == "application/json"

    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"WEBHOOK_SECRETS": "first, second"}}))
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    assert cli.resolve_secret(None, settings) == "first"
    monkeypatch.setenv("WEBHOOK_SECRET", "from-env")
    assert cli.resolve_secret(None, settings) == "from-env"
    assert cli.resolve_secret("explicit", settings) == "explicit"
    monkeypatch.delenv("WEBHOOK_SECRET")
    with pytest.raises(cli.CliError):
        cli.resolve_secret(None, tmp_path / "missing.json")


def test_examples_are_valid_documents() -> None:
    from shared.documents import parse_document

    for path in sorted(EXAMPLES.glob("*.json")):
        value = json.loads(path.read_text())
        events = value if isinstance(value, list) else [value]
        for event in events:
            document = event.get("data", event)
            parsed = parse_document(document)
            assert not isinstance(parsed, list), f"{path.name}: {parsed}"
