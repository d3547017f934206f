"""Signed callbacks end to end: intake, reconciler and delivery functions on Azurite and the Graph
emulator, delivered over real HTTP to a local receiver that verifies with `standardwebhooks`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.callback_receiver import CallbackReceiver, ReceivedCallback
from devtools.graph_emulator import GraphEmulator
from shared import runtime, settings
from shared.http_api import receive_appointments, resend_callback
from shared.queue_functions import deliver_callback
from shared.settings import CALLBACK_POISON_QUEUE_NAME, CALLBACK_QUEUE_NAME, POISON_QUEUE_NAME
from shared.storage import AppointmentStore
from tests.integration.queue_host import drain, fresh_queue, reconcile_all
from tests.support import (
    ALEX,
    NO_POLICY,
    document,
    encode,
    new_id,
    queue_message,
    record,
    signed_request,
)

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROTATED = "whsec_dGhpcyBpcyBhIHNlY29uZCBzZWNyZXQgZm9yIHRlc3Rz"
# Short delays so that a whole schedule runs in seconds: three retries, then the poison queue.
SCHEDULE = "1,1,1"


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver(secrets=[WHSEC]) as server:
        yield server


@pytest.fixture
def queues(azurite: Azurite, event_queue: QueueClient) -> dict[str, QueueClient]:
    names = {
        "events": event_queue,
        "events-poison": QueueClient.from_connection_string(
            azurite.connection_string, POISON_QUEUE_NAME
        ),
    }
    for key, name in (("callbacks", CALLBACK_QUEUE_NAME), ("poison", CALLBACK_POISON_QUEUE_NAME)):
        names[key] = fresh_queue(azurite.connection_string, name)
    return names


@pytest.fixture
def callbacks_on(
    reconfigure: Callable[..., None],
    receiver: CallbackReceiver,
    queues: dict[str, QueueClient],
    emulator: GraphEmulator,
) -> dict[str, QueueClient]:
    reconfigure(
        SOURCES__appointments__CALLBACKURL=receiver.url,
        SOURCES__appointments__CALLBACKSECRETS=f"{WHSEC},{ROTATED}",
        CALLBACK_RETRY_SCHEDULE=SCHEDULE,
    )
    return queues


def post(body: dict[str, Any]) -> None:
    response = receive_appointments(signed_request(encode(body)))
    assert response.status_code == 202, response.get_body()


def reconcile(queues: dict[str, QueueClient]) -> None:
    reconcile_all(queues["events"], queues["events-poison"])


def deliver(queues: dict[str, QueueClient], deadline: float = 30.0) -> dict[str, int]:
    """Run every callback message (and each retry it schedules) until none is left."""
    return drain(queues["callbacks"], queues["poison"], deliver_callback, deadline_seconds=deadline)


def deliver_visible(queues: dict[str, QueueClient]) -> None:
    """One pass over the callback messages visible now, as one poll of the host would."""
    for message in queues["callbacks"].receive_messages(messages_per_page=32):
        deliver_callback(queue_message(message.content, dequeue_count=message.dequeue_count or 1))
        queues["callbacks"].delete_message(message)


def without_callback(view: dict[str, Any]) -> dict[str, Any]:
    """A record without its `callback` field, which moves on as delivery goes."""
    return {k: v for k, v in view.items() if k != "callback"}


def answered(receiver: CallbackReceiver, status: int = 200) -> list[ReceivedCallback]:
    return [r for r in receiver.received if r.answered == status]


def poisoned(queues: dict[str, QueueClient]) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in queues["poison"].peek_messages(max_messages=32)]


def test_a_new_booking_is_one_signed_callback_carrying_the_record(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    [got] = receiver.received
    assert got.verified, got.verify_error
    assert got.type == "appointment.scheduled"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"].startswith("msg_")
    # One signature per secret, space-separated, so a receiver can rotate.
    assert [s[:3] for s in got.headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]
    assert got.json["timestamp"].endswith("Z")
    now = record(body["externalAppointmentId"])
    assert without_callback(got.data) == without_callback(now)
    assert got.data["joinWebUrl"]
    assert got.data["appointmentClientJoinWebUrl"]
    assert now["callback"] == {
        "type": "appointment.scheduled",
        "status": "delivered",
        "attempts": 1,
        "lastAttemptDateTime": now["callback"]["lastAttemptDateTime"],
        "lastStatusCode": 200,
    }


def test_each_change_owes_its_own_type_and_stale_or_duplicate_deliveries_owe_none(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    body = document(organizer=ALEX)
    external_id = body["externalAppointmentId"]
    post(body)
    reconcile(callbacks_on)
    post(body)  # a duplicate
    post(body | {"lastModifiedDateTime": "2026-11-20T09:00:00Z"})  # stale
    reconcile(callbacks_on)
    moved = body | {
        "lastModifiedDateTime": "2026-11-20T11:00:00Z",
        "startDateTime": "2026-12-01T10:00:00Z",
        "endDateTime": "2026-12-01T10:30:00Z",
    }
    post(moved)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    post(
        {
            "externalAppointmentId": external_id,
            "status": "cancelled",
            "lastModifiedDateTime": "2026-11-20T12:00:00Z",
        }
    )
    reconcile(callbacks_on)
    deliver(callbacks_on)
    types = [r.type for r in answered(receiver)]
    # The first callback may be superseded before delivery: the update carries its news too.
    assert types in (
        ["appointment.scheduled", "appointment.updated", "appointment.cancelled"],
        ["appointment.updated", "appointment.cancelled"],
    )
    assert answered(receiver)[-1].data["status"] == "cancelled"
    assert len({r.headers["webhook-id"] for r in receiver.received}) == len(types)


def test_a_refused_version_owes_a_failed_callback(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    body = document(organizer=NO_POLICY)
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    [got] = receiver.received
    assert got.type == "appointment.failed"
    assert got.data["error"]["code"] == "accessPolicyMissing"


def test_500_three_times_then_200_delivers_once_with_the_newest_record(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    receiver.set_responses([500, 500, 500])
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    statuses = [r.answered for r in receiver.received]
    assert statuses == [500, 500, 500, 200]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # same id each try
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)  # the timestamp is each attempt's own
    now = record(body["externalAppointmentId"])
    assert now["callback"]["status"] == "delivered"
    assert now["callback"]["attempts"] == 4
    assert without_callback(receiver.received[-1].data) == without_callback(now)
    assert poisoned(callbacks_on) == []


def test_500_forever_ends_in_the_poison_queue_and_the_record_says_failed(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    receiver.set_responses([], default_status=500)
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    assert len(receiver.received) == 4  # the first attempt and three retries
    now = record(body["externalAppointmentId"])
    assert now["status"] == "scheduled"  # a callback never fails the appointment
    assert now["callback"]["status"] == "failed"
    assert now["callback"]["lastStatusCode"] == 500
    [parked] = poisoned(callbacks_on)
    assert parked["appointmentId"] == body["externalAppointmentId"]


def test_410_is_tried_once(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    receiver.set_responses([], default_status=410)
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    assert len(receiver.received) == 1
    callback = record(body["externalAppointmentId"])["callback"]
    assert (callback["status"], callback["attempts"], callback["lastStatusCode"]) == (
        "failed",
        1,
        410,
    )
    assert poisoned(callbacks_on) == []


def test_a_burst_while_the_receiver_is_down_delivers_the_newest_state_once(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    receiver.set_responses([], default_status=503)
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)
    for minute in range(1, 5):
        post(
            body
            | {
                "lastModifiedDateTime": f"2026-11-20T10:0{minute}:00Z",
                "startDateTime": f"2026-12-01T1{minute}:00:00Z",
                "endDateTime": f"2026-12-01T1{minute}:30:00Z",
            }
        )
        reconcile(callbacks_on)
        deliver_visible(callbacks_on)  # an attempt while the receiver is down
    assert len(receiver.received) >= 4
    assert answered(receiver) == []
    receiver.set_responses([], default_status=200)
    deliver(callbacks_on)
    delivered = answered(receiver)
    assert len(delivered) == 1
    now = record(body["externalAppointmentId"])
    assert without_callback(delivered[0].data) == without_callback(now)
    assert delivered[0].data["startDateTime"] == "2026-12-01T14:00:00Z"
    assert poisoned(callbacks_on) == []


def test_a_crash_right_after_the_commit_still_delivers(
    callbacks_on: dict[str, QueueClient],
    receiver: CallbackReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = AppointmentStore.commit_applied
    crashed: list[str] = []

    def commit_then_die(
        self: AppointmentStore, external_id: str, state: Any, etag: Any, **kwargs: Any
    ) -> str:
        written = real(self, external_id, state, etag, **kwargs)
        if state.callback is not None and not crashed:
            crashed.append(external_id)
            raise RuntimeError("the worker died right after the commit")
        return written

    monkeypatch.setattr(AppointmentStore, "commit_applied", commit_then_die)
    body = document(organizer=ALEX)
    post(body)
    reconcile(callbacks_on)  # the host redelivers the event: already applied, nothing owed
    deliver(callbacks_on)
    assert crashed == [body["externalAppointmentId"]]
    assert [r.type for r in receiver.received] == ["appointment.scheduled"]
    assert record(body["externalAppointmentId"])["callback"]["status"] == "delivered"


def test_resend_sends_the_current_record_again_as_a_new_callback(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    body = document(organizer=ALEX)
    external_id = body["externalAppointmentId"]
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    response = resend_callback(callback_request(external_id))
    assert response.status_code == 202
    accepted = json.loads(response.get_body())["accepted"][0]
    deliver(callbacks_on)
    first, again = receiver.received
    assert again.type == "appointment.scheduled"
    assert again.headers["webhook-id"] == accepted["webhookId"] != first.headers["webhook-id"]
    assert resend_callback(callback_request(new_id())).status_code == 404


def test_resend_without_a_callback_url_is_409(
    reconfigure: Callable[..., None], queues: dict[str, QueueClient], emulator: GraphEmulator
) -> None:
    reconfigure(SOURCES__appointments__CALLBACKURL="")
    body = document(organizer=ALEX)
    post(body)
    reconcile(queues)
    response = resend_callback(callback_request(body["externalAppointmentId"]))
    assert response.status_code == 409
    assert "SOURCES__appointments__CALLBACKURL" in json.loads(response.get_body())["detail"]
    assert "callback" not in record(body["externalAppointmentId"])
    assert queues["callbacks"].peek_messages() == []


def test_a_misconfigured_callback_fails_closed_at_the_intake(
    reconfigure: Callable[..., None], queues: dict[str, QueueClient]
) -> None:
    reconfigure(SOURCES__appointments__CALLBACKURL="http://ehr.example.com/callbacks")
    response = receive_appointments(signed_request(encode(document())))
    assert response.status_code == 503
    assert b"SOURCES__appointments__CALLBACKURL" in response.get_body()
    assert b"ehr.example.com" not in response.get_body()


def callback_request(external_id: str) -> Any:
    import azure.functions as func

    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/appointments/{external_id}/callback",
        headers={},
        body=b"",
        route_params={"externalAppointmentId": external_id},
    )


def test_the_runtime_builds_one_delivery_per_process(callbacks_on: dict[str, QueueClient]) -> None:
    assert runtime.callback_delivery() is runtime.callback_delivery()
    assert runtime.callback_client() is runtime.callback_client()


def test_a_message_ahead_of_its_commit_waits_then_is_dropped_and_junk_is_parked(
    callbacks_on: dict[str, QueueClient], receiver: CallbackReceiver
) -> None:
    from shared.callback_delivery import CallbackDelivery, DeliveryResult
    from shared.callbacks import CallbackMessage

    body = document(organizer=ALEX)
    external_id = body["externalAppointmentId"]
    post(body)
    reconcile(callbacks_on)
    deliver(callbacks_on)
    ahead = CallbackMessage(external_id, "msg_never_committed", 2, time.time()).to_message()

    def delivery(clock: Callable[[], float]) -> CallbackDelivery:
        current = settings.current()
        return CallbackDelivery(
            runtime.store(),
            runtime.callback_queue(),
            runtime.callback_client,
            current.callback_target,
            current.callback_retry_schedule,
            clock=clock,
        )

    assert delivery(time.time).handle(ahead) is DeliveryResult.WAITING
    deadline = time.monotonic() + 5
    again: list[Any] = []
    while not again and time.monotonic() < deadline:  # it was sent again, hidden for a second
        again = list(callbacks_on["callbacks"].receive_messages(max_messages=1))
        time.sleep(0.1)
    assert [m.content for m in again] == [ahead]
    late = delivery(lambda: time.time() + 121)
    assert late.handle(ahead) is DeliveryResult.DROPPED
    old = CallbackMessage(external_id, "msg_older", 0, time.time()).to_message()
    assert late.handle(old) is DeliveryResult.SUPERSEDED
    assert late.handle("not a callback message") is DeliveryResult.MALFORMED
    assert [m.content for m in callbacks_on["poison"].peek_messages()] == ["not a callback message"]
    assert len(receiver.received) == 1  # none of these posted anything


def test_a_named_source_sends_its_callbacks_to_its_own_url(
    reconfigure: Callable[..., None],
    receiver: CallbackReceiver,
    queues: dict[str, QueueClient],
    emulator: GraphEmulator,
) -> None:
    from shared.http_api import receive_source
    from shared.signatures import sign
    from tests.support import source_request

    with CallbackReceiver(secrets=[ROTATED]) as clinic:
        reconfigure(
            SOURCES__appointments__CALLBACKURL=receiver.url,
            SOURCES__appointments__CALLBACKSECRETS=WHSEC,
            SOURCES__clinic__KIND="native",
            SOURCES__clinic__SECRETS="clinic-secret-0123456789",
            SOURCES__clinic__CALLBACKURL=clinic.url,
            SOURCES__clinic__CALLBACKSECRETS=ROTATED,
        )
        raw = encode(document(organizer=ALEX))
        headers = {
            "Content-Type": "application/json",
            "X-Signature": sign("clinic-secret-0123456789", int(time.time()), raw),
        }
        assert receive_source(source_request("clinic", raw, headers)).status_code == 202
        reconcile(queues)
        deliver(queues)
        [got] = clinic.received
        assert got.verified
        assert got.data["source"] == "clinic"
        assert receiver.received == []
