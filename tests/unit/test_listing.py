"""The list index's pure parts: keys, filter choice, query and body parsing, tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import listing
from shared.documents import FieldError
from shared.listing import Facts, Filter
from shared.records import AppliedState, ErrorInfo
from tests.unit.factories import ORGANIZER_GUID, cancelled, doc, valid

START = datetime(2026, 12, 1, 9, tzinfo=UTC)


def facts(**overrides: object) -> Facts:
    fields: dict[str, object] = {
        "external_id": "appt-1",
        "status": "failed",
        "start": START,
        "source": "appointments",
        "organizer": ORGANIZER_GUID,
        "error_code": "accessPolicyMissing",
    }
    fields.update(overrides)
    return Facts(**fields)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=200))
def test_row_keys_round_trip_any_id_and_hold_no_forbidden_character(external_id: str) -> None:
    row = listing.row_key(START, external_id)
    assert listing.id_of(row) == external_id
    assert not set(row) & set("/\\#?")
    assert all(ord(c) >= 0x20 for c in row)
    assert listing.decode_token(listing.encode_token(row)) == row


def test_row_keys_sort_by_start_and_records_without_one_come_last() -> None:
    early = listing.row_key(datetime(2026, 1, 1, tzinfo=UTC), "z")
    late = listing.row_key(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), "a")
    none = listing.row_key(None, "a")
    assert early < late < none
    lower, upper = Filter().row_bounds()
    assert lower <= early
    assert none < upper


def test_a_record_is_pointed_at_by_status_source_organizer_and_error_rows() -> None:
    keys = listing.rows_for(facts())
    partitions = {pk for pk, _ in keys}
    assert partitions == {
        "index~status~failed",
        "index~source~appointments",
        listing.organizer_partition(ORGANIZER_GUID),
        listing.error_partition("accessPolicyMissing"),
    }
    assert len({rk for _, rk in keys}) == 1
    scheduled = listing.rows_for(facts(status="scheduled", error_code=None, organizer=None))
    assert {pk for pk, _ in scheduled} == {"index~status~scheduled", "index~source~appointments"}
    assert listing.rows_for(None) == frozenset()


def test_organizer_partitions_ignore_case_and_hide_the_identifier() -> None:
    upn = "Guest_Example.com#EXT#@contoso.onmicrosoft.com"
    assert listing.organizer_partition(upn) == listing.organizer_partition(upn.lower())
    assert "#" not in listing.organizer_partition(upn)


def test_facts_come_from_the_applied_document_else_the_desired_one() -> None:
    applied = valid(doc(startDateTime="2026-12-01T09:00:00Z", source="epic"))
    desired = valid(
        doc(
            startDateTime="2026-12-05T09:00:00Z",
            endDateTime="2026-12-05T09:30:00Z",
            lastModifiedDateTime="2026-11-21T10:00:00Z",
        )
    )
    state = AppliedState(status="scheduled", document=applied)
    assert listing.facts_of("appt-1", state, desired) == Facts(
        "appt-1", "scheduled", START, "epic", ORGANIZER_GUID, None
    )
    failed = AppliedState(status="failed", error=ErrorInfo("accessPolicyMissing", "x"))
    shown = listing.facts_of("appt-1", failed, desired)
    assert shown is not None
    assert shown.start == datetime(2026, 12, 5, 9, tzinfo=UTC)
    assert shown.error_code == "accessPolicyMissing"
    assert shown.source == "appointments"
    assert listing.facts_of("appt-1", failed, None) is None
    gone = listing.facts_of("appt-1", AppliedState(status="cancelled"), valid(cancelled()))
    assert gone is not None
    assert gone.start is None


def test_the_most_selective_field_chooses_the_one_partition_read() -> None:
    everything = Filter("failed", "epic", ORGANIZER_GUID, "accessPolicyMissing")
    assert everything.partitions() == (listing.organizer_partition(ORGANIZER_GUID),)
    assert Filter("failed", "epic", None, "x").partitions() == (listing.error_partition("x"),)
    assert Filter("failed", "epic").partitions() == ("index~source~epic",)
    assert Filter("failed").partitions() == ("index~status~failed",)
    assert Filter().partitions() == tuple(f"index~status~{s}" for s in listing.STATUSES)


def test_filters_check_every_field_and_a_half_open_start_window() -> None:
    record = facts()
    assert Filter("failed", "appointments", ORGANIZER_GUID.upper(), "accessPolicyMissing").matches(
        record
    )
    assert not Filter("scheduled").matches(record)
    assert not Filter(source="epic").matches(record)
    assert not Filter(organizer="someone@contoso.com").matches(record)
    assert not Filter(error_code="graphUnavailable").matches(record)
    assert Filter(start_from=START).matches(record)
    assert not Filter(start_to=START).matches(record)
    assert not Filter(start_from=START).matches(facts(start=None))


def test_list_query_defaults_and_bounds() -> None:
    query = listing.parse_list_query({})
    assert isinstance(query, listing.ListQuery)
    assert (query.top, query.after, query.filter) == (100, None, Filter())
    assert isinstance(listing.parse_list_query({"$top": "1000"}), listing.ListQuery)
    for bad in ("0", "1001", "-1", "ten", "1e2", ""):
        assert listing.parse_list_query({"$top": bad}) == [
            FieldError("$top", "must be an integer from 1 to 1000")
        ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "done"),
        ("source", "Epic!"),
        ("errorCode", "a b"),
        ("startFrom", "2026-12-01"),
        ("startTo", "yesterday"),
        ("$skiptoken", "not-a-token"),
        ("organizer", "x" * 321),
    ],
)
def test_a_bad_query_parameter_is_named(name: str, value: str) -> None:
    errors = listing.parse_list_query({name: value})
    assert isinstance(errors, list)
    assert [e.path for e in errors] == [name]


def test_a_full_query_parses() -> None:
    token = listing.encode_token(listing.row_key(START, "appt-9"))
    query = listing.parse_list_query(
        {
            "status": "failed",
            "source": "epic",
            "organizer": "1234",
            "errorCode": "organizerUnmapped",
            "startFrom": "2026-12-01T00:00:00+01:00",
            "startTo": "2026-12-02T00:00:00Z",
            "$top": "5",
            "$skiptoken": token,
        }
    )
    assert isinstance(query, listing.ListQuery)
    assert query.filter.start_from == datetime(2026, 11, 30, 23, tzinfo=UTC)
    assert query.after == listing.row_key(START, "appt-9")
    assert query.top == 5
    again = listing.parse_list_query(dict(parse_qsl(query.filter.query_text())))
    assert isinstance(again, listing.ListQuery)
    assert again.filter == query.filter


def test_replay_body_needs_a_status_and_points_at_bad_fields() -> None:
    assert listing.parse_replay_body([]) == [FieldError("", "must be a JSON object")]
    errors = listing.parse_replay_body({"errorCode": 5, "$skiptoken": "%%"})
    assert isinstance(errors, list)
    assert [e.path for e in errors] == ["/status", "/errorCode", "/$skiptoken"]
    body = listing.parse_replay_body({"status": "failed", "errorCode": "accessPolicyMissing"})
    assert body == listing.ReplayQuery(Filter("failed", error_code="accessPolicyMissing"), None)
