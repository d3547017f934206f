"""Stripe-style webhook signatures (SPEC.md "Intake"), pure."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared import signatures
from shared.signatures import SignatureError, compute, parse, sign, verify
from tests.unit.factories import FAST

NOW = 1_764_579_600
BODY = b'{"externalAppointmentId":"appt-1"}'
SECRET = "s3cret"
TOLERANCE = 300


def _verify(
    header: str | None,
    body: bytes = BODY,
    secrets: tuple[str, ...] = (SECRET,),
    *,
    now: float = NOW,
    tolerance: int = TOLERANCE,
) -> None:
    verify(header, body, secrets, now=now, tolerance_seconds=tolerance)


def _v1(secret: str = SECRET, timestamp: int = NOW, body: bytes = BODY) -> str:
    return compute(secret, timestamp, body)


# --- compute / sign ------------------------------------------------------------------------------


def test_compute_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", b"1764579600." + BODY, hashlib.sha256).hexdigest()
    assert compute(SECRET, NOW, BODY) == expected
    assert len(expected) == 64


def test_compute_keys_the_secret_as_utf8() -> None:
    expected = hmac.new("clé".encode(), b"1." + b"x", hashlib.sha256).hexdigest()
    assert compute("clé", 1, b"x") == expected


def test_sign_builds_the_header() -> None:
    assert sign(SECRET, NOW, BODY) == f"t={NOW},v1={_v1()}"


@FAST
@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=10**12 - 1),
)
def test_sign_then_verify_round_trips(body: bytes, secret: str, timestamp: int) -> None:
    header = sign(secret, timestamp, body)
    verify(header, body, [secret], now=timestamp, tolerance_seconds=1)
    assert parse(header).timestamp == timestamp
    assert parse(header).signatures == (bytes.fromhex(compute(secret, timestamp, body)),)


@FAST
@given(
    body=st.binary(max_size=256),
    other=st.binary(max_size=256),
    secret=st.text(min_size=1, max_size=20),
    wrong=st.text(min_size=1, max_size=20),
)
def test_other_body_or_secret_fails(body: bytes, other: bytes, secret: str, wrong: str) -> None:
    header = sign(secret, NOW, body)
    if other != body:
        with pytest.raises(SignatureError, match="does not match"):
            verify(header, other, [secret], now=NOW, tolerance_seconds=TOLERANCE)
    assume(wrong != secret)
    with pytest.raises(SignatureError, match="does not match"):
        verify(header, body, [wrong], now=NOW, tolerance_seconds=TOLERANCE)


# --- rotation and several v1 entries --------------------------------------------------------------


@pytest.mark.parametrize("position", [0, 1, 2])
def test_any_configured_secret_matches(position: int) -> None:
    secrets = ["old", "current", "next"]
    _verify(sign(secrets[position], NOW, BODY), secrets=tuple(secrets))


def test_no_configured_secret_matches() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        _verify(sign("retired", NOW, BODY), secrets=("old", "current"))


def test_no_secret_at_all_never_matches() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        _verify(sign(SECRET, NOW, BODY), secrets=())


@pytest.mark.parametrize("position", [0, 1, 2])
def test_any_v1_entry_may_match(position: int) -> None:
    entries = [_v1("a"), _v1("b"), _v1("c")]
    header = f"t={NOW}," + ",".join(f"v1={e}" for e in entries)
    _verify(header, secrets=(["a", "b", "c"][position],))
    assert parse(header).signatures == tuple(bytes.fromhex(e) for e in entries)


def test_uppercase_hex_is_accepted() -> None:
    _verify(f"t={NOW},v1={_v1().upper()}")


# --- header syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["v0", "v2", "V1", "sha256", "x"])
def test_unknown_schemes_are_ignored(scheme: str) -> None:
    header = f"t={NOW},{scheme}=not-hex-at-all,v1={_v1()}"
    _verify(header)
    assert parse(header).signatures == (bytes.fromhex(_v1()),)


def test_only_unknown_schemes_is_malformed() -> None:
    with pytest.raises(SignatureError, match="needs t and v1"):
        parse(f"t={NOW},v0={_v1()}")


@pytest.mark.parametrize(
    "header",
    [
        f" t={NOW} , v1={_v1()} ",
        f"t={NOW},\tv1={_v1()}",
        f"v1={_v1()},t={NOW}",  # order does not matter
    ],
)
def test_whitespace_and_order_are_tolerated(header: str) -> None:
    _verify(header)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing X-Signature header"):
        parse(header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (f"t={NOW},t={NOW},v1={_v1()}", "bad t"),  # duplicate t, even with equal values
        (f"t={NOW},v1={_v1()},t={NOW + 1}", "bad t"),
        (f"t=-{NOW},v1={_v1()}", "bad t"),
        (f"t={NOW}.5,v1={_v1()}", "bad t"),
        (f"t=,v1={_v1()}", "bad t"),
        (f"t=1234567890123,v1={_v1()}", "bad t"),  # 13 digits
        (f"t=0x10,v1={_v1()}", "bad t"),
        (f"t={NOW},v1={_v1()[:-1]}", "bad v1"),  # 63 hex digits
        (f"t={NOW},v1={_v1()}0", "bad v1"),  # 65
        (f"t={NOW},v1={_v1()[:-1]}g", "bad v1"),  # non-hex
        (f"t={NOW},v1=", "bad v1"),
        (f"t={NOW},v1={'ab' * 16}", "bad v1"),  # a 16-byte digest
        (f"t={NOW}", "needs t and v1"),
        (f"v1={_v1()}", "needs t and v1"),
        (f"t={NOW},,v1={_v1()}", "malformed"),
        (f"t={NOW};v1={_v1()}", "bad t"),
        ("garbage", "malformed"),
    ],
)
def test_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        parse(header)
    with pytest.raises(SignatureError):
        _verify(header)


def test_twelve_digit_timestamp_is_the_longest_accepted() -> None:
    assert parse(f"t=999999999999,v1={_v1()}").timestamp == 999_999_999_999


def test_timestamp_takes_ascii_digits_only() -> None:
    arabic = str(NOW).translate(
        str.maketrans("0123456789", "".join(chr(0x660 + d) for d in range(10)))
    )
    with pytest.raises(SignatureError, match="bad t"):
        parse(f"t={arabic},v1={_v1()}")


# --- tolerance -----------------------------------------------------------------------------------


@pytest.mark.parametrize("skew", [-TOLERANCE, 0, TOLERANCE])
def test_timestamp_within_tolerance_passes(skew: int) -> None:
    _verify(sign(SECRET, NOW + skew, BODY), now=NOW)


@pytest.mark.parametrize("skew", [-TOLERANCE - 1, TOLERANCE + 1, -(10**6), 10**6])
def test_timestamp_outside_tolerance_fails_even_when_signed(skew: int) -> None:
    with pytest.raises(SignatureError, match="outside the tolerance"):
        _verify(sign(SECRET, NOW + skew, BODY), now=NOW)


def test_fractional_now_is_compared_exactly() -> None:
    _verify(sign(SECRET, NOW, BODY), now=NOW + TOLERANCE + 0.0)
    with pytest.raises(SignatureError, match="outside the tolerance"):
        _verify(sign(SECRET, NOW, BODY), now=NOW + TOLERANCE + 0.001)


def test_custom_tolerance_is_honoured() -> None:
    _verify(sign(SECRET, NOW - 5, BODY), tolerance=5)
    with pytest.raises(SignatureError, match="outside the tolerance"):
        _verify(sign(SECRET, NOW - 6, BODY), tolerance=5)


def test_stale_timestamp_is_refused_before_any_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    with pytest.raises(SignatureError, match="outside the tolerance"):
        _verify(sign(SECRET, NOW - TOLERANCE - 1, BODY))
    assert calls == []


# --- tampering -----------------------------------------------------------------------------------


def test_tampered_body_fails() -> None:
    header = sign(SECRET, NOW, BODY)
    with pytest.raises(SignatureError, match="does not match"):
        _verify(header, body=BODY.replace(b"appt-1", b"appt-2"))
    with pytest.raises(SignatureError, match="does not match"):
        _verify(header, body=BODY + b" ")


def test_tampered_timestamp_fails() -> None:
    header = f"t={NOW + 1},v1={_v1(timestamp=NOW)}"
    with pytest.raises(SignatureError, match="does not match"):
        _verify(header)


def test_signature_over_body_without_the_timestamp_prefix_fails() -> None:
    bare = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError, match="does not match"):
        _verify(f"t={NOW},v1={bare}")


# --- constant time -------------------------------------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    assert vars(signatures)["hmac"] is hmac  # the module compares through hmac.compare_digest
    monkeypatch.setattr("shared.signatures.hmac.compare_digest", counting)
    return calls


@pytest.mark.parametrize(
    ("secrets", "signers"),
    [
        (("a",), ("a",)),
        (("a", "b", "c"), ("a",)),  # the very first pair matches
        (("a", "b", "c"), ("c",)),
        (("a", "b"), ("x", "a", "y", "z")),
        (("a", "b", "c"), ("x", "y")),  # nothing matches
    ],
)
def test_every_secret_is_compared_with_every_signature_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, secrets: tuple[str, ...], signers: tuple[str, ...]
) -> None:
    calls = _counting(monkeypatch)
    header = f"t={NOW}," + ",".join(f"v1={_v1(s)}" for s in signers)
    if set(secrets) & set(signers):
        _verify(header, secrets=secrets)
    else:
        with pytest.raises(SignatureError, match="does not match"):
            _verify(header, secrets=secrets)
    assert len(calls) == len(secrets) * len(signers)
    expected_pairs = {
        (bytes.fromhex(_v1(secret)), bytes.fromhex(_v1(signer)))
        for secret in secrets
        for signer in signers
    }
    assert set(calls) == expected_pairs
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


# --- another header name (Calendly-Webhook-Signature uses the same scheme) --------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing Calendly-Webhook-Signature header"),
        ("garbage", "malformed Calendly-Webhook-Signature header"),
        (f"t=x,v1={_v1()}", "malformed Calendly-Webhook-Signature header: bad t"),
        (f"t={NOW},v1=zz", "malformed Calendly-Webhook-Signature header: bad v1"),
        (f"t={NOW}", "malformed Calendly-Webhook-Signature header: needs t and v1"),
    ],
)
def test_messages_name_the_given_header(header: str | None, message: str) -> None:
    name = "Calendly-Webhook-Signature"
    with pytest.raises(SignatureError, match=f"^{message}$"):
        verify(header, BODY, [SECRET], now=NOW, tolerance_seconds=TOLERANCE, name=name)


def test_the_given_header_name_changes_nothing_else() -> None:
    name = "Calendly-Webhook-Signature"
    verify(sign(SECRET, NOW, BODY), BODY, [SECRET], now=NOW, tolerance_seconds=1, name=name)
    with pytest.raises(SignatureError, match=r"^signature does not match$"):
        verify(sign("x", NOW, BODY), BODY, [SECRET], now=NOW, tolerance_seconds=1, name=name)
