"""A small local stand-in for the Azure Functions host, for machines without Core Tools.

Why it exists: Azure Functions Core Tools (`func start`) is the faithful way to run the app
locally, but its npm package downloads a .NET binary at install time, which fails on machines
without general internet access. This module runs the *same* app the same way the host would,
so `make run` and the black-box tests work anywhere Python and Azurite run:

* It reads the functions from the app's own index (`FunctionApp.get_functions()`) and each
  function's `get_function_json()`: the metadata the Python worker sends the real host. A
  function added later needs no change here.
* HTTP triggers are served on `/<routePrefix>/<route>` (host.json `extensions.http.routePrefix`)
  with `http.server.ThreadingHTTPServer`; requests become real `azure.functions.HttpRequest`
  objects and responses come from the function's `azure.functions.HttpResponse`.
* Timer triggers are listed but not scheduled (run their work by hand, e.g.
  `python -m devtools.retention`).
* Queue triggers poll Azurite (or any storage account reachable by connection string) with the
  semantics host.json declares (`shared.settings.queue_semantics()`): message encoding,
  batchSize, newBatchThreshold, visibilityTimeout after a failure, maxDequeueCount and then
  `<queue>-poison`, polling back-off up to maxPollingInterval. Messages become real
  `azure.functions.QueueMessage` objects.

What it deliberately is not: a production host. Function keys are not enforced (Core Tools does
not enforce them locally either), only the bindings this app uses are supported, and Azure
Functions remains the engine in production. It says so in its banner.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.decorators.function_app import Function
from azure.functions.queue import QueueMessage as WorkerQueueMessage
from azure.storage.queue import QueueClient, QueueMessage

from devtools.http_server import ClosingHTTPServer
from shared.settings import QueueSemantics, queue_semantics

ROOT: Final = Path(__file__).resolve().parent.parent
HOST_JSON: Final = ROOT / "host.json"
FUNCTION_APP_FILE: Final = ROOT / "function_app.py"
BANNER: Final = "Local development host (not Azure Functions Core Tools)"
# The host caps request bodies at 100 MB; the app enforces its own, much smaller, limit.
MAX_REQUEST_BYTES: Final = 100 * 1024 * 1024
# Azure Storage hands out at most 32 messages per receive call.
MAX_MESSAGES_PER_RECEIVE: Final = 32
# The host's first wait after an empty poll; it then grows towards maxPollingInterval.
MIN_POLLING_INTERVAL: Final = 0.1
_HTTP_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

log = logging.getLogger("devtools.local_host")


class UnsupportedFunction(ValueError):
    """A function uses a binding or parameter this development host cannot provide."""


# --------------------------------------------------------------------------- the app's index

_INDEX: dict[int, tuple[func.FunctionApp, list[Function]]] = {}
_INDEX_LOCK = threading.Lock()


def index(app: func.FunctionApp) -> list[Function]:
    """`app.get_functions()`, called once per app object and remembered.

    azure-functions 1.x refuses a second `get_functions()` on the same app (it sees every name
    as a duplicate), and the worker itself indexes exactly once, so this does the same.
    """
    with _INDEX_LOCK:
        known = _INDEX.get(id(app))
        if known is None or known[0] is not app:
            known = (app, list(app.get_functions()))
            _INDEX[id(app)] = known
        return list(known[1])


def load_function_app(*, fresh: bool = False, path: Path = FUNCTION_APP_FILE) -> func.FunctionApp:
    """The `app` object of `function_app.py`, as the worker loads it.

    `fresh=True` executes the file again as a private module, giving a new `FunctionApp` with
    its own index. Tests use it so that starting a local host never consumes the one
    `get_functions()` call of the `function_app.app` other tests may make.
    """
    module: ModuleType
    if fresh:
        spec = importlib.util.spec_from_file_location(f"_function_app_{uuid.uuid4().hex}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(path.stem)
    app = getattr(module, "app", None)
    if not isinstance(app, func.FunctionApp):
        raise ImportError(f"{path} defines no `app = func.FunctionApp()`")
    return app


def route_prefix(host_json: Path = HOST_JSON) -> str:
    """host.json `extensions.http.routePrefix` ("api" when absent, as in the host)."""
    config = json.loads(host_json.read_text(encoding="utf-8"))
    prefix = config.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


# --------------------------------------------------------------------------- function metadata


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None
    parameter: str | None = None
    optional: bool = False
    catch_all: bool = False


def _parse_template(template: str) -> tuple[_Segment, ...]:
    """Split a route template into segments: literals, `{name}`, `{name?}`, `{*name}`.

    Constraints (`{id:int}`) are accepted and ignored: this app does not use them, and the
    function validates its own input anyway.
    """
    segments: list[_Segment] = []
    for raw in (part for part in template.strip("/").split("/") if part):
        if raw.startswith("{") and raw.endswith("}"):
            name = raw[1:-1].split(":", 1)[0].split("=", 1)[0]
            catch_all = name.startswith("*")
            optional = name.endswith("?")
            name = name.lstrip("*").rstrip("?")
            if not name.isidentifier():
                raise UnsupportedFunction(f"route parameter {raw!r} is not supported")
            segments.append(_Segment(parameter=name, optional=optional, catch_all=catch_all))
        elif "{" in raw or "}" in raw:
            raise UnsupportedFunction(f"route segment {raw!r} mixes text and parameters")
        else:
            segments.append(_Segment(literal=raw.lower()))
    return tuple(segments)


@dataclass(frozen=True)
class HttpFunction:
    """An HTTP-triggered function: where it is served and how it is called."""

    name: str
    route: str
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    binding_name: str
    handler: Callable[..., Any]
    segments: tuple[_Segment, ...] = field(repr=False)

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        """Route values when the (decoded) path segments after the prefix fit this route."""
        values: dict[str, str] = {}
        position = 0
        for segment in self.segments:
            if segment.catch_all:
                if position < len(parts):
                    values[str(segment.parameter)] = "/".join(parts[position:])
                position = len(parts)
                break
            if position >= len(parts):
                if segment.parameter is not None and segment.optional:
                    continue
                return None
            part = parts[position]
            if segment.literal is not None:
                if part.lower() != segment.literal:
                    return None
            else:
                values[str(segment.parameter)] = part
            position += 1
        return values if position == len(parts) else None


@dataclass(frozen=True)
class QueueFunction:
    """A queue-triggered function and the queue it listens to."""

    name: str
    queue_name: str
    connection: str
    binding_name: str
    data_type: str | None
    handler: Callable[..., Any]


def _call_shape(function: Function, trigger_name: str) -> None:
    """Refuse functions that want parameters other than the trigger (bindings this host lacks)."""
    parameters = inspect.signature(function.get_user_function()).parameters
    extra = [name for name in parameters if name != trigger_name]
    if extra:
        raise UnsupportedFunction(
            f"function {function.get_function_name()!r} takes {extra}: the local host binds only "
            "the trigger; run it under Azure Functions Core Tools (`func start`)"
        )


def timers(functions: Sequence[Function]) -> list[tuple[str, str]]:
    """(name, NCRONTAB schedule) of each timer function: listed in the banner so the local
    listing matches `func start`'s, never run (see describe)."""
    found = []
    for function in functions:
        for binding in json.loads(function.get_function_json())["bindings"]:
            if binding.get("type") == "timerTrigger":
                found.append((str(function.get_function_name()), str(binding.get("schedule"))))
    return found


def describe(functions: Sequence[Function]) -> tuple[list[HttpFunction], list[QueueFunction]]:
    """Turn the worker's function metadata into what this host serves; refuse what it cannot."""
    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    for function in functions:
        name = str(function.get_function_name())
        bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        others = [
            b
            for b in bindings
            if b not in triggers and not (b.get("type") == "http" and b.get("name") == "$return")
        ]
        if len(triggers) != 1 or others:
            kinds = sorted(str(b.get("type")) for b in bindings)
            raise UnsupportedFunction(
                f"function {name!r} has bindings {kinds}: the local host supports one "
                "httpTrigger (with its $return) or one queueTrigger; use `func start`"
            )
        trigger = triggers[0]
        kind = trigger["type"]
        _call_shape(function, trigger["name"])
        if kind == "timerTrigger":
            # Not scheduled here: a development stack has nothing due, and a pass can be run
            # by hand (`python -m devtools.retention` for apply_retention).
            log.info("timer function %s is not scheduled by the local host", name)
            continue
        if kind == "httpTrigger":
            route = str(trigger.get("route") or name)
            methods = trigger.get("methods")
            http.append(
                HttpFunction(
                    name=name,
                    route=route,
                    methods=frozenset(str(m).upper() for m in methods) if methods else None,
                    auth_level=str(trigger.get("authLevel", "FUNCTION")).lower(),
                    binding_name=str(trigger["name"]),
                    handler=function.get_user_function(),
                    segments=_parse_template(route),
                )
            )
        elif kind == "queueTrigger":
            queues.append(
                QueueFunction(
                    name=name,
                    queue_name=str(trigger["queueName"]),
                    connection=str(trigger.get("connection") or "AzureWebJobsStorage"),
                    binding_name=str(trigger["name"]),
                    data_type=trigger.get("dataType"),
                    handler=function.get_user_function(),
                )
            )
        else:
            raise UnsupportedFunction(
                f"function {name!r} uses a {kind}: the local host runs HTTP and queue "
                "triggers only; use `func start`"
            )
    return http, queues


# --------------------------------------------------------------------------- invocation


class _Invoker:
    """Calls user functions as the Python worker does: sync ones on pool threads, async ones on
    one shared event loop (owned by a background thread)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="local-host-asyncio", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def __call__(self, handler: Callable[..., Any], **arguments: Any) -> Any:
        if inspect.iscoroutinefunction(handler):
            coroutine = handler(**arguments)
            return asyncio.run_coroutine_threadsafe(coroutine, self._event_loop()).result()
        return handler(**arguments)

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# --------------------------------------------------------------------------- HTTP


class _HttpServer(ClosingHTTPServer):
    """The HTTP server, with a back reference to its host."""

    def __init__(self, address: tuple[str, int], host: LocalHost) -> None:
        self.local_host = host
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalFunctionsHost/1.0"
    timeout = 60
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the host logs one line per invocation itself, never bodies."""

    def _read_body(self) -> bytes | None:
        """The body by Content-Length or chunked encoding; None when it is too large."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_REQUEST_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, {}, b"")
            return
        if body is None:
            self.close_connection = True
            self._send(413, {}, b"")
            return
        status, headers, payload = self.server.local_host.handle_http(
            self.command, self.path, dict(self._merged_headers()), body
        )
        self._send(status, headers, payload)

    def _merged_headers(self) -> Iterator[tuple[str, str]]:
        """Headers with repeated names joined by commas, as ASP.NET hands them to the worker."""
        merged: dict[str, tuple[str, list[str]]] = {}
        for name, value in self.headers.items():
            merged.setdefault(name.lower(), (name, []))[1].append(value)
        for name, values in merged.values():
            yield name, ", ".join(values)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


# --------------------------------------------------------------------------- queues


def _connection_string(connection: str, environ: Mapping[str, str]) -> str:
    value = environ.get(connection) or environ.get(f"ConnectionStrings:{connection}")
    if not value:
        raise UnsupportedFunction(
            f"app setting {connection!r} is not set: the local host needs a storage connection "
            "string (Azurite's, in local.settings.json)"
        )
    if value.strip().lower().startswith("usedevelopmentstorage=true"):
        raise UnsupportedFunction(
            f"{connection}=UseDevelopmentStorage=true is not understood by every Azure SDK; "
            "use Azurite's explicit connection string (see local.settings.sample.json)"
        )
    return value


@dataclass(eq=False)  # identity: a redelivered message is a new lease with the same id
class _Lease:
    """One received message while this host owns it (invisible to other consumers)."""

    message: QueueMessage
    future: Future[None] | None = None


class _QueueListener:
    """Drives one queue trigger: poll, invoke on the pool, then delete, retry or poison.

    The semantics are the host's, as documented for the Azure Queue storage trigger:
    a batch of up to `batchSize` messages is fetched whenever the number still being processed
    drops to `newBatchThreshold`; a failed invocation leaves the message invisible for
    `visibilityTimeout` and the queue redelivers it; once it has been dequeued
    `maxDequeueCount` times and failed, it is copied to `<queue>-poison` and deleted. An empty
    queue is polled with randomised exponential back-off up to `maxPollingInterval`.

    Received messages stay invisible for host.json `functionTimeout` (the host takes a shorter
    lease and renews it; either way no invocation outlives functionTimeout), so a crash of
    this process hands them back to the queue, as a crashed worker would in Azure.
    """

    def __init__(
        self,
        function: QueueFunction,
        connection_string: str,
        semantics: QueueSemantics,
        invoke: _Invoker,
        lease_seconds: int,
    ) -> None:
        self.function = function
        self._semantics = semantics
        self._invoke = invoke
        self._lease_seconds = lease_seconds
        self._queue = QueueClient.from_connection_string(
            connection_string, function.queue_name, connection_timeout=3, read_timeout=10
        )
        self._poison = QueueClient.from_connection_string(
            connection_string,
            f"{function.queue_name}-poison",
            connection_timeout=3,
            read_timeout=10,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, semantics.batch_size),
            thread_name_prefix=f"queue:{function.name}",
        )
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._leases: set[_Lease] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"queue-poller:{function.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop polling, hand unstarted messages back to the queue, wait for running ones."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=timeout)
        with self._changed:
            leases = list(self._leases)
        for lease in leases:
            if lease.future is not None and lease.future.cancel():
                self._release(lease.message)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.close()
        self._poison.close()

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            with self._changed:
                # Fetch only when processing has drained down to newBatchThreshold.
                while (
                    len(self._leases) > self._semantics.new_batch_threshold
                    and not self._stop.is_set()
                ):
                    self._changed.wait(timeout=1.0)
            if self._stop.is_set():
                return
            try:
                received = self._receive()
            except Exception:  # a poller that dies silently would stall the app: keep going
                log.exception("queue %s: polling failed", self.function.queue_name)
                received = 0
            if received:
                delay = 0.0
                continue
            delay = self._next_delay(delay)
            self._stop.wait(delay)

    def _next_delay(self, delay: float) -> float:
        ceiling = max(MIN_POLLING_INTERVAL, self._semantics.max_polling_interval_seconds)
        grown = max(MIN_POLLING_INTERVAL, delay * 2)
        jitter = random.uniform(0.8, 1.0)  # noqa: S311 - spreading polls, not security
        return min(ceiling, grown * jitter) if delay else MIN_POLLING_INTERVAL

    def _receive(self) -> int:
        count = min(MAX_MESSAGES_PER_RECEIVE, max(1, self._semantics.batch_size))
        try:
            messages = list(
                self._queue.receive_messages(
                    messages_per_page=count,
                    max_messages=count,
                    visibility_timeout=self._lease_seconds,
                )
            )
        except ResourceNotFoundError:
            return 0  # the app creates the queue on its first send
        except AzureError as error:
            log.warning("queue %s: polling failed (%s)", self.function.queue_name, error)
            return 0
        for message in messages:
            if (message.dequeue_count or 0) > self._semantics.max_dequeue_count:
                # Delivered too often already (e.g. the host stopped mid-invocation).
                self._poison_message(message)
                continue
            lease = _Lease(message)
            with self._changed:
                self._leases.add(lease)
            try:
                lease.future = self._pool.submit(self._process, lease)
            except RuntimeError:  # the pool is shutting down
                with self._changed:
                    self._leases.discard(lease)
                self._release(message)
        return len(messages)

    def _to_function_message(self, message: QueueMessage) -> WorkerQueueMessage:
        content = message.content if isinstance(message.content, str) else ""
        if self._semantics.message_encoding == "base64":
            body = base64.b64decode(content)
        else:
            body = content.encode("utf-8")
        return WorkerQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    def _process(self, lease: _Lease) -> None:
        message = lease.message
        started = time.perf_counter()
        outcome = "Succeeded"
        failed = False
        try:
            argument: Any = self._to_function_message(message)
            if self.function.data_type == "STRING":
                argument = argument.get_body().decode("utf-8")
            elif self.function.data_type == "BINARY":
                argument = argument.get_body()
            self._invoke(self.function.handler, **{self.function.binding_name: argument})
        except Exception as error:
            failed = True
            outcome = f"Failed ({type(error).__name__})"
            log.exception(
                "queue %s: function %s raised on message %s",
                self.function.queue_name,
                self.function.name,
                message.id,
            )
        try:
            if not failed:
                self._queue.delete_message(message.id, message.pop_receipt)
            elif (message.dequeue_count or 0) >= self._semantics.max_dequeue_count:
                self._poison_message(message)
                outcome += " -> poison"
            else:
                self._queue.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=math.ceil(self._semantics.visibility_timeout_seconds),
                )
                outcome += f" -> retry in {self._semantics.visibility_timeout_seconds:g} s"
        except AzureError as error:
            # The lease lapses on its own and the queue redelivers: at-least-once, as in Azure.
            outcome += f" (settling failed: {type(error).__name__})"
        finally:
            with self._changed:
                self._leases.discard(lease)
                self._changed.notify_all()
        log.info(
            "queue %-22s %s dequeue=%s -> %s (%d ms)",
            self.function.name,
            message.id,
            message.dequeue_count,
            outcome,
            _elapsed_ms(started),
        )

    def _poison_message(self, message: QueueMessage) -> None:
        """Copy the message unchanged to `<queue>-poison`, then delete it (the host's order)."""
        content = message.content if isinstance(message.content, str) else ""
        try:
            self._poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self._poison.create_queue()
            self._poison.send_message(content)
        self._queue.delete_message(message.id, message.pop_receipt)
        log.warning(
            "queue %s: message %s moved to %s-poison after %s attempts",
            self.function.queue_name,
            message.id,
            self.function.queue_name,
            message.dequeue_count,
        )

    def _release(self, message: QueueMessage) -> None:
        """Make a message we will not process visible again at once."""
        with contextlib.suppress(AzureError):
            self._queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)


# --------------------------------------------------------------------------- the host


def _function_timeout_seconds(host_json: Path) -> int:
    """host.json `functionTimeout` (5 minutes when absent, the Consumption default)."""
    config = json.loads(host_json.read_text(encoding="utf-8"))
    raw = str(config.get("functionTimeout") or "00:05:00")
    hours, minutes, seconds = raw.split(":")
    return max(1, round(int(hours) * 3600 + int(minutes) * 60 + float(seconds)))


class LocalHost:
    """Serves an app's HTTP triggers and drives its queue triggers, like the Functions host.

    Typical use: `LocalHost(index(load_function_app()), port=7071).start()`; `stop()` ends every
    thread it started. `environ` is where binding connections (`AzureWebJobsStorage`) are read
    from: the process environment by default, which is also what the app itself reads.
    """

    def __init__(
        self,
        functions: Sequence[Function],
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        environ: Mapping[str, str] | None = None,
        semantics: QueueSemantics | None = None,
        host_json: Path = HOST_JSON,
        prefix: str | None = None,
    ) -> None:
        self.http_functions, self.queue_functions = describe(functions)
        self.timer_functions = timers(functions)
        self.function_names = [str(f.get_function_name()) for f in functions]
        self._bind = host
        self._requested_port = port
        self._environ = os.environ if environ is None else environ
        self._semantics = semantics or queue_semantics(host_json)
        self._prefix = route_prefix(host_json) if prefix is None else prefix.strip("/")
        self._lease_seconds = _function_timeout_seconds(host_json)
        self._invoke = _Invoker()
        self._server: _HttpServer | None = None
        self._server_thread: threading.Thread | None = None
        self._listeners: list[_QueueListener] = []

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> LocalHost:
        """Bind the HTTP port and start polling; raises OSError when the port is taken."""
        if self._server is not None:
            raise RuntimeError("the local host is already running")
        listeners = [
            _QueueListener(
                function,
                _connection_string(function.connection, self._environ),
                self._semantics,
                self._invoke,
                self._lease_seconds,
            )
            for function in self.queue_functions
        ]
        server = _HttpServer((self._bind, self._requested_port), self)
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"local-host-http:{self.port}",
            daemon=True,
        )
        self._server_thread.start()
        self._listeners = listeners
        for listener in listeners:
            listener.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving and polling; running invocations finish first. Idempotent."""
        server, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.stop(timeout)
        self._invoke.close()

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local host is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`; routes live under `/<routePrefix>/`."""
        bind = "127.0.0.1" if self._bind in ("", "0.0.0.0") else self._bind
        return f"http://{bind}:{self.port}"

    def url_for(self, route: str) -> str:
        """The full URL of a route template, under the route prefix."""
        path = "/".join(part.strip("/") for part in (self._prefix, route) if part.strip("/"))
        return f"{self.base_url}/{path}"

    def describe_functions(self) -> list[str]:
        """One line per function, in the style of `func start`'s listing."""
        lines = []
        for http in self.http_functions:
            methods = ",".join(sorted(http.methods)) if http.methods else "*"
            lines.append(
                f"{http.name}: [{methods}] {self.url_for(http.route)}  ({http.auth_level})"
            )
        lines.extend(
            f"{queue.name}: queueTrigger on {queue.queue_name!r} ({queue.connection})"
            for queue in self.queue_functions
        )
        lines.extend(
            f"{name}: timerTrigger {schedule!r} (not scheduled locally)"
            for name, schedule in self.timer_functions
        )
        return lines

    # ----------------------------------------------------------------- HTTP dispatch

    def _route(self, path: str) -> list[str] | None:
        """Decoded path segments after the route prefix; None when outside the prefix."""
        parts = [unquote(p) for p in path.split("/") if p]
        prefix = [p.lower() for p in self._prefix.split("/") if p]
        if [p.lower() for p in parts[: len(prefix)]] != prefix:
            return None
        return parts[len(prefix) :]

    def handle_http(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Route one request to its function and turn the answer into status, headers, body."""
        started = time.perf_counter()
        split = urlsplit(target)
        parts = self._route(split.path)
        match: tuple[HttpFunction, dict[str, str]] | None = None
        if parts is not None:
            for candidate in self.http_functions:
                values = candidate.match(parts)
                if values is not None and (
                    candidate.methods is None or method.upper() in candidate.methods
                ):
                    match = (candidate, values)
                    break
        if match is None:
            log.info("http  %s %s -> 404 (no function matches)", method, split.path)
            return 404, {}, b""
        function, route_values = match
        params: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        host_header = headers.get("Host") or headers.get("host") or f"127.0.0.1:{self.port}"
        request = func.HttpRequest(
            method=method.upper(),
            url=f"http://{host_header}{target}",
            headers=headers,
            params=params,
            route_params=route_values,
            body=body,
        )
        outcome = ""
        try:
            result = self._invoke(function.handler, **{function.binding_name: request})
            status, response_headers, payload = _http_answer(result)
        except Exception as error:
            # The host answers 500 with no body: the details stay in the log, not the response.
            log.exception("http  function %s raised", function.name)
            status, response_headers, payload = 500, {}, b""
            outcome = f" {type(error).__name__}"
        log.info(
            "http  %-22s %s %s -> %d%s (%d ms)",
            function.name,
            method,
            split.path,
            status,
            outcome,
            _elapsed_ms(started),
        )
        return status, response_headers, payload


def _http_answer(result: Any) -> tuple[int, dict[str, str], bytes]:
    """What the worker does with an HTTP function's return value."""
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers.items())
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return result.status_code, headers, result.get_body() or b""
    if result is None:
        return 204, {}, b""
    if isinstance(result, bytes | str):
        payload = result.encode("utf-8") if isinstance(result, str) else result
        return 200, {"Content-Type": "text/plain; charset=utf-8"}, payload
    raise TypeError(f"an HTTP function returned {type(result).__name__}, not an HttpResponse")
