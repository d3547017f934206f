"""Black box: the named sources `make run` configures, one per kind, over real HTTP.

Each delivery is authenticated the way its sender does it (HL7 Bearer, Calendly's
`Calendly-Webhook-Signature`, Cal.com's `X-Cal-Signature-256`) with the sample secrets of
devtools/samples.py, and must end as a Teams meeting in the Graph emulator. Ids are fresh per
test, so the tests share the package's stack and can run in any order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest

from devtools import cli, samples
from devtools.run import EXAMPLE_HL7_ID, ROOT
from shared import signatures
from shared.sources import calcom
from tests.e2e.conftest import RunningStack, meetings, settled, wait_for
from tests.support import new_id

ALEX = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"
MEGAN = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e02"
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "examples"
SECRETS = {source.name: source.secret for source in samples.SOURCES}


@pytest.fixture(scope="module", autouse=True)
def ready(stack: RunningStack) -> None:
    """The banner (printed once the sample directory is loaded) names every sample source."""
    banner = stack.output()
    for source in samples.SOURCES:
        assert f"/api/webhooks/{source.name}  (secret: {source.secret})" in banner
    assert "epic 1234   -> alex.wilber@contoso.onmicrosoft.com" in banner


def siu_s12(appointment: str, control: str, clinician: str) -> bytes:
    """An SIU^S12 (v2.5.1, CR-separated as interface engines send it) for a fresh appointment."""
    segments = [
        "MSH|^~\\&|EHR|NORTHCLINIC|TEAMSBRIDGE|CONTOSO|20270301090000||SIU^S12^SIU_S12|"
        f"{control}|P|2.5.1",
        f"SCH|P-{appointment}|{appointment}|||||FOLLOWUP^Follow-up^L||30|min|"
        "^^30^20270315140000^20270315143000|||||||||||||||Booked",
        "TQ1|1||||||20270315140000|20270315143000",
        "PID|1||MRN-1^^^NORTHCLINIC^MR||Patient^Jordan||19800101|U|||||"
        "^PRN^CP^^1^206^5550100~^NET^Internet^jordan.patient@example.com",
        "RGS|1|A",
        f"AIP|1|A|{clinician}^CLINICIAN^ROBIN|ATT^Attending^L||20270315140000|||30|min||Booked",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def post_hl7(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/hl7-v2", "Authorization": f"Bearer {SECRETS['epic']}"}
    return client.post("/api/webhooks/epic", content=body, headers=headers)


def ack_of(response: httpx.Response) -> Any:
    return hl7.parse(response.content.decode("utf-8"))


def has_meeting(record: dict[str, Any]) -> bool:
    return bool(record.get("joinWebUrl")) and bool(record.get("appointmentClientJoinWebUrl"))


def live_meeting_of(graph_admin: httpx.Client, record: dict[str, Any]) -> dict[str, Any]:
    [meeting] = [m for m in meetings(graph_admin) if m["id"] == record["id"]]
    return meeting


def test_an_hl7_s12_is_acknowledged_aa_and_becomes_a_meeting(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    appointment, control = new_id(), new_id()
    # 1234 is the directory entry `make run` loads for Alex.
    response = post_hl7(client, siu_s12(appointment, control, "1234"))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/hl7-v2")
    ack = ack_of(response)
    assert str(ack.segment("MSH")[9]) == "ACK^S12^ACK"
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == control

    record = wait_for(client, f"epic:{appointment}", settled("scheduled"))
    assert record["organizerId"] == ALEX
    assert record["source"] == "epic"
    assert record["sourceAppointmentId"] == appointment
    assert has_meeting(record)
    # TIMEZONE America/New_York: the wall time 14:00 on 15 March 2027 is EDT.
    assert record["startDateTime"].startswith("2027-03-15T14:00:00")
    assert record["startDateTime"].endswith("-04:00")
    assert record["appointmentClients"][0]["smsCapablePhoneNumber"] == "+12065550100"
    assert live_meeting_of(graph_admin, record)["user_id"] == ALEX


def test_an_unmapped_clinician_fails_then_is_scheduled_once_the_directory_names_them(
    client: httpx.Client,
) -> None:
    appointment, clinician = new_id(), f"U{new_id()[:12]}"
    response = post_hl7(client, siu_s12(appointment, new_id(), clinician))
    assert str(ack_of(response).segment("MSA")[1]) == "AA"  # stored; the directory comes later

    failed = wait_for(client, f"epic:{appointment}", settled("failed"))
    assert failed["error"]["code"] == "organizerUnmapped"
    assert clinician in failed["error"]["message"]

    saved = client.put(
        "/api/organizers",
        json={"source": "epic", "identifier": clinician, "user": samples.MEGAN},
    )
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"saved": 1}

    # No replay call: saving the entry reconciles the waiting appointment.
    record = wait_for(client, f"epic:{appointment}", settled("scheduled"))
    assert record["organizerId"] == MEGAN
    assert has_meeting(record)
    assert not record.get("error")


def calendly_delivery(event_id: str, invitee_id: str) -> bytes:
    value = json.loads((FIXTURES / "calendly" / "invitee-created.json").read_text())
    payload = value["payload"]
    event_uri = f"https://api.calendly.com/scheduled_events/{event_id}"
    payload["event"] = payload["scheduled_event"]["uri"] = event_uri
    payload["uri"] = f"{event_uri}/invitees/{invitee_id}"
    payload["scheduled_event"]["event_memberships"][0]["user_email"] = samples.ALEX
    return json.dumps(value).encode("utf-8")


def test_a_calendly_invitee_created_becomes_a_meeting(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    event_id = f"EVT-{new_id()}"
    body = calendly_delivery(event_id, f"INV-{new_id()}")
    header = signatures.sign(SECRETS["booking"], int(time.time()), body)

    response = client.post(
        "/api/webhooks/booking",
        content=body,
        headers={"Content-Type": "application/json", "Calendly-Webhook-Signature": header},
    )

    assert response.status_code == 202, response.text
    [accepted] = response.json()["accepted"]
    assert accepted["externalAppointmentId"] == f"booking:{event_id}"
    record = wait_for(client, f"booking:{event_id}", settled("scheduled"))
    assert record["organizerId"] == ALEX
    assert record["subject"] == "Follow-up consultation"
    assert [c["displayName"] for c in record["appointmentClients"]] == ["Avery Quinn"]
    assert has_meeting(record)
    assert live_meeting_of(graph_admin, record)["user_id"] == ALEX


def test_a_calcom_booking_created_becomes_a_meeting(
    client: httpx.Client, graph_admin: httpx.Client
) -> None:
    uid = f"bk-{new_id()}"
    value = json.loads((FIXTURES / "calcom" / "booking-created.json").read_text())
    value["payload"]["uid"] = uid
    value["payload"]["organizer"]["email"] = samples.MEGAN
    body = json.dumps(value).encode("utf-8")

    response = client.post(
        "/api/webhooks/cal",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Cal-Signature-256": calcom.signature(SECRETS["cal"], body),
        },
    )

    assert response.status_code == 202, response.text
    record = wait_for(client, f"cal:{uid}", settled("scheduled"))
    assert record["organizerId"] == MEGAN
    assert len(record["appointmentClients"]) == 2
    assert has_meeting(record)
    assert live_meeting_of(graph_admin, record)["user_id"] == MEGAN


# --- the quick start: the CLI sends the shipped examples as the README shows ----------------


def test_cli_sends_the_examples_as_each_sender_would(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", str(client.base_url).rstrip("/")]
    hl7_example = str(EXAMPLES / "siu-s12.hl7")

    assert cli.main(["send-hl7", "--source", "epic", hl7_example, *url]) == 0
    printed = capsys.readouterr().out
    assert "HTTP 200" in printed
    assert "MSA-1: AA (application accept)" in printed
    assert "MSA-2: EX-MSG-1001" in printed
    record = wait_for(client, f"epic:{EXAMPLE_HL7_ID}", settled("scheduled"))
    assert record["organizerId"] == ALEX
    assert has_meeting(record)

    # Every way an interface engine authenticates, framed or not: the same message again is
    # still acknowledged (a duplicate changes nothing).
    for extra in (["--auth", "basic", "--mllp"], ["--auth", "signature"]):
        assert cli.main(["send-hl7", "--source", "epic", hl7_example, *extra, *url]) == 0
        assert "MSA-1: AA" in capsys.readouterr().out
    assert cli.main(["send-hl7", "--source", "epic", hl7_example, "--secret", "no", *url]) == 1
    assert "HTTP 401" in capsys.readouterr().out

    calendly = str(EXAMPLES / "calendly-invitee-created.json")
    assert cli.main(["send-calendly", "--source", "booking", calendly, *url]) == 0
    assert '"externalAppointmentId": "booking:EX-EVT-2001"' in capsys.readouterr().out
    assert has_meeting(wait_for(client, "booking:EX-EVT-2001", settled("scheduled")))

    calcom_example = str(EXAMPLES / "calcom-booking-created.json")
    assert cli.main(["send-calcom", "--source", "cal", calcom_example, *url]) == 0
    capsys.readouterr()
    assert has_meeting(wait_for(client, "cal:ex-booking-3001", settled("scheduled")))


def test_cli_organizers_put_get_delete(
    client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", str(client.base_url).rstrip("/")]
    identifier = f"C{new_id()[:12]}"
    entry = ["--source", "epic", "--identifier", identifier]

    assert cli.main(["organizers", "put", *entry, "--user", samples.ALEX, *url]) == 0
    assert '"saved": 1' in capsys.readouterr().out
    assert cli.main(["organizers", "get", *entry, *url]) == 0
    assert f'"identifier": "{identifier}"' in capsys.readouterr().out
    assert cli.main(["organizers", "delete", *entry, *url]) == 0
    assert "HTTP 204" in capsys.readouterr().out
    listed = client.get("/api/organizers", params={"source": "epic", "identifier": identifier})
    assert listed.json()["value"] == []


# --- unit level: what the CLI puts on the wire ------------------------------------------------


def test_cli_credentials_match_what_each_kind_verifies(tmp_path: Path) -> None:
    body = b"MSH|^~\\&|A|B|C|D|20270301090000||SIU^S12|1|P|2.5.1\r"
    assert cli.calcom_signature("s", body) == calcom.signature("s", body)
    assert cli.hl7_auth_headers("bearer", "s", body, user="u", timestamp=1) == {
        "Authorization": "Bearer s"
    }
    [basic] = cli.hl7_auth_headers("basic", "s", body, user="u", timestamp=1).values()
    assert base64.b64decode(basic.removeprefix("Basic ")) == b"u:s"
    [signed] = cli.hl7_auth_headers("signature", "s", body, user="u", timestamp=7).values()
    expected = hmac.new(b"s", b"7." + body, hashlib.sha256).hexdigest()
    assert signed == f"t=7,v1={expected}"
    assert cli.mllp_frame(body) == b"\x0b" + body + b"\x1c\r"
    assert cli.mllp_frame(cli.mllp_frame(body)) == cli.mllp_frame(body)

    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"SOURCES__Epic__SECRETS": "mine, older"}}))
    assert cli.resolve_source_secret("epic", None, settings) == "mine"
    assert cli.resolve_source_secret("booking", None, settings) == SECRETS["booking"]
    assert cli.resolve_source_secret("epic", "explicit", settings) == "explicit"
    with pytest.raises(cli.CliError):
        cli.resolve_source_secret("nosuchsource", None, settings)


def test_cli_describes_an_error_ack_readably() -> None:
    ack = (
        b"\x0bMSH|^~\\&|TEAMSBRIDGE|CONTOSO|EHR|NORTHCLINIC|20270301090000||ACK^S12^ACK|9|P|2.5.1\r"
        b"MSA|AE|EX-MSG-1|No start time \\F\\ no duration\r"
        b"ERR||SCH^1^11^1^4|101^Required field missing^HL70357|E\r\x1c\r"
    )
    lines = cli.describe_ack(ack)
    assert lines is not None
    assert lines[:3] == [
        "MSA-1: AE (application error)",
        "MSA-2: EX-MSG-1  (the message's MSH-10)",
        "MSA-3: No start time | no duration",
    ]
    assert "ERR-2 (location): SCH^1^11^1^4" in lines
    assert "ERR-3 (error code): 101^Required field missing^HL70357" in lines
    assert cli.ack_code(ack) == "AE"
    assert cli.describe_ack(b'{"status": 400}') is None
