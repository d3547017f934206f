"""Black box: what `make run` shows of a booking besides the meeting: callbacks and e-mail.

The run starts its own callback receiver and points the default source and the sample sources
at it; the receiver verifies each request's Standard Webhooks signature and lists what arrived
on `GET`. E-mail goes from a seeded emulator mailbox (MAIL_SENDER) and shows up in the
emulator's `/_emulator/state` under "mail". One booking per route, its cancellation after it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import icalendar
import pytest

from devtools import samples
from devtools.azurite import free_port
from devtools.graph_emulator import GraphEmulator
from devtools.run import LocalStack, StackOptions, StartupError, port_in_use
from shared import signatures
from shared.outbound import is_valid_secret, new_secret
from tests.e2e.conftest import (
    DEADLINE_SECONDS,
    RunningStack,
    emulator_state,
    post_signed,
    settled,
    status_of,
    wait_for,
)
from tests.support import encode, new_id


def booking(own_id: str, modified: datetime, status: str = "scheduled") -> dict[str, Any]:
    """A native document with two clients who have an address and one who has only a phone."""
    start = datetime(2027, 4, 12, 15, 0, tzinfo=UTC)
    return {
        "externalAppointmentId": own_id,
        "lastModifiedDateTime": modified.isoformat().replace("+00:00", "Z"),
        "status": status,
        "organizer": samples.ALEX,
        "startDateTime": start.isoformat(),
        "endDateTime": (start + timedelta(minutes=30)).isoformat(),
        "subject": "Follow-up consultation",
        "timeZone": "Europe/Berlin",
        "appointmentClients": [
            {"displayName": "Robin One", "emailAddress": f"{own_id}-one@example.com"},
            {"displayName": "Kim Two", "emailAddress": f"{own_id}-two@example.com"},
            {"displayName": "Sam Phone", "smsCapablePhoneNumber": "+12065550100"},
        ],
        "settings": {"sendEmailNotifications": True},
    }


def post_to(client: httpx.Client, route: str, document: dict[str, Any]) -> None:
    if route == "appointments":
        response = post_signed(client, document)
    else:  # a named native source signs the same way, with its own secret
        raw = encode(document)
        secret = samples.sample_secret(route)
        assert secret is not None
        headers = {
            "Content-Type": "application/json",
            signatures.HEADER: signatures.sign(secret, int(time.time()), raw),
        }
        response = client.post(f"/api/webhooks/{route}", content=raw, headers=headers)
    assert response.status_code == 202, response.text


def callback_of(stack: RunningStack, external_id: str, kind: str) -> dict[str, Any]:
    """The first callback of `kind` for the appointment at the run's receiver."""
    url = stack.callback_url
    deadline = time.monotonic() + DEADLINE_SECONDS
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = httpx.get(url, timeout=10).json()["value"]
        for entry in seen:
            body = entry["body"]
            if (
                isinstance(body, dict)
                and body.get("type") == kind
                and body.get("data", {}).get("externalAppointmentId") == external_id
            ):
                return dict(entry)
        time.sleep(0.1)
    pytest.fail(f"no {kind} callback for {external_id} in {DEADLINE_SECONDS} s; got {seen}")


def mails_to(graph_admin: httpx.Client, addresses: set[str], count: int) -> list[dict[str, Any]]:
    """The e-mails the emulator accepted for these addresses, once there are `count`."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [
            mail
            for mail in emulator_state(graph_admin)["mail"]
            if set(mail["to_addresses"]) & addresses
        ]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    pytest.fail(f"{len(found)} e-mails to {sorted(addresses)}, not {count}")


def invite(mail: dict[str, Any]) -> icalendar.Calendar:
    [attachment] = mail["attachments"]
    assert attachment["name"] == "invite.ics"
    assert attachment["content_type"].startswith("text/calendar")
    return icalendar.Calendar.from_ical(attachment["content_text"])


def without_callback(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "callback"}


@pytest.mark.parametrize("route", ["appointments", "clinic"])
def test_a_booking_calls_back_verified_and_mails_each_client_an_invite(
    route: str, stack: RunningStack, client: httpx.Client, graph_admin: httpx.Client
) -> None:
    own_id = f"cb-{new_id()}"
    external_id = own_id if route == "appointments" else f"{route}:{own_id}"
    addresses = {f"{own_id}-one@example.com", f"{own_id}-two@example.com"}
    modified = datetime.now(UTC).replace(microsecond=0)

    post_to(client, route, booking(own_id, modified))
    record = wait_for(client, external_id, settled("scheduled"))
    scheduled = callback_of(stack, external_id, "appointment.scheduled")
    assert scheduled["verified"], scheduled["verifyError"]
    assert scheduled["answered"] == 200
    # The callback carries the record as GET returned it then; only its delivery state moved.
    assert without_callback(scheduled["body"]["data"]) == without_callback(
        status_of(client, external_id).json()
    )
    assert record["appointmentClientJoinWebUrl"]

    confirmations = mails_to(graph_admin, addresses, 2)
    assert sorted(a for mail in confirmations for a in mail["to_addresses"]) == sorted(addresses)
    assert {mail["sender_id"] for mail in confirmations} == {samples_alex_id(graph_admin)}
    for mail in confirmations:
        calendar = invite(mail)
        assert calendar["METHOD"] == "REQUEST"
        [event] = calendar.walk("VEVENT")
        assert str(event["LOCATION"]) == record["appointmentClientJoinWebUrl"]

    later = modified + timedelta(seconds=1)
    post_to(client, route, booking(own_id, later, status="cancelled"))
    wait_for(client, external_id, settled("cancelled"))
    cancelled = callback_of(stack, external_id, "appointment.cancelled")
    assert cancelled["verified"], cancelled["verifyError"]
    assert cancelled["body"]["data"]["status"] == "cancelled"

    mails = mails_to(graph_admin, addresses, 4)
    cancellations = [mail for mail in mails if invite(mail)["METHOD"] == "CANCEL"]
    assert sorted(a for mail in cancellations for a in mail["to_addresses"]) == sorted(addresses)
    uids = {str(invite(mail).walk("VEVENT")[0]["UID"]) for mail in mails}
    assert len(uids) == 1, "every version's invite names the same event"

    output = stack.output()
    # One line per callback in the run's output, as a developer watches it.
    line = f"CALLBACK appointment.scheduled {external_id} status=scheduled answered=200"
    assert f"{line} verified=yes" in output
    assert f"CALLBACK appointment.cancelled {external_id} status=cancelled" in output


def samples_alex_id(graph_admin: httpx.Client) -> str:
    """The object id of the mailbox `make run` sends from (the first seeded organizer)."""
    users = emulator_state(graph_admin)["users"]
    [alex] = [user for user in users if user["user_principal_name"] == samples.ALEX]
    return str(alex["id"])


def test_the_banner_shows_the_receiver_and_where_e_mails_show_up(stack: RunningStack) -> None:
    output = stack.output()
    assert f"Callbacks: receiver {stack.callback_url}" in output
    assert "for appointments, epic, booking, cal, clinic; secret whsec_" in output
    assert f'under "mail" in {stack.graph_origin}/_emulator/state' in output
    assert httpx.get(stack.callback_url.replace("/callbacks", "/nope")).status_code == 404


# --- unit level: which sources the run's receiver takes, its port and secrets, the mailbox -----


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No app setting of the test process reaches the stack's decisions (they read os.environ)."""
    for name in list(os.environ):
        if name.upper().startswith("SOURCES__") or name.upper() == "MAIL_SENDER":
            monkeypatch.delenv(name)


@pytest.fixture
def emulator() -> Iterator[GraphEmulator]:
    with GraphEmulator() as running:
        yield running


def configured(
    values: dict[str, str], options: StackOptions, emulator: GraphEmulator
) -> LocalStack:
    """A stack that has made its callback and e-mail decisions, its receiver running."""
    stack = LocalStack(values, options, emulator=emulator)
    stack.organizers = emulator.seed_default_users()
    stack._add_sample_sources()
    stack._start_callback_receiver()
    stack._configure_mail()
    return stack


@pytest.mark.usefixtures("clean_environment")
def test_the_receiver_takes_every_source_without_its_own_callback_url(
    emulator: GraphEmulator,
) -> None:
    mine = new_secret()
    values = {
        "SOURCES__Appointments__CallbackUrl": "https://scheduling.example.com/callbacks",
        "SOURCES__appointments__CALLBACKSECRETS": mine,
        "SOURCES__epic__KIND": "hl7v2",  # the developer's own epic: not a sample, left alone
        "MAIL_SENDER": samples.MEGAN,
    }
    stack = configured(values, StackOptions(callback_port=0), emulator)
    try:
        receiver = stack.callback_receiver
        assert receiver is not None
        port = receiver.port
        assert stack.callback_sources == ["booking", "cal", "clinic"]
        assert stack.callback_secrets == (mine,)  # the developer's secret, not a generated one
        assert stack.values["SOURCES__Appointments__CallbackUrl"].startswith("https://")
        assert stack.values["SOURCES__clinic__CALLBACKURL"] == receiver.url
        assert stack.values["SOURCES__clinic__CALLBACKSECRETS"] == mine
        assert not any(key.startswith("SOURCES__epic__C") for key in stack.values)
        assert stack.values["MAIL_SENDER"] == samples.MEGAN
        assert stack.mail_sender is None
        assert stack.values["SOURCES__booking__SENDEMAIL"] == "true"
        assert "SOURCES__epic__SENDEMAIL" not in stack.values
    finally:
        stack.stop()
    assert stack.callback_receiver is None
    assert not port_in_use(port)


@pytest.mark.usefixtures("clean_environment")
def test_the_receiver_moves_off_a_busy_port_and_off_the_app_port(
    emulator: GraphEmulator,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        stack = configured({}, StackOptions(callback_port=busy), emulator)
        try:
            assert stack.callback_receiver is not None
            assert stack.callback_receiver.port != busy
            assert stack.callback_sources[0] == "appointments"
            [secret] = stack.callback_secrets
            assert is_valid_secret(secret)
            assert stack.mail_sender == samples.ALEX
            assert stack.values["MAIL_SENDER"] == samples.ALEX
        finally:
            stack.stop()

    app_port = free_port()
    stack = configured({}, StackOptions(port=app_port, callback_port=app_port), emulator)
    try:
        assert stack.callback_receiver is not None
        assert stack.callback_receiver.port != app_port
    finally:
        stack.stop()


@pytest.mark.usefixtures("clean_environment")
def test_no_receiver_when_turned_off_and_a_bad_secret_stops_the_start(
    emulator: GraphEmulator,
) -> None:
    stack = configured({}, StackOptions(callback_receiver=False), emulator)
    assert stack.callback_receiver is None
    assert not any("CALLBACK" in key.upper() for key in stack.values)
    assert "Callbacks: no local receiver (--no-callback-receiver)" in stack._callback_lines()

    with pytest.raises(StartupError, match="CALLBACKSECRETS"):
        configured({"SOURCES__appointments__CALLBACKSECRETS": "x"}, StackOptions(), emulator)
