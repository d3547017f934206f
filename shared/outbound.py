"""Signed callbacks out to a scheduling system: URL rules, Standard Webhooks signatures, one POST.

SPEC.md "Back to the scheduling system: signed callbacks". This module is the transport only:
which callback to send, when to retry and what to record belong to its caller (the callback
queue function). It never imports Azure or the Graph SDK, and imports httpx only when a client
first sends, so code that only checks a URL or a secret (settings) stays cheap to import.

Signatures are Standard Webhooks (https://www.standardwebhooks.com): `webhook-signature` holds
one `v1,<base64 HMAC-SHA256>` of `"{webhook-id}.{webhook-timestamp}.{body}"` per secret,
space-separated, so a receiver can rotate secrets. They are computed by the `standardwebhooks`
package's own `Webhook.sign`, the code a receiver using that package verifies with, rather than
by hand.

One attempt is one `POST` bounded as a whole (connect, send, status and the part of the answer
we read) by one deadline. httpx's own timeouts apply per network read, so a receiver that
trickles bytes could otherwise hold a call for ever; the request therefore runs as a coroutine
under `asyncio.timeout` on one private event loop thread per client (as `shared.graph` does for
the Graph SDK), which also gives all the function's threads one connection pool.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from standardwebhooks import Webhook

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CALLBACK_TIMEOUT_SECONDS",
    "LOOPBACK_HOSTS",
    "MAX_RESPONSE_BYTES",
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "SECRET_PREFIX",
    "USER_AGENT",
    "CallbackClient",
    "CallbackSecretError",
    "DeliveryAttempt",
    "check_callback_url",
    "is_valid_secret",
    "new_secret",
    "sign",
]

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT_SECONDS: Final = 15.0
# Stop reading a receiver's answer once this much of its body has arrived (nothing of it is kept;
# the network read that crosses the limit may carry up to 64 KiB more).
MAX_RESPONSE_BYTES: Final = 64 * 1024
USER_AGENT: Final = "teams-virtual-appointments-callbacks/0.1"
JSON: Final = "application/json"
# Plain http is allowed only to the machine itself (a developer's receiver), never over a network.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
SECRET_PREFIX: Final = "whsec_"  # noqa: S105  (the scheme's prefix, not a secret)
# Standard Webhooks: "secret keys SHOULD be between 24 bytes (192 bits) and 64 bytes (512 bits)".
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
# A header value, and one piece of the signed "{id}.{timestamp}.{body}" string.
_MESSAGE_ID: Final = re.compile(r"[\x21-\x7e]{1,256}", re.ASCII)
# The event loop thread enforces the deadline; this margin only covers a wedged loop.
_LOOP_GRACE_SECONDS: Final = 5.0


class CallbackSecretError(ValueError):
    """A callback secret is not usable. The message never contains the secret."""


def check_callback_url(url: str) -> str | None:
    """None when the app may POST to `url`; otherwise the reason, safe to log or return.

    https is required, except plain http to `localhost`, `127.0.0.1` or `::1` (a local
    receiver). No credentials in the URL (they would travel in every request and show in
    configuration screens), a host is required, and no fragment (it is never sent, so it only
    hides a mistake). The reason never repeats the URL, whose query string may hold a token.
    """
    if not url:
        return "a URL is required"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return "the URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not a number in range
    except ValueError:
        return "the URL is malformed"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return "the URL must use https"
    if "@" in parts.netloc:
        return "the URL must not contain credentials"
    host = parts.hostname
    if not host:
        return "the URL needs a host"
    if "#" in url:
        return "the URL must not contain a fragment"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        return "the URL must use https (plain http only to localhost, 127.0.0.1 or ::1)"
    return None


def _secret_key(secret: str) -> bytes | None:
    """The key bytes of a `whsec_<base64>` secret, or None when it breaks the rule."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    encoded = secret[len(SECRET_PREFIX) :]
    if not _BASE64.fullmatch(encoded):
        return None
    unpadded = encoded.rstrip("=")
    if len(unpadded) % 4 == 1:
        return None
    try:
        key = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES else None


def is_valid_secret(secret: str) -> bool:
    """Whether `secret` is `whsec_` + standard base64 (padding optional) of 24 to 64 bytes.

    The byte range is the one Standard Webhooks recommends: shorter keys are guessable, and
    nobody needs longer ones. The alphabet is checked strictly because `standardwebhooks`
    decodes leniently: it would silently drop a URL-safe `-` or `_` (or a stray character) and
    sign with a different key than the receiver holds, which no one could debug.
    """
    return _secret_key(secret) is not None


def new_secret() -> str:
    """A fresh `whsec_` secret of 32 random bytes (for the receiver's CLI, tests and docs)."""
    import secrets

    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64>` per secret, space-separated, in order.

    Raises CallbackSecretError when there is no secret or one breaks `is_valid_secret`, and
    ValueError when the id is not 1 to 256 visible ASCII characters (it is a header value and
    part of the signed string), the timestamp is negative, or the body is not UTF-8 (the
    signed string is text, and the body is JSON).
    """
    if isinstance(secrets, str):
        raise TypeError("secrets is a sequence of secrets, not one string")
    if not secrets:
        raise CallbackSecretError("no callback secret is configured")
    for index, secret in enumerate(secrets):
        if not is_valid_secret(secret):
            raise CallbackSecretError(
                f"callback secret {index + 1} is not whsec_<base64 of "
                f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes>"
            )
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError("the message id must be 1 to 256 visible ASCII characters")
    if timestamp < 0:
        raise ValueError("the timestamp must be unix seconds")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the callback body must be UTF-8") from None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(secret).sign(message_id, moment, text) for secret in secrets)


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """What one POST came to. `error` is None exactly when the attempt delivered.

    `error` is short and safe to log or store: "timeout", "connection refused",
    "redirect not followed (302)", "status 500", "gone (410)", "URL refused: ..."; never the
    URL, its query string or anything of the receiver's answer.
    """

    status_code: int | None  # None on a timeout, a connection error or a refused URL
    error: str | None
    seconds: float
    response_bytes: int = 0  # answer body bytes read before stopping (the body is discarded)
    refused: bool = False  # nothing was sent: the URL or the secrets are not usable

    @property
    def delivered(self) -> bool:
        """A 2xx answer: the callback is done."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver wants no more of this callback; stop retrying it."""
        return self.status_code == 410


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed ({status})"
    if status == 410:
        return "gone (410)"
    return f"status {status}"


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _failure_reason(error: BaseException) -> str:
    """A short reason for a failed attempt; never the exception's text, which may hold the URL."""
    import httpx

    if isinstance(error, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        for cause in _causes(error):
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            if isinstance(cause, socket.gaierror):
                return "host not found"
            if isinstance(cause, ssl.SSLCertVerificationError):
                return "TLS certificate not trusted"
            if isinstance(cause, ssl.SSLError):
                return "TLS error"
        # anyio folds the attempts on several addresses into one OSError with no errno.
        if "refused" in str(error).lower() or "all connection attempts failed" in str(error):
            return "connection refused"
        return "connection failed"
    if isinstance(error, httpx.RemoteProtocolError):
        return "connection closed without an answer"
    if isinstance(error, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return "connection error"
    if isinstance(error, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
        return "invalid URL"
    return f"unexpected error ({type(error).__name__})"


class _DropQueryString(logging.Filter):
    """httpx logs every request's full URL at INFO; drop the query string (it may hold a token).

    Installed on the `httpx` logger so it holds whatever level an operator sets there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                a.copy_with(query=None, fragment=None) if isinstance(a, httpx.URL) else a
                for a in record.args
            )
        return True


_filter_lock = threading.Lock()


def _install_log_filter() -> None:
    with _filter_lock:
        httpx_log = logging.getLogger("httpx")
        if not any(isinstance(f, _DropQueryString) for f in httpx_log.filters):
            httpx_log.addFilter(_DropQueryString())


def _where(url: str) -> str:
    """Host and port for a log line: the path and query may carry tokens or ids."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


class CallbackClient:
    """Sends callbacks. Thread-safe: make one per process and share it (one connection pool).

    `post` never raises for what a receiver or the network does, nor for an unusable URL or
    secret (a `refused` attempt); it raises ValueError only for arguments the caller built
    wrongly (message id, timestamp, non-UTF-8 body), and RuntimeError after `close()`. It never
    follows redirects, stops reading an answer once MAX_RESPONSE_BYTES of it have arrived, and
    ignores proxy and certificate environment variables (trust_env=False), so it only ever
    talks to the configured URL.
    """

    def __init__(self, *, timeout: float = CALLBACK_TIMEOUT_SECONDS) -> None:
        if not timeout > 0:
            raise ValueError("the timeout must be positive")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None  # touched only on the loop thread
        self._closed = False

    @property
    def timeout(self) -> float:
        return self._timeout

    def post(
        self, url: str, message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]
    ) -> DeliveryAttempt:
        """POST one signed callback and report how it went.

        `timestamp` is the attempt's unix time (`int(time.time())`), signed and sent as
        `webhook-timestamp`: receivers reject one more than five minutes off their clock, so
        each retry must be signed anew with its own time and the same `message_id`.
        """
        started = time.monotonic()
        reason = check_callback_url(url)
        if reason is not None:
            attempt = DeliveryAttempt(None, f"URL refused: {reason}", 0.0, refused=True)
            log.debug("Callback %s not sent: %s", message_id, attempt.error)
            return attempt
        try:
            signature = sign(secrets, message_id, timestamp, body)
        except CallbackSecretError as error:
            attempt = DeliveryAttempt(None, f"secret refused: {error}", 0.0, refused=True)
            log.debug("Callback %s not sent: %s", message_id, attempt.error)
            return attempt
        headers = {
            "Content-Type": JSON,
            "User-Agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }
        loop = self._running_loop()
        future = asyncio.run_coroutine_threadsafe(self._send(url, headers, body, started), loop)
        try:
            attempt = future.result(timeout=self._timeout + _LOOP_GRACE_SECONDS)
        except FutureTimeout:
            future.cancel()
            attempt = DeliveryAttempt(None, "timeout", time.monotonic() - started)
        log.debug(
            "Callback %s to %s: %s in %.2f s",
            message_id,
            _where(url),
            attempt.status_code if attempt.error is None else attempt.error,
            attempt.seconds,
        )
        return attempt

    def close(self) -> None:
        """Close the connection pool and stop the loop thread. Later posts raise RuntimeError."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
            self._closed = True
        if loop is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._close_client(), loop)
        try:
            closing.result(timeout=5)
        except Exception:  # a pool that cannot close cleanly is still abandoned
            log.debug("Callback client pool did not close cleanly")
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> CallbackClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- on the loop thread ---------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the callback client is closed")
            if self._loop is None:
                _install_log_filter()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="callback-loop", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                trust_env=False,
                http2=False,
                limits=httpx.Limits(
                    max_connections=64, max_keepalive_connections=16, keepalive_expiry=30.0
                ),
            )
        return self._client

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        # httpx's stream iterators left by an answer cut short finish here, not as warnings.
        await asyncio.get_running_loop().shutdown_asyncgens()

    async def _send(
        self, url: str, headers: dict[str, str], body: bytes, started: float
    ) -> DeliveryAttempt:
        status: int | None = None
        received = 0
        failure: str | None = None
        remaining = max(0.0, self._timeout - (time.monotonic() - started))
        try:
            async with asyncio.timeout(remaining):
                client = self._http()
                request = client.build_request("POST", url, content=body, headers=headers)
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    status = response.status_code
                    # Raw: never decompress a receiver's answer; we only need its status.
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
                        if received >= MAX_RESPONSE_BYTES:
                            break
                finally:
                    await response.aclose()
        except Exception as error:  # every failure becomes a reason; see _failure_reason
            failure = _failure_reason(error)
        seconds = time.monotonic() - started
        if status is None:
            return DeliveryAttempt(None, failure or "no answer", seconds, received)
        # The status line is the receiver's answer; an answer body cut short changes nothing.
        return DeliveryAttempt(status, _status_error(status), seconds, received)
