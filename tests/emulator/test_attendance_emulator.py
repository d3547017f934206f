"""Attendance reports in the Graph emulator: scripted sessions, Graph's routes, shapes, paging,
refusals and faults; and the production GraphGateway reading them through msgraph-sdk."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx
import pytest

from devtools.graph_emulator import (
    DEFAULT_GRANTED_ROLES,
    MAX_ATTENDANCE_REPORTS,
    OPERATIONS,
    GraphEmulator,
    SessionParticipant,
)
from shared.attendance import next_link, parse_records, parse_reports_page, summarize

from .test_graph_emulator import (
    ALEX,
    NO_POLICY,
    assert_graph_error,
    created_id,
    meetings_path,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ROLE = "OnlineMeetingArtifact.Read.All"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def organizer(start: float = 0, end: float = 30) -> SessionParticipant:
    return SessionParticipant.organizer((at(start), at(end)))


def ada(start: float = 2, end: float = 28) -> SessionParticipant:
    return SessionParticipant.attendee("Ada Client", "ada@example.com", (at(start), at(end)))


def guest(start: float = 5, end: float | None = 20) -> SessionParticipant:
    return SessionParticipant.anonymous(
        "Sam (guest)", (at(start), None if end is None else at(end))
    )


def reports_path(meeting_id: str, user: str = ALEX) -> str:
    return f"{meetings_path(user)}/{meeting_id}/attendanceReports"


def all_records(api: httpx.Client, meeting_id: str, report_id: str) -> list[dict[str, Any]]:
    """Every record of one report, following @odata.nextLink; asserts each page's shape."""
    records: list[dict[str, Any]] = []
    url: str | None = f"{reports_path(meeting_id)}/{report_id}/attendanceRecords"
    while url is not None:
        response = api.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["@odata.context"].endswith(
            f"attendanceReports('{report_id}')/attendanceRecords"
        )
        records.extend(page["value"])
        url = next_link(page)
    return records


# --------------------------------------------------------------------------- the routes


def test_the_role_and_operations_are_registered() -> None:
    assert ROLE in DEFAULT_GRANTED_ROLES
    assert {"attendanceReports", "attendanceRecords"} <= OPERATIONS


def test_a_meeting_nobody_started_has_no_report(api: httpx.Client) -> None:
    meeting_id = created_id(api)
    response = api.get(reports_path(meeting_id))
    assert response.status_code == 200
    assert response.json()["value"] == []
    assert response.json()["@odata.context"].endswith(
        f"/$metadata#users('{ALEX}')/onlineMeetings('{meeting_id}')/attendanceReports"
    )


def test_one_report_per_session_newest_first_records_left_empty(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    first = emulator.run_session(meeting_id, [organizer(), ada(), guest()])
    second = emulator.run_session(
        meeting_id, [organizer(40, 50), ada(41, 49)], start=at(39), end=at(51)
    )
    page = api.get(reports_path(meeting_id)).json()
    assert [r["id"] for r in page["value"]] == [second, first]
    assert page["value"][0] == {
        "id": second,
        "totalParticipantCount": 2,
        "meetingStartDateTime": "2026-12-01T09:39:00Z",
        "meetingEndDateTime": "2026-12-01T09:51:00Z",
        "attendanceRecords": [],
    }
    assert page["value"][1]["meetingStartDateTime"] == "2026-12-01T09:00:00Z"  # earliest join
    assert page["value"][1]["meetingEndDateTime"] == "2026-12-01T09:30:00Z"  # latest leave
    assert [r.id for r in parse_reports_page(page)] == [second, first]


def test_records_look_like_graphs(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    report_id = emulator.run_session(meeting_id, [organizer(), ada(), guest(5, None)])
    records = all_records(api, meeting_id, report_id)
    by_role = {(r["role"], r["identity"]["displayName"]): r for r in records}
    alex = by_role[("Organizer", "Alex Wilber")]
    assert alex["identity"]["id"] == ALEX
    assert alex["identity"]["tenantId"] == emulator.tenant_id
    assert alex["emailAddress"] == "alex.wilber@contoso.onmicrosoft.com"
    assert alex["totalAttendanceInSeconds"] == 1800
    assert alex["attendanceIntervals"] == [
        {
            "joinDateTime": "2026-12-01T09:00:00Z",
            "leaveDateTime": "2026-12-01T09:30:00Z",
            "durationInSeconds": 1800,
        }
    ]
    client = by_role[("Attendee", "Ada Client")]
    assert client["emailAddress"] == "ada@example.com"
    assert client["identity"]["id"]
    sam = by_role[("Attendee", "Sam (guest)")]
    assert (sam["emailAddress"], sam["identity"]["id"], sam["identity"]["tenantId"]) == (
        None,
        None,
        None,
    )
    assert sam["attendanceIntervals"][0]["leaveDateTime"] is None
    assert sam["totalAttendanceInSeconds"] == 0
    # the app's parser reads the emulator's answer, and the summary follows
    (listed,) = parse_reports_page(api.get(reports_path(meeting_id)).json())
    report = dataclasses.replace(listed, records=parse_records(records))
    summary = summarize([report], ALEX, at(60))
    assert (summary.outcome, summary.organizer_seconds) == ("completed", 1800)
    assert [(c.display_name, c.seconds) for c in summary.clients] == [
        ("Ada Client", 1560),
        ("Sam (guest)", 0),
    ]


def test_the_same_attendee_keeps_one_id_across_sessions(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    ids = set()
    for offset in (0, 60):
        report_id = emulator.run_session(meeting_id, [ada(offset, offset + 5)])
        (record,) = all_records(api, meeting_id, report_id)
        ids.add(record["identity"]["id"])
    assert len(ids) == 1


def test_records_page_with_next_links(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    people = [organizer()] + [
        SessionParticipant.attendee(f"Client {n}", f"c{n}@example.com", (at(n), at(n + 10)))
        for n in range(6)
    ]
    report_id = emulator.run_session(meeting_id, people)
    assert emulator.records_page_size == 3
    first = api.get(f"{reports_path(meeting_id)}/{report_id}/attendanceRecords").json()
    assert len(first["value"]) == 3
    assert first["@odata.nextLink"].startswith(emulator.graph_base_url + "/users/")
    records = all_records(api, meeting_id, report_id)
    assert len(records) == 7
    assert len({r["id"] for r in records}) == 7
    assert emulator.call_counts()["attendanceRecords"] == 1 + 3  # three pages: 3, 3, 1
    bad = api.get(f"{reports_path(meeting_id)}/{report_id}/attendanceRecords?$skiptoken=nope")
    assert_graph_error(bad, 400, "BadRequest")


def test_opted_out_people_count_but_have_no_record(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    hidden = SessionParticipant.attendee(
        "Ada Client", "ada@example.com", (at(1), at(9)), opted_out=True
    )
    report_id = emulator.run_session(meeting_id, [organizer(), hidden])
    (report,) = api.get(reports_path(meeting_id)).json()["value"]
    assert report["totalParticipantCount"] == 2
    assert [r["role"] for r in all_records(api, meeting_id, report_id)] == ["Organizer"]


def test_at_most_the_50_newest_reports(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    ids = [emulator.run_session(meeting_id, [organizer(n * 60, n * 60 + 1)]) for n in range(52)]
    listed = [r["id"] for r in api.get(reports_path(meeting_id)).json()["value"]]
    assert MAX_ATTENDANCE_REPORTS == 50
    assert listed == list(reversed(ids))[:50]
    assert len(emulator.attendance_reports(meeting_id)) == 52


# --------------------------------------------------------------------------- refusals, faults


def test_without_the_artifact_role_both_routes_are_403(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    report_id = emulator.run_session(meeting_id, [organizer()])
    emulator.granted_roles.discard(ROLE)
    for path in (
        reports_path(meeting_id),
        f"{reports_path(meeting_id)}/{report_id}/attendanceRecords",
    ):
        assert ROLE in assert_graph_error(api.get(path), 403, "Forbidden")
    # the wider meeting role does not cover artifacts
    assert "OnlineMeetings.ReadWrite.All" in emulator.granted_roles


def test_without_the_access_policy_it_is_403(emulator: GraphEmulator, api: httpx.Client) -> None:
    message = assert_graph_error(api.get(reports_path("any-meeting", NO_POLICY)), 403, "Forbidden")
    assert "No Application Access Policy found for this app" in message
    emulator.legacy_policy_error = True
    legacy = assert_graph_error(api.get(reports_path("any-meeting", NO_POLICY)), 403)
    assert "not authorized to Get meeting attendance reports on behalf of user" in legacy


def test_unknown_meeting_report_or_deleted_meeting_is_404(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    assert "was not found" in assert_graph_error(api.get(reports_path("nope")), 404, "NotFound")
    meeting_id = created_id(api)
    report_id = emulator.run_session(meeting_id, [organizer()])
    unknown = api.get(f"{reports_path(meeting_id)}/not-a-report/attendanceRecords")
    assert_graph_error(unknown, 404, "NotFound")
    other = created_id(api, "ext-2")
    elsewhere = api.get(f"{reports_path(other)}/{report_id}/attendanceRecords")
    assert_graph_error(elsewhere, 404, "NotFound")  # a report belongs to its meeting
    assert api.delete(f"{meetings_path()}/{meeting_id}").status_code == 204
    assert_graph_error(api.get(reports_path(meeting_id)), 404, "NotFound")
    assert api.post(reports_path(other)).status_code == 405
    assert api.get(f"{reports_path(other)}/{report_id}").status_code == 404  # not served


def test_faults_are_injectable_and_calls_counted(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    report_id = emulator.run_session(meeting_id, [organizer()])
    emulator.inject_fault(operation="attendanceReports", status=429, retry_after=7)
    emulator.inject_fault(operation="attendanceRecords", status=503)
    throttled = api.get(reports_path(meeting_id))
    assert_graph_error(throttled, 429, "TooManyRequests")
    assert throttled.headers["Retry-After"] == "7"
    records_path = f"{reports_path(meeting_id)}/{report_id}/attendanceRecords"
    assert_graph_error(api.get(records_path), 503, "ServiceUnavailable")
    assert api.get(reports_path(meeting_id)).status_code == 200
    assert api.get(records_path).status_code == 200
    counts = emulator.call_counts()
    assert (counts["attendanceReports"], counts["attendanceRecords"]) == (2, 2)


def test_run_session_refuses_what_graph_would_never_report(
    emulator: GraphEmulator, api: httpx.Client
) -> None:
    meeting_id = created_id(api)
    with pytest.raises(ValueError, match="nobody joined"):
        emulator.run_session(meeting_id, [])
    with pytest.raises(ValueError, match="unknown meeting"):
        emulator.run_session("nope", [organizer()])
    with pytest.raises(ValueError, match="timezone-aware"):
        emulator.run_session(
            meeting_id, [SessionParticipant.organizer((dt.datetime(2026, 12, 1, 9), None))]
        )
    with pytest.raises(ValueError, match="leave before"):
        emulator.run_session(meeting_id, [SessionParticipant.organizer((at(5), at(1)))])
    with pytest.raises(ValueError, match="interval"):
        emulator.run_session(meeting_id, [SessionParticipant.organizer()])
    with pytest.raises(ValueError, match="role"):
        emulator.run_session(
            meeting_id, [SessionParticipant.organizer((at(0), at(1)), role="Boss")]
        )
    assert emulator.attendance_reports() == []


def test_reports_show_in_state_and_go_on_reset(emulator: GraphEmulator, api: httpx.Client) -> None:
    meeting_id = created_id(api)
    report_id = emulator.run_session(meeting_id, [organizer(), guest()])
    admin = httpx.Client(base_url=emulator.origin + "/_emulator")
    state = admin.get("/state").json()
    (shown,) = state["attendance_reports"]
    assert (shown["id"], shown["meeting_id"], shown["total_participant_count"]) == (
        report_id,
        meeting_id,
        2,
    )
    assert shown["start"] == "2026-12-01T09:00:00Z"
    assert len(shown["records"]) == 2
    assert state["config"]["records_page_size"] == 3
    configured = admin.put("/config", json={"records_page_size": 1})
    assert configured.json()["records_page_size"] == 1
    assert admin.put("/config", json={"records_page_size": 0}).status_code == 400
    assert admin.post("/reset").status_code == 204
    after = admin.get("/state").json()
    assert after["attendance_reports"] == []
    assert after["config"]["records_page_size"] == 3
    admin.close()


# --------------------------------------------------------------------------- the app's gateway


@pytest.fixture
def gateway(emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    from shared.graph import GraphGateway
    from shared.settings import Settings

    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    return GraphGateway(Settings(graph_base_url=emulator.graph_base_url))


def graph_calls(emulator: GraphEmulator) -> dict[str, int]:
    return {k: v for k, v in emulator.call_counts().items() if k.startswith("attendance")}


def test_gateway_reads_every_report_with_one_call_per_report(
    emulator: GraphEmulator, api: httpx.Client, gateway: Any
) -> None:
    """1 list + 1 records call per report, while each report's records fit one page."""
    meeting_id = created_id(api)
    assert gateway.attendance_reports(ALEX, meeting_id) == []
    assert graph_calls(emulator) == {"attendanceReports": 1}
    emulator.reset_calls()

    first = emulator.run_session(meeting_id, [organizer(0, 10), ada(1, 9), guest(2, 4)])
    second = emulator.run_session(meeting_id, [organizer(30, 40), ada(31, 45)])
    reports = gateway.attendance_reports(ALEX, meeting_id)
    assert graph_calls(emulator) == {"attendanceReports": 1, "attendanceRecords": 2}
    assert [r.id for r in reports] == [second, first]
    assert [len(r.records) for r in reports] == [2, 3]
    checked = at(60)
    summary = summarize(reports, ALEX, checked)
    assert summary.to_json() == {
        "outcome": "completed",
        "organizerSeconds": 1200,
        "clients": [
            {
                "displayName": "Ada Client",
                "joinDateTime": "2026-12-01T09:01:00Z",
                "leaveDateTime": "2026-12-01T09:45:00Z",
                "seconds": 480 + 840,
            },
            {
                "displayName": "Sam (guest)",
                "joinDateTime": "2026-12-01T09:02:00Z",
                "leaveDateTime": "2026-12-01T09:04:00Z",
                "seconds": 120,
            },
        ],
        "reports": 2,
        "checkedDateTime": "2026-12-01T10:00:00Z",
    }


def test_gateway_follows_record_pages(
    emulator: GraphEmulator, api: httpx.Client, gateway: Any
) -> None:
    """Records beyond one page cost one call per page: 1 + sum of pages per report."""
    meeting_id = created_id(api)
    people = [organizer()] + [
        SessionParticipant.attendee(f"Client {n}", f"c{n}@example.com", (at(n), at(n + 10)))
        for n in range(6)
    ]
    emulator.run_session(meeting_id, people)  # 7 records: pages of 3, 3, 1
    emulator.run_session(meeting_id, [organizer(60, 61)])  # 1 record: one page
    emulator.reset_calls()
    reports = gateway.attendance_reports(ALEX, meeting_id)
    assert [len(r.records) for r in reports] == [1, 7]
    assert graph_calls(emulator) == {"attendanceReports": 1, "attendanceRecords": 1 + 3}
    assert summarize(reports, ALEX, at(90)).outcome == "completed"


def test_gateway_classifies_attendance_refusals(
    emulator: GraphEmulator, api: httpx.Client, gateway: Any
) -> None:
    from shared.graph import PermanentGraphError, TransientGraphError

    meeting_id = created_id(api)
    emulator.run_session(meeting_id, [organizer()])
    with pytest.raises(PermanentGraphError) as gone:
        gateway.attendance_reports(ALEX, "not-a-meeting")
    assert gone.value.code == "meetingNotFound"
    with pytest.raises(PermanentGraphError) as no_policy:
        gateway.attendance_reports(NO_POLICY, meeting_id)
    assert no_policy.value.code == "accessPolicyMissing"
    emulator.granted_roles.discard(ROLE)
    with pytest.raises(PermanentGraphError) as no_role:
        gateway.attendance_reports(ALEX, meeting_id)
    assert no_role.value.code == "appRoleMissing"
    assert ROLE in no_role.value.message
    emulator.granted_roles.add(ROLE)
    # a throttled records page: the SDK retries within its budget, then the call succeeds
    emulator.inject_fault(operation="attendanceRecords", status=503, retry_after=1)
    (report,) = gateway.attendance_reports(ALEX, meeting_id)
    assert len(report.records) == 1
    # a wait past the retry budget is not taken: a transient error with Graph's Retry-After
    emulator.inject_fault(operation="attendanceReports", status=429, retry_after=60)
    with pytest.raises(TransientGraphError) as throttled:
        gateway.attendance_reports(ALEX, meeting_id)
    assert throttled.value.retry_after == 60
