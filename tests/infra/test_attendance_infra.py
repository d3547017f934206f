"""Infrastructure of attendance (SPEC "After the appointment: attendance"): the Graph app role
that reads attendance reports behind `enableAttendance` (on by default now that the app checks
attendance after every appointment), the app setting that switches the checks off without it,
and the check's queues, asserted on the Bicep."""

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


def test_enable_attendance_is_on_by_default_everywhere_now_that_the_app_reads_attendance() -> None:
    graph = tree(GRAPH_MODULE)
    parameter = graph["parameters"]["enableAttendance"]
    assert (parameter["type"], parameter["default"]) == ("bool", True)
    assert _main()["parameters"]["enableAttendance"]["type"] == "bool"
    assert _main()["parameters"]["enableAttendance"]["default"] is True
    main_text = (INFRA_DIR / "main.bicep").read_text(encoding="utf-8")
    assert "not wired" not in main_text
    assert "not wired" not in (INFRA_DIR / GRAPH_MODULE).read_text(encoding="utf-8")
    assert _module_params("graphPermissions")["enableAttendance"] == "enableAttendance"
    assert _module_params("api")["enableAttendance"] == "enableAttendance"
    params = load_json("main.parameters.json")["parameters"]
    assert params["enableAttendance"]["value"] == "${ENABLE_ATTENDANCE=true}"


def test_without_the_role_the_app_is_told_to_schedule_no_checks() -> None:
    api = tree("app/api.bicep")
    assert api["parameters"]["enableAttendance"]["default"] is True
    text = (INFRA_DIR / "app/api.bicep").read_text(encoding="utf-8")
    assert "enableAttendance ? {} : { ATTENDANCE_ENABLED: 'false' }" in text
    assert "attendanceSetting)" in text


def test_the_attendance_queues_are_declared_with_the_app_s_names() -> None:
    from shared.settings import ATTENDANCE_POISON_QUEUE_NAME, ATTENDANCE_QUEUE_NAME

    storage = tree("app/storage.bicep")
    assert storage["parameters"]["attendanceQueueName"]["default"] == ATTENDANCE_QUEUE_NAME
    assert (
        storage["parameters"]["attendancePoisonQueueName"]["default"]
        == ATTENDANCE_POISON_QUEUE_NAME
    )
    assert {"attendanceQueue", "attendancePoisonQueue"} <= set(storage["resources"])
    storage_params = _module_params("storage")
    assert storage_params["attendanceQueueName"] == "attendanceQueueName"
    assert storage_params["attendancePoisonQueueName"] == "attendancePoisonQueueName"
    variables = _main()["variables"]
    assert variables["attendanceQueueName"]["value"] == ATTENDANCE_QUEUE_NAME
    assert variables["attendancePoisonQueueName"]["value"] == ATTENDANCE_POISON_QUEUE_NAME


def test_granted_roles_output_names_the_attendance_role() -> None:
    graph = tree(GRAPH_MODULE)
    assert "attendanceRoles" in graph["variables"]
    text = (INFRA_DIR / GRAPH_MODULE).read_text(encoding="utf-8")
    assert "concat(baseRoles, smsRoles, mailRoles, attendanceRoles)" in text


def test_deploy_workflow_passes_enable_attendance(workflows: dict[str, dict[Any, Any]]) -> None:
    env = workflows["deploy.yml"]["jobs"]["deploy"]["env"]
    assert env["ENABLE_ATTENDANCE"] == "${{ vars.ENABLE_ATTENDANCE || 'true' }}"
