"""The sample sources and organizer directory that `make run` sets up. Standard library only.

Why here and not in local.settings.json: a developer's existing local.settings.json (copied from
the sample before sources existed) would never get them, and the CLI needs the same names and
secrets to sign with. `devtools.run` adds a source only when the settings name no
`SOURCES__{name}__...` for it, so anything in local.settings.json wins; `devtools.cli` falls back
to these secrets for the same reason. They are local development values, not secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ALEX: Final = "alex.wilber@contoso.onmicrosoft.com"
MEGAN: Final = "megan.bowen@contoso.onmicrosoft.com"


@dataclass(frozen=True)
class SampleSource:
    """One source `make run` configures, as app settings."""

    name: str
    kind: str
    secret: str
    time_zone: str | None = None

    def settings(self) -> dict[str, str]:
        prefix = f"SOURCES__{self.name}__"
        values = {prefix + "KIND": self.kind, prefix + "SECRETS": self.secret}
        if self.time_zone:
            values[prefix + "TIMEZONE"] = self.time_zone
        return values


SOURCES: Final = (
    SampleSource("epic", "hl7v2", "local-hl7-secret-change-me", "America/New_York"),
    SampleSource("booking", "calendly", "local-calendly-secret-change-me"),
    SampleSource("cal", "calcom", "local-calcom-secret-change-me"),
    SampleSource("clinic", "native", "local-clinic-secret-change-me"),
)

# (source, identifier, user): the seeded emulator organizers under the HL7 source's ids, so an
# SIU message whose AIP-3 is 1234 becomes a meeting of Alex. Calendly and Cal.com name hosts by
# e-mail, which resolves as a UPN without an entry.
DIRECTORY: Final = (
    ("epic", "1234", ALEX),
    ("epic", "5678", MEGAN),
)


def configured_source_names(values: Mapping[str, str]) -> set[str]:
    """Lower-case names of every source the settings already configure."""
    names: set[str] = set()
    for key in values:
        parts = key.split("__")
        if len(parts) == 3 and parts[0].upper() == "SOURCES":
            names.add(parts[1].lower())
    return names


def missing_source_settings(values: Mapping[str, str]) -> dict[str, str]:
    """The settings of the sample sources that `values` does not configure itself."""
    present = configured_source_names(values)
    added: dict[str, str] = {}
    for source in SOURCES:
        if source.name not in present:
            added.update(source.settings())
    return added


def sample_secret(source: str) -> str | None:
    """The sample secret of a sample source, by name (case-insensitive)."""
    for sample in SOURCES:
        if sample.name == source.lower():
            return sample.secret
    return None
