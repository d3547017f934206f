"""Attendance: Graph's reports parsed strictly but tolerantly, and SPEC's summary of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.attendance import (
    Attendance,
    AttendanceInterval,
    AttendanceParseError,
    AttendanceRecord,
    AttendanceReport,
    ClientAttendance,
    next_link,
    parse_record,
    parse_records,
    parse_report,
    parse_reports_page,
    summarize,
)

ORGANIZER = "dc17674c-81d9-4adb-bfb2-8f6a442e4623"
CLIENT = "57caaef9-5ed0-48d5-8862-e5abfa71b3e9"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CHECKED = datetime(2026, 12, 1, 10, 10, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def interval(start: float, end: float | None) -> AttendanceInterval:
    leave = None if end is None else at(end)
    seconds = 0 if end is None else int((end - start) * 60)
    return AttendanceInterval(at(start), leave, seconds)


def record(
    role: str,
    identity_id: str | None,
    name: str | None,
    *intervals: AttendanceInterval,
    email: str | None = None,
    seconds: int | None = None,
) -> AttendanceRecord:
    total = sum(i.seconds for i in intervals) if seconds is None else seconds
    return AttendanceRecord(role, identity_id, name, email, total, tuple(intervals))


def organizer(*intervals: AttendanceInterval, role: str = "Organizer") -> AttendanceRecord:
    return record(role, ORGANIZER, "Alex Wilber", *intervals, email="alex@contoso.com")


def client(*intervals: AttendanceInterval, identity_id: str | None = CLIENT) -> AttendanceRecord:
    return record("Attendee", identity_id, "Ada Client", *intervals, email="ada@example.com")


def report(*records: AttendanceRecord, report_id: str = "r1") -> AttendanceReport:
    return AttendanceReport(report_id, T0, at(60), tuple(records))


# --------------------------------------------------------------------------- outcomes


def test_completed_when_organizer_and_a_client_joined() -> None:
    result = summarize(
        [report(organizer(interval(0, 30)), client(interval(2, 28)))], ORGANIZER, CHECKED
    )
    assert result.outcome == "completed"
    assert result.organizer_seconds == 1800
    assert result.clients == (ClientAttendance("Ada Client", at(2), at(28), 1560),)
    assert result.reports == 1
    assert result.checked == CHECKED


def test_client_no_show_when_only_the_organizer_joined() -> None:
    result = summarize([report(organizer(interval(0, 15)))], ORGANIZER, CHECKED)
    assert (result.outcome, result.organizer_seconds, result.clients) == ("clientNoShow", 900, ())


def test_organizer_no_show_when_only_a_client_joined() -> None:
    result = summarize([report(client(interval(0, 10)))], ORGANIZER, CHECKED)
    assert result.outcome == "organizerNoShow"
    assert result.organizer_seconds == 0
    assert [c.seconds for c in result.clients] == [600]


def test_nobody_joined_without_reports() -> None:
    result = summarize([], ORGANIZER, CHECKED)
    assert result == Attendance("nobodyJoined", 0, (), 0, CHECKED)


def test_a_report_without_records_is_nobody_known_to_have_joined() -> None:
    """Everyone opted out of the report (tenant policy): a report, but no one to count."""
    result = summarize([report()], ORGANIZER, CHECKED)
    assert (result.outcome, result.reports) == ("nobodyJoined", 1)


def test_a_zero_second_record_still_means_the_person_was_there() -> None:
    lacking = AttendanceInterval(at(3), None, 0)  # Graph: leave null, duration 0
    result = summarize(
        [report(organizer(interval(0, 30)), client(lacking, identity_id=CLIENT))],
        ORGANIZER,
        CHECKED,
    )
    assert result.outcome == "completed"
    assert result.clients == (ClientAttendance("Ada Client", at(3), None, 0),)


# --------------------------------------------------------------------------- who is who


def test_the_organizer_is_known_by_id_even_with_role_attendee() -> None:
    result = summarize([report(organizer(interval(0, 30), role="Attendee"))], ORGANIZER, CHECKED)
    assert (result.outcome, result.organizer_seconds) == ("clientNoShow", 1800)


def test_organizer_id_matches_without_regard_to_case() -> None:
    result = summarize([report(organizer(interval(0, 5)))], ORGANIZER.upper(), CHECKED)
    assert result.outcome == "clientNoShow"


def test_a_record_with_role_organizer_is_never_a_client() -> None:
    co_organizer = record("Organizer", "another-id", "Co Organizer", interval(0, 10))
    result = summarize([report(co_organizer)], ORGANIZER, CHECKED)
    assert (result.outcome, result.organizer_seconds, result.clients) == ("clientNoShow", 600, ())


def test_presenters_and_role_none_are_clients() -> None:
    presenter = record("Presenter", "p-1", "Pat Presenter", interval(0, 1))
    nobody_role = record("None", "n-1", "Nia None", interval(0, 2))
    result = summarize([report(presenter, nobody_role)], ORGANIZER, CHECKED)
    assert result.outcome == "organizerNoShow"
    assert {c.display_name for c in result.clients} == {"Pat Presenter", "Nia None"}


# --------------------------------------------------------------------------- merging


def test_a_client_across_sessions_is_merged_by_identity() -> None:
    first = report(organizer(interval(0, 10)), client(interval(1, 9)), report_id="r1")
    second = report(organizer(interval(30, 40)), client(interval(31, 45)), report_id="r2")
    result = summarize([second, first], ORGANIZER, CHECKED)  # Graph lists newest first
    assert result.outcome == "completed"
    assert result.reports == 2
    assert result.organizer_seconds == 1200
    assert result.clients == (ClientAttendance("Ada Client", at(1), at(45), 480 + 840),)


def test_several_intervals_give_earliest_join_latest_leave_summed_seconds() -> None:
    rejoined = client(interval(5, 10), interval(2, 4), interval(12, 20))
    result = summarize([report(rejoined)], ORGANIZER, CHECKED)
    (only,) = result.clients
    assert (only.join, only.leave, only.seconds) == (at(2), at(20), 300 + 120 + 480)


def test_identity_ids_merge_without_regard_to_case() -> None:
    result = summarize(
        [
            report(
                client(interval(0, 1), identity_id=CLIENT),
                client(interval(2, 3), identity_id=CLIENT.upper()),
            )
        ],
        ORGANIZER,
        CHECKED,
    )
    assert len(result.clients) == 1


def test_an_anonymous_browser_joiner_is_merged_by_display_name() -> None:
    guest = record("Attendee", None, "Sam (guest)", interval(3, 10))
    again = record("Attendee", None, "Sam (guest)", interval(15, 20))
    other = record("Attendee", None, "Kim (guest)", interval(4, 6))
    result = summarize(
        [report(organizer(interval(0, 30)), guest, other), report(again, report_id="r2")],
        ORGANIZER,
        CHECKED,
    )
    assert result.outcome == "completed"
    assert result.clients == (
        ClientAttendance("Sam (guest)", at(3), at(20), 420 + 300),
        ClientAttendance("Kim (guest)", at(4), at(6), 120),
    )


def test_records_without_id_or_name_become_one_unnamed_client() -> None:
    nameless = [record("Attendee", None, None, interval(m, m + 1)) for m in (1, 5)]
    result = summarize([report(*nameless)], ORGANIZER, CHECKED)
    assert result.clients == (ClientAttendance(None, at(1), at(6), 120),)


def test_the_earliest_records_name_wins_whatever_the_report_order() -> None:
    early = record("Attendee", CLIENT, "Ada", interval(1, 2))
    late = record("Attendee", CLIENT, "Ada Lovelace", interval(30, 31))
    forward = summarize([report(early), report(late)], ORGANIZER, CHECKED)
    backward = summarize([report(late), report(early)], ORGANIZER, CHECKED)
    assert forward == backward
    assert forward.clients[0].display_name == "Ada"


def test_summarize_needs_an_aware_checked_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        summarize([], ORGANIZER, datetime(2026, 12, 1, 10, 0))


# --------------------------------------------------------------------------- JSON


def test_to_json_is_exactly_the_spec_shape_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    attendance = Attendance(
        "completed",
        1800,
        (
            ClientAttendance("Ada Client", at(2), at(28).replace(microsecond=602722), 1560),
            ClientAttendance("Sam (guest)", at(3), None, 0),
        ),
        2,
        datetime(2026, 12, 1, 11, 10, tzinfo=paris),
    )
    assert attendance.to_json() == {
        "outcome": "completed",
        "organizerSeconds": 1800,
        "clients": [
            {
                "displayName": "Ada Client",
                "joinDateTime": "2026-12-01T09:02:00Z",
                "leaveDateTime": "2026-12-01T09:28:00.602722Z",
                "seconds": 1560,
            },
            {
                "displayName": "Sam (guest)",
                "joinDateTime": "2026-12-01T09:03:00Z",
                "leaveDateTime": None,
                "seconds": 0,
            },
        ],
        "reports": 2,
        "checkedDateTime": "2026-12-01T10:10:00Z",
    }
    assert Attendance.from_json(attendance.to_json()) == attendance


def test_from_json_is_strict() -> None:
    good = summarize([report(client(interval(0, 1)))], ORGANIZER, CHECKED).to_json()
    for broken in (
        {**good, "outcome": "maybe"},
        {**good, "organizerSeconds": "0"},
        {**good, "organizerSeconds": True},
        {**good, "reports": -1},
        {**good, "checkedDateTime": "2026-12-01 10:10"},
        {**good, "clients": {}},
        {**good, "clients": [{**good["clients"][0], "email": "ada@example.com"}]},
        {**good, "clients": [{**good["clients"][0], "seconds": None}]},
        {k: v for k, v in good.items() if k != "reports"},
        {**good, "extra": 1},
    ):
        with pytest.raises(AttendanceParseError):
            Attendance.from_json(broken)


# --------------------------------------------------------------------------- Graph's JSON

GRAPH_RECORDS: dict[str, Any] = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/...",
    "value": [
        {
            "id": "rec-1",
            "emailAddress": "frederick.cormier@contoso.com",
            "totalAttendanceInSeconds": 322,
            "role": "Organizer",
            "registrationId": None,
            "identity": {
                "@odata.type": "#microsoft.graph.communicationsUserIdentity",
                "id": ORGANIZER,
                "displayName": "Frederick Cormier",
                "tenantId": None,
            },
            "attendanceIntervals": [
                {
                    "joinDateTime": "2021-10-05T04:38:27.6027225Z",
                    "leaveDateTime": "2021-10-05T04:43:49.7702391Z",
                    "durationInSeconds": 322,
                }
            ],
        },
        {
            # An anonymous browser joiner as GRAPH.md expects one: a name, nothing else.
            "emailAddress": None,
            "totalAttendanceInSeconds": 0,
            "role": "Attendee",
            "identity": {"id": None, "displayName": "Sam (guest)", "tenantId": None},
            "attendanceIntervals": [
                {"joinDateTime": None, "leaveDateTime": None, "durationInSeconds": 0},
                {
                    "joinDateTime": "2021-10-05T04:39:00+02:00",
                    "leaveDateTime": None,
                    "durationInSeconds": 0,
                },
            ],
        },
        {"role": "Presenter"},  # everything optional missing
    ],
    "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/x/onlineMeetings/m/attendanceReports/r/attendanceRecords?$skiptoken=2",
}


def test_parse_records_reads_graphs_documented_shape() -> None:
    organizer_record, guest, bare = parse_records(GRAPH_RECORDS)
    assert organizer_record == AttendanceRecord(
        "Organizer",
        ORGANIZER,
        "Frederick Cormier",
        "frederick.cormier@contoso.com",
        322,
        (
            AttendanceInterval(
                datetime(2021, 10, 5, 4, 38, 27, 602722, tzinfo=UTC),
                datetime(2021, 10, 5, 4, 43, 49, 770239, tzinfo=UTC),
                322,
            ),
        ),
    )
    # the interval without a join time is dropped; the other is converted to UTC
    assert guest == AttendanceRecord(
        "Attendee",
        None,
        "Sam (guest)",
        None,
        0,
        (AttendanceInterval(datetime(2021, 10, 5, 2, 39, tzinfo=UTC), None, 0),),
    )
    assert bare == AttendanceRecord("Presenter", None, None, None, 0, ())
    assert next_link(GRAPH_RECORDS) == GRAPH_RECORDS["@odata.nextLink"]
    assert next_link({"value": []}) is None


def test_parse_records_takes_an_expanded_array_too() -> None:
    assert parse_records(GRAPH_RECORDS["value"]) == parse_records(GRAPH_RECORDS)


def test_missing_total_is_the_sum_of_the_intervals_and_blank_text_is_absent() -> None:
    parsed = parse_record(
        {
            "emailAddress": "",
            "identity": {"id": " ", "displayName": "Ada"},
            "attendanceIntervals": [
                {"joinDateTime": "2026-12-01T09:00:00Z", "leaveDateTime": "2026-12-01T09:01:30Z"},
                {"joinDateTime": "2026-12-01T09:05:00Z", "durationInSeconds": 10},
            ],
        }
    )
    assert (parsed.role, parsed.identity_id, parsed.email) == ("None", None, None)
    assert parsed.total_seconds == 100
    assert [i.seconds for i in parsed.intervals] == [90, 10]


def test_parse_report_and_the_list_page() -> None:
    page = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#...",
        "value": [
            {
                "id": "c9b6db1c-d5eb-427d-a5c0-20088d9b22d7",
                "totalParticipantCount": 1,
                "meetingStartDateTime": "2021-10-05T04:38:23.945Z",
                "meetingEndDateTime": "2021-10-05T04:43:49.77Z",
                "attendanceRecords": [],
            },
            {"id": "2c2c2454", "meetingStartDateTime": None},
        ],
    }
    first, second = parse_reports_page(page)
    assert first == AttendanceReport(
        "c9b6db1c-d5eb-427d-a5c0-20088d9b22d7",
        datetime(2021, 10, 5, 4, 38, 23, 945000, tzinfo=UTC),
        datetime(2021, 10, 5, 4, 43, 49, 770000, tzinfo=UTC),
        (),
    )
    assert second == AttendanceReport("2c2c2454", None, None, ())
    expanded = parse_report({"id": "r", "attendanceRecords": GRAPH_RECORDS["value"]})
    assert len(expanded.records) == 3


@pytest.mark.parametrize(
    "broken",
    [
        [],
        {"value": {}},
        {"values": []},
        {"value": ["not an object"]},
        {"value": [{"role": 1}]},
        {"value": [{"totalAttendanceInSeconds": "322"}]},
        {"value": [{"totalAttendanceInSeconds": 1.5}]},
        {"value": [{"totalAttendanceInSeconds": True}]},
        {"value": [{"totalAttendanceInSeconds": -1}]},
        {"value": [{"identity": "Ada"}]},
        {"value": [{"identity": {"displayName": 7}}]},
        {"value": [{"emailAddress": ["a@b.c"]}]},
        {"value": [{"attendanceIntervals": {}}]},
        {"value": [{"attendanceIntervals": [{"joinDateTime": "yesterday"}]}]},
        {"value": [{"attendanceIntervals": [{"joinDateTime": "2026-12-01T09:00:00"}]}]},
        {"value": [{"attendanceIntervals": [{"joinDateTime": 1_700_000_000}]}]},
    ],
)
def test_parse_records_refuses_wrong_types(broken: Any) -> None:
    parse = parse_reports_page if isinstance(broken, list) else parse_records
    with pytest.raises(AttendanceParseError):
        parse(broken)


def test_parse_errors_never_repeat_the_value() -> None:
    with pytest.raises(AttendanceParseError) as caught:
        parse_records({"value": [{"emailAddress": 42, "identity": {"displayName": "Ada"}}]})
    assert "42" not in str(caught.value)
    with pytest.raises(AttendanceParseError) as named:
        parse_record({"identity": {"displayName": ["Ada Lovelace"]}})
    assert "Ada" not in str(named.value)


@pytest.mark.parametrize(
    "broken",
    [{"id": ""}, {"id": 3}, {"meetingStartDateTime": "x", "id": "r"}, "r"],
)
def test_parse_report_refuses_bad_reports(broken: Any) -> None:
    with pytest.raises(AttendanceParseError):
        parse_report(broken)


def test_next_link_must_be_absolute() -> None:
    with pytest.raises(AttendanceParseError):
        next_link({"value": [], "@odata.nextLink": "/relative?$skiptoken=1"})


# --------------------------------------------------------------------------- property

PEOPLE = st.sampled_from(["organizer", "organizer-as-attendee", "client", "guest", "presenter"])


def _person_record(kind: str, start: int, length: int) -> AttendanceRecord:
    span = interval(start, start + length)
    if kind == "organizer":
        return organizer(span)
    if kind == "organizer-as-attendee":
        return organizer(span, role="Attendee")
    if kind == "client":
        return client(span)
    if kind == "guest":
        return record("Attendee", None, "Guest", span)
    return record("Presenter", "p-1", "Pat", span)


SESSIONS = st.lists(
    st.lists(st.tuples(PEOPLE, st.integers(0, 120), st.integers(0, 90)), min_size=0, max_size=6),
    min_size=0,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(sessions=SESSIONS, data=st.data())
def test_outcome_depends_only_on_who_joined(
    sessions: list[list[tuple[str, int, int]]], data: st.DataObject
) -> None:
    """Times, lengths, report order and splitting across sessions never change the outcome."""
    reports = [
        report(*(_person_record(*p) for p in people), report_id=f"r{i}")
        for i, people in enumerate(sessions)
    ]
    result = summarize(reports, ORGANIZER, CHECKED)
    kinds = {kind for people in sessions for kind, _, _ in people}
    organizer_joined = bool(kinds & {"organizer", "organizer-as-attendee"})
    client_joined = bool(kinds & {"client", "guest", "presenter"})
    expected = {
        (True, True): "completed",
        (True, False): "clientNoShow",
        (False, True): "organizerNoShow",
        (False, False): "nobodyJoined",
    }[(organizer_joined, client_joined)]
    assert result.outcome == expected
    # the same people, shuffled into one session, give the same outcome and the same clients
    everyone = [p for people in sessions for p in people]
    shuffled = data.draw(st.permutations(everyone))
    merged = summarize(
        [report(*(_person_record(*p) for p in shuffled))] if shuffled else [],
        ORGANIZER,
        CHECKED,
    )
    assert merged.outcome == expected
    assert merged.clients == result.clients
    assert merged.organizer_seconds == result.organizer_seconds
    assert Attendance.from_json(result.to_json()) == result


# --------------------------------------------------------------------------- Graph's refusals


def _refused(status: int, operation: str, code: str, message: str) -> Any:
    """classify() on the SDK's own ODataError, as msgraph-sdk raises it for a Graph error."""
    from msgraph.generated.models.o_data_errors.main_error import MainError
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    from shared.graph import classify

    error = ODataError(error=MainError(code=code, message=message))
    error.response_status_code = status
    error.response_headers = {}
    return classify(operation, error)


@pytest.mark.parametrize("operation", ["attendanceReports", "attendanceRecords"])
def test_attendance_refusals_say_what_to_fix(operation: str) -> None:
    from shared.graph import PermanentGraphError, TransientGraphError

    policy = _refused(
        403, operation, "Forbidden", "No Application Access Policy found for this app."
    )
    assert isinstance(policy, PermanentGraphError)
    assert policy.code == "accessPolicyMissing"
    role = _refused(403, operation, "Forbidden", "Missing application permission")
    assert (role.code, "OnlineMeetingArtifact.Read.All" in role.message) == ("appRoleMissing", True)
    bare = _refused(403, operation, "Forbidden", "Forbidden")
    assert "OnlineMeetingArtifact.Read.All" in bare.message
    assert "Teams application access policy" in bare.message
    gone = _refused(404, operation, "NotFound", "The online meeting was not found.")
    assert (gone.code, gone.status) == ("meetingNotFound", 404)
    assert isinstance(_refused(429, operation, "TooManyRequests", "slow down"), TransientGraphError)
