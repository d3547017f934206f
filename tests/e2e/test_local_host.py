"""The local host's own contract, with small apps of the tests' own on the session Azurite.

These pin down what `make run` promises without Core Tools: routes and request objects as the
host builds them, 500 on an exception, and the queue trigger's documented semantics (retry
after visibilityTimeout, `<queue>-poison` after maxDequeueCount, base64 or plain messages,
concurrency). They need neither Graph nor the reconciler.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite, free_port
from devtools.local_host import LocalHost, UnsupportedFunction, describe, index
from shared.settings import QueueSemantics

FAST = QueueSemantics(
    max_dequeue_count=3,
    visibility_timeout_seconds=0,
    batch_size=4,
    new_batch_threshold=2,
    max_polling_interval_seconds=0.2,
    message_encoding="none",
)


def eventually(
    condition: Callable[[], bool], timeout: float = 30.0, describe: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached in {timeout} s: {describe()}")
        time.sleep(0.05)


@pytest.fixture
def queue_name(azurite: Azurite) -> Iterator[str]:
    name = f"lh-{uuid.uuid4().hex[:16]}"
    clients = [
        QueueClient.from_connection_string(azurite.connection_string, n)
        for n in (name, f"{name}-poison")
    ]
    clients[0].create_queue()
    yield name
    for client in clients:
        with contextlib.suppress(ResourceNotFoundError):
            client.delete_queue()


def peek(client: QueueClient) -> list[Any]:
    """The queue's visible messages; none when the queue does not exist (yet)."""
    try:
        return list(client.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return []


def run_host(
    app: func.FunctionApp, azurite: Azurite, semantics: QueueSemantics = FAST
) -> LocalHost:
    environ = {"AzureWebJobsStorage": azurite.connection_string}
    return LocalHost(index(app), port=free_port(), environ=environ, semantics=semantics)


# --- HTTP ------------------------------------------------------------------------------------


def http_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="things/{thing}/parts/{*rest}", methods=["GET", "POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        payload = {
            "method": req.method,
            "url": req.url,
            "route": dict(req.route_params),
            "params": dict(req.params),
            "header": req.headers.get("x-custom"),
            "body": req.get_body().decode(),
        }
        return func.HttpResponse(json.dumps(payload), status_code=201, mimetype="application/json")

    @app.route(route="boom")
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("bug")

    @app.route(route="async")
    async def asynchronous(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("async ok")

    return app


def test_http_requests_become_function_requests(azurite: Azurite) -> None:
    with run_host(http_app(), azurite) as host, httpx.Client(base_url=host.base_url) as client:
        response = client.post(
            "/api/Things/a%20b/parts/x/y?q=1&q=2&empty=",
            content=b"hello",
            headers={"X-Custom": "yes"},
        )
        assert response.status_code == 201
        assert response.headers["content-type"].startswith("application/json")
        echoed = response.json()
        assert echoed["method"] == "POST"
        assert echoed["route"] == {"thing": "a b", "rest": "x/y"}
        assert echoed["params"] == {"q": "1,2", "empty": ""}
        assert echoed["header"] == "yes"
        assert echoed["body"] == "hello"
        assert echoed["url"].endswith("/api/Things/a%20b/parts/x/y?q=1&q=2&empty=")

        assert client.get("/api/boom").status_code == 500
        assert client.get("/api/async").text == "async ok"
        assert client.delete("/api/things/a/parts/b").status_code == 404  # method not allowed
        assert client.get("/things/a/parts/b").status_code == 404  # outside the prefix


def test_functions_with_bindings_the_host_lacks_are_refused() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="things/{name}", connection="AzureWebJobsStorage")
    def on_blob(blob: func.InputStream) -> None:
        pass

    with pytest.raises(UnsupportedFunction, match="func start"):
        LocalHost(index(app), port=0, environ={})


def test_timer_functions_are_listed_but_not_scheduled() -> None:
    app = func.FunctionApp()

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
    def tick(timer: func.TimerRequest) -> None:
        raise AssertionError("the local host must not run timer functions")

    assert describe(index(app)) == ([], [])


# --- queues ----------------------------------------------------------------------------------


def test_failing_message_is_retried_then_moved_to_poison(azurite: Azurite, queue_name: str) -> None:
    attempts: list[int] = []
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def always_fails(msg: func.QueueMessage) -> None:
        attempts.append(msg.dequeue_count or 0)
        raise RuntimeError("permanent")

    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    source = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    source.send_message('{"hello": "poison"}')
    with run_host(app, azurite):
        eventually(lambda: len(peek(poison)) == 1, describe=lambda: attempts)

    assert attempts == [1, 2, 3]
    [parked] = peek(poison)
    assert parked.content == '{"hello": "poison"}'
    assert peek(source) == []


def test_messages_carry_the_host_fields_and_settle(azurite: Azurite, queue_name: str) -> None:
    seen: list[dict[str, Any]] = []
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def record(msg: func.QueueMessage) -> None:
        seen.append(
            {
                "id": msg.id,
                "body": msg.get_body(),
                "dequeue_count": msg.dequeue_count,
                "insertion_time": msg.insertion_time,
                "expiration_time": msg.expiration_time,
                "pop_receipt": msg.pop_receipt,
            }
        )

    source = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    sent = source.send_message("plain text ünïcode")
    with run_host(app, azurite):
        eventually(lambda: len(seen) == 1)
        eventually(lambda: peek(source) == [])

    [message] = seen
    assert message["id"] == sent.id
    assert message["body"] == "plain text ünïcode".encode()
    assert message["dequeue_count"] == 1
    assert isinstance(message["insertion_time"], datetime)
    assert isinstance(message["expiration_time"], datetime)
    assert message["pop_receipt"]


def test_base64_encoding_is_decoded(azurite: Azurite, queue_name: str) -> None:
    bodies: list[bytes] = []
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def decode(msg: func.QueueMessage) -> None:
        bodies.append(msg.get_body())

    source = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    source.send_message(base64.b64encode(b'{"encoded": true}').decode())
    semantics = QueueSemantics(**{**FAST.__dict__, "message_encoding": "base64"})
    with run_host(app, azurite, semantics):
        eventually(lambda: bodies == [b'{"encoded": true}'])


def test_messages_are_processed_concurrently_up_to_batch_size(
    azurite: Azurite, queue_name: str
) -> None:
    running = 0
    peak = 0
    done = 0
    lock = threading.Lock()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue_name, connection="AzureWebJobsStorage")
    def slow(msg: func.QueueMessage) -> None:
        nonlocal running, peak, done
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        with lock:
            running -= 1
            done += 1

    source = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    for i in range(12):
        source.send_message(str(i))
    with run_host(app, azurite):
        eventually(lambda: done == 12)

    assert 2 <= peak <= FAST.batch_size
