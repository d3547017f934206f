"""The client e-mail: one HTML message and one `invite.ics` per client, built from a document.

Pure: no Azure import, no Graph SDK import and no I/O, so every rule of the message is a fast
unit test; shared/graph.py sends what this module builds. The body is built from the document
alone (subject, times, zone, settings) plus the join link the caller passes in, never from
anything a scheduling system could use to inject markup: every value is HTML-escaped.

The iCalendar part follows RFC 5545 and the iTIP methods of RFC 5546: `METHOD:REQUEST` for a
confirmation or a reschedule, `METHOD:CANCEL` for a cancellation. Calendar clients match
versions of one event by `UID` and order them by `SEQUENCE`, so the UID is derived from the
appointment id alone and the caller supplies a sequence that grows with each version.

icalendar is imported where the invite is built, so a module that only needs `MailKind` or
`invite_uid` (the planner, on the webhook path) does not pay for it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from shared.documents import (
    AppointmentDocument,
    has_control,
    is_object_id,
    is_user_principal_name,
)

MailKind = Literal["confirmation", "reschedule", "cancellation"]

INVITE_NAME: Final = "invite.ics"
PRODID: Final = "-//Teams virtual appointments//Client invite//EN"
UID_DOMAIN: Final = "teams-virtual-appointments"

_SUBJECT_PREFIX: Final[dict[str, str]] = {
    "confirmation": "Your appointment",
    "reschedule": "Rescheduled",
    "cancellation": "Cancelled",
}
# Fixed English names: strftime's %A and %B follow the process locale, which differs between
# a developer's machine and the Functions host.
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# C0 and C1 controls, and DEL: no part of a display name a calendar client shows.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class MailMessage:
    """One client's message, ready for Graph's sendMail (which carries one body: the HTML)."""

    subject: str
    html: str
    to_address: str
    to_name: str | None
    attachment: Attachment


def invite_uid(external_appointment_id: str) -> str:
    """The invite's UID: the same for every version of one appointment, so a reschedule or a
    cancellation updates the event the client's calendar already holds.

    Hashed like planning.external_id: any appointment id (up to 200 characters of nearly
    anything) becomes a short token, and the scheduling system's own id is not disclosed to
    every calendar the invite reaches.
    """
    digest = hashlib.sha256(external_appointment_id.encode("utf-8")).hexdigest()[:40]
    return f"va1-{digest}@{UID_DOMAIN}"


def build_message(
    document: AppointmentDocument,
    kind: MailKind,
    client_index: int,
    *,
    sender: str,
    join_url: str | None,
    sequence: int,
) -> MailMessage:
    """The message for `document.appointment_clients[client_index]`.

    `sender` is MAIL_SENDER: a mailbox address (UPN) becomes `ORGANIZER:mailto:<sender>`; an
    Entra object id, which names no address, becomes `ORGANIZER:urn:uuid:<id>` (a valid
    CAL-ADDRESS URI that guesses nothing). Callers that want a mailto organizer for an object
    id resolve its address first and pass that.

    `join_url` is the client's link (appointmentClientJoinWebUrl, or joinWebUrl when browser
    join is off). A cancellation never carries a link, whatever is passed; a confirmation or
    reschedule without one is still a valid message, with no link, LOCATION or URL.

    For a cancellation, `document` carries the start and end of the last applied version; when
    it has none the invite omits DTSTART/DTEND (RFC 5545 requires DTSTART only when the
    calendar has no METHOD), and the body names no time.

    Raises IndexError for a client index out of range, and ValueError when the client has no
    e-mail address, when `sender` is neither a UPN nor an object id, when `sequence` is
    negative, when `join_url` is not an https URL, or when a confirmation or reschedule has no
    start and end (an invite to a request needs a time).
    """
    client = document.appointment_clients[client_index]
    if client.email_address is None:
        raise ValueError("this client has no e-mail address")
    if sequence < 0:
        raise ValueError("sequence must be >= 0")
    organizer = organizer_address(sender)
    cancelled = kind == "cancellation"
    link = None if cancelled else join_url
    if link is not None:
        parts = urlsplit(link)
        if parts.scheme != "https" or not parts.hostname or has_control(link):
            raise ValueError("join_url must be an https URL")
    start, end = document.start, document.end
    if not cancelled and (start is None or end is None):
        raise ValueError(f"a {kind} needs the appointment's start and end")
    subject = f"{_SUBJECT_PREFIX[kind]}: {document.effective_subject}"
    invite = _invite(
        document,
        cancelled,
        organizer=organizer,
        to_address=client.email_address,
        to_name=client.display_name,
        link=link,
        sequence=sequence,
    )
    method = "CANCEL" if cancelled else "REQUEST"
    return MailMessage(
        subject=subject,
        html=_html(document, kind, client.display_name, link),
        to_address=client.email_address,
        to_name=client.display_name,
        attachment=Attachment(INVITE_NAME, f"text/calendar; method={method}", invite),
    )


# -- the HTML body ------------------------------------------------------------------------


def _clock(moment: datetime) -> str:
    return f"{moment.hour:02d}:{moment.minute:02d}"


def _day(moment: datetime) -> str:
    return f"{_WEEKDAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def _duration(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour" + ("" if hours == 1 else "s"))
    if minutes or not hours:
        parts.append(f"{minutes} minute" + ("" if minutes == 1 else "s"))
    return " ".join(parts)


def local_time_text(start: datetime, end: datetime | None, zone_name: str) -> str:
    """When, in the appointment's own zone and named by it, e.g.
    "Tuesday 1 December 2026, 09:00 to 09:30 EST (America/New_York), 30 minutes".

    The zone's abbreviation comes from zoneinfo for each instant, so an appointment across a
    DST change names both ("01:30 EDT to 01:15 EST"); the IANA name follows because
    abbreviations are ambiguous. The duration is between the instants, not the wall clocks.
    """
    zone = ZoneInfo(zone_name)
    local_start = start.astimezone(zone)
    text = f"{_day(local_start)}, {_clock(local_start)}"
    last_zone = local_start.tzname()
    if end is not None:
        local_end = end.astimezone(zone)
        if local_end.tzname() != last_zone:
            text += f" {last_zone}"
            last_zone = local_end.tzname()
        text += " to "
        if local_end.date() != local_start.date():
            text += f"{_day(local_end)}, "
        text += _clock(local_end)
    text += f" {last_zone} ({zone_name})"
    if end is not None:
        text += f", {_duration(end - start)}"
    return text


def _html(
    document: AppointmentDocument, kind: MailKind, display_name: str, link: str | None
) -> str:
    subject = escape(document.effective_subject)
    start, end = document.start, document.end
    when = (
        None if start is None else escape(local_time_text(start, end, document.effective_time_zone))
    )
    lines = [f"<p>Hello {escape(display_name)},</p>"]
    if kind == "cancellation":
        on = f" on {when}" if when else ""
        lines.append(f"<p>Your appointment <strong>{subject}</strong>{on} has been cancelled.</p>")
    else:
        told = "is confirmed" if kind == "confirmation" else "has moved to a new time"
        lines.append(f"<p>Your appointment <strong>{subject}</strong> {told}.</p>")
        lines.append(f"<p><strong>When:</strong> {when}</p>")
    if link is not None:
        href = escape(link, quote=True)
        lines.append(f'<p><a href="{href}">Join the appointment</a></p>')
        lines.append(
            f"<p>If the link does not open, copy this address into a browser:<br>{href}</p>"
        )
        if document.settings.allow_client_to_join_using_browser:
            lines.append(
                "<p>You can join from a web browser on your computer or phone: no Teams app "
                "or account is needed. You may wait in a lobby until you are admitted.</p>"
            )
        else:
            lines.append("<p>Join with the Microsoft Teams app or in a web browser.</p>")
    if kind == "cancellation":
        lines.append("<p>The attached update removes it from your calendar.</p>")
    else:
        lines.append("<p>The attached invitation puts this appointment in your calendar.</p>")
    body = "\n".join(lines)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f"<body>\n{body}\n</body></html>\n"
    )


# -- the invite ---------------------------------------------------------------------------


def calendar_name(display_name: str) -> str:
    """A display name as an ATTENDEE's CN: double quotes as single ones, backslashes as
    slashes, control characters as spaces.

    icalendar would encode quotes and newlines by RFC 6868 (^' and ^n), which is correct but
    not decoded by every calendar client; a backslash means nothing in an RFC 5545 parameter,
    yet parsers (icalendar's own among them) read `\\;` as an escaped `;` and lose the rest of
    the line. Everything else (non-ASCII, `;`, `,`, `:`, `^`) a quoted value carries as it is.
    """
    return _CONTROL.sub(" ", display_name.replace('"', "'").replace("\\", "/"))


def organizer_address(sender: str) -> str:
    """ORGANIZER for MAIL_SENDER: `mailto:` for a UPN, `urn:uuid:` for an object id."""
    if is_object_id(sender):
        return f"urn:uuid:{sender.lower()}"
    if is_user_principal_name(sender):
        return f"mailto:{sender}"
    raise ValueError("sender must be a mailbox's user principal name or object id")


def _invite(
    document: AppointmentDocument,
    cancelled: bool,
    *,
    organizer: str,
    to_address: str,
    to_name: str,
    link: str | None,
    sequence: int,
) -> bytes:
    from icalendar import Calendar, Event, vCalAddress

    event = Event()
    event.add("uid", invite_uid(document.external_appointment_id))
    event.add("sequence", sequence)
    event.add("dtstamp", datetime.now(UTC).replace(microsecond=0))
    start, end = document.start, document.end
    if start is not None:
        event.add("dtstart", start.astimezone(UTC))
        if end is not None:
            event.add("dtend", end.astimezone(UTC))
    event.add("summary", document.effective_subject)
    if link is not None:
        event.add("location", link)
        event.add("url", link)
    event.add("organizer", vCalAddress(organizer))
    attendee = vCalAddress(f"mailto:{to_address}")
    attendee.params["CN"] = calendar_name(to_name)
    attendee.params["ROLE"] = "REQ-PARTICIPANT"
    attendee.params["RSVP"] = "FALSE"
    event.add("attendee", attendee)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "REQUEST")
    calendar.add_component(event)
    return bytes(calendar.to_ical())
