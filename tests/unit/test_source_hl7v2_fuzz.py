"""Kind `hl7v2` under hostile input: parse only ever answers with its three refusals or a
Parsed, and respond always produces an ACK, whatever the delimiters, sizes, bytes or headers."""

from __future__ import annotations

from typing import Any

import hl7
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared.documents import AppointmentDocument, FieldError, parse_document
from shared.sources.base import (
    InvalidBody,
    Outcome,
    Parsed,
    Refused,
    SourceConfig,
    UnsupportedMediaType,
    charset,
)
from shared.sources.hl7v2 import KIND

CONFIG = SourceConfig(name="ehr", kind="hl7v2", time_zone="America/New_York")
PUNCTUATION = "|^~\\&#*@!$%+=:;,./?<>{}[]()-_'\"`"
SEGMENTS = ["SCH", "TQ1", "PID", "AIP", "AIG", "PV1", "MSH", "RGS", "NTE", "ZZZ", "BHS", ""]
CONTENT_TYPES = [
    "application/hl7-v2",
    "application/hl7-v2+er7",
    "x-application/hl7-v2+er7",
    "text/plain",
    "text/plain; charset=utf-8",
    "text/plain; charset=latin-1",
    "application/hl7-v2; charset=utf-16",
    "application/hl7-v2; charset=ascii",
    "application/hl7-v2; charset=shift_jis",
    "application/hl7-v2; charset=nope",
    "application/hl7-v2; charset=base64",
    "application/hl7-v2; charset=idna",
    "application/hl7-v2; charset=unicode_escape",
    "application/json",
    "",
]
VALUES = [
    "",
    '""',
    "S12",
    "S15",
    "S26",
    "SIU",
    "2.5",
    "2.2",
    "2.8",
    "20260101120000",
    "20260101120000+0100",
    "202603080230",
    "99999999999999",
    "(206)555-0100",
    "CP",
    "NET",
    "MOBILE",
    "x@example.org",
    "Cancelled",
    "30",
    "min",
    "h",
    "\\F\\",
    "\\X41\\",
    "\\.sp9\\",
    "\\Zfoo",
    "\\",
    "\x0b",
    "\x1c",
    "\n",
    "\r\n",
]

FAST = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def delimiters(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:  # broken on purpose
        return draw(st.text(alphabet=PUNCTUATION + "ab \r\n", max_size=7))
    chars = draw(st.permutations(PUNCTUATION))
    return "".join(chars[: draw(st.sampled_from([5, 5, 5, 6]))])


@st.composite
def values(draw: st.DrawFn, seps: str) -> str:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return draw(st.sampled_from(VALUES))
    if kind <= 6:
        return draw(st.text(alphabet=seps + "0123456789AZaz @.+-\\", max_size=30))
    if kind == 7 and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from("X9^~|")) * draw(st.integers(1000, 8_000))
    return draw(st.text(max_size=20))


@st.composite
def er7(draw: st.DrawFn) -> bytes:
    seps = draw(delimiters())
    fs = seps[:1] or "|"
    fields = [draw(values(seps)) for _ in range(draw(st.integers(0, 14)))]
    if draw(st.booleans()):
        fields[:10] = ["S", "F", "R", "F", "20260101120000", "", "SIU^S12", "C1", "P", "2.5"]
    segments = ["MSH" + seps + fs.join(fields)]
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(SEGMENTS))
        width = draw(st.integers(0, 26))
        segments.append(name + fs + fs.join(draw(values(seps)) for _ in range(width)))
    if draw(st.booleans()):
        segments = draw(st.permutations(segments))
    text = draw(st.sampled_from(["\r", "\n", "\r\n"])).join(segments)
    if draw(st.booleans()):
        text = "\x0b" + text + "\x1c\r"
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))
    return text.encode(encoding, errors="replace")


TEMPLATE = [
    "MSH|^~\\&|S|F|R|F|20260101120000||SIU^S12|C1|P|2.5",
    "SCH|P1|F1|||||||30|min|^^^20260105093000^20260105100000||||||||||||||Booked",
    "TQ1|||||||20260105093000-0500|20260105100000-0500",
    "PID|1||M||DOE^JANE||||||||(206)555-0100^PRN^CP~^NET^^jane@example.org",
    "AIG|1||Clinician, Casey",
    "AIP|1||DR1^WHO^DOC",
    "PV1|1|O|||||PV1DR",
]


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid message with a few fields replaced, segments dropped or delimiters changed."""
    segments = [s.split("|") for s in TEMPLATE]
    for _ in range(draw(st.integers(0, 4))):
        segment = draw(st.integers(0, len(segments) - 1))
        field = draw(st.integers(1, 30))
        fields = segments[segment]
        fields.extend([""] * (field + 1 - len(fields)))
        if segment == 0 and field == 1:
            continue
        fields[field] = draw(values("|^~\\&"))
    kept = [s for i, s in enumerate(segments) if i == 0 or draw(st.integers(0, 5))]
    text = "\r".join("|".join(s) for s in kept)
    if draw(st.booleans()):
        seps = "".join(draw(st.permutations(PUNCTUATION))[:5])
        text = text.translate(str.maketrans("|^~\\&", seps))
    trigger = draw(st.sampled_from(["S12", "S13", "S14", "S15", "S16", "S17", "S26"]))
    return text.replace("S12", trigger, 1).encode()


bodies = st.one_of(er7(), near_valid(), near_valid(), st.binary(max_size=300), st.just(b""))
header_sets = st.fixed_dictionaries(
    {"content-type": st.sampled_from(CONTENT_TYPES[:6]) | st.sampled_from(CONTENT_TYPES)},
    optional={"x-signature": st.text(max_size=20)},
)


def outcomes(result: Parsed | Refused | None, which: str) -> Outcome:
    context = None if result is None else result.context
    if which == "refused":
        errors: tuple[FieldError, ...] = ()
        if isinstance(result, Refused):
            errors = tuple(result.errors)
        errors += (FieldError("/endDateTime", "must be after startDateTime"),)
        errors += (FieldError("SCH-11.4", "is required \\|^~&\r\n"),)
        return Outcome("refused", detail="x", errors=errors, context=context)
    if which == "garbage":
        return Outcome("accepted", context=object())
    return Outcome(which, context=context)  # type: ignore[arg-type]


@FAST
@given(
    body=bodies,
    headers=header_sets,
    which=st.sampled_from(["accepted", "ignored", "refused", "unavailable", "garbage"]),
    reply_headers=header_sets,
)
def test_parse_refuses_cleanly_and_respond_always_answers(
    body: bytes, headers: dict[str, str], which: str, reply_headers: dict[str, str]
) -> None:
    result: Parsed | Refused | None
    try:
        result = KIND.parse(headers, body, CONFIG)
    except (UnsupportedMediaType, InvalidBody):
        result = None
    except Refused as refused:
        result = refused
    kind = type(result).__name__
    event(kind if not isinstance(result, Parsed) or result.ignored else f"{kind} candidates")
    if isinstance(result, Parsed):
        for candidate in result.candidates:
            document: Any = parse_document(candidate.document)
            if isinstance(document, list):  # the pipeline refuses it: the location is HL7
                assert all(candidate.locate(e.path) for e in document)
            else:
                assert isinstance(document, AppointmentDocument)
    reply = KIND.respond(outcomes(result, which), reply_headers, now=1_767_268_800)
    assert reply.status in (200, 503)
    text = reply.body.decode(charset(reply.headers["Content-Type"]))
    assert text.endswith("\r")
    ack = hl7.parse(text)
    assert str(ack.segment("MSA")(1)) in ("AA", "AE", "AR")
