"""The organizer directory's rules: entry validation, resolution order, the found-only cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from shared.directory import CACHE_SECONDS, Directory, Entry, parse_entries, resolve_user
from shared.documents import FieldError

GUID = "6f1c7d4e-2b8a-4c3e-9f5d-1a2b3c4d5e01"


class MemoryTable:
    """An in-memory stand-in for the `organizers` table that counts reads."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.reads = 0
        self.notes: dict[tuple[str, str], set[str]] = {}

    def get(self, source: str, identifier: str) -> Entry | None:
        self.reads += 1
        return self.entries.get((source, identifier.lower()))

    def save(self, entries: Sequence[Entry], updated: str) -> None:
        for e in entries:
            self.entries[(e.source, e.identifier.lower())] = Entry(
                e.source, e.identifier, e.user, updated
            )

    def delete(self, source: str, identifier: str) -> None:
        self.entries.pop((source, identifier.lower()), None)

    def page(self, source: str, token: str | None) -> tuple[list[Entry], str | None]:
        return [e for (s, _), e in self.entries.items() if s == source], None

    def note_waiting(self, source: str, identifier: str, external_id: str) -> None:
        self.notes.setdefault((source, identifier.lower()), set()).add(external_id)

    def waiting(self, source: str, identifier: str) -> list[str]:
        return sorted(self.notes.get((source, identifier.lower()), set()))

    def forget_waiting(self, source: str, identifier: str, external_id: str) -> None:
        self.notes.get((source, identifier.lower()), set()).discard(external_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_resolution_order_is_entry_then_guid_or_email_then_unmapped() -> None:
    entry = Entry("epic", "dr@clinic.example", GUID)
    assert resolve_user("dr@clinic.example", entry) == GUID
    assert resolve_user(GUID, None) == GUID
    assert resolve_user("dr@clinic.example", None) == "dr@clinic.example"
    assert resolve_user("1234", None) is None
    assert resolve_user("Smith John", None) is None


def test_found_entries_are_cached_for_a_minute_and_misses_never() -> None:
    table, clock = MemoryTable(), Clock()
    directory = Directory(table, clock=clock)
    assert directory.resolve("epic", "1234") is None
    assert directory.resolve("epic", "1234") is None
    assert table.reads == 2  # an unmapped identifier is looked up every time
    table.save([Entry("epic", "1234", GUID)], "2026-12-03T00:00:00Z")
    assert directory.resolve("epic", "1234") == GUID
    clock.now += CACHE_SECONDS - 1
    assert directory.resolve("epic", "1234") == GUID
    assert table.reads == 3
    clock.now += 2
    assert directory.resolve("EPIC".lower(), "1234") == GUID
    assert table.reads == 4
    assert directory.resolve("epic", "1234", fresh=True) == GUID
    assert table.reads == 5


def test_saving_replays_what_waited_and_forgets_the_notes() -> None:
    table = MemoryTable()
    directory = Directory(table, clock=Clock())
    table.note_waiting("epic", "1234", "epic:a")
    table.note_waiting("epic", "1234", "epic:b")
    replayed: list[str] = []
    count = directory.save([Entry("epic", "1234", GUID)], "t", replayed.append)
    assert (count, replayed) == (2, ["epic:a", "epic:b"])
    assert table.waiting("epic", "1234") == []


def test_entries_are_validated_with_pointers_and_the_last_of_a_pair_wins() -> None:
    parsed = parse_entries(
        [
            {"source": "Epic", "identifier": "1", "user": GUID},
            {"source": "epic", "identifier": "1", "user": "a@b.example"},
        ]
    )
    assert parsed == [Entry("epic", "1", "a@b.example")]
    errors = parse_entries([{"source": "epic", "identifier": "1\n", "user": "x"}, "no"])
    assert isinstance(errors[0], FieldError)
    assert {e.path for e in errors if isinstance(e, FieldError)} == {
        "/0/identifier",
        "/0/user",
        "/1",
    }
    extra = parse_entries({"source": "epic", "identifier": "1", "user": GUID, "extra": 1})
    assert [e.path for e in extra if isinstance(e, FieldError)] == ["/extra"]
    too_many = parse_entries(
        [{"source": "e", "identifier": str(n), "user": GUID} for n in range(501)]
    )
    assert [e.path for e in too_many if isinstance(e, FieldError)] == [""]


def test_threads_missing_the_cache_together_make_one_read() -> None:
    class SlowTable(MemoryTable):
        def get(self, source: str, identifier: str) -> Entry | None:
            time.sleep(0.05)
            return super().get(source, identifier)

    table = SlowTable()
    table.save([Entry("epic", "1234", GUID)], "t")
    directory = Directory(table)
    results: list[str | None] = []
    workers = [
        threading.Thread(target=lambda: results.append(directory.resolve("epic", "1234")))
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [GUID] * 8
    assert table.reads == 1
