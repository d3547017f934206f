"""RETENTION_DAYS in the infrastructure (SPEC "Operations"): a parameter, default 30, passed to
the app setting the daily retention pass reads, within the bounds the app validates."""

from __future__ import annotations

from typing import Any

from shared.retention import DEFAULT_DAYS, MAX_DAYS

from .bicep_tree import load_json, tree
from .test_bicep import _app_settings, _main, _module_params


def _bounds(declaration: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in declaration["decorators"]}


def test_retention_days_is_a_bounded_parameter_with_the_app_default() -> None:
    for parameters in (tree("app/api.bicep")["parameters"], _main()["parameters"]):
        declaration = parameters["retentionDays"]
        assert declaration["type"] == "int"
        assert declaration["default"] == DEFAULT_DAYS
        bounds = _bounds(declaration)
        assert (bounds["min_value"], bounds["max_value"]) == (0, MAX_DAYS)
        assert "RETENTION_DAYS" in bounds["description"]
    assert _module_params("api")["retentionDays"] == "retentionDays"


def test_retention_days_is_always_written_as_an_app_setting() -> None:
    setting = _app_settings()["RETENTION_DAYS"]
    assert setting == {
        "function": {"type": "string", "parameters": {"value_to_convert": "retentionDays"}}
    }


def test_azd_and_the_deploy_workflow_pass_retention_days(
    workflows: dict[str, dict[Any, Any]],
) -> None:
    params = load_json("main.parameters.json")["parameters"]
    assert params["retentionDays"]["value"] == "${RETENTION_DAYS=30}"
    env = workflows["deploy.yml"]["jobs"]["deploy"]["env"]
    assert env["RETENTION_DAYS"] == "${{ vars.RETENTION_DAYS || '30' }}"
