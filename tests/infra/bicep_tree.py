"""Helpers over the JSON trees pycep-parser makes of the Bicep files under infra/.

pycep gives a plain dict per file: ``parameters``, ``variables``, ``resources``, ``modules``,
``outputs``, ``extensions``. A bare identifier (a parameter, a variable, a resource's symbolic
name) and a string literal both come back as ``str``; interpolated strings keep their ``${...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"

Tree = dict[str, Any]


@cache
def parse_all() -> dict[str, Tree]:
    """Every .bicep file under infra/, keyed by its path relative to infra/ (posix)."""
    parser = BicepParser()
    trees: dict[str, Tree] = {}
    for path in sorted(INFRA_DIR.rglob("*.bicep")):
        trees[path.relative_to(INFRA_DIR).as_posix()] = dict(parser.parse(file_path=path))
    return trees


def tree(name: str) -> Tree:
    """The parsed tree of one file, e.g. ``tree("app/api.bicep")``."""
    return parse_all()[name]


def load_json(name: str) -> dict[str, Any]:
    data = json.loads((INFRA_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The object body of a resource or module, under any ``if (...)`` or ``for`` wrapper."""
    config: dict[str, Any] = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def condition(declaration: dict[str, Any]) -> Any:
    """The ``if (...)`` expression of a resource or module, or None when unconditional."""
    return declaration["config"].get("condition")


def resources(t: Tree, rtype: str, *, existing: bool = False) -> dict[str, dict[str, Any]]:
    """Resources of one type (case-insensitive), new ones by default, by symbolic name."""
    return {
        name: res
        for name, res in t.get("resources", {}).items()
        if res["type"].lower() == rtype.lower() and bool(res["existing"]) == existing
    }


def all_resources(rtype: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(file, symbolic name, resource) for every new resource of a type across infra/."""
    return [
        (file, name, res)
        for file, t in parse_all().items()
        for name, res in resources(t, rtype).items()
    ]


def only_resource(rtype: str) -> tuple[str, dict[str, Any]]:
    """The one file and resource of a type; fails when there are none or several."""
    found = all_resources(rtype)
    assert len(found) == 1, f"expected exactly one {rtype}, found {[(f, n) for f, n, _ in found]}"
    file, _, res = found[0]
    return file, res


def resolve(t: Tree, node: Any) -> Any:
    """Follow a bare variable or parameter name to its value or default; else the node itself."""
    seen: set[str] = set()
    while isinstance(node, str) and node not in seen:
        seen.add(node)
        if node in t.get("variables", {}):
            node = t["variables"][node]["value"]
        elif node in t.get("parameters", {}):
            node = t["parameters"][node]["default"]
        else:
            break
    return node


def walk(node: Any) -> Iterator[Any]:
    """Every node of a subtree, depth first, keys of dicts excluded."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def strings(node: Any) -> list[str]:
    return [n for n in walk(node) if isinstance(n, str)]


def functions(node: Any) -> list[str]:
    """Names of every function called in a subtree (pycep's snake_case names)."""
    return [
        n["function"]["type"]
        for n in walk(node)
        if isinstance(n, dict) and isinstance(n.get("function"), dict)
    ]


def accessor_path(node: Any) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]`` for a property-accessor chain; [] for anything else."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        head = accessor_path(operands["operand_1"])
        tail = accessor_path(operands["operand_2"])
        return head + tail if head and tail else []
    return []


def decorator_types(param: dict[str, Any]) -> set[str]:
    return {d["type"] for d in param.get("decorators", [])}
