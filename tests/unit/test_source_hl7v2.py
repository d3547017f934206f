"""Kind `hl7v2` (SPEC.md "Kind hl7v2"): SIU messages in, HL7 ACKs out. Pure."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import hl7
import pytest

from shared import signatures
from shared.documents import AppointmentDocument, FieldError, parse_document
from shared.sources import hl7v2
from shared.sources.base import (
    AuthenticationError,
    Candidate,
    InvalidBody,
    Outcome,
    Parsed,
    Refused,
    SourceConfig,
    UnsupportedMediaType,
    charset,
)
from shared.sources.hl7v2 import KIND, AckContext

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7"
CONFIG = SourceConfig(name="ehr", kind="hl7v2", time_zone="America/New_York", phone_region="US")
GB = SourceConfig(name="ehr", kind="hl7v2", time_zone="Europe/London", phone_region="GB")
HL7 = {"content-type": "application/hl7-v2"}
NOW = 1_767_268_800  # 2026-01-01T12:00:00Z


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def message(*segments: str, sep: str = "\r") -> bytes:
    return sep.join(segments).encode()


MSH = "MSH|^~\\&|SEND|SFAC|RECV|RFAC|{ts}||SIU^{trigger}|{control}|P|{version}"


def msh(
    trigger: str = "S12", ts: str = "20260101120000", control: str = "C1", version: str = "2.5"
) -> str:
    return MSH.format(trigger=trigger, ts=ts, control=control, version=version)


SCH = "SCH|PL1|FL1||||||||||||||||||||||||Booked"
TQ1 = "TQ1|||||||20260105093000-0500|20260105100000-0500"
PID = "PID|1||MRN1||DOE^JANE||||||||(206)555-0100^PRN^CP"
AIP = "AIP|1||DR1^WHO^DOC"


def basic() -> list[str]:
    return [msh(), SCH, TQ1, PID, AIP]


def parse(body: bytes, config: SourceConfig = CONFIG, **headers: str) -> Parsed:
    return KIND.parse({**HL7, **headers}, body, config)


def candidate(body: bytes, config: SourceConfig = CONFIG) -> Candidate:
    parsed = parse(body, config)
    assert parsed.ignored is None
    (only,) = parsed.candidates
    assert isinstance(parse_document(only.document), AppointmentDocument), parse_document(
        only.document
    )
    return only


def doc(body: bytes, config: SourceConfig = CONFIG) -> dict[str, Any]:
    return candidate(body, config).document


def refused(
    body: bytes, config: SourceConfig = CONFIG, headers: dict[str, str] | None = None
) -> Refused:
    with pytest.raises(Refused) as caught:
        KIND.parse({**HL7, **(headers or {})}, body, config)
    assert isinstance(caught.value.context, AckContext)
    return caught.value


def as_outcome(error: Refused) -> Outcome:
    return Outcome(
        "refused", detail=error.detail, errors=tuple(error.errors), context=error.context
    )


def paths(error: Refused) -> list[str]:
    return [e.path for e in error.errors]


def ack(outcome: Outcome, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    reply = KIND.respond(outcome, headers or HL7, now=NOW)
    assert reply.body.endswith(b"\r")
    text = reply.body.decode(charset(reply.headers["Content-Type"]))
    return reply.status, hl7.parse(text), reply.body


# --- fixtures: every shape the samples show ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("siu-s12-v28-tq1.hl7", "scheduled"),
        ("siu-s12-v28-multi-rgs.hl7", "scheduled"),
        ("siu-s13-v28-reschedule.hl7", "scheduled"),
        ("siu-s14-v28-modify.hl7", "scheduled"),
        ("siu-s15-v28-cancelled.hl7", "cancelled"),
        ("siu-s17-v28-deleted.hl7", "cancelled"),
        ("siu-s12-v24-sch1-only.hl7", "scheduled"),
        ("siu-s13-v24-sch1-only.hl7", "scheduled"),
        ("siu-s15-v24-cancelled.hl7", "cancelled"),
        ("siu-s12-v23-mesa.hl7", "scheduled"),
        ("siu-s15-v231-noshow.hl7", "cancelled"),
        ("siu-s12-v22-duration.hl7", "scheduled"),
    ],
)
def test_every_fixture_becomes_a_valid_document(name: str, status: str) -> None:
    document = doc(fixture(name), GB)
    assert document["status"] == status
    assert document["source"] == "ehr"
    assert document["externalAppointmentId"] == "ehr:" + document["sourceAppointmentId"]
    assert document["subject"] == "Virtual appointment"
    assert document["timeZone"] == "Europe/London"


def test_s26_fixture_is_acknowledged_without_change() -> None:
    parsed = parse(fixture("siu-s26-v28-noshow.hl7"))
    assert parsed.ignored == "SIU^S26"
    assert parsed.candidates == ()
    assert isinstance(parsed.context, AckContext)


def test_v28_fixture_reads_tq1_aip_and_pid13() -> None:
    found = candidate(fixture("siu-s12-v28-tq1.hl7"))
    document = found.document
    assert document["startDateTime"] == "2026-01-05T09:30:00+01:00"
    assert document["endDateTime"] == "2026-01-05T10:20:00+01:00"
    assert document["lastModifiedDateTime"] == "2026-01-01T11:20:00+01:00"
    assert document["organizer"] == "2201"
    assert document["appointmentClients"] == [
        {
            "displayName": "ALEX SAMPLE",
            "smsCapablePhoneNumber": "+12065550103",
            "emailAddress": "alex.sample@example.org",
        }
    ]
    assert found.delivery_id == "CTL00012"
    assert found.fallback == "MSH"
    assert found.locations["/startDateTime"] == "TQ1-7"
    assert found.locations["/endDateTime"] == "TQ1-8"
    assert found.locations["/organizer"] == "AIP-3"
    assert found.locations["/externalAppointmentId"] == "SCH-2"
    assert found.locations["/lastModifiedDateTime"] == "MSH-7"
    assert found.locate("/appointmentClients/0/displayName") == "PID-5"
    assert found.locate("/appointmentClients/0/smsCapablePhoneNumber") == "PID-13"


def test_v24_fixture_sch1_only_free_text_aig_and_mobile_email_markers() -> None:
    found = candidate(fixture("siu-s12-v24-sch1-only.hl7"), GB)
    document = found.document
    assert document["sourceAppointmentId"] == "500000001"
    assert found.locations["/externalAppointmentId"] == "SCH-1"
    assert document["startDateTime"] == "2026-01-12T12:00:00+00:00"  # London, winter
    assert document["endDateTime"] == "2026-01-12T12:30:00+00:00"
    assert found.locations["/startDateTime"] == "SCH-11.4"
    assert document["organizer"] == "Clinician, Casey"
    assert found.locations["/organizer"] == "AIG-3"
    assert document["appointmentClients"] == [
        {
            "displayName": "SAMPLEONE EXAMPLE",
            "smsCapablePhoneNumber": "+447700900123",
            "emailAddress": "sample.one@example.org",
        }
    ]


def test_v231_fixture_noshow_status_is_still_cancelled_by_s15_with_duration() -> None:
    found = candidate(fixture("siu-s15-v231-noshow.hl7"))
    document = found.document
    assert document["status"] == "cancelled"
    assert document["startDateTime"] == "2026-05-19T13:00:00-04:00"
    assert document["endDateTime"] == "2026-05-19T13:15:00-04:00"
    assert found.locations["/endDateTime"] == "SCH-9"
    assert document["organizer"] == "providerusername"
    assert document["appointmentClients"][0]["emailAddress"] == "patient@example.org"
    assert document["appointmentClients"][0]["smsCapablePhoneNumber"] == "+12065550123"


def test_v22_fixture_start_only_plus_duration() -> None:
    document = doc(fixture("siu-s12-v22-duration.hl7"))
    assert document["startDateTime"] == "2026-03-22T15:40:00-04:00"
    assert document["endDateTime"] == "2026-03-22T15:50:00-04:00"
    assert document["organizer"] == "provideruser2"
    assert document["appointmentClients"] == [{"displayName": "ROBIN HALL"}]


# --- content types, line endings, framing --------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/hl7-v2",
        "application/hl7-v2+er7",
        "x-application/hl7-v2+er7",
        "text/plain",
        "Application/HL7-V2; charset=utf-8",
    ],
)
def test_content_types_taken(content_type: str) -> None:
    parsed = KIND.parse({"content-type": content_type}, message(*basic()), CONFIG)
    assert len(parsed.candidates) == 1


@pytest.mark.parametrize("content_type", ["application/json", "", "application/xml", "text/html"])
def test_other_content_types_are_unsupported(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        KIND.parse({"content-type": content_type}, message(*basic()), CONFIG)
    assert caught.value.args[0] == content_type


def test_missing_content_type_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        KIND.parse({}, message(*basic()), CONFIG)


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_endings(sep: str) -> None:
    assert doc(message(*basic(), sep=sep) + sep.encode())["organizer"] == "DR1"


def test_mllp_framing_is_stripped() -> None:
    assert doc(b"\x0b" + message(*basic()) + b"\x1c\r")["organizer"] == "DR1"


def test_charset_is_honoured() -> None:
    body = message(msh(), SCH, TQ1, "PID|1||M||MÜLLER^JOSÉ", AIP)
    document = (
        KIND.parse(
            {"content-type": "text/plain; charset=iso-8859-1"},
            body.decode().encode("latin-1"),
            CONFIG,
        )
        .candidates[0]
        .document
    )
    assert document["appointmentClients"][0]["displayName"] == "JOSÉ MÜLLER"


def test_undecodable_bytes_are_refused_naming_msh18() -> None:
    body = message(msh(), SCH, TQ1, AIP) + b"\rPID|1||M||\xff\xfe^X"
    assert paths(refused(body)) == ["MSH-18"]


def test_unknown_charset_is_refused() -> None:
    assert paths(
        refused(message(*basic()), headers={"content-type": "text/plain; charset=nope"})
    ) == ["MSH-18"]


def test_codec_that_is_not_text_is_refused() -> None:
    assert paths(
        refused(message(*basic()), headers={"content-type": "text/plain; charset=base64"})
    ) == ["MSH-18"]


@pytest.mark.parametrize("body", [b"", b"hello", b"PID|1||x", b"\x0b\x1c\r", b"\xff\xfe\x00"])
def test_no_msh_is_invalid_body(body: bytes) -> None:
    with pytest.raises(InvalidBody) as caught:
        parse(body)
    assert caught.value.errors[0].path == "/"
    assert "MSH" in caught.value.detail


def test_segments_before_msh_are_skipped() -> None:
    assert doc(message("BHS|^~\\&|X", *basic()))["organizer"] == "DR1"


def test_two_messages_in_one_body_are_refused() -> None:
    assert paths(refused(message(*basic(), *basic()))) == ["MSH"]


# --- versions, types, triggers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"]
)
def test_versions_taken(version: str) -> None:
    assert doc(message(msh(version=version), *basic()[1:]))["status"] == "scheduled"


@pytest.mark.parametrize("version", ["2.1", "2.9", "3.0", "", "x", "2.5^HL7"])
def test_other_versions_are_refused_naming_msh12(version: str) -> None:
    if version == "2.5^HL7":  # VID with components: MSH-12.1 is what counts
        assert doc(message(msh(version=version), *basic()[1:]))
        return
    assert paths(refused(message(msh(version=version), *basic()[1:]))) == ["MSH-12"]


def test_other_message_type_is_refused_naming_msh9() -> None:
    body = message("MSH|^~\\&|S|F|R|F|20260101||ADT^A01|C|P|2.5", *basic()[1:])
    assert paths(refused(body)) == ["MSH-9"]


def test_missing_trigger_is_refused() -> None:
    body = message("MSH|^~\\&|S|F|R|F|20260101||SIU|C|P|2.5", *basic()[1:])
    assert paths(refused(body)) == ["MSH-9.2"]


@pytest.mark.parametrize("trigger", ["S12", "S13", "S14", "s12"])
def test_booking_triggers_are_scheduled(trigger: str) -> None:
    assert doc(message(msh(trigger), *basic()[1:]))["status"] == "scheduled"


@pytest.mark.parametrize("trigger", ["S15", "S16", "S17"])
def test_cancelling_triggers_are_cancelled(trigger: str) -> None:
    assert doc(message(msh(trigger), *basic()[1:]))["status"] == "cancelled"


@pytest.mark.parametrize("trigger", ["S26", "S18", "S24", "S99"])
def test_other_siu_triggers_are_ignored(trigger: str) -> None:
    parsed = parse(message(msh(trigger), "garbage"))
    assert parsed.ignored == f"SIU^{trigger}"
    assert isinstance(parsed.context, AckContext)


@pytest.mark.parametrize(
    ("sch25", "status"),
    [
        ("Cancelled", "cancelled"),
        ("CANCELLED", "cancelled"),
        ("deleted", "cancelled"),
        ("Dc", "cancelled"),
        ("DC^Discontinued", "cancelled"),
        ("^Cancelled", "cancelled"),
        ("Booked", "scheduled"),
        ("Confirmed", "scheduled"),
        ("NOSHOW", "scheduled"),
        ("", "scheduled"),
    ],
)
def test_sch25_can_cancel_a_booking_trigger(sch25: str, status: str) -> None:
    sch = "SCH|PL1|FL1" + "|" * 23 + sch25
    assert doc(message(msh("S13"), sch, TQ1, PID, AIP))["status"] == status


# --- id ------------------------------------------------------------------------------------------


def test_id_prefers_sch2_then_sch1() -> None:
    assert doc(message(msh(), "SCH|P1^PLACER|F1^FILLER", TQ1, AIP))["sourceAppointmentId"] == "F1"
    found = candidate(message(msh(), "SCH|P1^PLACER|", TQ1, AIP))
    assert found.document["sourceAppointmentId"] == "P1"
    assert found.locations["/sourceAppointmentId"] == "SCH-1"


def test_missing_id_is_refused_naming_sch2() -> None:
    assert paths(refused(message(msh(), "SCH|||", TQ1, AIP))) == ["SCH-2"]
    assert paths(refused(message(msh(), TQ1, AIP))) == ["SCH"]


def test_id_with_reserved_characters_is_percent_encoded() -> None:
    document = doc(message(msh(), "SCH||A/B#1?%", TQ1, AIP))
    assert document["externalAppointmentId"] == "ehr:A%2FB%231%3F%25"
    assert document["sourceAppointmentId"] == "A/B#1?%"


# --- MSH-7 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("20260101120000+0215", "2026-01-01T12:00:00+02:15"),
        ("20260101120000-0000", "2026-01-01T12:00:00+00:00"),
        ("202601011200", "2026-01-01T12:00:00-05:00"),  # New York, winter
        ("20260701120000", "2026-07-01T12:00:00-04:00"),  # New York, summer (DST)
        ("20260308023000", "2026-03-08T02:30:00-05:00"),  # skipped by DST: the earlier offset
        ("20261101013000", "2026-11-01T01:30:00-04:00"),  # repeated: its first occurrence
        ("20260101120000.5", "2026-01-01T12:00:00.500000-05:00"),
        ("20260101120000.1234+0100", "2026-01-01T12:00:00.123400+01:00"),
        ("2026", "2026-01-01T00:00:00-05:00"),
        ("20260102", "2026-01-02T00:00:00-05:00"),
    ],
)
def test_msh7_becomes_rfc3339_with_offset(ts: str, expected: str) -> None:
    assert doc(message(msh(ts=ts), *basic()[1:]))["lastModifiedDateTime"] == expected


@pytest.mark.parametrize(
    "ts", ["", "x", "2026010", "20261301", "20260101250000", "202601011200.5", "20260101+2400", "1"]
)
def test_bad_msh7_is_refused(ts: str) -> None:
    assert paths(refused(message(msh(ts=ts), *basic()[1:]))) == ["MSH-7"]


# --- start and end -------------------------------------------------------------------------------


def test_tq1_wins_over_sch11() -> None:
    sch = "SCH|P|F|||||||||^^^20260110090000^20260110093000"
    found = candidate(message(msh(), sch, TQ1, AIP))
    assert found.document["startDateTime"] == "2026-01-05T09:30:00-05:00"
    assert found.locations["/endDateTime"] == "TQ1-8"


def test_sch11_when_no_tq1() -> None:
    sch = "SCH|P|F|||||||||^^^20260110090000^20260110093000"
    found = candidate(message(msh(), sch, AIP))
    assert found.document["startDateTime"] == "2026-01-10T09:00:00-05:00"
    assert found.document["endDateTime"] == "2026-01-10T09:30:00-05:00"
    assert found.locations["/endDateTime"] == "SCH-11.5"


def test_sch11_with_precision_subcomponent() -> None:
    sch = "SCH|P|F|||||||||^^^20260110090000&S^20260110093000&S"
    assert doc(message(msh(), sch, AIP))["startDateTime"] == "2026-01-10T09:00:00-05:00"


def test_tq1_start_plus_duration() -> None:
    sch = "SCH|P|F|||||||45|min"
    found = candidate(message(msh(), sch, "TQ1|||||||20260105093000-0500", AIP))
    assert found.document["endDateTime"] == "2026-01-05T10:15:00-05:00"
    assert found.locations["/startDateTime"] == "TQ1-7"
    assert found.locations["/endDateTime"] == "SCH-9"


@pytest.mark.parametrize(
    ("unit", "minutes"),
    [
        ("", 30),
        ("m", 30),
        ("min", 30),
        ("MINS", 30),
        ("minute", 30),
        ("Minutes", 30),
        ("min^Minutes^ISO", 30),
        ("s", 0.5),
        ("sec", 0.5),
        ("SECOND", 0.5),
        ("seconds", 0.5),
        ("h", 1800),
        ("hr", 1800),
        ("Hour", 1800),
        ("HOURS", 1800),
    ],
)
def test_duration_units(unit: str, minutes: float) -> None:
    sch = f"SCH|P|F|||||||30|{unit}|^^^20260110090000"
    body = message(msh(), sch, AIP)
    if minutes > 24 * 60:
        assert parse_document(parse(body).candidates[0].document) != []
        return
    found = candidate(body)
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(found.document["startDateTime"])
    end = datetime.fromisoformat(found.document["endDateTime"])
    assert end - start == timedelta(minutes=minutes)


def test_duration_in_hours_beyond_24h_is_left_to_the_document_rule() -> None:
    sch = "SCH|P|F|||||||30|h|^^^20260110090000"
    errors = parse_document(parse(message(msh(), sch, AIP)).candidates[0].document)
    assert isinstance(errors, list)
    assert [e.path for e in errors] == ["/endDateTime"]


def test_unknown_unit_is_refused_naming_sch10() -> None:
    assert paths(refused(message(msh(), "SCH|P|F|||||||30|days|^^^20260110090000", AIP))) == [
        "SCH-10"
    ]


def test_bad_duration_is_refused_naming_sch9() -> None:
    assert paths(refused(message(msh(), "SCH|P|F|||||||abc|m|^^^20260110090000", AIP))) == ["SCH-9"]
    assert paths(refused(message(msh(), "SCH|P|F|||||||99999999|h|^^^20260110090000", AIP))) == [
        "SCH-9"
    ]


def test_no_start_is_refused_naming_sch11_4() -> None:
    assert paths(refused(message(msh(), "SCH|P|F|||||||30|m", AIP))) == ["SCH-11.4"]
    assert paths(refused(message(msh(), "SCH|P|F|||||||30|m", "TQ1|1", AIP))) == ["TQ1-7"]


def test_no_end_nor_duration_is_refused_naming_sch9() -> None:
    assert paths(refused(message(msh(), "SCH|P|F|||||||||^^^20260110090000", AIP))) == ["SCH-9"]


def test_bad_start_is_refused_naming_its_field() -> None:
    assert paths(refused(message(msh(), SCH, "TQ1|||||||nope|20260105100000", AIP))) == ["TQ1-7"]


def test_cancellation_needs_no_times_nor_organizer() -> None:
    found = candidate(message(msh("S15"), "SCH|P|F"))
    assert found.document["status"] == "cancelled"
    assert "startDateTime" not in found.document
    assert "organizer" not in found.document


def test_cancellation_keeps_times_when_present() -> None:
    document = doc(message(msh("S17"), *basic()[1:]))
    assert document["startDateTime"] == "2026-01-05T09:30:00-05:00"
    assert document["organizer"] == "DR1"


# --- organizer -----------------------------------------------------------------------------------


def test_organizer_precedence_aip_then_aig_then_pv1() -> None:
    pv1 = "PV1|1|O|||||PV1DR^Attending"
    aig = "AIG|1||AIGDR^Resource"
    aip = "AIP|1||AIPDR^Person"
    base = [msh(), SCH, TQ1]
    assert candidate(message(*base, pv1, aig, aip)).locations["/organizer"] == "AIP-3"
    assert doc(message(*base, pv1, aig, aip))["organizer"] == "AIPDR"
    assert doc(message(*base, pv1, aig))["organizer"] == "AIGDR"
    assert doc(message(*base, pv1))["organizer"] == "PV1DR"


def test_first_aip_with_an_identifier_wins() -> None:
    body = message(msh(), SCH, TQ1, "AIP|1||", "AIP|2||SECOND", "AIP|3||THIRD")
    assert doc(body)["organizer"] == "SECOND"


def test_free_text_organizer_uses_the_other_components() -> None:
    assert doc(message(msh(), SCH, TQ1, "AIP|1||^Smith^John^^^Dr"))["organizer"] == "Smith John Dr"
    assert doc(message(msh(), SCH, TQ1, "AIG|1||^Dr Who"))["organizer"] == "Dr Who"
    assert doc(message(msh(), SCH, TQ1, "AIG|1||Who, Doc"))["organizer"] == "Who, Doc"


def test_hl7_null_is_no_organizer() -> None:
    assert paths(refused(message(msh(), SCH, TQ1, 'PV1|1|O|||||""'))) == ["AIP-3"]


def test_missing_organizer_is_refused_naming_aip3() -> None:
    assert paths(refused(message(msh(), SCH, TQ1, PID))) == ["AIP-3"]


def test_long_organizer_is_cut_to_256() -> None:
    assert len(doc(message(msh(), SCH, TQ1, "AIP|1||" + "X" * 400))["organizer"]) == 256


# --- the patient ---------------------------------------------------------------------------------


def clients(pid: str, config: SourceConfig = CONFIG) -> tuple[list[dict[str, str]], list[str]]:
    document = doc(message(msh(), SCH, TQ1, pid, AIP), config)
    return document.get("appointmentClients", []), document.get("warnings", [])


def test_display_name_is_given_then_family() -> None:
    assert clients("PID|1||M||DOE&&&&Smith^JANE^Q")[0] == [{"displayName": "JANE DOE"}]


def test_display_name_from_the_first_non_empty_repetition() -> None:
    assert clients("PID|1||M||~ROE^RICK")[0] == [{"displayName": "RICK ROE"}]


def test_no_name_and_no_contact_means_no_client() -> None:
    assert clients("PID|1||M")[0] == []


def test_no_name_with_contact_is_a_generic_client() -> None:
    found, _ = clients("PID|1||M||||||||||(206)555-0100^^CP")
    assert found == [{"displayName": "Patient", "smsCapablePhoneNumber": "+12065550100"}]


@pytest.mark.parametrize(
    "pid13",
    [
        "(206)555-0100^PRN^CP",
        "206.555.0100^MOBILE",
        "2065550100^CELL^PH",
        "^PRN^CP^^1^206^5550100",
        "^ORN^CP^^^206^5550100",
        "garbage^PRN^CP^^1^206^5550100",
        "(206)555-0101^PRN^PH~(206)555-0100^ORN^CP",
    ],
)
def test_mobile_number_variants(pid13: str) -> None:
    found, warnings = clients(f"PID|1||M||DOE^JANE||||||||{pid13}")
    assert found[0]["smsCapablePhoneNumber"] == "+12065550100"
    assert warnings == []


def test_first_mobile_only() -> None:
    found, _ = clients("PID|1||M||DOE^JANE||||||||(206)555-0100^^CP~(206)555-0199^^CP")
    assert found[0]["smsCapablePhoneNumber"] == "+12065550100"


def test_gb_region_reads_national_numbers() -> None:
    found, _ = clients("PID|1||M||DOE^JANE||||||||07700 900123^MOBILE", GB)
    assert found[0]["smsCapablePhoneNumber"] == "+447700900123"


def test_unreadable_mobile_is_left_out_with_a_warning_without_digits() -> None:
    found, warnings = clients("PID|1||M||DOE^JANE||||||||555-4444^^CP")
    assert found == [{"displayName": "JANE DOE"}]
    assert warnings == [hl7v2.PHONE_WARNING]
    assert not any(ch.isdigit() for ch in warnings[0].removeprefix("PID-13"))


def test_non_mobile_numbers_are_not_texted() -> None:
    found, _ = clients("PID|1||M||DOE^JANE||||||||(206)555-0100^PRN^PH~(206)555-0101")
    assert found == [{"displayName": "JANE DOE"}]


@pytest.mark.parametrize(
    "pid13",
    [
        "^NET^Internet^jane@example.org",
        "jane@example.org^NET",
        "jane@example.org^EMAIL",
        "^^Internet^jane@example.org",
        "x^NET^^jane@example.org",
    ],
)
def test_email_variants(pid13: str) -> None:
    found, _ = clients(f"PID|1||M||DOE^JANE||||||||{pid13}")
    assert found[0]["emailAddress"] == "jane@example.org"


def test_bad_email_is_left_out_with_a_warning() -> None:
    found, warnings = clients("PID|1||M||DOE^JANE||||||||not-an-address^NET")
    assert found == [{"displayName": "JANE DOE"}]
    assert warnings == [hl7v2.EMAIL_WARNING]


# --- delimiters and escapes ----------------------------------------------------------------------


def test_custom_delimiters() -> None:
    body = message(
        "MSH#*@!$#SEND#SFAC#RECV#RFAC#20260101120000##SIU*S12#C1#P#2.5",
        "SCH#P#F",
        "TQ1########20260105093000-0500#20260105100000-0500".replace("########", "#######"),
        "PID#1##M##DOE$Smith*JANE########(206)555-0100*PRN*CP@*NET**jane!R!example.org",
        "AIP#1##DR1*WHO",
    )
    found = candidate(body)
    assert found.document["organizer"] == "DR1"
    assert found.document["appointmentClients"] == [
        {
            "displayName": "JANE DOE",
            "smsCapablePhoneNumber": "+12065550100",
            "emailAddress": "jane@example.org",
        }
    ]
    ctx = parse(body).context
    assert isinstance(ctx, AckContext)
    assert (ctx.field_separator, ctx.encoding_characters) == ("#", "*@!$")


def test_escape_sequences_in_names_are_undone() -> None:
    family = r"O\F\B\S\C\T\D\R\E\E\E"
    given = r"AN\X41\\H\N\.br\Z"
    found, _ = clients(f"PID|1||M||{family}^{given}")
    assert found == [{"displayName": "ANAN Z O|B^C&D~E\\E"}]


def test_odd_escape_sequences_never_crash() -> None:
    found, _ = clients("PID|1||M||DOE\\.spX\\^JO\\XZZ\\\\")
    assert found[0]["displayName"].startswith("JO")


@pytest.mark.parametrize(
    ("header", "path"),
    [
        ("MSH", "MSH-1"),
        ("MSHA^~\\&", "MSH-1"),
        ("MSH|^~", "MSH-2"),
        ("MSH|^^\\&|", "MSH-2"),
        ("MSH|^~|&|", "MSH-2"),
        ("MSH|^~\\&abc|", "MSH-2"),
    ],
)
def test_broken_delimiters_are_refused(header: str, path: str) -> None:
    assert paths(refused(header.encode())) == [path]


def test_msh_without_fields_after_msh2() -> None:
    assert paths(refused(b"MSH|^~\\&")) == ["MSH-12"]


# --- subject, settings, warnings -----------------------------------------------------------------


def test_subject_is_never_clinical() -> None:
    body = message(
        msh(), "SCH|P|F|||||Chemotherapy|HIV review|||^^^20260110090000^20260110093000", AIP
    )
    assert doc(body)["subject"] == "Virtual appointment"
    custom = SourceConfig(
        name="ehr", kind="hl7v2", subject="Clinic call", send_sms=True, send_sms_reminder=True
    )
    document = doc(body, custom)
    assert document["subject"] == "Clinic call"
    assert document["settings"] == {
        "sendSmsNotifications": True,
        "sendSmsReminder": True,
        "sendEmailNotifications": False,
    }
    assert "Chemotherapy" not in str(document)


def test_no_client_data_in_refusals() -> None:
    error = refused(message(msh(), SCH, "PID|1||M||SECRETNAME^X"))
    assert "SECRETNAME" not in str(error.errors) + error.detail


# --- authentication ------------------------------------------------------------------------------


def authenticate(
    headers: dict[str, str], body: bytes = b"x", secrets: tuple[str, ...] = ()
) -> None:
    KIND.authenticate(headers, body, secrets or ("one", "two"), now=NOW, tolerance_seconds=300)


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_x_signature_passes() -> None:
    authenticate({"x-signature": signatures.sign("two", NOW, b"x")})


def test_bearer_passes() -> None:
    authenticate({"authorization": "Bearer two"})
    authenticate({"authorization": "bearer one"})


def test_basic_passes_with_any_user() -> None:
    authenticate({"authorization": basic_auth("anyone", "one")})
    authenticate({"authorization": basic_auth("", "two:with:colons")}, secrets=("two:with:colons",))


def test_one_good_credential_is_enough() -> None:
    authenticate({"x-signature": "t=1,v1=" + "0" * 64, "authorization": "Bearer one"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer three"},
        {"authorization": "Bearer "},
        {"authorization": "Bearer one two"},
        {"authorization": basic_auth("one", "three")},
        {"authorization": "Basic !!!"},
        {"authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
        {"authorization": "Digest one"},
        {"x-signature": signatures.sign("three", NOW, b"x")},
        {"x-signature": signatures.sign("one", NOW - 1000, b"x")},
        {"x-signature": "garbage"},
    ],
)
def test_bad_credentials_fail_with_a_challenge(headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationError) as caught:
        authenticate(headers)
    assert "Bearer" in caught.value.challenge
    assert "Basic" in caught.value.challenge
    assert "one" not in str(caught.value)


def test_empty_secret_never_signs() -> None:
    with pytest.raises(AuthenticationError):
        KIND.authenticate(
            {"x-signature": signatures.sign("", NOW, b"x")},
            b"x",
            ("",),
            now=NOW,
            tolerance_seconds=300,
        )


def test_empty_secrets_never_match() -> None:
    with pytest.raises(AuthenticationError):
        KIND.authenticate({"authorization": "Bearer "}, b"", ("",), now=NOW, tolerance_seconds=300)


# --- ACKs ----------------------------------------------------------------------------------------


def context_of(body: bytes) -> AckContext:
    try:
        ctx = parse(body).context
    except Refused as error:
        ctx = error.context
    assert isinstance(ctx, AckContext)
    return ctx


def test_accepted_ack_swaps_sender_and_receiver() -> None:
    ctx = context_of(fixture("siu-s12-v28-tq1.hl7"))
    status, ack_message, _ = ack(Outcome("accepted", context=ctx))
    assert status == 200
    header = ack_message.segment("MSH")
    assert str(header(3)) == "TeamsBridge^1.Aux^ISO"
    assert str(header(4)) == "BridgeFacility^2.16.840.1.999999.1.2^ISO"
    assert str(header(5)) == "SchedApp"
    assert str(header(6)) == "NorthClinic^2.16.840.1.999999.1.1^ISO"
    assert str(header(7)) == "20260101120000+0000"
    assert str(header(9)) == "ACK^S12^ACK"
    assert str(header(11)) == "P"
    assert str(header(12)) == "2.8"
    control = str(header(10))
    assert 0 < len(control) <= 20
    assert control != "CTL00012"
    msa = ack_message.segment("MSA")
    assert str(msa(1)) == "AA"
    assert str(msa(2)) == "CTL00012"
    with pytest.raises(KeyError):
        ack_message.segment("ERR")


def test_new_control_ids_are_unique() -> None:
    ctx = context_of(message(*basic()))
    ids = {str(ack(Outcome("accepted", context=ctx))[1].segment("MSH")(10)) for _ in range(50)}
    assert len(ids) == 50


def test_ignored_is_aa() -> None:
    ctx = context_of(fixture("siu-s26-v28-noshow.hl7"))
    status, ack_message, _ = ack(Outcome("ignored", ignored="SIU^S26", context=ctx))
    assert status == 200
    assert str(ack_message.segment("MSA")(1)) == "AA"
    assert str(ack_message.segment("MSH")(9)) == "ACK^S26^ACK"


def test_refused_v25_ack_has_err2_3_4() -> None:
    error = refused(message(msh(version="2.5"), "SCH|P|F|||||||30|m", AIP))
    outcome = Outcome(
        "refused", detail=error.detail, errors=tuple(error.errors), context=error.context
    )
    status, ack_message, _ = ack(outcome)
    assert status == 200
    msa = ack_message.segment("MSA")
    assert str(msa(1)) == "AE"
    assert str(msa(2)) == "C1"
    assert "SCH-11.4" in str(msa(3))
    err = ack_message.segment("ERR")
    assert str(err(2)) == "SCH^1^11^1^4"
    assert str(err(3)) == "101^Required field missing^HL70357"
    assert str(err(4)) == "E"


def test_refused_v24_ack_has_err1() -> None:
    error = refused(message(msh(version="2.4"), "SCH|P|F|||||||30|m", AIP))
    outcome = Outcome(
        "refused", detail=error.detail, errors=tuple(error.errors), context=error.context
    )
    _, ack_message, _ = ack(outcome)
    err = ack_message.segment("ERR")
    assert str(err(1)) == "SCH^1^11^101&Required field missing&HL70357"
    assert len(err) == 2


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (message(msh(version="2.9"), SCH), "203"),
        (message("MSH|^~\\&|S|F|R|F|20260101||ADT^A01|C1|P|2.5"), "200"),
        (message(msh(ts="nope"), SCH), "102"),
    ],
)
def test_err3_codes(body: bytes, code: str) -> None:
    error = refused(body)
    outcome = Outcome(
        "refused", detail=error.detail, errors=tuple(error.errors), context=error.context
    )
    assert str(ack(outcome)[1].segment("ERR")(3)(1)(1)) == code


def test_pipeline_errors_mapped_to_hl7_fields() -> None:
    ctx = context_of(message(*basic()))
    errors = (FieldError("TQ1-8", "must be after startDateTime"), FieldError("PID-13", "bad"))
    _, ack_message, _ = ack(Outcome("refused", detail="invalid", errors=errors, context=ctx))
    segments = ack_message.segments("ERR")
    assert [str(s(2)) for s in segments] == ["TQ1^1^8^1", "PID^1^13^1"]
    assert str(segments[0](3)(1)(1)) == "102"


def test_unavailable_is_ar_503() -> None:
    ctx = context_of(message(*basic()))
    reply = KIND.respond(Outcome("unavailable", context=ctx), HL7, now=NOW)
    assert reply.status == 503
    assert reply.headers["Retry-After"]
    ack_message = hl7.parse(reply.body.decode())
    msa = ack_message.segment("MSA")
    assert str(msa(1)) == "AR"
    assert "retry" in str(msa(3)).lower()
    assert str(ack_message.segment("ERR")(3)(1)(1)) == "207"


def test_ack_text_is_escaped_with_the_message_delimiters() -> None:
    body = message("MSH#*@!$#SEND#SFAC#RECV#RFAC#20260101120000##SIU*S12#C1#P#2.5", "SCH#P#F")
    ctx = context_of(body)
    errors = (FieldError("SCH-11.4", "a#b*c@d!e$f|g"),)
    reply = KIND.respond(Outcome("refused", detail="x", errors=errors, context=ctx), HL7, now=NOW)
    text = reply.body.decode()
    assert text.startswith("MSH#*@!$#RECV#RFAC#SEND#SFAC#")
    assert "a!F!b!S!c!R!d!E!e!T!f|g" in text
    ack_message = hl7.parse(text)
    assert str(ack_message.segment("MSA")(1)) == "AE"


def test_ack_keeps_content_type_and_charset() -> None:
    ctx = context_of(message(*basic()))
    headers = {"content-type": "text/plain; charset=iso-8859-1"}
    errors = (FieldError("PID-5", "é"),)
    reply = KIND.respond(Outcome("refused", errors=errors, context=ctx), headers, now=NOW)
    assert reply.headers["Content-Type"] == "text/plain; charset=iso-8859-1"
    assert "é".encode("latin-1") in reply.body
    plain = KIND.respond(Outcome("accepted", context=ctx), HL7, now=NOW)
    assert plain.headers["Content-Type"] == "application/hl7-v2"


def test_ack_in_unknown_charset_falls_back_to_utf8() -> None:
    ctx = context_of(message(*basic()))
    reply = KIND.respond(
        Outcome("refused", context=ctx), {"content-type": "text/plain; charset=nope"}, now=NOW
    )
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    hl7.parse(reply.body.decode())


def test_ack_without_context_is_still_valid() -> None:
    status, ack_message, _ = ack(Outcome("refused", detail="odd"), {})
    assert status == 200
    assert str(ack_message.segment("MSA")(1)) == "AE"
    assert str(ack_message.segment("MSH")(9)) == "ACK"
    assert str(ack_message.segment("MSH")(12))


def test_ack_for_v22_message_echoes_its_version_and_processing_id() -> None:
    ctx = context_of(fixture("siu-s12-v22-duration.hl7"))
    _, ack_message, _ = ack(Outcome("accepted", context=ctx))
    header = ack_message.segment("MSH")
    assert (str(header(11)), str(header(12))) == ("T", "2.2")
    assert str(ack_message.segment("MSA")(2)) == "501"
