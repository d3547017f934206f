"""RFC 9457 problem details: the one shape every error of the HTTP API takes. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from shared.documents import FieldError

MEDIA_TYPE = "application/problem+json"
VALIDATION_TYPE = "urn:virtual-appointments:problem:validation"


@dataclass(frozen=True)
class Problem:
    """A problem response; `errors` lists field failures as `{path, message}`."""

    status: int
    detail: str
    title: str = ""
    type: str = "about:blank"
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, instance: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": self.type,
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            document["instance"] = instance
        if self.errors:
            document["errors"] = [{"path": e.path, "message": e.message} for e in self.errors]
        return document

    def to_bytes(self, instance: str | None = None) -> bytes:
        return json.dumps(self.body(instance), ensure_ascii=False).encode("utf-8")


def validation_problem(detail: str, errors: list[FieldError]) -> Problem:
    """400 for a body whose fields break the contract."""
    return Problem(400, detail, title="Invalid request body", type=VALIDATION_TYPE, errors=errors)
