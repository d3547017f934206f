"""Shared fixtures: a real Azurite and the Graph emulator for the whole session.

The app reads its settings from the environment once per process, as in Azure; the session
fixture sets that environment before any test touches the app, and `reconfigure` swaps it for
one test, clearing the process-wide caches around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from devtools.graph_emulator import GraphEmulator
from shared import runtime, settings
from shared.settings import POISON_QUEUE_NAME, QUEUE_NAME
from tests.support import SECRET


def clear_app_caches() -> None:
    """Forget process-wide settings and clients so the next call reads the environment."""
    settings.current.cache_clear()
    runtime.store.cache_clear()
    runtime.queue.cache_clear()
    for name in (
        "graph_gateway",
        "reconciler",
        "directory",
        "callback_queue",
        "callback_client",
        "callback_delivery",
        "attendance_queue",
        "attendance_check",
        "retention",
    ):
        cached = getattr(runtime, name, None)
        if cached is not None:
            cached.cache_clear()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite(in_memory=True) as server:
        yield server


@pytest.fixture(scope="session")
def graph() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        emulator.seed_default_users()
        yield emulator


@pytest.fixture
def emulator(graph: GraphEmulator) -> Iterator[GraphEmulator]:
    """The session's Graph emulator with no meetings, calls or faults left from other tests."""
    graph.reset()
    yield graph
    graph.reset()


@pytest.fixture(scope="session", autouse=True)
def app_environment(azurite: Azurite, graph: GraphEmulator) -> Iterator[dict[str, str]]:
    environment = {
        "AzureWebJobsStorage": azurite.connection_string,
        "WEBHOOK_SECRETS": SECRET,
        **graph.environment(),
    }
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    clear_app_caches()
    yield environment
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    clear_app_caches()


@pytest.fixture
def reconfigure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Change app settings for one test: `reconfigure(WEBHOOK_SECRETS="")`."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        clear_app_caches()

    yield apply
    monkeypatch.undo()
    clear_app_caches()


@pytest.fixture
def event_queue(azurite: Azurite) -> QueueClient:
    """The app's queue, emptied before the test so assertions see only this test's messages."""
    client = QueueClient.from_connection_string(azurite.connection_string, QUEUE_NAME)
    poison = QueueClient.from_connection_string(azurite.connection_string, POISON_QUEUE_NAME)
    for queue in (client, poison):
        try:
            queue.create_queue()
        except ResourceExistsError:
            queue.clear_messages()
    return client
