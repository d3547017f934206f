"""Named sources and the organizer directory on real Azurite and the Graph emulator.

Through the HTTP functions with real azure.functions requests and the queue function: a named
native source's documents, their organizer identifiers mapped (or not) by the directory, and
the automatic replay of the appointments that waited on an entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import runtime
from shared.http_api import (
    delete_organizer,
    list_organizers,
    receive_appointments,
    receive_source,
    save_organizers,
)
from shared.settings import POISON_QUEUE_NAME
from tests.integration.queue_host import reconcile_all
from tests.support import (
    ALEX,
    ALEX_UPN,
    MEGAN,
    document,
    encode,
    record,
    signed_request,
    source_request,
)

CLINIC_SECRET = "clinic-secret-abcdef0123456789"


@pytest.fixture
def clinic(reconfigure: Callable[..., None], event_queue: QueueClient) -> QueueClient:
    """A named native source `clinic`, with its own secret, zone and subject."""
    reconfigure(
        SOURCES__clinic__KIND="native",
        SOURCES__clinic__SECRETS=f"old-secret,{CLINIC_SECRET}",
        SOURCES__clinic__TIMEZONE="Europe/London",
        SOURCES__clinic__SUBJECT="Clinic video visit",
    )
    return event_queue


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


def post(source: str, body: dict[str, Any], secret: str = CLINIC_SECRET) -> func.HttpResponse:
    request = signed_request(encode(body), secret=secret)
    routed = source_request(source, request.get_body(), dict(request.headers))
    answer: func.HttpResponse = receive_source(routed)
    return answer


def put_organizers(value: Any) -> func.HttpResponse:
    request = func.HttpRequest(
        method="PUT",
        url="http://localhost:7071/api/organizers",
        headers={"Content-Type": "application/json"},
        body=json.dumps(value).encode(),
    )
    answer: func.HttpResponse = save_organizers(request)
    return answer


def organizers(method: str, **params: str) -> func.HttpResponse:
    request = func.HttpRequest(
        method=method, url="http://localhost:7071/api/organizers", body=b"", params=params
    )
    function = list_organizers if method == "GET" else delete_organizer
    answer: func.HttpResponse = function(request)
    return answer


def test_an_unknown_source_is_a_404_problem(clinic: QueueClient) -> None:
    response = post("nosuch", document())
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_misconfigured_source_answers_503_naming_only_its_setting(
    reconfigure: Callable[..., None],
) -> None:
    reconfigure(SOURCES__broken__KIND="fhir", SOURCES__fine__KIND="native")
    response = post("broken", document())
    assert response.status_code == 503
    assert json.loads(response.get_body())["detail"].endswith("SOURCES__broken__KIND.")
    # The other source is unaffected: it has no secret, so it fails closed on its own terms.
    fine = post("fine", document())
    assert fine.status_code == 503
    assert "no signing secret" in json.loads(fine.get_body())["detail"]


def test_a_named_source_authenticates_with_its_own_secrets(clinic: QueueClient) -> None:
    assert post("clinic", document(), secret="test-secret-0123456789abcdef").status_code == 401
    assert post("clinic", document(), secret="old-secret").status_code == 202
    assert post("CLINIC", document()).status_code == 202  # names match case-insensitively


def test_a_named_source_prefixes_ids_and_applies_its_defaults(
    clinic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    body = document(externalAppointmentId="visit/7?x", organizer=ALEX)
    del body["subject"], body["timeZone"]
    response = post("clinic", body)
    assert response.status_code == 202
    [accepted] = json.loads(response.get_body())["accepted"]
    assert accepted["externalAppointmentId"] == "clinic:visit%2F7%3Fx"
    reconcile_all(clinic, poison)
    shown = record("clinic:visit%2F7%3Fx")
    assert shown["status"] == "scheduled"
    assert (shown["source"], shown["sourceAppointmentId"]) == ("clinic", "visit/7?x")
    assert (shown["subject"], shown["timeZone"]) == ("Clinic video visit", "Europe/London")
    assert [m.subject for m in emulator.meetings()] == ["Clinic video visit"]


def test_the_native_route_ignores_source_fields_a_sender_writes(clinic: QueueClient) -> None:
    body = document(organizer="DR-17", source="clinic", sourceAppointmentId="x")
    response = signed_request(encode(body))
    answer = receive_appointments(response)
    assert answer.status_code == 400
    [error] = json.loads(answer.get_body())["errors"]
    assert error["path"] == "/organizer"


def test_an_unmapped_identifier_fails_and_saving_its_entry_replays_it(
    clinic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    first = post("clinic", document(externalAppointmentId="a-1", organizer="DR-17"))
    second = post("clinic", document(externalAppointmentId="a-2", organizer="dr-17"))
    assert (first.status_code, second.status_code) == (202, 202)
    reconcile_all(clinic, poison)
    failed = record("clinic:a-1")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "organizerUnmapped"
    message = failed["error"]["message"]
    assert "'clinic'" in message
    assert "'DR-17'" in message
    assert "PUT /api/organizers" in message
    assert emulator.meetings() == []

    saved = put_organizers({"source": "clinic", "identifier": "Dr-17", "user": ALEX_UPN})
    assert (saved.status_code, json.loads(saved.get_body())) == (200, {"saved": 1})
    reconcile_all(clinic, poison)  # no replay call: the save enqueued both
    assert record("clinic:a-1")["status"] == "scheduled"
    assert record("clinic:a-2")["organizerId"] == ALEX
    assert {m.user_id for m in emulator.meetings()} == {ALEX}


def test_guid_and_email_identifiers_resolve_without_an_entry(
    clinic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    post("clinic", document(externalAppointmentId="g-1", organizer=MEGAN))
    post("clinic", document(externalAppointmentId="e-1", organizer=ALEX_UPN))
    reconcile_all(clinic, poison)
    assert record("clinic:g-1")["organizerId"] == MEGAN
    assert record("clinic:e-1")["organizerId"] == ALEX


def test_an_entry_wins_over_an_email_identifier(
    clinic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    put_organizers([{"source": "clinic", "identifier": "front.desk@clinic.example", "user": MEGAN}])
    post("clinic", document(externalAppointmentId="d-1", organizer="front.desk@clinic.example"))
    reconcile_all(clinic, poison)
    assert record("clinic:d-1")["organizerId"] == MEGAN


def test_the_directory_routes_save_list_page_and_delete(clinic: QueueClient) -> None:
    entries = [
        {"source": "pager", "identifier": f"id-{n:03d}", "user": ALEX_UPN} for n in range(150)
    ]
    assert json.loads(put_organizers(entries).get_body()) == {"saved": 150}
    first = json.loads(organizers("GET", source="pager").get_body())
    assert len(first["value"]) == 100
    link = urlsplit(first["@odata.nextLink"])
    params = dict(p.split("=", 1) for p in link.query.split("&"))
    rest = json.loads(
        organizers(
            "GET", source="pager", **{"$skiptoken": unquote(params["$skiptoken"])}
        ).get_body()
    )
    assert "@odata.nextLink" not in rest
    seen = {e["identifier"] for e in first["value"] + rest["value"]}
    assert seen == {e["identifier"] for e in entries}
    one = json.loads(organizers("GET", source="pager", identifier="ID-007").get_body())
    assert [(e["identifier"], e["user"]) for e in one["value"]] == [("id-007", ALEX_UPN)]
    assert one["value"][0]["updatedDateTime"].endswith("Z")
    assert organizers("DELETE", source="pager", identifier="id-007").status_code == 204
    assert organizers("DELETE", source="pager", identifier="id-007").status_code == 204
    gone = json.loads(organizers("GET", source="pager", identifier="id-007").get_body())
    assert gone == {"value": []}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"source": "clinic", "identifier": "x", "user": "not a user"}, "/user"),
        ({"source": "appointments", "identifier": "x", "user": ALEX_UPN}, "/source"),
        ([{"source": "clinic", "identifier": "", "user": ALEX_UPN}], "/0/identifier"),
        ([], ""),
        ({"source": "clinic", "user": ALEX_UPN}, "/identifier"),
    ],
)
def test_bad_directory_entries_are_400_problems_with_paths(
    clinic: QueueClient, body: Any, path: str
) -> None:
    response = put_organizers(body)
    assert response.status_code == 400
    assert path in [e["path"] for e in json.loads(response.get_body())["errors"]]


def test_listing_needs_a_source(clinic: QueueClient) -> None:
    assert organizers("GET").status_code == 400
    assert organizers("DELETE", source="clinic").status_code == 400


def test_a_resolved_organizer_costs_no_table_read_within_the_minute(
    clinic: QueueClient, poison: QueueClient, emulator: GraphEmulator
) -> None:
    put_organizers({"source": "clinic", "identifier": "DR-99", "user": ALEX})
    table = runtime.directory().table
    reads: list[str] = []
    original = table.get

    def counted(source: str, identifier: str) -> Any:
        reads.append(identifier)
        return original(source, identifier)

    table.get = counted  # type: ignore[method-assign]
    try:
        for n in range(3):
            post("clinic", document(externalAppointmentId=f"c-{n}", organizer="DR-99"))
        reconcile_all(clinic, poison)
    finally:
        del table.get
    assert reads == ["DR-99"]
    assert emulator.call_counts().get("getUser", 0) == 0


def test_the_first_save_of_a_new_deployment_creates_the_table(
    azurite: Azurite, clinic: QueueClient
) -> None:
    # Found by the hostile-input suite: a transaction on a missing table fails with
    # TableNotFound as a refusal, not a not-found error, and the first PUT answered 500.
    from azure.data.tables import TableServiceClient

    from shared.settings import DIRECTORY_TABLE_NAME

    TableServiceClient.from_connection_string(azurite.connection_string).delete_table(
        DIRECTORY_TABLE_NAME
    )
    saved = put_organizers({"source": "clinic", "identifier": "first", "user": ALEX_UPN})
    assert saved.status_code == 200, saved.get_body()
    found = json.loads(organizers("GET", source="clinic", identifier="first").get_body())
    assert [e["user"] for e in found["value"]] == [ALEX_UPN]
