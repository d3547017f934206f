"""Parts kept compact: what the desired row stores combines into the same document."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared import parts
from shared.sources.base import Part

BASE = {
    "externalAppointmentId": "booking:EVT-1",
    "source": "booking",
    "sourceAppointmentId": "EVT-1",
    "organizer": "host@example.org",
    "startDateTime": "2026-12-10T16:00:00Z",
    "endDateTime": "2026-12-10T16:30:00Z",
    "subject": "Group session " + "x" * 200,
    "timeZone": "America/Chicago",
}


@st.composite
def a_part(draw: st.DrawFn) -> Part:
    number = draw(st.integers(0, 30))
    minute = draw(st.integers(0, 59))
    booked = draw(st.booleans())
    warned = draw(st.booleans())
    base = dict(BASE, warnings=["a phone number was left out"]) if warned else dict(BASE)
    client = {"displayName": f"Invitee {number}"} if booked else None
    return Part(f"INV-{number}", f"2026-12-01T10:{minute:02d}:00Z", client, base)


@settings(max_examples=300, deadline=None)
@given(st.lists(a_part(), min_size=1, max_size=40))
def test_compact_parts_combine_into_the_same_document(deliveries: list[Part]) -> None:
    merged: dict[str, Part] = {}
    for part in deliveries:
        merged = parts.merge(merged, part)
    version = parts.next_version(merged.values(), None)
    compact = parts.compact(merged)
    assert parts.combine(compact.values(), version) == parts.combine(merged.values(), version)
    # A repeat of any delivery merged into the compact form changes nothing: still a duplicate.
    for part in deliveries:
        assert parts.merge(compact, part) == compact


def test_a_hundred_and_fifty_cancelled_invitees_fit_one_table_property() -> None:
    merged: dict[str, Part] = {}
    for n in range(150):
        uri = f"https://api.calendly.com/scheduled_events/EVT-1/invitees/{n:036d}"
        merged = parts.merge(merged, Part(uri, f"2026-12-01T10:00:{n % 60:02d}Z", None, BASE))
    kept = [parts.to_json(p) for p in parts.compact(merged).values()]
    stored = json.dumps(kept, separators=(",", ":"))
    assert len(stored) < 32_000  # an Azure Table string property holds 32K UTF-16 characters
