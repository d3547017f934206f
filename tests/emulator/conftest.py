"""Fixtures of the emulator tests: a fresh emulator per test, and an HTTP client holding a token
that the emulator's own managed-identity endpoint issued (the production credential's path)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devtools.graph_emulator import GraphEmulator

from .test_graph_emulator import issue_token


@pytest.fixture
def emulator() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emu:
        emu.seed_default_users()
        yield emu


@pytest.fixture
def api(emulator: GraphEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=emulator.graph_base_url,
        headers={"Authorization": f"Bearer {issue_token(emulator)}"},
        timeout=10,
    ) as client:
        yield client
