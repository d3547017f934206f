"""Stripe-style webhook signatures: `X-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`.

Calendly signs with the same scheme under another name (`Calendly-Webhook-Signature`), so
`parse` and `verify` take the header's name, used only in their messages.

The signed message is `f"{t}."` followed by the raw body bytes, so a signature cannot be
replayed with another body or, outside the tolerance, at another time. Comparison runs in
constant time against every configured secret (several secrets allow rotation).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = "X-Signature"
SCHEME = "v1"
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)


class SignatureError(Exception):
    """The request is not authentic; the message is safe to return to the caller."""


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[bytes, ...]


def compute(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"{t}." + body` under one secret."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value a sender puts on a request (used by the CLI and tests)."""
    return f"t={timestamp},{SCHEME}={compute(secret, timestamp, body)}"


def parse(header: str | None, *, name: str = HEADER) -> ParsedSignature:
    """Split the header into its timestamp and its v1 signatures; other schemes are ignored.

    `name` is the header's name, for the messages.
    """
    if not header:
        raise SignatureError(f"missing {name} header")
    timestamp: int | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {name} header")
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise SignatureError(f"malformed {name} header: bad t")
            timestamp = int(value)
        elif key == SCHEME:
            if not _HEX_SHA256.fullmatch(value):
                raise SignatureError(f"malformed {name} header: bad {SCHEME}")
            signatures.append(bytes.fromhex(value))
    if timestamp is None or not signatures:
        raise SignatureError(f"malformed {name} header: needs t and {SCHEME}")
    return ParsedSignature(timestamp, tuple(signatures))


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance_seconds: int,
    name: str = HEADER,
) -> None:
    """Raise SignatureError unless one v1 signature matches one secret within the tolerance.

    `name` is the header's name, for the messages (`X-Signature` unless given).
    """
    parsed = parse(header, name=name)
    if abs(now - parsed.timestamp) > tolerance_seconds:
        raise SignatureError("signature timestamp is outside the tolerance")
    matched = False
    # Every pair is compared, with no early exit, so timing says nothing about which matched.
    for secret in secrets:
        expected = bytes.fromhex(compute(secret, parsed.timestamp, body))
        for candidate in parsed.signatures:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature does not match")
