"""A seeded, realistic mix of appointment deliveries and the fewest Graph calls each must cost.

Mix (of appointments): 60% new, 25% rescheduled, 10% cancelled, 5% organizer changed; then 10%
of appointments get one delivery duplicated (delivered again later) and 10% get their versions
delivered newest first (out of order: the older version arrives after the newer one).

The minimum is computed from the delivered order, as a newest-wins reconciler sees it when each
appointment's deliveries are processed one after another: a version older than or equal to the
newest already seen costs 0; otherwise it costs the contract's call-count table from the last
applied version (new: createOrGet + getJoinWebUrl = 2; time/subject change: 1 PATCH; organizer
change: createOrGet + getJoinWebUrl + DELETE = 3; cancel: 1 DELETE; cancel of a never-scheduled
appointment: 0). No SMS in the mix.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import ALEX, MEGAN

MIX = (("new", 0.60), ("rescheduled", 0.25), ("cancelled", 0.10), ("organizer", 0.05))
DUPLICATE_SHARE = 0.10
OUT_OF_ORDER_SHARE = 0.10


@dataclass
class Appointment:
    external_id: str
    category: str
    versions: list[dict[str, Any]]
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    duplicated: bool = False
    out_of_order: bool = False

    @property
    def newest(self) -> dict[str, Any]:
        return max(self.versions, key=lambda d: d["lastModifiedDateTime"])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_version(rng: random.Random, external_id: str) -> dict[str, Any]:
    # Years ahead, so that what a run measures does not drift with the calendar: appointments
    # that started more than RETENTION_DAYS ago cost the reconciler a retention note each.
    start = datetime(2030, 12, 1, 8, tzinfo=UTC) + timedelta(
        days=rng.randrange(60), minutes=15 * rng.randrange(40)
    )
    return {
        "externalAppointmentId": external_id,
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": rng.choice((ALEX, MEGAN)),
        "startDateTime": _iso(start),
        "endDateTime": _iso(start + timedelta(minutes=30)),
        "subject": f"Consultation {rng.randrange(10_000)}",
        "timeZone": "America/New_York",
        "appointmentClients": [{"displayName": "Bench Client", "emailAddress": "c@example.com"}],
    }


def _next(version: dict[str, Any], minute: int, **changes: Any) -> dict[str, Any]:
    return {**version, "lastModifiedDateTime": f"2026-11-20T10:{minute:02d}:00Z", **changes}


def build(count: int, seed: int, prefix: str) -> list[Appointment]:
    rng = random.Random(seed)
    categories: list[str] = []
    for name, share in MIX:
        categories += [name] * round(count * share)
    categories = (categories + ["new"] * count)[:count]
    rng.shuffle(categories)
    appointments: list[Appointment] = []
    for index, category in enumerate(categories):
        external_id = f"{prefix}-{index:05d}"
        first = _first_version(rng, external_id)
        versions = [first]
        if category == "rescheduled":
            start = datetime.fromisoformat(first["startDateTime"]) + timedelta(hours=1)
            versions.append(
                _next(
                    first,
                    1,
                    startDateTime=_iso(start),
                    endDateTime=_iso(start + timedelta(minutes=30)),
                )
            )
        elif category == "cancelled":
            versions.append(
                {
                    "externalAppointmentId": external_id,
                    "lastModifiedDateTime": "2026-11-20T10:01:00Z",
                    "status": "cancelled",
                }
            )
        elif category == "organizer":
            other = MEGAN if first["organizer"] == ALEX else ALEX
            versions.append(_next(first, 1, organizer=other))
        appointments.append(Appointment(external_id, category, versions, list(versions)))

    multi = [a for a in appointments if len(a.versions) > 1]
    for appointment in rng.sample(multi, min(len(multi), round(count * OUT_OF_ORDER_SHARE))):
        appointment.deliveries.reverse()
        appointment.out_of_order = True
    for appointment in rng.sample(appointments, round(count * DUPLICATE_SHARE)):
        position = rng.randrange(len(appointment.deliveries))
        again = rng.randrange(position + 1, len(appointment.deliveries) + 1)
        appointment.deliveries.insert(again, appointment.deliveries[position])
        appointment.duplicated = True
    return appointments


def is_scheduled(document: dict[str, Any]) -> bool:
    return bool(document.get("status", "scheduled") == "scheduled")


def transition(previous: dict[str, Any] | None, document: dict[str, Any]) -> Counter[str]:
    """The Graph calls that take an appointment from `previous` (applied) to `document`."""
    calls: Counter[str] = Counter()
    live = previous is not None and is_scheduled(previous)
    if not is_scheduled(document):
        if live:
            calls["deleteMeeting"] += 1
        return calls
    if not live:
        calls.update(("createOrGet", "getJoinWebUrl"))
        return calls
    assert previous is not None
    if previous["organizer"] != document["organizer"]:
        calls.update(("createOrGet", "getJoinWebUrl", "deleteMeeting"))
        return calls
    fields = ("startDateTime", "endDateTime", "subject")
    if any(previous.get(k) != document.get(k) for k in fields):
        calls["updateMeeting"] += 1
    return calls


def minimum_calls(appointment: Appointment) -> Counter[str]:
    """The fewest calls a newest-wins reconciler makes for the delivered order."""
    applied: dict[str, Any] | None = None
    total: Counter[str] = Counter()
    for document in appointment.deliveries:
        if (
            applied is not None
            and document["lastModifiedDateTime"] <= applied["lastModifiedDateTime"]
        ):
            continue  # stale or duplicate: 0
        total += transition(applied, document)
        applied = document
    return total
