"""A local scheduling system's callback endpoint: verifies, records and answers from a script.

Why it exists: the app's signed callbacks (SPEC.md "Back to the scheduling system: signed
callbacks") need a receiver to be seen working locally and to be tested over real HTTP, and
the interesting cases are the receiver's misbehaviour: 5xx runs, `410`, redirects, answers
that come late, never, or never end. Each request is verified with the `standardwebhooks`
package (`Webhook(secret).verify`), the reference code a real receiver would use, against one
or more secrets, so a passing test means a real receiver would accept the callback.

From tests:

    with CallbackReceiver(secrets=[secret], responses=[500, 500], default_status=200) as rx:
        client.post(rx.url, ...)
        (first,) = rx.wait_for(1, timeout=2)
        assert first.verified

From a terminal (prints one line per callback; local development data only):

    python -m devtools.callback_receiver --port 7072 --secret whsec_...

`GET` on its path (`/callbacks`) lists what arrived in full, oldest first, as JSON: what a
black-box test (or `curl`) compares with the app's records while the printed line stays short.

It binds 127.0.0.1 by default and has no authentication of its own: a loopback dev tool.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import FrameType, TracebackType
from typing import Any, Final, cast
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from devtools.http_server import ClosingHTTPServer
from shared.outbound import new_secret

__all__ = [
    "HANG",
    "Answer",
    "CallbackReceiver",
    "ReceivedCallback",
    "describe",
    "main",
    "redirect",
    "slow",
    "stream_forever",
    "trickle",
]

DEFAULT_PATH: Final = "/callbacks"
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
_STREAM_CHUNK: Final = b"x" * 16384
_TRICKLE_INTERVAL: Final = 0.2


@dataclass(frozen=True, slots=True)
class Answer:
    """How the receiver answers one request.

    Plain `status` (with a small JSON body) unless one of the modes is set: `delay` seconds
    first; `location` for a redirect; `stream` sends the status then a body that never ends;
    `trickle` sends the status line then one header line every 0.2 s, never finishing the
    headers (a client whose only timeouts are per read would wait for ever); `hang` never
    answers at all (the connection is held until `hang(False)` or the receiver stops).
    """

    status: int = 200
    delay: float = 0.0
    location: str | None = None
    stream: bool = False
    trickle: bool = False
    hang: bool = False


HANG: Final = Answer(hang=True)


def redirect(location: str, status: int = 302) -> Answer:
    return Answer(status=status, location=location)


def slow(seconds: float, status: int = 200) -> Answer:
    return Answer(status=status, delay=seconds)


def stream_forever(status: int = 200) -> Answer:
    return Answer(status=status, stream=True)


def trickle(status: int = 200) -> Answer:
    return Answer(status=status, trickle=True)


def _answer(value: int | Answer) -> Answer:
    return value if isinstance(value, Answer) else Answer(status=value)


@dataclass(frozen=True, slots=True)
class ReceivedCallback:
    """One request as it arrived, and what the receiver answered (None: held, no answer)."""

    arrived: float  # unix time
    method: str
    path: str  # with the query string: this is the receiver's own view
    headers: dict[str, str] = field(repr=False)  # names lower-cased
    body: bytes = field(repr=False)
    json: Any = field(repr=False)  # the parsed body, or None when it is not JSON
    verified: bool
    verify_error: str | None  # why no secret verified it
    answered: int | None

    @property
    def type(self) -> str | None:
        return self.json.get("type") if isinstance(self.json, dict) else None

    @property
    def data(self) -> dict[str, Any]:
        data = self.json.get("data") if isinstance(self.json, dict) else None
        return data if isinstance(data, dict) else {}

    def to_json(self) -> dict[str, Any]:
        """This request for `GET /callbacks`: the body as parsed (or as text), verification."""
        return {
            "arrived": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.arrived)),
            "method": self.method,
            "path": self.path,
            "webhookId": self.headers.get("webhook-id"),
            "verified": self.verified,
            "verifyError": self.verify_error,
            "answered": self.answered,
            "body": self.json if self.json is not None else self.body.decode("utf-8", "replace"),
        }


def _verify(secrets: Sequence[str], body: bytes, headers: dict[str, str]) -> str | None:
    """None when one secret verifies the request, else the last reason."""
    if not secrets:
        return "no secret configured"
    reason = "not verified"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except Exception as error:  # the library raises ValueError too, on malformed headers
            reason = str(error) or type(error).__name__
        else:
            return None
    return reason


class _Server(ClosingHTTPServer):
    def __init__(self, address: tuple[str, int], receiver: CallbackReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, lets the receiver record and script it, carries out the answer."""

    protocol_version = "HTTP/1.1"
    server_version = "CallbackReceiver/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 30  # an idle keep-alive connection ends; a dead client cannot pin a thread

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the CLI prints its own line per callback."""

    def do_POST(self) -> None:
        receiver = cast(_Server, self.server).receiver
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._plain(411)
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self._plain(413)
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = receiver._record(self.command, self.path, headers, body)
        receiver._carry_out(self, answer)

    def do_GET(self) -> None:
        """Every callback received so far, as `{"value": [...]}` (not recorded itself)."""
        receiver = cast(_Server, self.server).receiver
        if urlsplit(self.path).path != receiver._path:
            self._plain(404)
            return
        listing = {"value": [record.to_json() for record in receiver.received]}
        self._plain(200, json.dumps(listing).encode("utf-8"))

    def _plain(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class CallbackReceiver:
    """A threaded local callback endpoint. Use as a context manager, or `start()`/`stop()`.

    `responses` are used one per request in order, then `default_status` for every other
    request; both take a status or an `Answer`. `hang(True)` holds every new request without
    answering, whatever the script says, until `hang(False)` (every held connection, scripted
    `HANG`s included, is then closed without an answer) or `stop()`.
    """

    def __init__(
        self,
        secrets: Sequence[str] = (),
        responses: Sequence[int | Answer] = (),
        default_status: int | Answer = 200,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        on_receive: Callable[[ReceivedCallback], None] | None = None,
    ) -> None:
        if isinstance(secrets, str):
            raise TypeError("secrets is a sequence of secrets, not one string")
        self._secrets = tuple(secrets)
        self._host = host
        self._port = port
        self._path = path
        self._on_receive = on_receive
        self._changed = threading.Condition()
        self._received: list[ReceivedCallback] = []
        self._script: list[Answer] = [_answer(r) for r in responses]
        self._default = _answer(default_status)
        self._hanging = False
        self._hang_epoch = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> CallbackReceiver:
        if self._server is not None:
            raise RuntimeError("the receiver is already running")
        self._stopping.clear()
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns in tens of milliseconds
            name=f"callback-receiver:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, release held requests, drop open connections. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> CallbackReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}{self._path}"

    # -- script and records ---------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedCallback]:
        """Every request so far, oldest first (a copy)."""
        with self._changed:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedCallback]:
        """The first `count` requests once they have arrived; TimeoutError if they do not."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._received)} callbacks arrived within {timeout} s, not {count}"
                )
            return list(self._received[:count])

    def set_responses(
        self, responses: Sequence[int | Answer], default_status: int | Answer | None = None
    ) -> None:
        """Replace the script (and the default, when given) for the requests still to come."""
        with self._changed:
            self._script = [_answer(r) for r in responses]
            if default_status is not None:
                self._default = _answer(default_status)

    def hang(self, on: bool = True) -> None:
        """Hold every new request without answering (True), or release every held one (False)."""
        with self._changed:
            if not on:
                self._hang_epoch += 1  # releases scripted HANGs too
            self._hanging = on
            self._changed.notify_all()

    def clear(self) -> None:
        """Forget the requests received so far."""
        with self._changed:
            self._received.clear()

    # -- on handler threads ---------------------------------------------------------------

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        error = _verify(self._secrets, body, headers)
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        with self._changed:
            if self._hanging:
                answer = HANG
            elif self._script:
                answer = self._script.pop(0)
            else:
                answer = self._default
            record = ReceivedCallback(
                arrived=time.time(),
                method=method,
                path=path,
                headers=headers,
                body=body,
                json=parsed,
                verified=error is None,
                verify_error=error,
                answered=None if answer.hang else answer.status,
            )
            self._received.append(record)
            self._changed.notify_all()
        if self._on_receive is not None:
            self._on_receive(record)
        return answer

    def _carry_out(self, handler: _Handler, answer: Answer) -> None:
        if answer.hang:
            self._hold()
            handler.close_connection = True
            return
        if answer.delay and self._stopping.wait(answer.delay):
            handler.close_connection = True
            return
        if answer.stream:
            self._stream(handler, answer.status)
        elif answer.trickle:
            self._trickle(handler, answer.status)
        elif answer.location is not None:
            handler._plain(answer.status, headers={"Location": answer.location})
        else:
            handler._plain(answer.status, json.dumps({"status": answer.status}).encode())

    def _hold(self) -> None:
        with self._changed:
            epoch = self._hang_epoch
            self._changed.wait_for(lambda: self._stopping.is_set() or self._hang_epoch != epoch)

    def _stream(self, handler: _Handler, status: int) -> None:
        """A body with no length that never ends, until the client goes or the receiver stops."""
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.send_response(status)
            handler.send_header("Content-Type", "application/octet-stream")
            handler.send_header("Connection", "close")
            handler.end_headers()
            while not self._stopping.is_set():
                handler.wfile.write(_STREAM_CHUNK)

    def _trickle(self, handler: _Handler, status: int) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.wfile.write(f"HTTP/1.1 {status} OK\r\n".encode())
            count = 0
            while not self._stopping.wait(_TRICKLE_INTERVAL):
                count += 1
                handler.wfile.write(f"X-Trickle-{count}: x\r\n".encode())
                handler.wfile.flush()


# --------------------------------------------------------------------------- CLI


def describe(record: ReceivedCallback) -> str:
    """One line: callback type, appointment id, its status, the answer, verified."""
    data = record.data
    return " ".join(
        [
            time.strftime("%H:%M:%S", time.localtime(record.arrived)),
            str(record.type or "(not a callback)"),
            str(data.get("externalAppointmentId") or "-"),
            f"status={data.get('status') or '-'}",
            f"answered={record.answered if record.answered is not None else 'none'}",
            f"verified={'yes' if record.verified else 'no'}",
        ]
        + ([f"({record.verify_error})"] if record.verify_error else [])
    )


def _statuses(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated HTTP statuses, e.g. 500,500") from None


def main(argv: list[str] | None = None) -> int:
    """Run the receiver in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.callback_receiver",
        description="Local receiver for the app's signed callbacks (loopback dev tool).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7072, help="port (default 7072; 0 = any)")
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        help="whsec_ secret to verify with (repeat for rotation); one is generated if none",
    )
    parser.add_argument(
        "--responses",
        type=_statuses,
        default=[],
        help="statuses for the first requests, e.g. 500,500,500",
    )
    parser.add_argument("--status", type=int, default=200, help="status afterwards (200)")
    parser.add_argument("--hang", action="store_true", help="never answer (hold connections)")
    args = parser.parse_args(argv)

    secrets = list(args.secret)
    if not secrets:
        secrets = [new_secret()]
        print(f"No --secret given; generated: {secrets[0]}", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiver = CallbackReceiver(
        secrets,
        args.responses,
        args.status,
        host=args.host,
        port=args.port,
        on_receive=lambda record: print(describe(record), flush=True),
    )
    with receiver:
        receiver.hang(args.hang)
        print(f"Callback receiver listening on {receiver.url}", flush=True)
        print("Set these app settings (e.g. in local.settings.json):", flush=True)
        print(f"SOURCES__appointments__CALLBACKURL={receiver.url}", flush=True)
        print(f"SOURCES__appointments__CALLBACKSECRETS={','.join(secrets)}", flush=True)
        while not stop.wait(0.5):
            pass
        print("Callback receiver stopping", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
