"""Properties of azure.yaml and the GitHub workflows, asserted on the parsed YAML."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .bicep_tree import REPO_ROOT

# Secret names that would mean an Azure credential is stored in GitHub instead of OIDC.
CREDENTIAL_NAME = re.compile(
    r"CLIENT_SECRET|CREDENTIAL|PASSWORD|PUBLISH_PROFILE|ACCOUNT_KEY|CONNECTION_STRING|SAS",
    re.IGNORECASE,
)
SECRET_REF = re.compile(r"secrets\.([A-Za-z0-9_]+)")


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads a bare `on` key as the boolean True.
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), "triggers must be a mapping"
    return on


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps = job.get("steps", [])
    assert isinstance(steps, list)
    return steps


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [
        s for s in _steps(job) if str(s.get("uses", "")).lower().startswith(action.lower() + "@")
    ]


def _runs(job: dict[str, Any]) -> list[str]:
    return [str(s["run"]) for s in _steps(job) if "run" in s]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


# --- azure.yaml -------------------------------------------------------------------------------


def test_azure_yaml_service(azure_yaml: dict[Any, Any]) -> None:
    assert azure_yaml["services"] == {
        "api": {"project": ".", "language": "python", "host": "function"}
    }
    assert azure_yaml["infra"]["path"] == "infra"
    assert azure_yaml["infra"]["module"] == "main"
    assert (REPO_ROOT / "infra" / "main.bicep").is_file()


def test_azure_yaml_postprovision_hook_is_opt_in(azure_yaml: dict[Any, Any]) -> None:
    hook = azure_yaml["hooks"]["postprovision"]
    assert set(hook) == {"posix", "windows"}
    for platform, spec in hook.items():
        script = spec["run"]
        assert "GRANT_ACCESS_POLICY" in script, platform
        assert "scripts/grant-access-policy.ps1" in script, platform
        # Connect-MicrosoftTeams signs in interactively.
        assert spec["interactive"] is True, platform
    assert hook["posix"]["shell"] == "sh"
    assert hook["windows"]["shell"] == "pwsh"
    # Off unless the operator says "true": the posix test defaults the variable to false.
    assert '"${GRANT_ACCESS_POLICY:-false}" = "true"' in hook["posix"]["run"]
    assert (REPO_ROOT / "scripts" / "grant-access-policy.ps1").is_file()


def test_access_policy_script_is_idempotent_and_complete() -> None:
    text = (REPO_ROOT / "scripts" / "grant-access-policy.ps1").read_text(encoding="utf-8")
    for needle in (
        "New-CsApplicationAccessPolicy",
        "Get-CsApplicationAccessPolicy",
        "Grant-CsApplicationAccessPolicy",
        "-Global",
        "-Group",
        "ACCESS_POLICY_GROUP_ID",
        "ACCESS_POLICY_USERS",
        "ACCESS_POLICY_GLOBAL",
        "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
        "30 minutes",
    ):
        assert needle in text, needle


def test_access_policy_removal_leaves_another_apps_global_grant_alone() -> None:
    text = (REPO_ROOT / "scripts" / "grant-access-policy.ps1").read_text(encoding="utf-8")
    remove = text[text.index("if ($Remove) {") :]
    remove = remove[: remove.index("\n}\n")]
    reset = remove.index("Grant-CsApplicationAccessPolicy -Global -PolicyName $null")
    # The global branch reads the current tenant-wide instance before resetting it ...
    check = remove.index("Get-GlobalAppIds")
    assert check < reset
    assert "Get-CsApplicationAccessPolicy -Identity Global" in text
    # ... and resets it only when it is this policy, warning otherwise.
    assert "$isOurs" in remove[check:reset]
    assert "Write-Warning" in remove[check:reset]


# --- workflows --------------------------------------------------------------------------------


def test_expected_workflows_exist(workflows: dict[str, dict[Any, Any]]) -> None:
    assert {"ci.yml", "deploy.yml"} <= set(workflows)


def test_actions_are_pinned_to_a_version(workflows: dict[str, dict[Any, Any]]) -> None:
    for name, workflow in workflows.items():
        for job_name, job in workflow["jobs"].items():
            for step in _steps(job):
                uses = step.get("uses")
                if uses:
                    _, _, ref = str(uses).partition("@")
                    assert ref, (name, job_name, uses)
                    assert ref not in {"main", "master", "latest"}, (name, job_name, uses)


def test_no_stored_azure_credentials(workflows: dict[str, dict[Any, Any]]) -> None:
    for name, workflow in workflows.items():
        for text in _strings(workflow):
            for secret in SECRET_REF.findall(text):
                assert not CREDENTIAL_NAME.search(secret), f"{name} uses secrets.{secret}"


def test_ci_runs_tests_and_builds_bicep(workflows: dict[str, dict[Any, Any]]) -> None:
    ci = workflows["ci.yml"]
    assert {"push", "pull_request"} <= set(_triggers(ci))
    assert ci["permissions"] == {"contents": "read"}
    test = ci["jobs"]["test"]
    assert test["runs-on"] == "ubuntu-latest"
    (python,) = _uses(test, "actions/setup-python")
    assert str(python["with"]["python-version"]) == "3.11"
    (node,) = _uses(test, "actions/setup-node")
    assert str(node["with"]["node-version"]) == "20"
    assert "make test" in _runs(test)
    bicep_runs = _runs(ci["jobs"]["bicep"])
    assert any(r.strip() == "az bicep install" for r in bicep_runs)
    assert any("az bicep build --file infra/main.bicep" in r for r in bicep_runs)


def _permissions(workflow: dict[Any, Any], job: dict[str, Any]) -> dict[str, str]:
    """A job's effective token permissions: its own block, else the workflow's."""
    permissions = job.get("permissions", workflow.get("permissions"))
    assert isinstance(permissions, dict), "permissions must be an explicit mapping"
    return permissions


def _azure_login_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for s in _steps(job)
        if str(s.get("run", "")).startswith("azd auth login")
        or str(s.get("uses", "")).lower().startswith("azure/login@")
    ]


def _runs_tests(job: dict[str, Any]) -> bool:
    return any(re.search(r"\b(make test|pytest|npm (ci|test)|vitest)\b", r) for r in _runs(job))


def test_only_the_azure_login_job_can_mint_an_oidc_token(
    workflows: dict[str, dict[Any, Any]],
) -> None:
    for name, workflow in workflows.items():
        # Nothing is granted workflow-wide beyond reading the repository.
        assert workflow["permissions"] == {"contents": "read"}, name
        for job_name, job in workflow["jobs"].items():
            permissions = _permissions(workflow, job)
            assert set(permissions.values()) <= {"read", "write"}, (name, job_name)
            writes = {scope for scope, level in permissions.items() if level == "write"}
            if _azure_login_steps(job):
                assert permissions == {"contents": "read", "id-token": "write"}, (name, job_name)
                assert not _runs_tests(job), f"{name}:{job_name} logs in to Azure and runs tests"
            else:
                assert not writes, f"{name}:{job_name} needs no write scope: {writes}"
            if _runs_tests(job):
                assert "id-token" not in permissions, f"{name}:{job_name} runs tests with OIDC"


def test_deploy_uses_oidc_with_least_privilege(workflows: dict[str, dict[Any, Any]]) -> None:
    deploy = workflows["deploy.yml"]
    triggers = _triggers(deploy)
    assert triggers["push"]["branches"] == ["main"]
    assert "pull_request" not in triggers, "pull requests must never reach production"
    assert deploy["permissions"] == {"contents": "read"}
    assert "permissions" not in deploy["jobs"]["test"], "the test job keeps the read-only token"
    assert deploy["jobs"]["deploy"]["permissions"] == {"contents": "read", "id-token": "write"}
    assert deploy["concurrency"]["group"]
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_deploy_logs_in_with_azd_federated_credential(
    workflows: dict[str, dict[Any, Any]],
) -> None:
    job = workflows["deploy.yml"]["jobs"]["deploy"]
    # azd fetches a fresh GitHub assertion whenever it needs a token; an az CLI login made by
    # azure/login (reused through auth.useAzCliAuth) cannot be refreshed in a long run.
    assert not _uses(job, "azure/login"), "no az login: nothing in the job runs az"
    assert not any("useAzCliAuth" in r for r in _runs(job))
    assert not any(re.match(r"\s*az\s", r) for r in _runs(job))
    (login,) = _azure_login_steps(job)
    command = str(login["run"])
    assert '--client-id "$AZURE_CLIENT_ID"' in command
    assert '--tenant-id "$AZURE_TENANT_ID"' in command
    assert '--federated-credential-provider "github"' in command
    assert "--client-secret" not in command
    assert "--client-certificate" not in command
    env = job["env"]
    assert env["AZURE_CLIENT_ID"] == "${{ vars.AZURE_CLIENT_ID }}"
    assert env["AZURE_TENANT_ID"] == "${{ vars.AZURE_TENANT_ID }}"
    assert env["AZURE_SUBSCRIPTION_ID"] == "${{ vars.AZURE_SUBSCRIPTION_ID }}"
    assert not any("secrets." in s for s in _strings(login))


def test_deploy_tests_first_then_provisions_and_deploys(
    workflows: dict[str, dict[Any, Any]],
) -> None:
    jobs = workflows["deploy.yml"]["jobs"]
    assert "make test" in _runs(jobs["test"])
    deploy = jobs["deploy"]
    assert deploy["needs"] in ("test", ["test"])
    environment = deploy["environment"]
    assert environment["name"] if isinstance(environment, dict) else environment
    assert _uses(deploy, "Azure/setup-azd")
    runs = _runs(deploy)
    provision = [i for i, r in enumerate(runs) if r.startswith("azd provision")]
    ship = [i for i, r in enumerate(runs) if r.startswith("azd deploy")]
    assert provision
    assert ship
    assert provision[0] < ship[0]
    assert all("--no-prompt" in runs[i] for i in provision + ship)
    steps = _steps(deploy)
    setup_at = next(
        i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("Azure/setup-azd@")
    )
    login_at = next(
        i for i, s in enumerate(steps) if str(s.get("run", "")).startswith("azd auth login")
    )
    azd_at = next(i for i, s in enumerate(steps) if str(s.get("run", "")).startswith("azd prov"))
    assert setup_at < login_at < azd_at
