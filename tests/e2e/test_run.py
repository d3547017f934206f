"""`python -m devtools.run` as a developer runs it, and the signing CLI against the stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from devtools import cli, run
from devtools.run import ROOT, LocalStack, StackOptions, clear_azurite_data, port_in_use
from tests.e2e.conftest import (
    SECRET,
    post_signed,
    settled,
    start_stack,
    status_of,
    stop_stack,
    wait_for,
)

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
    assert "Storage starts empty each run, like the Graph emulator" in output
    assert not [pid for pid in children if alive(pid)], "a child process outlived devtools.run"
    app_port = int(stack.base_url.rsplit(":", 1)[1])
    graph_port = int(stack.graph_origin.rsplit(":", 1)[1])
    for port in (*stack.storage_ports, graph_port, app_port):
        assert not port_in_use(port), f"port {port} still in use after SIGINT"
    # The folder stays after a stop; the next run against the emulator clears it at start.
    assert (tmp_path / "azurite").is_dir()


def test_a_second_run_against_the_emulator_starts_with_empty_storage(tmp_path: Path) -> None:
    document = json.loads((EXAMPLES / "appointment.json").read_text())
    external_id = document["externalAppointmentId"]
    first = start_stack(tmp_path)
    try:
        with httpx.Client(base_url=first.base_url, timeout=30.0) as http:
            assert post_signed(http, document).status_code == 202
            assert status_of(http, external_id).status_code == 200
    finally:
        assert stop_stack(first) == 0, first.output()
    data = tmp_path / "azurite"

    def stored() -> bool:
        return any(
            external_id in path.read_text(errors="replace")
            for path in data.rglob("*")
            if path.is_file()
        )

    # The record reached Azurite's files, so only the reset at start can hide it.
    assert stored()
    (data / "not-azurite.txt").write_text("kept")

    second = start_stack(tmp_path)
    try:
        assert httpx.get(f"{second.base_url}/api/appointments/{external_id}").status_code == 404
    finally:
        stop_stack(second)
    assert "Storage starts empty each run" in second.output()
    assert not stored()
    assert (data / "not-azurite.txt").read_text() == "kept"  # only Azurite's own files go


# --- unit level: what the banner and the storage reset decide ----------------------------


def test_python_hint_names_the_venv_python_not_the_interpreter_it_links_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = (tmp_path / "repo").resolve()
    (repo / ".venv" / "bin").mkdir(parents=True)
    venv_python = repo / ".venv" / "bin" / "python"
    # As in a real venv: a symlink to the base interpreter, outside the repository.
    venv_python.symlink_to(Path(sys.executable).resolve())
    monkeypatch.setattr(run, "ROOT", repo)

    monkeypatch.setattr(sys, "executable", str(venv_python))
    assert run._python_hint() == ".venv/bin/python"

    linked = tmp_path / "linked-repo"  # the repository reached through a symlink
    linked.symlink_to(repo)
    monkeypatch.setattr(sys, "executable", str(linked / ".venv" / "bin" / "python"))
    assert run._python_hint() == ".venv/bin/python"

    elsewhere = tmp_path / "other env" / "bin" / "python3"  # not in the repository
    monkeypatch.setattr(sys, "executable", str(elsewhere))
    assert run._python_hint() == f"'{elsewhere}'"  # a path that runs without PATH


def test_storage_is_cleared_only_when_the_stack_starts_its_own_emulator(tmp_path: Path) -> None:
    emulated = {"GRAPH_BASE_URL": "http://127.0.0.1:8081/v1.0"}
    assert LocalStack(emulated).starts_empty_emulator
    assert not LocalStack(emulated, StackOptions(use_emulator=False)).starts_empty_emulator
    assert not LocalStack(
        {"GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0"}
    ).starts_empty_emulator
    assert not LocalStack({}).starts_empty_emulator

    (tmp_path / "__queuestorage__" / "x").mkdir(parents=True)
    for name in ("__azurite_db_table__.json", "__azurite_db_table__.json~", "mine.txt"):
        (tmp_path / name).write_text("{}")
    clear_azurite_data(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.txt"]
    clear_azurite_data(tmp_path / "missing")  # nothing to clear is fine


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

    # Sender-shaped examples (Calendly, Cal.com) are read by their source kind, not as documents.
    native = [p for p in EXAMPLES.glob("*.json") if not p.name.startswith(("calendly-", "calcom-"))]
    for path in sorted(native):
        value = json.loads(path.read_text())
        events = value if isinstance(value, list) else [value]
        for event in events:
            document = event.get("data", event)
            parsed = parse_document(document)
            assert not isinstance(parsed, list), f"{path.name}: {parsed}"
