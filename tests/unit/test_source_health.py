"""Source health, pure parts: verdicts, reasons that never carry a value, the recorder.

Deliveries go through the real intake pipeline and source kinds, with storage that must never
be reached for a refusal; a synchronous recorder captures what would be written.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import health, signatures
from shared.documents import FieldError
from shared.health import HealthRecorder, Refusal, Tally, Verdict
from shared.intake import Intake
from shared.settings import Settings
from shared.sources.base import SourceConfig
from tests.unit.sources_support import fixture

SECRET = "unit-secret-0123456789"
NOW = 1_790_000_000.0


class Captured:
    def __init__(self) -> None:
        self.writes: list[tuple[str, Tally, list[Refusal]]] = []

    def __call__(self, source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
        self.writes.append((source, tally, list(refusals)))

    @property
    def reasons(self) -> list[str]:
        return [r.reason for _, _, refusals in self.writes for r in refusals]


class Reached(Exception):
    """A delivery was valid and went on to storage: not a refusal, nothing to check."""


class NoStorage:
    """Refusals are decided before storage; a valid delivery stops here."""

    def __getattr__(self, name: str) -> Any:
        raise Reached(name)


def no_storage() -> Any:
    return NoStorage()


def send(pipeline: Intake, source: str, headers: dict[str, str], body: bytes) -> None:
    with contextlib.suppress(Reached):
        pipeline.handle(headers, body, "c", source)


def intake(write: Captured | None = None) -> tuple[Intake, Captured]:
    captured = write or Captured()
    configured = Settings(
        webhook_secrets=(SECRET,),
        sources={
            "hl7": SourceConfig("hl7", "hl7v2", (SECRET,)),
            "cly": SourceConfig("cly", "calendly", (SECRET,)),
            "cal": SourceConfig("cal", "calcom", (SECRET,)),
        },
    )
    recorder = HealthRecorder(captured, background=False)
    return (
        Intake(configured, no_storage, no_storage, clock=lambda: NOW, health=recorder),
        captured,
    )


def native(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return {
        "content-type": content_type,
        "x-signature": signatures.sign(SECRET, int(NOW), body),
    }


def document(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "externalAppointmentId": "appt-1",
        "lastModifiedDateTime": "2026-11-20T10:00:00Z",
        "organizer": "11111111-1111-4111-8111-111111111111",
        "startDateTime": "2026-12-01T09:00:00Z",
        "endDateTime": "2026-12-01T09:30:00Z",
        "timeZone": "America/New_York",
        "appointmentClients": [
            {"displayName": "A", "emailAddress": "a@example.org", "smsCapablePhoneNumber": None}
        ],
    }
    body.update(overrides)
    return body


HL7 = (
    "MSH|^~\\&|App|Fac|Bridge|Fac|{msh7}||{type}^{trigger}^SIU_S12|CTL1|P|{version}\r"
    "SCH||FL-1||||||Normal|{duration}|{unit}|^^^{start}^{end}\r"
    "PID|1||P1||Family^Given\r"
    "AIP|1||2201^Doc^Robin\r"
)


def hl7(**fields: str) -> bytes:
    values = {
        "msh7": "20260101112000",
        "type": "SIU",
        "trigger": "S12",
        "version": "2.5.1",
        "duration": "",
        "unit": "",
        "start": "20260105093000",
        "end": "20260105100000",
    } | fields
    return HL7.format(**values).encode("utf-8")


def calendly(**scheduled: Any) -> dict[str, Any]:
    body = fixture("calendly", "invitee-created")
    body["payload"]["scheduled_event"].update(scheduled)
    return body


def deliveries(value: str) -> list[tuple[str, dict[str, str], bytes]]:
    """Deliveries each carrying `value` somewhere it is refused (or, if valid, accepted)."""
    escaped = "".join(c for c in value if c not in "|^~\\&\r\n")
    out: list[tuple[str, dict[str, str], bytes]] = []
    for field in (
        "startDateTime",
        "endDateTime",
        "lastModifiedDateTime",
        "organizer",
        "timeZone",
        "externalAppointmentId",
        "status",
        "subject",
    ):
        body = json.dumps(document(**{field: value})).encode()
        out.append(("appointments", native(body), body))
    client = {"displayName": value, "emailAddress": value, "smsCapablePhoneNumber": value}
    body = json.dumps(document(appointmentClients=[client])).encode()
    out.append(("appointments", native(body), body))
    body = value.encode("utf-8", "replace")
    out.append(("appointments", native(body), body))  # not JSON
    good = json.dumps(document()).encode()
    out.append(("appointments", native(good, content_type=value[:60]), good))
    out.append(("appointments", {"content-type": "application/json", "x-signature": value}, good))
    for name in ("start_time", "end_time", "uri", "name"):
        body = json.dumps(calendly(**{name: value})).encode()
        headers = {
            "content-type": "application/json",
            "calendly-webhook-signature": signatures.sign(SECRET, int(NOW), body),
        }
        out.append(("cly", headers, body))
    bearer = {"content-type": "application/hl7-v2", "authorization": f"Bearer {SECRET}"}
    for name in ("msh7", "start", "end", "duration", "unit", "version", "type", "trigger"):
        out.append(("hl7", bearer, hl7(**{name: escaped})))
    out.append(("hl7", {**bearer, "content-type": f"text/plain; charset={escaped}"}, hl7()))
    out.append(("hl7", {"content-type": "application/hl7-v2", "authorization": value}, hl7()))
    return out


# What the app itself says: every four characters of a reason given neutral invalid values.
_NEUTRAL = (
    "",
    "x",
    "\x01",
    "NaN",
    "Infinity",
    "-Infinity",
    "9999-99-99T99:99:99Z",
    "2026-02-30T10:00:00+24:00",
    "2026-13-01",
)


def _grams(text: str) -> set[str]:
    return {text[i : i + 4] for i in range(len(text) - 3)}


def _vocabulary() -> set[str]:
    pipeline, captured = intake()
    for value in _NEUTRAL:
        for source, headers, body in deliveries(value):
            send(pipeline, source, headers, body)
    return set().union(*(_grams(r) for r in captured.reasons))


VOCABULARY = _vocabulary()


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.text(min_size=4, max_size=40))
def test_no_refusal_reason_carries_a_value(value: str) -> None:
    pipeline, captured = intake()
    for source, headers, body in deliveries(value):
        send(pipeline, source, headers, body)
    for reason in captured.reasons:
        echoed = {gram for gram in _grams(value) if gram in reason} - VOCABULARY
        assert not echoed, (reason, value)


def test_a_marked_value_never_reaches_a_reason() -> None:
    marker = "Zq7Wx9Kp"
    pipeline, captured = intake()
    for source, headers, body in deliveries(marker):
        send(pipeline, source, headers, body)
    assert len(captured.reasons) >= 15
    assert not [r for r in captured.reasons if "Zq7W" in r or "x9Kp" in r]


def test_reasons_name_the_status_the_path_and_the_rule() -> None:
    pipeline, captured = intake()
    body = json.dumps(calendly(start_time="tomorrow")).encode()
    headers = {
        "content-type": "application/json",
        "calendly-webhook-signature": signatures.sign(SECRET, int(NOW), body),
    }
    assert pipeline.handle(headers, body, "c", "cly").status == 400
    bearer = {"content-type": "application/hl7-v2", "authorization": f"Bearer {SECRET}"}
    assert pipeline.handle(bearer, hl7(start="soon", end="later"), "c", "hl7").status == 200
    assert pipeline.handle({"authorization": "Bearer no"}, hl7(), "c", "hl7").status == 401
    assert captured.reasons == [
        "400 /payload/scheduled_event/start_time: must be an RFC 3339 date-time with an offset,"
        " e.g. 2026-12-01T09:00:00Z",
        "AE SCH-11.4: must be an HL7 date/time, YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]",
        "401 the credentials do not match",
    ]


def test_ignored_deliveries_count_as_ignored_and_unknown_sources_not_at_all() -> None:
    pipeline, captured = intake()
    body = calendly()
    body["event"] = "routing_form_submission.created"
    raw = json.dumps(body).encode()
    headers = {
        "content-type": "application/json",
        "calendly-webhook-signature": signatures.sign(SECRET, int(NOW), raw),
    }
    assert pipeline.handle(headers, raw, "c", "cly").status == 202
    assert pipeline.handle(headers, raw, "c", "nosuch").status == 404
    assert [(s, t.ignored, t.refused) for s, t, _ in captured.writes] == [("cly", 1, 0)]
    assert captured.writes[0][1].last == NOW


def test_a_failing_health_write_does_not_change_the_answer() -> None:
    def broken(source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
        raise RuntimeError("storage is down")

    recorder = HealthRecorder(broken, background=False)
    pipeline = Intake(
        Settings(webhook_secrets=(SECRET,)), no_storage, no_storage, lambda: NOW, recorder
    )
    plain = Intake(Settings(webhook_secrets=(SECRET,)), no_storage, no_storage, lambda: NOW)
    body = b"not json"
    assert pipeline.handle(native(body), body, "c") == plain.handle(native(body), body, "c")


def test_field_refusal_is_one_bounded_line() -> None:
    errors = [FieldError("/a", "must be\nfine\x00 " + "x" * 500), FieldError("/b", "other")]
    verdict = health.field_refusal("400", errors)
    assert verdict.result == "refused"
    assert "\n" not in verdict.reason
    assert "\x00" not in verdict.reason
    assert len(verdict.reason) <= health.REASON_MAX
    assert health.field_refusal("400", []).reason == "400 invalid body"


def test_refusal_keys_sort_newest_first() -> None:
    keys = [health.refusal_key(NOW + i / 1000, "aa") for i in range(5)]
    assert keys == sorted(keys, reverse=True)


def test_view_is_the_contract_shape() -> None:
    tally = Tally(accepted=3, ignored=1, refused=2, last=NOW)
    refusals = [Refusal(NOW - 5, "401 old"), Refusal(NOW - 1, "415 new")]
    assert health.view("epic", "hl7v2", tally, refusals) == {
        "name": "epic",
        "kind": "hl7v2",
        "accepted": 3,
        "ignored": 1,
        "refused": 2,
        "lastDeliveryDateTime": health.instant(NOW),
        "recentRefusals": [
            {"receivedDateTime": health.instant(NOW - 1), "reason": "415 new"},
            {"receivedDateTime": health.instant(NOW - 5), "reason": "401 old"},
        ],
    }
    empty = health.view("x", "native", Tally(), [])
    assert empty["lastDeliveryDateTime"] is None
    assert empty["recentRefusals"] == []


def test_the_background_recorder_coalesces_and_flush_waits_for_it() -> None:
    captured = Captured()
    gate = threading.Event()

    def slow(source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
        gate.wait(5)
        captured(source, tally, refusals)

    recorder = HealthRecorder(slow)
    recorder.record("epic", health.ACCEPTED, NOW)
    for index in range(99):
        recorder.record("epic", health.refusal("401", "no") if index % 2 else health.IGNORED, NOW)
    assert not recorder.flush(0.05)
    gate.set()
    assert recorder.flush(5)
    total = Tally()
    for _, tally, _ in captured.writes:
        total.add(tally)
    assert (total.accepted, total.ignored, total.refused) == (1, 50, 49)
    assert len(captured.writes) < 100  # coalesced
    assert sum(len(r) for _, _, r in captured.writes) <= 49


def test_a_failed_background_write_is_tried_again() -> None:
    attempts: list[int] = []
    done = Captured()

    def flaky(source: str, tally: Tally, refusals: Sequence[Refusal]) -> None:
        attempts.append(tally.accepted)
        if len(attempts) == 1:
            raise RuntimeError("throttled")
        done(source, tally, refusals)

    recorder = HealthRecorder(flaky, retry_pause=0.01)
    recorder.record("epic", Verdict("accepted"), NOW)
    assert recorder.flush(5)
    deadline = time.monotonic() + 5
    while not done.writes and time.monotonic() < deadline:
        recorder.flush(1)
    assert [t.accepted for _, t, _ in done.writes] == [1]
