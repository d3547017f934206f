"""Shared fixtures for the infrastructure tests: parsed Bicep trees and YAML documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .bicep_tree import REPO_ROOT, Tree, parse_all


@pytest.fixture(scope="session")
def bicep() -> dict[str, Tree]:
    return parse_all()


def load_yaml(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


@pytest.fixture(scope="session")
def azure_yaml() -> dict[Any, Any]:
    return load_yaml(REPO_ROOT / "azure.yaml")


@pytest.fixture(scope="session")
def workflows() -> dict[str, dict[Any, Any]]:
    folder = REPO_ROOT / ".github" / "workflows"
    return {p.name: load_yaml(p) for p in sorted(folder.glob("*.yml"))}
