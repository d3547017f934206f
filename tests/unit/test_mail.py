"""The client e-mail: its subject, HTML body and invite.ics, parsed back with icalendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar, Event

from shared.documents import AppointmentDocument
from shared.mail import (
    INVITE_NAME,
    MailKind,
    MailMessage,
    build_message,
    calendar_name,
    invite_uid,
    local_time_text,
)
from tests.unit.factories import FAST, cancelled, doc, valid

SENDER = "appointments@contoso.com"
SENDER_ID = "22222222-2222-4222-8222-222222222222"
LINK = "https://visit.teams.microsoft.com/webrtc-svc/api/route?tid=t&convId=19:m@thread.v2"
CLIENT = {"displayName": "Ada Lovelace", "emailAddress": "ada@example.com"}


def document(**overrides: Any) -> AppointmentDocument:
    body = doc(
        subject="Follow-up visit",
        timeZone="America/New_York",
        appointmentClients=[CLIENT, {"displayName": "No Mail"}],
    )
    body.update(overrides)
    return valid({key: value for key, value in body.items() if value is not ...})


def message(
    value: AppointmentDocument | None = None,
    kind: MailKind = "confirmation",
    *,
    index: int = 0,
    sender: str = SENDER,
    join_url: str | None = LINK,
    sequence: int = 0,
) -> MailMessage:
    return build_message(
        value or document(), kind, index, sender=sender, join_url=join_url, sequence=sequence
    )


def event_of(mail: MailMessage) -> tuple[Calendar, Event]:
    calendar = Calendar.from_ical(mail.attachment.content)
    assert isinstance(calendar, Calendar)
    [event] = calendar.events
    return calendar, event


class _Text(HTMLParser):
    """The text and the hrefs of an HTML body, as a mail client would show them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs.extend(value or "" for name, value in attrs if name == "href")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser


# --------------------------------------------------------------------------- the message


def test_confirmation_message_and_recipient() -> None:
    mail = message()
    assert mail.subject == "Your appointment: Follow-up visit"
    assert (mail.to_address, mail.to_name) == ("ada@example.com", "Ada Lovelace")
    assert mail.attachment.name == INVITE_NAME == "invite.ics"
    assert mail.attachment.content_type == "text/calendar; method=REQUEST"


def test_subjects_per_kind_and_the_default_subject() -> None:
    assert message(kind="reschedule").subject == "Rescheduled: Follow-up visit"
    assert message(kind="cancellation").subject == "Cancelled: Follow-up visit"
    plain = document(subject=...)
    assert message(plain).subject == "Your appointment: Virtual appointment"


def test_the_body_has_the_local_time_the_link_twice_and_the_browser_note() -> None:
    page = rendered(message().html)
    text = " ".join(page.text)
    # 2026-12-01T09:00Z is 04:00 in New York (EST).
    assert "Tuesday 1 December 2026, 04:00 to 04:30 EST (America/New_York)" in text
    assert "30 minutes" in text
    assert page.hrefs == [LINK]
    assert LINK in text  # a plain copy for clients that strip links
    assert "no Teams app" in text
    assert "Ada Lovelace" in text


def test_without_browser_join_the_note_names_the_teams_app() -> None:
    value = document(settings={"allowClientToJoinUsingBrowser": False})
    text = " ".join(rendered(message(value, join_url="https://teams.microsoft.com/l/x").html).text)
    assert "no Teams app" not in text
    assert "Microsoft Teams app" in text


def test_a_cancellation_carries_no_link_whatever_is_passed() -> None:
    mail = message(kind="cancellation", join_url=LINK)
    page = rendered(mail.html)
    assert page.hrefs == []
    assert LINK not in mail.html
    assert "cancelled" in " ".join(page.text)
    assert "removes it from your calendar" in " ".join(page.text)
    _, event = event_of(mail)
    assert "LOCATION" not in event
    assert "URL" not in event


def test_local_time_across_a_dst_change_names_both_abbreviations() -> None:
    # New York falls back at 2026-11-01 06:00Z (02:00 EDT becomes 01:00 EST).
    start = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    text = local_time_text(start, start + timedelta(minutes=75), "America/New_York")
    assert text == (
        "Sunday 1 November 2026, 01:30 EDT to 01:45 EST (America/New_York), 1 hour 15 minutes"
    )
    # Spring forward: 2026-03-08 07:00Z (02:00 EST is 03:00 EDT).
    spring = datetime(2026, 3, 8, 6, 30, tzinfo=UTC)
    assert local_time_text(spring, spring + timedelta(hours=1), "America/New_York") == (
        "Sunday 8 March 2026, 01:30 EST to 03:30 EDT (America/New_York), 1 hour"
    )


def test_the_body_uses_the_document_zone_and_utc_without_one() -> None:
    value = document(startDateTime="2026-03-08T06:30:00Z", endDateTime="2026-03-08T07:30:00Z")
    assert "01:30 EST to 03:30 EDT (America/New_York)" in message(value).html
    utc = document(timeZone=...)
    assert "09:00 to 09:30 UTC (UTC)" in message(utc).html


def test_an_end_on_another_day_names_its_day() -> None:
    start = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
    text = local_time_text(start, start + timedelta(hours=3), "Europe/Berlin")
    assert text == (
        "Tuesday 1 December 2026, 23:00 to Wednesday 2 December 2026, 02:00 CET "
        "(Europe/Berlin), 3 hours"
    )


def test_subject_and_name_are_escaped_in_the_html() -> None:
    value = document(
        subject='<script>alert("x")</script> & co',
        appointmentClients=[{"displayName": '<b>Bob</b> "O\'Hara"', "emailAddress": "b@x.org"}],
    )
    mail = message(value)
    assert "<script>" not in mail.html
    assert "<b>Bob" not in mail.html
    page = rendered(mail.html)
    text = " ".join(page.text)
    assert '<script>alert("x")</script> & co' in text
    assert '<b>Bob</b> "O\'Hara"' in text
    assert "script" not in page.tags
    assert "b" not in page.tags


def test_a_link_with_query_characters_is_escaped_in_the_href() -> None:
    link = 'https://example.com/join?a=1&b="2"'
    page = rendered(message(join_url=link).html)
    assert page.hrefs == [link]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"index": 1}, "no e-mail address"),
        ({"sequence": -1}, "sequence"),
        ({"join_url": "javascript:alert(1)"}, "https"),
        ({"join_url": "http://teams.microsoft.com/l/x"}, "https"),
        ({"join_url": "https://teams.microsoft.com/l/x\r\nBCC: x"}, "https"),
        ({"sender": "not a mailbox"}, "sender"),
    ],
)
def test_refusals(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        message(**overrides)


def test_an_index_past_the_clients_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        message(index=5)


def test_a_request_without_times_is_refused() -> None:
    value = valid(cancelled(appointmentClients=[CLIENT]))
    with pytest.raises(ValueError, match="start and end"):
        message(value, "reschedule")


# --------------------------------------------------------------------------- the invite


def test_invite_fields_of_a_request() -> None:
    value = document()
    mail = message(value, sequence=4)
    calendar, event = event_of(mail)
    assert calendar["VERSION"] == "2.0"
    assert calendar["PRODID"]
    assert calendar["METHOD"] == "REQUEST"
    assert event["UID"] == invite_uid("appt-1")
    assert event.sequence == 4
    assert event.start == value.start
    assert event.end == value.end
    assert event.stamp is not None
    assert event["SUMMARY"] == "Follow-up visit"
    assert event["LOCATION"] == LINK
    assert event["URL"] == LINK
    assert event["STATUS"] == "CONFIRMED"
    assert event["ORGANIZER"] == f"mailto:{SENDER}"
    [attendee] = event.attendees
    assert attendee == "mailto:ada@example.com"
    assert attendee.params["CN"] == "Ada Lovelace"
    assert attendee.params["ROLE"] == "REQ-PARTICIPANT"
    assert attendee.params["RSVP"] == "FALSE"


def test_invite_of_a_cancellation() -> None:
    mail = message(kind="cancellation", sequence=7)
    calendar, event = event_of(mail)
    assert mail.attachment.content_type == "text/calendar; method=CANCEL"
    assert calendar["METHOD"] == "CANCEL"
    assert event["STATUS"] == "CANCELLED"
    assert event.sequence == 7
    assert event["UID"] == invite_uid("appt-1")
    assert event.start == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_a_cancellation_without_times_stays_valid() -> None:
    value = valid(cancelled(appointmentClients=[CLIENT]))
    mail = message(value, "cancellation", join_url=None)
    calendar, event = event_of(mail)
    assert "DTSTART" not in event
    assert "DTEND" not in event
    assert calendar["METHOD"] == "CANCEL"
    assert "cancelled" in mail.html
    assert "When" not in mail.html


def test_dtstart_and_dtend_are_the_document_instants_whatever_its_offset() -> None:
    value = document(
        startDateTime="2026-12-01T09:00:00+05:30", endDateTime="2026-12-01T10:15:00+05:30"
    )
    _, event = event_of(message(value))
    assert event.start == datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
    assert event.end == datetime(2026, 12, 1, 4, 45, tzinfo=UTC)


def test_the_uid_is_stable_across_versions_and_hides_the_id() -> None:
    first = document()
    later = document(
        lastModifiedDateTime="2026-11-25T10:00:00Z",
        startDateTime="2026-12-02T09:00:00Z",
        endDateTime="2026-12-02T09:30:00Z",
    )
    uids = {
        event_of(message(first, sequence=0))[1]["UID"],
        event_of(message(later, "reschedule", sequence=1))[1]["UID"],
        event_of(message(later, "cancellation", sequence=2))[1]["UID"],
    }
    assert uids == {invite_uid("appt-1")}
    assert "appt-1" not in invite_uid("appt-1")
    assert invite_uid("appt-1").endswith("@teams-virtual-appointments")
    assert invite_uid("appt-1") != invite_uid("appt-2")


def test_an_object_id_sender_is_a_urn_organizer() -> None:
    _, event = event_of(message(sender=SENDER_ID.upper()))
    assert event["ORGANIZER"] == f"urn:uuid:{SENDER_ID}"


def test_without_a_link_a_request_has_no_location() -> None:
    mail = message(join_url=None)
    _, event = event_of(mail)
    assert "LOCATION" not in event
    assert "URL" not in event
    assert rendered(mail.html).hrefs == []


# --------------------------------------------------------------------------- any name, any subject

# Display names as the model takes them (1..256 characters, no control characters) plus the
# characters that are special in iCalendar and HTML.
names = st.text(
    alphabet=st.one_of(
        st.sampled_from("\"'<>&;:,\\^ =\u00e9\u00fc\u4e2d\U0001f600"),
        st.characters(exclude_categories=("Cc", "Cs")),
    ),
    min_size=1,
    max_size=256,
).filter(lambda s: not any("\x7f" <= c <= "\x9f" for c in s))
subjects = st.text(
    alphabet=st.one_of(
        st.sampled_from('"<>&;:,\\'), st.characters(exclude_categories=("Cc", "Cs"))
    ),
    min_size=1,
    max_size=255,
).filter(lambda s: not any("\x7f" <= c <= "\x9f" for c in s))


@FAST
@given(name=names, subject=subjects, kind=st.sampled_from(["confirmation", "cancellation"]))
def test_any_name_and_subject_still_parse_and_stay_text(
    name: str, subject: str, kind: MailKind
) -> None:
    value = document(
        subject=subject, appointmentClients=[{"displayName": name, "emailAddress": "c@x.org"}]
    )
    mail = message(value, kind, sequence=3)
    _, event = event_of(mail)
    assert event["SUMMARY"] == subject
    [attendee] = event.attendees
    assert attendee.params["CN"] == calendar_name(name)
    assert event.sequence == 3
    page = rendered(mail.html)
    assert set(page.tags) <= {"html", "head", "meta", "body", "p", "strong", "a", "br"}
    text = "".join(page.text)
    assert name in text
    assert subject in text


@FAST
@given(raw=st.text(min_size=1, max_size=300))
def test_any_text_at_all_as_a_name_parses(raw: str) -> None:
    """Names past the model's rules (newlines, controls): the CN still round-trips."""
    client = document().appointment_clients[0].model_copy(update={"display_name": raw})
    value = document().model_copy(update={"appointment_clients": [client]})
    mail = message(value)
    _, event = event_of(mail)
    [attendee] = event.attendees
    assert attendee.params["CN"] == calendar_name(raw)
    assert "\n" not in calendar_name(raw)
    assert '"' not in calendar_name(raw)


local_parts = st.text(
    alphabet=st.sampled_from("abcXYZ019.!#$%&'*+-/=?^_`{|}~\"(),:;<>[\\]\u00e9"),
    min_size=1,
    max_size=64,
)


@FAST
@given(local=local_parts)
def test_any_address_the_model_takes_round_trips_as_the_attendee(local: str) -> None:
    address = f"{local}@example.org"
    value = document(appointmentClients=[{"displayName": "C", "emailAddress": address}])
    mail = message(value)
    assert mail.to_address == address
    _, event = event_of(mail)
    [attendee] = event.attendees
    assert attendee == f"mailto:{address}"
    assert attendee.params["CN"] == "C"
