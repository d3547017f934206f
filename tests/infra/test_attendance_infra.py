"""Infrastructure of attendance (SPEC "After the appointment: attendance"): the Graph app role
that reads attendance reports, off by default behind `enableAttendance` until the app reads
attendance, asserted on the Bicep."""

from __future__ import annotations

from typing import Any

from .bicep_tree import INFRA_DIR, body, condition, load_json, tree
from .test_bicep import (
    ATTENDANCE_ROLE,
    GRAPH_MODULE,
    _graph_assignments,
    _main,
    _module_params,
    _role_value,
)

# Microsoft Graph's id of the role (the same in every tenant); looked up by value, never pasted.
ATTENDANCE_ROLE_ID = "df01ed3b-eb61-4eca-9965-6b3d789751b2"


def test_attendance_role_is_granted_only_with_enable_attendance() -> None:
    (name,) = [n for n, a in _graph_assignments().items() if _role_value(a) == ATTENDANCE_ROLE]
    assignment = _graph_assignments()[name]
    assert condition(assignment) == "enableAttendance"
    config = body(assignment)
    assert config["principalId"] == "principalId"
    # The role is named in a comment next to it, with its id, as the other grants are.
    text = (INFRA_DIR / GRAPH_MODULE).read_text(encoding="utf-8")
    assert ATTENDANCE_ROLE_ID in text
    assert "attendanceReports" in text


def test_enable_attendance_is_off_by_default_everywhere_until_the_app_reads_attendance() -> None:
    graph = tree(GRAPH_MODULE)
    parameter = graph["parameters"]["enableAttendance"]
    assert (parameter["type"], parameter["default"]) == ("bool", False)
    assert _main()["parameters"]["enableAttendance"]["type"] == "bool"
    assert _main()["parameters"]["enableAttendance"]["default"] is False
    assert _module_params("graphPermissions")["enableAttendance"] == "enableAttendance"
    params = load_json("main.parameters.json")["parameters"]
    assert params["enableAttendance"]["value"] == "${ENABLE_ATTENDANCE=false}"


def test_granted_roles_output_names_the_attendance_role() -> None:
    graph = tree(GRAPH_MODULE)
    assert "attendanceRoles" in graph["variables"]
    text = (INFRA_DIR / GRAPH_MODULE).read_text(encoding="utf-8")
    assert "concat(baseRoles, smsRoles, mailRoles, attendanceRoles)" in text


def test_deploy_workflow_passes_enable_attendance(workflows: dict[str, dict[Any, Any]]) -> None:
    env = workflows["deploy.yml"]["jobs"]["deploy"]["env"]
    assert env["ENABLE_ATTENDANCE"] == "${{ vars.ENABLE_ATTENDANCE || 'false' }}"
