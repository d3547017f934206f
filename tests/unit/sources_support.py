"""Helpers shared by the source kinds' unit tests: fixtures, candidate checks, fuzz strategies."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.documents import AppointmentDocument, parse_document
from shared.sources.base import (
    Candidate,
    InvalidBody,
    Parsed,
    Refused,
    SourceConfig,
    SourceKind,
    UnsupportedMediaType,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
JSON_HEADERS = {"content-type": "application/json"}

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fixture(kind: str, name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((FIXTURES / kind / f"{name}.json").read_text("utf-8"))
    return value


def encode(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def valid_documents(parsed: Parsed) -> list[AppointmentDocument]:
    """Every candidate's document, each of which must pass the native validation."""
    documents = []
    for candidate in parsed.candidates:
        document = parse_document(candidate.document)
        assert isinstance(document, AppointmentDocument), document
        documents.append(document)
    return documents


def located_errors(candidate: Candidate) -> list[tuple[str, str]]:
    """The validation errors of an invalid candidate, each at its place in the delivery."""
    errors = parse_document(candidate.document)
    assert isinstance(errors, list), errors
    return [(candidate.locate(error.path), error.message) for error in errors]


def error_paths(error: InvalidBody) -> list[str]:
    return [e.path for e in error.errors]


def paths_in(value: object, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value inside a JSON value (the root excluded)."""
    found: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, object]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, child in items:
        path = (*prefix, key)
        found.append(path)
        found.extend(paths_in(child, path))
    return found


DEEP = "__deeply_nested__"

_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "2026-03-10T16:00:00", "2026-13-40T99:99:99Z", "+1 206 555", DEEP])
    | st.builds(
        lambda char, n: char * n,
        st.sampled_from(["a", "9", "+", "é", "\u0000", "/", "\ud800"]),
        st.integers(min_value=200, max_value=70_000),
    )
)
json_values = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def broken_bodies(draw: st.DrawFn, fixtures: list[dict[str, Any]]) -> bytes:
    """A body that breaks the fixtures' shapes: mutated fixtures, any JSON, deep nesting or
    bytes that are no JSON at all."""
    choice = draw(st.integers(min_value=0, max_value=9))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        depth = draw(st.integers(min_value=1, max_value=5000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if choice == 2:
        value: object = draw(json_values)
    else:
        value = copy.deepcopy(draw(st.sampled_from(fixtures)))
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            paths = paths_in(value)
            if not paths:
                break
            path = draw(st.sampled_from(paths))
            parent: Any = value
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(json_values)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    depth = draw(st.integers(min_value=1, max_value=3000))
    text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    return text.encode("utf-8", "surrogatepass")


def parse_or_refusal(
    kind: SourceKind, body: bytes, config: SourceConfig
) -> Parsed | UnsupportedMediaType | InvalidBody | Refused:
    """What `parse` makes of a body: Parsed, or one of the refusals it may raise (and no other
    exception, which propagates and fails the test)."""
    try:
        return kind.parse(JSON_HEADERS, body, config)
    except (UnsupportedMediaType, InvalidBody, Refused) as error:
        return error


def check_refused_cleanly(kind: SourceKind, body: bytes, config: SourceConfig) -> None:
    """`parse` refuses `body` with pointers, or reads it into documents the validation can
    judge, each error locatable in the delivery."""
    result = parse_or_refusal(kind, body, config)
    if isinstance(result, InvalidBody | Refused):
        assert result.errors
        assert all(e.path == "" or e.path.startswith("/") for e in result.errors)
        return
    if isinstance(result, UnsupportedMediaType):
        return
    assert isinstance(result, Parsed)
    for candidate in result.candidates:
        verdict = parse_document(candidate.document)
        if isinstance(verdict, list):
            assert all(candidate.locate(e.path).startswith("/") for e in verdict)
        json.dumps(candidate.document)
