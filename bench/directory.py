"""Directory: what the organizer directory costs the reconciler, per queue message.

The reconcile bench's seeded workload is delivered twice through the registered queue function
on one Azurite and emulator: as native documents (organizer = the Entra object id), and as the
same appointments from a named source `clinic` whose organizer is the source's own identifier
(`host-alex`, `host-megan`), mapped to those object ids by saved directory entries. Two figures:

* Graph calls per message: the directory must add none, so both runs must match the workload's
  minimum (the reconcile bench's table) exactly.
* Directory table reads per message, for organizers already resolved once (the cache holds a
  found entry for a minute): target 0. Reads are counted by wrapping the process directory's
  table adapter (`runtime.directory().table`), so every kind of table call counts.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from bench import workload
from bench.common import ALEX, MEGAN, SECRET, Stack, clear_app_caches, ensure_storage, table
from bench.reconcile import SEED, function_message, message_text
from shared.directory import CACHE_SECONDS, Entry

SOURCE = "clinic"
HOSTS = {ALEX: "host-alex", MEGAN: "host-megan"}
WORKERS = 4
TABLE_METHODS = ("get", "save", "delete", "page", "note_waiting", "waiting", "forget_waiting")


class CountingTable:
    """Counts calls to the directory's table adapter, by method, while it is installed."""

    def __init__(self, table: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.originals: dict[str, Any] = {}
        self.samples: list[str] = []
        self._lock = threading.Lock()
        for name in TABLE_METHODS:
            original = getattr(table, name)

            def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
                with self._lock:
                    self.calls[_name] += 1
                    self.samples.append(f"{_name}{args!r}"[:200])
                return _original(*args)

            self.originals[name] = original
            setattr(table, name, counted)
        self._table = table

    def uninstall(self) -> None:
        for name, original in self.originals.items():
            setattr(self._table, name, original)


def from_source(document: dict[str, Any]) -> dict[str, Any]:
    """The same appointment as the named source `clinic` would have it stored."""
    own_id = document["externalAppointmentId"]
    return document | {
        "externalAppointmentId": f"{SOURCE}:{own_id}",
        "source": SOURCE,
        "sourceAppointmentId": own_id,
        "organizer": HOSTS[document["organizer"]] if "organizer" in document else None,
    }


def _deliver(messages: list[list[str]]) -> tuple[list[str], float]:
    """Each appointment's messages in order, `WORKERS` appointments at a time."""
    from shared.queue_functions import reconcile_appointment_event

    errors: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(messages)))

    def worker() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            for text in messages[index]:
                try:
                    reconcile_appointment_event(function_message(text))
                except Exception as error:  # the host would retry; here it is an error
                    with lock:
                        errors.append(repr(error))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return errors, time.perf_counter() - started


def run(stack: Stack, *, quick: bool = False) -> dict[str, Any]:
    import os

    from shared import runtime

    count = 40 if quick else 600
    os.environ[f"SOURCES__{SOURCE}__KIND"] = "native"
    os.environ[f"SOURCES__{SOURCE}__SECRETS"] = SECRET
    ensure_storage(stack.connection_string)
    clear_app_caches()
    graph = stack.graph
    graph.latency = 0.0
    run_id = uuid.uuid4().hex[:8]
    entries = [Entry(SOURCE, host, user) for user, host in HOSTS.items()]
    runtime.directory().save(entries, "2026-11-20T00:00:00Z", lambda _external_id: None)

    def messages(appointments: list[workload.Appointment], *, named: bool) -> list[list[str]]:
        shape = from_source if named else (lambda d: d)
        return [
            [message_text(shape(d), f"bench-{a.external_id}") for d in a.deliveries]
            for a in appointments
        ]

    # Warm-up: clients, token, pools, and one resolution of each host (fills the cache).
    warm = workload.build(6, SEED + 1, f"dir-warm-{run_id}")
    _deliver(messages(warm, named=False))
    booked = next(d for a in warm for d in a.deliveries if workload.is_scheduled(d))
    for host_user, host in HOSTS.items():
        first = booked | {"organizer": host_user, "externalAppointmentId": f"w-{run_id}-{host}"}
        _deliver([[message_text(from_source(first), "warm")]])

    appointments = workload.build(count, SEED, f"dir-{run_id}")
    minimum: Counter[str] = Counter()
    for appointment in appointments:
        minimum += workload.minimum_calls(appointment)
    total_minimum = sum(minimum.values())
    deliveries = sum(len(a.deliveries) for a in appointments)

    figures: dict[str, Any] = {}
    counting: CountingTable | None = None
    for name, named in (("native", False), ("directory", True)):
        texts = messages(appointments, named=named)
        graph.reset_calls()
        if named:
            # Resolved once just now (the native run may have outlasted the warm-up's
            # minute): what follows is the steady state of a resolved organizer.
            for host in HOSTS.values():
                runtime.directory().resolve(SOURCE, host)
            counting = CountingTable(runtime.directory().table)
        errors, wall = _deliver(texts)
        actual = Counter({k: v for k, v in graph.call_counts().items() if k != "token" and v})
        figures[name] = {
            "graph_calls": sum(actual.values()),
            "graph_calls_by_operation": dict(sorted(actual.items())),
            "graph_calls_per_message": round(sum(actual.values()) / deliveries, 4),
            "errors": len(errors),
            "error_samples": errors[:5],
            "wall_s": round(wall, 3),
        }
    assert counting is not None
    counting.uninstall()
    reads = sum(counting.calls.values())
    directory_wall = figures["directory"]["wall_s"]
    return {
        "appointments": count,
        "deliveries": deliveries,
        "workers": WORKERS,
        "graph_calls_minimum": total_minimum,
        "graph_calls_minimum_per_message": round(total_minimum / deliveries, 4),
        "runs": figures,
        "table_calls": dict(sorted(counting.calls.items())),
        "table_call_samples": counting.samples[:10],
        "table_reads_per_message": round(reads / deliveries, 4),
        "cache_seconds": CACHE_SECONDS,
        "target": {
            "graph_calls_unchanged": figures["directory"]["graph_calls"]
            == figures["native"]["graph_calls"]
            == total_minimum,
            # Within the cache's minute a resolved organizer costs no read; a longer run may
            # read once per host per minute.
            "zero_table_reads": reads == 0,
            "within_cache_minute": directory_wall < CACHE_SECONDS,
            "zero_errors": not figures["native"]["errors"] and not figures["directory"]["errors"],
        },
    }


def report(results: dict[str, Any]) -> str:
    runs = results["runs"]
    rows = [
        [
            name,
            runs[name]["graph_calls"],
            results["graph_calls_minimum"],
            runs[name]["graph_calls_per_message"],
            runs[name]["errors"],
            runs[name]["wall_s"],
        ]
        for name in ("native", "directory")
    ]
    text = table(
        f"Directory: {results['appointments']} appointments, {results['deliveries']} messages, "
        f"{results['workers']} workers; organizer mapped through the directory vs native",
        ["run", "Graph calls", "minimum", "per message", "errors", "wall s"],
        rows,
    )
    target = results["target"]
    text += (
        f"\n\nDirectory table calls in the directory run: {results['table_calls'] or 'none'} "
        f"= {results['table_reads_per_message']} per message (target 0, resolved organizers, "
        f"run {'within' if target['within_cache_minute'] else 'longer than'} the cache's "
        f"{results['cache_seconds']:.0f} s): {'MET' if target['zero_table_reads'] else 'NOT MET'}"
        f"\nGraph calls per message unchanged (native = directory = minimum): "
        f"{'MET' if target['graph_calls_unchanged'] else 'NOT MET'}"
    )
    return text
