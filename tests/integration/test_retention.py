"""Retention on Azurite: RETENTION_DAYS after an appointment ends, its clients are pseudonymized.

Most tests run the pass over a table of their own, seeded as the reconciler would have left it
(devtools/seeding.py), with an injected clock, so bounds, cursor and idempotency are exact. The
end-to-end tests book through the webhook and the reconciler (Graph emulator) into the app's
table, then scan every table entity and queue message of the account for the client, as the
erasure test does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from devtools.seeding import seed
from shared import listing, retention, runtime, storage
from shared.attendance import Attendance, ClientAttendance
from shared.documents import AppointmentDocument, parse_document, version_key
from shared.events import AppointmentEvent, EraseEvent
from shared.records import AppliedState
from shared.retention_run import Outcome, RetentionRun
from shared.settings import POISON_QUEUE_NAME
from shared.storage import AppointmentStore, ConcurrencyConflict, EventQueue
from shared.timer_functions import apply_retention
from tests.integration.queue_host import fresh_queue, reconcile_all
from tests.integration.test_erasure import Client, post, traces
from tests.support import ALEX, record

START = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)
DAYS = 30
DUE = (END + timedelta(days=DAYS)).timestamp()


def at(moment: float) -> Any:
    return lambda: moment


@pytest.fixture(autouse=True)
def brief_poison_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass hides each parked message it reads while it scans the poison queue: for a second
    here, not 30, so a test sees what the scan left, and other tests' messages soon return."""
    monkeypatch.setattr(storage, "POISON_SCAN_HIDE_SECONDS", 1)


@pytest.fixture
def own_table(azurite: Azurite) -> Iterator[TableClient]:
    """A table for this test alone: no other test's records, cursor or rechecks."""
    name = f"ret{uuid.uuid4().hex[:12]}"
    table = TableClient.from_connection_string(azurite.connection_string, name)
    table.create_table()
    yield table
    table.delete_table()


@pytest.fixture
def poison(azurite: Azurite, event_queue: QueueClient) -> QueueClient:
    return QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)


@pytest.fixture
def app_table_fresh() -> None:
    """The app's table without a cursor or rechecks left by another test."""
    table = runtime.store()._table
    with contextlib.suppress(ResourceExistsError):
        table.create_table()
    for partition in (storage.RETENTION_CURSOR[0], storage.RETENTION_RECHECK):
        for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": partition}):
            table.delete_entity(row["PartitionKey"], row["RowKey"])


def booking(client: Client, index: int = 0, **overrides: Any) -> AppointmentDocument:
    start = START + timedelta(minutes=index)
    value = {
        "externalAppointmentId": f"ret-{uuid.uuid4().hex[:10]}-{index:03d}",
        "lastModifiedDateTime": "2025-12-01T10:00:00Z",
        "organizer": ALEX,
        "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "subject": "Follow-up consultation",
        "appointmentClients": [
            {
                "displayName": client.name,
                "emailAddress": client.email,
                "smsCapablePhoneNumber": client.phone,
            },
            {"displayName": f"Second {client.name}"},
        ],
    } | overrides
    parsed = parse_document(value)
    assert isinstance(parsed, AppointmentDocument), parsed
    return parsed


def applied(document: AppointmentDocument, **fields: Any) -> AppliedState:
    state = AppliedState(
        status="cancelled" if document.is_cancelled else "scheduled",
        version=version_key(document.version),
        document=document,
        organizer_id=None if document.is_cancelled else ALEX,
        meeting_id=None if document.is_cancelled else f"meeting-{document.external_appointment_id}",
        generation=1,
        finished_versions=1,
    )
    return replace(state, **fields)


def entities(table: TableClient) -> dict[tuple[str, str], str]:
    """Every entity's ETag: equal before and after means nothing was written."""
    return {
        (str(e["PartitionKey"]), str(e["RowKey"])): str(e.metadata["etag"])
        for e in table.list_entities()
    }


def private_in(table: TableClient, client: Client) -> list[str]:
    found = []
    for entity in table.list_entities():
        text = json.dumps(dict(entity), default=str, ensure_ascii=False)
        if any(p in text for p in client.private):
            found.append(f"{entity['PartitionKey']}/{entity['RowKey']}")
    return found


def test_due_only_after_end_plus_days_and_zero_keeps_everything(own_table: TableClient) -> None:
    client = Client()
    document = booking(client)
    seed(own_table, [(document, applied(document))])
    store = AppointmentStore(own_table)
    before = entities(own_table)

    assert RetentionRun(store, 0, clock=at(DUE + 10**8)).run().finished
    early = RetentionRun(store, DAYS, clock=at(DUE - 1)).run()
    assert (early.purged, early.not_due) == (0, 1)
    assert private_in(own_table, client) != []
    # The record the walk met before it was due is noted, so the next run looks again.
    assert store.rechecks(10) == [document.external_appointment_id]
    assert {k: v for k, v in entities(own_table).items() if k in before} == before

    done = RetentionRun(store, DAYS, clock=at(DUE)).run()
    assert (done.purged, done.finished) == (1, True)
    assert private_in(own_table, client) == []
    assert store.rechecks(10) == []


def test_names_become_client_n_and_ids_times_status_organizer_stay(
    own_table: TableClient,
) -> None:
    client = Client()
    document = booking(client)
    state = applied(
        document,
        warnings=(f"appointmentClients/0: e-mail not sent: {client.email} refused",),
    )
    seed(own_table, [(document, state)])
    store = AppointmentStore(own_table)
    external_id = document.external_appointment_id

    assert RetentionRun(store, DAYS, clock=at(DUE)).apply(external_id, DUE) is Outcome.PURGED
    stored = store.load(external_id)
    assert stored.applied is not None
    assert stored.desired is not None
    for shown in (stored.applied.document, stored.desired.document):
        assert shown is not None
        assert [
            c.model_dump(by_alias=True, exclude_none=True) for c in shown.appointment_clients
        ] == [
            {"displayName": "client 1"},
            {"displayName": "client 2"},
        ]
        assert shown.external_appointment_id == external_id
        assert (shown.start, shown.end, shown.status) == (document.start, document.end, "scheduled")
        assert shown.organizer == ALEX
        assert shown.last_modified_date_time == document.last_modified_date_time
    assert stored.applied.meeting_id == state.meeting_id
    assert stored.applied.organizer_id == ALEX
    assert stored.applied.status == "scheduled"
    assert stored.applied.version == state.version
    assert stored.applied.warnings[-1] == retention.NOTE
    assert private_in(own_table, client) == []
    # Listed as before: the index rows did not move.
    [(_, listed)] = store.page(listing.Filter(), None, 10).records
    assert listed.applied is not None
    assert listed.applied.document == stored.applied.document


def test_attendance_keeps_its_counts_and_loses_its_names(own_table: TableClient) -> None:
    client = Client()
    document = booking(client)
    joined = Attendance(
        outcome="completed",
        organizer_seconds=1700,
        clients=(
            ClientAttendance(client.name, END - timedelta(minutes=28), END, 1680),
            ClientAttendance("Browser guest", END - timedelta(minutes=10), END, 600),
        ),
        reports=1,
        checked=END + timedelta(minutes=10),
    )
    seed(own_table, [(document, applied(document, attendance=joined))])
    store = AppointmentStore(own_table)
    external_id = document.external_appointment_id

    assert RetentionRun(store, DAYS, clock=at(DUE)).apply(external_id, DUE) is Outcome.PURGED
    stored = store.load(external_id).applied
    assert stored is not None
    assert stored.attendance is not None
    kept = stored.attendance
    assert [c.display_name for c in kept.clients] == ["client 1", "client 2"]
    assert [(c.join, c.leave, c.seconds) for c in kept.clients] == [
        (c.join, c.leave, c.seconds) for c in joined.clients
    ]
    assert (kept.outcome, kept.organizer_seconds, kept.reports) == ("completed", 1700, 1)
    assert private_in(own_table, client) == []
    assert "Browser guest" not in json.dumps(
        [dict(e) for e in own_table.list_entities()], default=str
    )
    # A second pass finds nothing left to do.
    assert RetentionRun(store, DAYS, clock=at(DUE)).apply(external_id, DUE) is Outcome.CLEAN


def test_a_cancellation_counts_even_when_the_start_is_far_ahead(own_table: TableClient) -> None:
    client = Client()
    later = START + timedelta(days=400)
    document = booking(
        client,
        status="cancelled",
        lastModifiedDateTime="2026-01-05T08:00:00Z",
        startDateTime=later.strftime("%Y-%m-%dT%H:%M:%SZ"),
        endDateTime=(later + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    seed(own_table, [(document, applied(document))])
    store = AppointmentStore(own_table)
    cancelled_at = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp()
    due = cancelled_at + DAYS * 86400

    assert RetentionRun(store, DAYS, clock=at(due - 1)).run().purged == 0
    assert private_in(own_table, client) != []
    report = RetentionRun(store, DAYS, clock=at(due)).run()
    assert report.purged == 1
    assert private_in(own_table, client) == []


def test_a_bounded_run_leaves_the_rest_and_the_next_ones_resume_then_write_nothing(
    own_table: TableClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    documents = [booking(client, i) for i in range(23)]
    seed(own_table, [(d, applied(d)) for d in documents])
    store = AppointmentStore(own_table)
    now = DUE + 3600

    caplog.set_level(logging.DEBUG)
    runs = []
    for _ in range(3):
        report = RetentionRun(store, DAYS, clock=at(now), max_records=10, chunk=4).run()
        runs.append((report.examined, report.purged, report.finished))
    assert runs == [(10, 10, False), (10, 10, False), (3, 3, True)]
    assert private_in(own_table, client) == []
    for document in documents:
        stored = store.load(document.external_appointment_id)
        assert stored.applied is not None
        assert stored.applied.document is not None
        assert retention.is_pseudonymized(stored.applied.document)

    before = entities(own_table)
    again = RetentionRun(store, DAYS, clock=at(now), chunk=4).run()
    assert (again.purged, again.finished) == (0, True)
    assert entities(own_table) == before  # idempotent: not one write
    assert not any(p in caplog.text for p in client.private)
    assert "pseudonymized" in caplog.text


def test_a_live_lease_is_skipped_then_done_next_run(own_table: TableClient) -> None:
    client = Client()
    leased, free = booking(client, 0), booking(client, 1)
    now = DUE + 60
    seed(
        own_table,
        [
            (leased, applied(leased, lease_owner="worker", lease_until=now + 30)),
            (free, applied(free)),
        ],
    )
    store = AppointmentStore(own_table)

    first = RetentionRun(store, DAYS, clock=at(now)).run()
    assert (first.purged, first.busy) == (1, 1)
    stored = store.load(leased.external_appointment_id)
    assert stored.applied is not None
    assert stored.applied.document == leased  # untouched under its lease
    assert store.rechecks(10) == [leased.external_appointment_id]

    second = RetentionRun(store, DAYS, clock=at(now + 31)).run()  # the lease has run out
    assert (second.purged, second.busy) == (1, 0)
    assert private_in(own_table, client) == []
    assert store.rechecks(10) == []


def test_a_reconciliation_that_read_before_the_purge_cannot_write_the_clients_back(
    own_table: TableClient,
) -> None:
    client = Client()
    document = booking(client)
    seed(own_table, [(document, applied(document))])
    store = AppointmentStore(own_table)
    external_id = document.external_appointment_id
    read_before = store.load(external_id)
    assert read_before.applied is not None

    assert RetentionRun(store, DAYS).apply(external_id, DUE) is Outcome.PURGED
    with pytest.raises(ConcurrencyConflict):
        store.commit_applied(
            external_id, read_before.applied, read_before.applied_etag, shown=document
        )
    assert private_in(own_table, client) == []


def test_a_newer_version_during_the_purge_is_decided_again(own_table: TableClient) -> None:
    client = Client()
    document = booking(client)
    seed(own_table, [(document, applied(document))])
    store = AppointmentStore(own_table)
    external_id = document.external_appointment_id
    moved = document.model_copy(
        update={
            "last_modified_date_time": "2025-12-02T10:00:00Z",
            "start_date_time": "2099-01-01T09:00:00Z",
            "end_date_time": "2099-01-01T09:30:00Z",
        }
    )
    purge = store.purge_desired
    calls: list[tuple[Any, ...]] = []

    def newer_arrives_first(*args: Any) -> bool | None:
        if not calls:
            store.save_desired(moved, "late")
        calls.append(args)
        return purge(*args)

    store.purge_desired = newer_arrives_first  # type: ignore[method-assign, assignment]
    # The applied row is pseudonymized; the desired row is a newer, not-yet-due version now.
    assert RetentionRun(store, DAYS).apply(external_id, DUE) is Outcome.NOT_DUE
    stored = store.load(external_id)
    assert stored.desired is not None
    assert stored.desired.document == moved


def test_booked_through_the_app_then_pseudonymized_everywhere_and_kept(
    event_queue: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
    azurite: Azurite,
    app_table_fresh: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client()
    # Tomorrow by the wall clock, which the webhook and the reconciler read; the pass's clock
    # is then moved past its end plus DAYS.
    start = _whole_minute(datetime.now(UTC) + timedelta(days=1))
    body = client.booking(**_times(start))
    due = (start + timedelta(minutes=30, days=DAYS)).timestamp()
    external_id = body["externalAppointmentId"]
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    shown = record(external_id)
    assert shown["status"] == "scheduled"
    assert traces(azurite, client)
    assert runtime.store().rechecks(10) == []  # ahead of the walk: nothing to note
    meetings = emulator.meetings()

    caplog.set_level(logging.DEBUG)
    run = RetentionRun(runtime.store(), DAYS, clock=at(due))
    assert run.apply(external_id, due) is Outcome.PURGED
    assert traces(azurite, client) == []
    assert not any(p in caplog.text for p in client.private)
    after = record(external_id)
    assert after["appointmentClients"] == [{"displayName": "client 1"}]
    for key in ("id", "externalAppointmentId", "status", "organizer", "startDateTime"):
        assert after[key] == shown[key]
    assert after["endDateTime"] == shown["endDateTime"]
    assert after["joinWebUrl"] == shown["joinWebUrl"]
    assert retention.NOTE in after["warnings"]
    assert emulator.meetings() == meetings  # the Teams meeting is not touched

    # A late delivery of the stored version changes nothing: the data does not come back.
    emulator.reset_calls()
    assert post(body) == 202
    reconcile_all(event_queue, poison)
    assert traces(azurite, client) == []
    assert emulator.call_counts() == {}
    assert run.apply(external_id, due) is Outcome.CLEAN

    # A newer version is a change like any other: applied, its clients stored again, and the
    # record noted for a recheck, so the next run pseudonymizes it again.
    newer = body | {"lastModifiedDateTime": "2026-11-21T10:00:00Z"}
    assert post(newer) == 202
    reconcile_all(event_queue, poison)
    assert traces(azurite, client)
    assert runtime.store().rechecks(10) == [external_id]
    report = RetentionRun(runtime.store(), DAYS, clock=at(due), max_records=1).run()
    assert report.purged == 1
    assert traces(azurite, client) == []
    assert runtime.store().rechecks(10) == []
    assert not any(p in caplog.text for p in client.private)


def test_an_old_appointment_delivered_behind_the_walk_is_rechecked_and_a_new_one_costs_nothing(
    event_queue: QueueClient,
    poison: QueueClient,
    emulator: GraphEmulator,
    azurite: Azurite,
    app_table_fresh: None,
) -> None:
    """The walk goes forward in start order up to now - days and keeps its cursor there, so an
    appointment that started before the cursor and arrives later (an EHR's backfill, a change
    that moves one far back) is one no walk would meet: the reconciler notes it for the
    recheck that opens every run. An upcoming one is met by the walk in time: no note."""
    now = datetime.now(UTC)
    cutoff = version_key(now - timedelta(days=DAYS))
    store = runtime.store()
    store.save_retention_cursor({"Main": cutoff})  # the walks have come this far
    old, upcoming = Client(), Client()
    imported = old.booking(**_times(_whole_minute(now - timedelta(days=DAYS + 5))))
    booked = upcoming.booking(**_times(_whole_minute(now + timedelta(days=2))))
    for body in (imported, booked):
        assert post(body) == 202
    reconcile_all(event_queue, poison)
    imported_id = imported["externalAppointmentId"]
    assert record(imported_id)["status"] == "scheduled"
    assert store.rechecks(10) == [imported_id]
    rows = listing.rows_for(listing.stored_facts(imported_id, store.load(imported_id)))
    assert rows
    assert all(row < cutoff for _, row in rows)  # behind the cursor: no walk goes there again

    report = RetentionRun(store, DAYS, max_records=1).run()  # the wall clock: it is due
    assert (report.examined, report.purged) == (1, 1)
    assert traces(azurite, old) == []
    assert traces(azurite, upcoming)  # not due for a month
    assert store.rechecks(10) == []


def test_reindexing_forgets_the_cursor_so_the_next_run_walks_from_the_start(
    own_table: TableClient,
) -> None:
    client = Client()
    documents = [booking(client, i) for i in range(3)]
    seed(own_table, [(d, applied(d)) for d in documents])
    store = AppointmentStore(own_table)
    for partition, row in _index_rows(own_table):  # as if written before the index
        own_table.delete_entity(partition, row)
    store.save_retention_cursor({"Main": version_key(END + timedelta(days=1))})
    assert store.page(listing.Filter(), None, 10).records == []
    assert RetentionRun(store, DAYS, clock=at(DUE + 3600)).run().examined == 0  # none to walk

    assert store.reindex() == 3
    assert store.retention_cursor() == {}
    assert [i for i, _ in store.page(listing.Filter(), None, 10).records] == [
        d.external_appointment_id for d in documents
    ]
    report = RetentionRun(store, DAYS, clock=at(DUE + 3600)).run()
    assert (report.purged, report.finished) == (3, True)
    assert private_in(own_table, client) == []


def _index_rows(table: TableClient) -> list[tuple[str, str]]:
    return [
        (str(e["PartitionKey"]), str(e["RowKey"]))
        for e in table.list_entities()
        if str(e["PartitionKey"]).startswith(listing.PREFIX)
    ]


def _whole_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _times(start: datetime) -> dict[str, str]:
    return {
        "startDateTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": (start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_the_timer_function_runs_a_pass_with_the_setting(
    reconfigure: Any,
    app_table_fresh: None,
    azurite: Azurite,
    poison: QueueClient,
) -> None:
    client = Client()
    long_ago = booking(
        client,
        startDateTime="2020-01-10T09:00:00Z",
        endDateTime="2020-01-10T09:30:00Z",
    )
    table = TableServiceClient.from_connection_string(azurite.connection_string)
    app_table = table.get_table_client(runtime.store()._table.table_name)
    seed(app_table, [(long_ago, applied(long_ago))])
    poison.send_message(AppointmentEvent(long_ago, "parked").to_message())

    reconfigure(RETENTION_DAYS="0")
    apply_retention(None)
    assert private_in(app_table, client) != []
    assert parked_with(poison, client)

    reconfigure(RETENTION_DAYS="30")
    apply_retention(None)
    assert private_in(app_table, client) == []
    time.sleep(1.5)  # what the scan did not delete is visible again
    assert not parked_with(poison, client)


def parked_with(queue: QueueClient, client: Client) -> list[str]:
    """The visible messages of `queue` that hold any of the client's values."""
    return [
        str(m.content)
        for m in queue.peek_messages(max_messages=32)
        if any(p in str(m.content) for p in client.private)
    ]


def test_parked_messages_go_once_their_appointment_is_due_and_the_rest_stay(
    own_table: TableClient, azurite: Azurite
) -> None:
    """appointment-events-poison keeps a message 7 days, longer than a short RETENTION_DAYS,
    and a parked message holds the whole document."""
    name = f"retq{uuid.uuid4().hex[:12]}"
    parked = fresh_queue(azurite.connection_string, f"{name}-poison")
    queue = EventQueue(fresh_queue(azurite.connection_string, name), parked)
    ended, ahead, broken = Client(), Client(), Client()
    far = datetime(2099, 1, 10, 9, tzinfo=UTC)
    erase = EraseEvent("erased-appointment", "c")
    for text in (
        AppointmentEvent(booking(ended), "c").to_message(),
        AppointmentEvent(booking(ahead, 0, **_times(far)), "c").to_message(),
        # Parked because it is malformed: it cannot say when its appointment ends.
        json.dumps({"document": {"appointmentClients": [{"displayName": broken.name}]}}),
        erase.to_message(),
    ):
        queue.send_to_poison(text)
    store = AppointmentStore(own_table)
    now = time.time()

    first = RetentionRun(store, DAYS, clock=at(now), queue=queue).run()
    assert (first.parked, first.finished) == (1, True)
    time.sleep(1.5)
    assert not parked_with(parked, ended)
    assert parked_with(parked, broken)
    later = RetentionRun(store, DAYS, clock=at(now + (DAYS + 1) * 86400), queue=queue).run()
    assert later.parked == 1  # parked more than DAYS days ago by then
    time.sleep(1.5)
    left = [str(m.content) for m in parked.peek_messages(max_messages=32)]
    assert len(left) == 2
    assert parked_with(parked, ahead)
    assert erase.to_message() in left
    assert not parked_with(parked, broken)


def test_the_devtools_command_runs_one_pass_and_prints_counts(
    app_table_fresh: None,
    azurite: Azurite,
    reconfigure: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from devtools import retention as command

    client = Client()
    long_ago = booking(
        client, startDateTime="2020-02-10T09:00:00Z", endDateTime="2020-02-10T09:30:00Z"
    )
    app_table = runtime.store()._table
    seed(app_table, [(long_ago, applied(long_ago))])

    reconfigure(RETENTION_DAYS="x")
    with pytest.raises(SystemExit):
        command.main([])
    assert "RETENTION_DAYS must be a whole number" in capsys.readouterr().err

    assert command.main(["--days", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["purged"] == 0
    assert private_in(app_table, client) != []
    assert command.main(["--days", "30", "--from-start"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["purged"] >= 1
    assert printed["finished"] is True
    assert not any(p in json.dumps(printed) for p in client.private)
    assert private_in(app_table, client) == []
