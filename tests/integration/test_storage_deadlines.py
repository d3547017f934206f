"""A dead storage account is a quick `StorageUnavailable` (SPEC: storage calls time out within
10 s), for the queue as for the table, whether nothing listens or something listens and never
answers. The queue SDK keeps a retry policy of its own that pauses 15 s before its retry unless
configured: this is what caught it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from devtools.azurite import ACCOUNT, ACCOUNT_KEY, free_port
from shared.documents import parse_document
from shared.settings import StorageSettings
from shared.storage import AppointmentStore, EventQueue, StorageUnavailable
from tests.support import document

SPEC_DEADLINE_SECONDS = 10.0


def _settings(port: int) -> StorageSettings:
    base = f"http://127.0.0.1:{port}/{ACCOUNT}"
    return StorageSettings(
        connection_string=(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"QueueEndpoint={base};TableEndpoint={base};"
        )
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def _save(settings: StorageSettings) -> None:
    parsed = parse_document(document())
    assert not isinstance(parsed, list)
    AppointmentStore.from_settings(settings).save_desired(parsed, "deadline-test")


def _send(settings: StorageSettings) -> None:
    EventQueue.from_settings(settings).send('{"deadline": "test"}')


CALLS: dict[str, Callable[[StorageSettings], None]] = {"table": _save, "queue": _send}


def _seconds_to_fail(call: Callable[[StorageSettings], None], settings: StorageSettings) -> float:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        call(settings)
    return time.monotonic() - started


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_refused_connections_fail_at_once(kind: str) -> None:
    # Two refused attempts and one short pause: far from the 15 s pause of the queue's default.
    assert _seconds_to_fail(CALLS[kind], _settings(free_port())) < 3.0


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CALLS))
def test_a_silent_account_fails_within_the_deadline(kind: str, silent_port: int) -> None:
    assert _seconds_to_fail(CALLS[kind], _settings(silent_port)) < SPEC_DEADLINE_SECONDS
