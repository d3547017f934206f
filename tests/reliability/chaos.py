"""Helpers of the chaos suite: seeded appointment histories and the convergence check."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar

from devtools.callback_receiver import ReceivedCallback
from devtools.graph_emulator import GraphEmulator, Meeting
from shared import runtime
from shared.http_api import get_appointment
from tests.support import ALEX, MEGAN, get_request

OFFSETS = ("Z", "+02:00", "-05:00", "+05:30")


def _format(moment: datetime, offset: str) -> str:
    if offset == "Z":
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    shift = timedelta(hours=hours, minutes=minutes) * sign
    local = (moment.astimezone(UTC) + shift).replace(tzinfo=None)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + offset


@dataclass
class History:
    external_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def newest(self) -> dict[str, Any]:
        return max(self.versions, key=lambda d: _instant(d["lastModifiedDateTime"]))


CLIENT_EMAIL = "chaos.client@example.com"
CLIENT_PHONE = "+12065550100"


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def history(rng: random.Random, external_id: str) -> History:
    """1 to 4 versions: time, subject and organizer changes, cancellations and re-bookings."""
    result = History(external_id)
    modified = datetime(2026, 11, 20, 10, tzinfo=UTC)
    start = datetime(2026, 12, 1, 8, tzinfo=UTC) + timedelta(
        days=rng.randrange(30), minutes=15 * rng.randrange(36)
    )
    current: dict[str, Any] = {
        "externalAppointmentId": external_id,
        "organizer": rng.choice((ALEX, MEGAN)),
        "subject": f"Consultation {rng.randrange(1000)} · Beratung · 診察",
        "duration": 30,
        "start": start,
        "status": "scheduled" if rng.random() > 0.05 else "cancelled",
    }
    for index in range(rng.randint(1, 4)):
        if index:
            change = rng.choices(
                ("time", "subject", "organizer", "cancel", "same"), (35, 20, 15, 20, 10)
            )[0]
            if current["status"] == "cancelled":
                current["status"] = "scheduled"  # booked again
            elif change == "time":
                current["start"] = current["start"] + timedelta(minutes=15 * rng.randint(1, 8))
            elif change == "subject":
                current["subject"] = f"Follow-up {rng.randrange(1000)} — ✓"
            elif change == "organizer":
                current["organizer"] = MEGAN if current["organizer"] == ALEX else ALEX
            elif change == "cancel":
                current["status"] = "cancelled"
        modified += timedelta(seconds=rng.randint(1, 600))
        offset = rng.choice(OFFSETS)
        if current["status"] == "cancelled":
            document: dict[str, Any] = {
                "externalAppointmentId": external_id,
                "lastModifiedDateTime": _format(modified, offset),
                "status": "cancelled",
            }
        else:
            end = current["start"] + timedelta(minutes=current["duration"])
            document = {
                "externalAppointmentId": external_id,
                "lastModifiedDateTime": _format(modified, offset),
                "organizer": current["organizer"],
                "startDateTime": _format(current["start"], offset),
                "endDateTime": _format(end, rng.choice(OFFSETS)),
                "subject": current["subject"],
                "timeZone": "Europe/Berlin",
                "appointmentClients": [
                    {
                        "displayName": "Chaos Client",
                        "emailAddress": CLIENT_EMAIL,
                        "smsCapablePhoneNumber": CLIENT_PHONE,
                    }
                ],
                "settings": {"sendSmsNotifications": True, "sendEmailNotifications": True},
            }
        result.versions.append(document)
    return result


def meeting_prefix(external_id: str) -> str:
    """The externalId prefix of every generation of an appointment's meeting."""
    digest = hashlib.sha256(external_id.encode("utf-8")).hexdigest()[:40]
    return f"va1-{digest}-g"


def record(external_id: str) -> dict[str, Any] | None:
    response = get_appointment(
        get_request(f"appointments/{external_id}", {"externalAppointmentId": external_id})
    )
    if response.status_code == 404:
        return None
    return dict(json.loads(response.get_body()))


def convergence_problems(histories: list[History], graph: GraphEmulator) -> dict[str, Any]:
    """Compare Graph and the status records with each appointment's newest document."""
    live = graph.meetings()
    by_prefix: dict[str, list[Meeting]] = defaultdict(list)
    for meeting in live:
        by_prefix[meeting.external_id.rsplit("-g", 1)[0] + "-g"].append(meeting)
    problems: list[str] = []
    referenced: set[str] = set()
    scheduled = 0
    for item in histories:
        newest = item.newest
        meetings = by_prefix.pop(meeting_prefix(item.external_id), [])
        state = record(item.external_id)
        name = item.external_id
        if state is None:
            problems.append(f"{name}: no status record")
            continue
        if state["status"] not in ("scheduled", "cancelled") or state["pending"]:
            problems.append(f"{name}: record {state['status']} pending={state['pending']}")
        if state["lastModifiedDateTime"] != newest["lastModifiedDateTime"]:
            problems.append(
                f"{name}: record applied {state['lastModifiedDateTime']}, "
                f"newest {newest['lastModifiedDateTime']}"
            )
        if newest.get("status") == "cancelled":
            if meetings:
                problems.append(f"{name}: cancelled but {len(meetings)} live meeting(s)")
            if state["status"] != "cancelled":
                problems.append(f"{name}: cancelled but record says {state['status']}")
            continue
        scheduled += 1
        if len(meetings) != 1:
            problems.append(f"{name}: {len(meetings)} live meetings, expected 1")
            continue
        [meeting] = meetings
        referenced.add(meeting.id)
        expected = {
            "id": state["id"],
            "organizer": newest["organizer"],
            "subject": newest["subject"],
            "start": _instant(newest["startDateTime"]),
            "end": _instant(newest["endDateTime"]),
        }
        actual = {
            "id": meeting.id,
            "organizer": meeting.user_id,
            "subject": meeting.subject,
            "start": _instant(meeting.start),
            "end": _instant(meeting.end),
        }
        if expected != actual:
            different = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
            problems.append(f"{name}: Graph differs from the newest document {different}")
    orphans = [m.id for group in by_prefix.values() for m in group]
    if orphans:
        problems.append(f"{len(orphans)} orphan meeting(s) of no appointment: {orphans[:3]}")
    return {
        "problems": problems,
        "appointments": len(histories),
        "scheduled": scheduled,
        "cancelled": len(histories) - scheduled,
        "live_meetings": len(live),
        "referenced_meetings": len(referenced),
    }


def _without_callback(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "callback"}


def notification_problems(
    histories: list[History], graph: GraphEmulator, received: list[ReceivedCallback]
) -> dict[str, Any]:
    """Callbacks and client notifications after the storm.

    Every appointment's latest callback was delivered, and what the receiver got for it is the
    record as it finally is; no client got the same version's e-mail twice (a version is its
    invite's SEQUENCE); no meeting texted its confirmation or cancellation twice.
    """
    problems: list[str] = []
    delivered: dict[str, ReceivedCallback] = {}
    for callback in received:
        if callback.answered is not None and 200 <= callback.answered < 300:
            delivered[callback.headers["webhook-id"]] = callback
    unverified = [c for c in received if not c.verified]
    if unverified:
        problems.append(f"{len(unverified)} callbacks failed verification")
    for item in histories:
        stored = runtime.store().load(item.external_id)
        owed = stored.applied.callback if stored.applied else None
        if owed is None:
            problems.append(f"{item.external_id}: no callback owed")
            continue
        progress = stored.callback_progress
        if progress is None or progress.id != owed.id or progress.status != "delivered":
            problems.append(f"{item.external_id}: latest callback not delivered: {progress}")
            continue
        got = delivered.get(owed.id)
        final = record(item.external_id)
        if got is None or final is None:
            problems.append(f"{item.external_id}: receiver has no delivery of {owed.id}")
        elif _without_callback(got.data) != _without_callback(final):
            different = sorted(
                k for k in final if k != "callback" and got.data.get(k) != final.get(k)
            )
            problems.append(f"{item.external_id}: last callback differs in {different}")
    seen: dict[tuple[str, str, int], int] = defaultdict(int)
    for mail in graph.mail_sent():
        calendar = icalendar.Calendar.from_ical(mail.attachments[0].content)
        [event] = calendar.walk("VEVENT")
        seen[(mail.to_address, str(event["UID"]), int(str(event["SEQUENCE"])))] += 1
    twice = [key for key, count in seen.items() if count > 1]
    if twice:
        problems.append(f"{len(twice)} e-mails sent twice for one version, e.g. {twice[:2]}")
    texts: dict[tuple[str, str], int] = defaultdict(int)
    for sms in graph.sms_sent():
        if sms.message_type in ("confirmation", "cancellation"):
            texts[(sms.meeting_id, sms.message_type)] += 1
    doubled = [key for key, count in texts.items() if count > 1]
    if doubled:
        problems.append(f"{len(doubled)} meetings texted twice, e.g. {doubled[:2]}")
    return {
        "notification_problems": problems,
        "callbacks_received": len(received),
        "callbacks_delivered": len(delivered),
        "emails": len(graph.mail_sent()),
        "sms": len(graph.sms_sent()),
    }
