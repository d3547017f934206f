"""Source kinds: one module per kind, and the registry that maps a kind's name to it.

A new kind is a module implementing `base.SourceKind` and one line below (and its name in
`base.KINDS`, which the settings check).
"""

from __future__ import annotations

from shared.sources import calcom, calendly, hl7v2, native
from shared.sources.base import SourceKind

REGISTRY: dict[str, SourceKind] = {
    "native": native.KIND,
    "hl7v2": hl7v2.KIND,
    "calendly": calendly.KIND,
    "calcom": calcom.KIND,
}


def kind(name: str) -> SourceKind:
    """The module for a configured kind (settings only let known kinds through)."""
    return REGISTRY[name]
