"""Property: whatever the order and duplication of deliveries, Graph ends equal to the newest
document of every appointment, with no duplicate and no orphan meeting; when Graph refuses the
newest document (an organizer without an access policy), the record says so and the only
meeting left, if any, is the one the record shows.

Real Azurite, the Graph emulator over HTTP, the registered queue function; hypothesis chooses
the version histories and the delivery order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.graph_emulator import GraphEmulator
from shared.documents import parse_rfc3339
from shared.planning import external_id
from tests.integration.test_reconciler import deliver, record
from tests.support import ALEX, MEGAN, NO_POLICY

BASE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ORGANIZERS = [ALEX, MEGAN, NO_POLICY]  # Graph refuses meetings for the last (403)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Successive versions of one appointment, as its scheduling system would send them."""
    appointment = f"prop-{uuid.uuid4().hex[:10]}"
    versions = []
    for minute in range(draw(st.integers(1, 5))):
        cancelled = draw(st.integers(0, 4)) == 0
        body: dict[str, Any] = {
            "externalAppointmentId": appointment,
            "lastModifiedDateTime": f"2026-11-20T10:{minute:02d}:00Z",
        }
        if cancelled:
            body["status"] = "cancelled"
            if draw(st.booleans()):  # senders often repeat the whole document on cancel
                body["organizer"] = draw(st.sampled_from(ORGANIZERS))
        else:
            start = BASE + timedelta(minutes=30 * draw(st.integers(0, 3)))
            body |= {
                "organizer": draw(st.sampled_from(ORGANIZERS)),
                "startDateTime": start.isoformat(),
                "endDateTime": (start + timedelta(minutes=30)).isoformat(),
                "subject": draw(st.sampled_from(["Intake", "Follow-up"])),
            }
        versions.append(body)
    return versions


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    appointments = draw(st.lists(histories(), min_size=1, max_size=3))
    sent = [version for history in appointments for version in history]
    sent += draw(st.lists(st.sampled_from(sent), max_size=len(sent)))  # duplicates
    return appointments, draw(st.permutations(sent))


def live_meetings(graph: GraphEmulator, appointment: str) -> list[Any]:
    prefix = external_id(appointment, 0).rsplit("-g", 1)[0] + "-g"
    return [m for m in graph.meetings() if m.external_id.startswith(prefix)]


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=deliveries())
def test_any_delivery_order_converges_to_the_newest_document(
    graph: GraphEmulator, case: tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    appointments, order = case
    for body in order:
        deliver(body)

    for history in appointments:
        newest = history[-1]
        appointment = newest["externalAppointmentId"]
        meetings = live_meetings(graph, appointment)
        state = record(appointment)
        assert state["pending"] is False
        if newest.get("status") == "cancelled":
            assert meetings == [], "a cancelled appointment keeps no meeting"
            assert state["status"] == "cancelled"
            continue
        if newest["organizer"] == NO_POLICY:
            assert (state["status"], state["error"]["code"]) == ("failed", "accessPolicyMissing")
            assert {m.id for m in meetings} <= {state["id"]}, "an orphan meeting"
            continue
        [meeting] = meetings  # exactly one: no duplicate, no orphan
        assert state["status"] == "scheduled"
        assert state["id"] == meeting.id
        assert meeting.user_id == newest["organizer"]
        assert meeting.subject == newest["subject"]
        assert parse_rfc3339(meeting.start) == parse_rfc3339(newest["startDateTime"])
        assert parse_rfc3339(meeting.end) == parse_rfc3339(newest["endDateTime"])
