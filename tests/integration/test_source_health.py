"""Source health through the real HTTP functions and Azurite: what a source's deliveries came to.

Each test configures sources with fresh names, so the counters it reads are its own. The
recorder writes in the background; tests wait for it with its flush hook, never a sleep.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableClient

from devtools.azurite import Azurite
from shared import health, signatures
from shared.http_api import get_source_health, receive_source, source_health
from shared.storage import SourceHealthTable
from tests.support import ALEX_UPN, source_request

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SECRET = "health-secret-0123456789"
# Client data the deliveries carry: none of it may appear in a health answer.
PATIENT = "Quillon Vantablack"
EMAIL = "quillon.vantablack@example.org"
BAD_TIME = "2026-99-ZZ Quillon"


def fresh(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


@pytest.fixture
def names(reconfigure: Callable[..., None]) -> dict[str, str]:
    chosen = {"hl7": fresh("h"), "calendly": fresh("c"), "broken": fresh("b")}
    reconfigure(
        **{
            f"SOURCES__{chosen['hl7']}__KIND": "hl7v2",
            f"SOURCES__{chosen['hl7']}__SECRETS": SECRET,
            f"SOURCES__{chosen['calendly']}__KIND": "calendly",
            f"SOURCES__{chosen['calendly']}__SECRETS": SECRET,
            f"SOURCES__{chosen['broken']}__KIND": "hl7v2",
            f"SOURCES__{chosen['broken']}__SECRETS": SECRET,
            f"SOURCES__{chosen['broken']}__TIMEZONE": "Nowhere/Atlantis",
        }
    )
    return chosen


def hl7(name: str, appointment: str, control: str, **fields: str) -> bytes:
    raw = (FIXTURES / "hl7" / name).read_bytes()
    raw = raw.replace(b"FL-8001", appointment.encode()).replace(b"CTL000", control.encode())
    raw = raw.replace(b"SAMPLE&&&&Samplesson^ALEX", b"VANTABLACK^QUILLON")
    for old, new in fields.items():
        raw = raw.replace(old.encode(), new.encode())
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def hl7_post(
    source: str, body: bytes, *, secret: str = SECRET, content_type: str = "application/hl7-v2"
) -> func.HttpResponse:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {secret}"}
    answer: func.HttpResponse = receive_source(source_request(source, body, headers))
    return answer


def calendly_body(event_id: str | None = None, event: str = "invitee.created") -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / "calendly" / "invitee-created.json").read_text())
    body["event"] = event
    payload = body["payload"]
    scheduled = payload["scheduled_event"]
    scheduled["uri"] = f"https://api.calendly.com/scheduled_events/{event_id or uuid.uuid4().hex}"
    scheduled["start_time"], scheduled["end_time"] = "2026-12-10T16:00:00Z", "2026-12-10T16:30:00Z"
    scheduled["event_memberships"][0]["user_email"] = ALEX_UPN
    payload["name"], payload["email"] = PATIENT, EMAIL
    return body


def calendly_post(
    source: str, body: dict[str, Any] | bytes, *, secret: str = SECRET, **extra: str
) -> func.HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = signatures.sign(secret, int(time.time()), raw)
    headers = {"Content-Type": "application/json", "Calendly-Webhook-Signature": header, **extra}
    answer: func.HttpResponse = receive_source(source_request(source, raw, headers))
    return answer


def health_of(source: str) -> tuple[int, dict[str, Any]]:
    assert source_health().flush(30), "the health writer did not catch up"
    response = get_source_health(
        func.HttpRequest(
            method="GET",
            url=f"http://localhost:7071/api/sources/{source}",
            body=b"",
            route_params={"source": source},
        )
    )
    return response.status_code, json.loads(response.get_body())


def assert_no_client_data(answer: dict[str, Any]) -> None:
    text = json.dumps(answer)
    for secret_text in (PATIENT, "Quillon", "Vantablack", "QUILLON", "VANTABLACK", EMAIL):
        assert secret_text not in text
    assert "2026-99-ZZ" not in text
    assert SECRET not in text


def test_an_hl7_source_counts_accepted_ignored_and_refused_deliveries(
    names: dict[str, str],
) -> None:
    source = names["hl7"]
    appointment = f"FL-{uuid.uuid4().hex[:10]}"
    before = time.time()
    outcomes = [
        hl7_post(source, hl7("siu-s12-v28-tq1.hl7", appointment, "C1")),  # AA
        hl7_post(source, hl7("siu-s12-v28-tq1.hl7", appointment, "C1")),  # AA, a duplicate
        hl7_post(source, hl7("siu-s26-v28-noshow.hl7", appointment, "C2")),  # AA, ignored
        hl7_post(
            source,
            hl7("siu-s12-v28-tq1.hl7", appointment, "C3", **{"20260105093000+0100": BAD_TIME}),
        ),  # AE TQ1-7
        hl7_post(source, b"PID|1||Quillon Vantablack"),  # 400: no MSH
        hl7_post(source, hl7("siu-s12-v28-tq1.hl7", appointment, "C4"), secret="wrong"),  # 401
        hl7_post(
            source,
            hl7("siu-s12-v28-tq1.hl7", appointment, "C5"),
            content_type="application/x-quillon",
        ),  # 415
    ]
    assert [o.status_code for o in outcomes] == [200, 200, 200, 200, 400, 401, 415]
    status, answer = health_of(source)
    assert status == 200
    assert {k: answer[k] for k in ("name", "kind", "accepted", "ignored", "refused")} == {
        "name": source,
        "kind": "hl7v2",
        "accepted": 2,
        "ignored": 1,
        "refused": 4,
    }
    last = answer["lastDeliveryDateTime"]
    assert before - 1 <= _unix(last) <= time.time() + 1
    reasons = [r["reason"] for r in answer["recentRefusals"]]
    assert reasons == [
        "415 Content-Type not supported",
        "401 the credentials do not match",
        "400 /: must be an HL7 v2 message starting with an MSH segment",
        "AE TQ1-7: must be an HL7 date/time, YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]",
    ]
    times = [_unix(r["receivedDateTime"]) for r in answer["recentRefusals"]]
    assert times == sorted(times, reverse=True)
    assert times[0] <= _unix(last)
    assert_no_client_data(answer)


def test_a_calendly_source_counts_its_deliveries_and_names_paths_not_values(
    names: dict[str, str],
) -> None:
    source = names["calendly"]
    bad_start = calendly_body()
    bad_start["payload"]["scheduled_event"]["start_time"] = BAD_TIME
    legacy = json.loads((FIXTURES / "calendly" / "invitee-created-legacy.json").read_text())
    answers = [
        calendly_post(source, calendly_body()),
        calendly_post(source, calendly_body(event="routing_form_submission.created")),
        calendly_post(source, bad_start),
        calendly_post(source, legacy),
        calendly_post(source, calendly_body(), secret="wrong"),
        calendly_post(source, b"{not json, Quillon"),
        calendly_post(source, calendly_body(), **{"Content-Length": "99999999"}),
    ]
    assert [a.status_code for a in answers] == [202, 202, 400, 400, 401, 400, 413]
    status, answer = health_of(source)
    assert status == 200
    assert (answer["kind"], answer["accepted"], answer["ignored"], answer["refused"]) == (
        "calendly",
        1,
        1,
        5,
    )
    reasons = [r["reason"] for r in answer["recentRefusals"]]
    assert reasons[0] == "413 body over 262144 bytes"
    assert reasons[1].startswith("400 : Expecting property name") or reasons[1].startswith(
        "400 /: Expecting property name"
    )
    assert reasons[2] == "401 signature does not match"
    assert reasons[3].startswith("400 /payload/scheduled_event")
    assert reasons[4].startswith("400 /payload/scheduled_event/start_time: must be")
    assert_no_client_data(answer)


def test_recent_refusals_are_the_newest_fifty_newest_first(names: dict[str, str]) -> None:
    source = names["calendly"]
    for _ in range(54):
        assert calendly_post(source, calendly_body(), secret="wrong").status_code == 401
    assert calendly_post(source, calendly_body(), **{"Content-Type": "text/csv"}).status_code == 415
    status, answer = health_of(source)
    assert status == 200
    assert answer["refused"] == 55
    refusals = answer["recentRefusals"]
    assert len(refusals) == health.RECENT
    assert refusals[0]["reason"] == "415 Content-Type not supported"
    assert {r["reason"] for r in refusals[1:]} == {"401 signature does not match"}
    times = [_unix(r["receivedDateTime"]) for r in refusals]
    assert times == sorted(times, reverse=True)


def test_old_refusals_are_trimmed_to_the_newest_fifty(azurite: Azurite) -> None:
    table = SourceHealthTable(
        TableClient.from_connection_string(azurite.connection_string, health.TABLE_NAME)
    )
    source = fresh("t")
    now = time.time()
    for start in range(0, 80, 20):
        refusals = [health.Refusal(now + i, f"401 rule {i}") for i in range(start, start + 20)]
        tally = health.Tally(refused=20, last=now + start + 19)
        table.write(source, tally, refusals)
    table.trim(source)
    kept = list(
        table._table.query_entities(
            "PartitionKey eq @pk and RowKey ge 'refusal~' and RowKey lt 'refusal~~'",
            parameters={"pk": source},
        )
    )
    assert len(kept) == health.RECENT
    tally, newest = table.read(source)
    assert tally.refused == 80
    assert [r.reason for r in newest] == [f"401 rule {i}" for i in range(79, 29, -1)]


def test_a_misconfigured_source_shows_what_it_turned_away_and_an_unknown_one_is_404(
    names: dict[str, str],
) -> None:
    broken = names["broken"]
    assert hl7_post(broken, b"MSH|^~\\&|x").status_code == 503
    status, answer = health_of(broken)
    assert status == 200
    assert (answer["kind"], answer["refused"], answer["accepted"]) == ("hl7v2", 1, 0)
    assert [r["reason"] for r in answer["recentRefusals"]] == [
        f"503 misconfigured: SOURCES__{broken}__TIMEZONE"
    ]
    unknown = fresh("u")
    assert hl7_post(unknown, b"MSH|^~\\&|x").status_code == 404
    assert health_of(unknown)[0] == 404


def test_the_default_source_is_configured_and_native() -> None:
    status, answer = health_of("appointments")
    assert status == 200
    assert answer["name"] == "appointments"
    assert answer["kind"] == "native"


def test_two_hundred_deliveries_from_eight_threads_count_exactly(names: dict[str, str]) -> None:
    source = names["calendly"]
    expected = {"accepted": 0, "ignored": 0, "refused": 0}
    lock = threading.Lock()

    def deliver(index: int) -> None:
        if index % 4 == 0:
            answer, result = calendly_post(source, calendly_body(), secret="wrong"), "refused"
        elif index % 4 == 1:
            ignored = calendly_body(event="routing_form_submission.created")
            answer, result = calendly_post(source, ignored), "ignored"
        else:
            answer, result = calendly_post(source, calendly_body()), "accepted"
        assert answer.status_code in (202, 401)
        with lock:
            expected[result] += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(deliver, range(200)))
    status, answer = health_of(source)
    assert status == 200
    assert (
        {k: answer[k] for k in expected}
        == expected
        == {
            "accepted": 100,
            "ignored": 50,
            "refused": 50,
        }
    )


def test_concurrent_writers_on_the_sharded_counters_lose_no_increment(azurite: Azurite) -> None:
    """Eight writers (as eight instances would) merging into the same source's shards."""
    table = SourceHealthTable(
        TableClient.from_connection_string(azurite.connection_string, health.TABLE_NAME)
    )
    source = fresh("w")
    contended = 0
    lock = threading.Lock()

    def one(_: int) -> None:
        nonlocal contended
        while True:
            try:
                table.write(source, health.Tally(accepted=1, last=time.time()), [])
                return
            except Exception:  # every shard was taken meanwhile: nothing written, try again
                with lock:
                    contended += 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(200)))
    tally, _ = table.read(source)
    assert tally.accepted == 200


def test_the_route_answers_503_when_storage_is_down(
    names: dict[str, str], reconfigure: Callable[..., None]
) -> None:
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1"
    )
    reconfigure(AzureWebJobsStorage=dead)
    status, answer = health_of(names["calendly"])
    assert status == 503
    assert answer["status"] == 503


def _unix(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
