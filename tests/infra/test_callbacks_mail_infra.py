"""Infrastructure of signed callbacks and client e-mail (SPEC "Back to the scheduling system:
signed callbacks", "Client e-mail with a calendar invite"), asserted on the parsed Bicep."""

from __future__ import annotations

from typing import Any

from shared.sources.base import DEFAULT_SOURCE

from .bicep_tree import (
    INFRA_DIR,
    REPO_ROOT,
    accessor_path,
    body,
    condition,
    decorator_types,
    functions,
    load_json,
    resolve,
    resources,
    strings,
    tree,
)
from .test_bicep import (
    CALLBACK_POISON_QUEUE,
    CALLBACK_QUEUE,
    GRAPH_MODULE,
    MAIL_ROLE,
    SOURCES_MODULE,
    _app_settings,
    _app_settings_union,
    _graph_assignments,
    _lambda,
    _main,
    _module_params,
    _role_value,
)

KV_URI = "https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${"


def _operands(node: Any) -> dict[str, Any]:
    operands: dict[str, Any] = node["operator"]["operands"]
    return operands


# --- client e-mail ----------------------------------------------------------------------------


def test_mail_send_is_granted_only_with_client_email() -> None:
    graph = tree(GRAPH_MODULE)
    (name,) = [n for n, a in _graph_assignments().items() if _role_value(a) == MAIL_ROLE]
    gate = condition(_graph_assignments()[name])
    assert gate["operator"]["type"] == "and"
    assert _operands(gate) == {"operand_1": "enableClientEmail", "operand_2": "grantEntraMailSend"}
    assert graph["parameters"]["enableClientEmail"]["default"] is False
    # RBAC for Applications adds to an Entra grant: the switch that leaves it out is documented.
    assert graph["parameters"]["grantEntraMailSend"]["type"] == "bool"
    text = (INFRA_DIR / GRAPH_MODULE).read_text(encoding="utf-8")
    assert "learn.microsoft.com/exchange/permissions-exo/application-rbac" in text
    passed = _module_params("graphPermissions")
    assert passed["enableClientEmail"] == "enableClientEmail"
    assert passed["grantEntraMailSend"] == "grantEntraMailSend"
    params = _main()["parameters"]
    assert params["enableClientEmail"]["type"] == "bool"
    assert params["enableClientEmail"]["default"] is False
    assert params["grantEntraMailSend"]["default"] is True
    assert params["mailSender"]["default"] == ""
    # The output lists Mail.Send under the same gate.
    mail_roles = graph["variables"]["mailRoles"]["value"]
    assert _operands(mail_roles)["true_value"] == [MAIL_ROLE]
    assert _operands(mail_roles)["false_value"] == []
    assert _operands(_operands(mail_roles)["condition"]) == _operands(gate)


def test_mail_sender_setting_only_with_client_email() -> None:
    api = tree("app/api.bicep")
    assert "MAIL_SENDER" not in _app_settings()
    assert _app_settings_union()["arg_3"] == "optionalSettings"
    optional = api["variables"]["optionalSettings"]["value"]["function"]
    assert optional["type"] == "union"
    assert set(optional["parameters"].values()) == {
        "retrySetting",
        "mailSetting",
        "attendanceSetting",
    }
    mail = _operands(api["variables"]["mailSetting"]["value"])
    assert mail["true_value"] == {"MAIL_SENDER": "mailSender"}
    assert mail["false_value"] == {}
    gate = mail["condition"]
    assert gate["operator"]["type"] == "and"
    assert _operands(gate)["operand_1"] == "enableClientEmail"
    assert "empty" in functions(_operands(gate)["operand_2"])
    assert api["parameters"]["enableClientEmail"]["default"] is False
    assert api["parameters"]["mailSender"]["default"] == ""
    passed = _module_params("api")
    assert passed["enableClientEmail"] == "enableClientEmail"
    assert passed["mailSender"] == "mailSender"


def test_callback_retry_schedule_only_when_set() -> None:
    api = tree("app/api.bicep")
    retry = _operands(api["variables"]["retrySetting"]["value"])
    assert functions(retry["condition"]) == ["empty"]
    assert retry["true_value"] == {}
    assert retry["false_value"] == {"CALLBACK_RETRY_SCHEDULE": "callbackRetrySchedule"}
    assert api["parameters"]["callbackRetrySchedule"]["default"] == ""
    assert _main()["parameters"]["callbackRetrySchedule"]["default"] == ""
    assert _module_params("api")["callbackRetrySchedule"] == "callbackRetrySchedule"


# --- callbacks --------------------------------------------------------------------------------


def test_callback_sources_are_the_named_ones_with_a_url_and_the_default_one() -> None:
    variables = tree(SOURCES_MODULE)["variables"]
    assert resolve(tree(SOURCES_MODULE), "defaultSourceName") == DEFAULT_SOURCE
    combined = variables["callbackSources"]["value"]["function"]
    assert combined["type"] == "concat"
    assert list(combined["parameters"].values()) == ["namedCallbacks", "defaultCallback"]
    named = variables["namedCallbacks"]["value"]["function"]
    assert named["type"] == "map"
    picked = named["parameters"]["arg_1"]["function"]
    assert (picked["type"], picked["parameters"]["input_array"]) == ("filter", "sources")
    assert "empty" in functions(picked["parameters"]["expression"])
    default = _operands(variables["defaultCallback"]["value"])
    assert default["condition"]["function"]["parameters"]["item_to_test"] == "defaultCallbackUrl"
    assert default["true_value"] == []
    assert default["false_value"] == [{"name": "defaultSourceName", "url": "defaultCallbackUrl"}]
    assert tree(SOURCES_MODULE)["parameters"]["defaultCallbackUrl"]["default"] == ""
    assert _module_params("sourceConfig")["defaultCallbackUrl"] == "callbackUrl"
    assert _main()["parameters"]["callbackUrl"]["default"] == ""


def test_callback_settings_are_a_url_and_a_versionless_key_vault_reference() -> None:
    variables = tree(SOURCES_MODULE)["variables"]
    builder = variables["callbackSettings"]["value"]["function"]
    assert builder["type"] == "flatten"
    index, entries = _lambda(
        builder["parameters"]["array_to_flattern"]["function"]["parameters"]["arg_2"]
    )
    by_key = {e["key"]: e["value"] for e in entries}
    prefix = "SOURCES__${callbackSources[" + index + "].name}__"
    assert set(by_key) == {prefix + "CALLBACKURL", prefix + "CALLBACKSECRETS"}
    assert accessor_path(by_key[prefix + "CALLBACKURL"]["operator"]["operands"]["operand_2"]) == [
        "url"
    ]
    # A reference, never a value, and without a version so rotations are followed.
    assert by_key[prefix + "CALLBACKSECRETS"] == (
        "@Microsoft.KeyVault(SecretUri=${callbackReferenceUris[" + index + "]})"
    )
    uris = variables["callbackReferenceUris"]["value"]["function"]
    assert uris["parameters"]["arg_1"] == "callbackEntryNames"
    name, uri = _lambda(uris["parameters"]["arg_2"])
    assert uri == KV_URI + name + "}"
    names = variables["callbackEntryNames"]["value"]["function"]
    item, secret_name = _lambda(names["parameters"]["arg_2"])
    assert secret_name == "source-${" + item + ".name}-callback-secrets"
    # They reach the function app through the sources' appSettings output.
    combined = variables["entries"]["value"]["function"]["parameters"]["input_array"]
    assert "callbackSettings" in strings(combined)


def test_callback_secrets_live_in_key_vault_from_secure_parameters() -> None:
    kv = tree("app/keyvault.bicep")
    secret = resources(kv, "Microsoft.KeyVault/vaults/secrets")["callbackSecret"]
    loop = secret["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "callbackNames"
    cfg = body(secret)
    assert cfg["parent"] == "vault"
    assert _operands(cfg["name"]) == {
        "operand_1": "callbackEntryNames",
        "operand_2": loop["index_name"],
    }
    assert _operands(cfg["properties"]["value"]) == {
        "operand_1": "callbackSecrets",
        "operand_2": loop["item_name"],
    }
    assert "secure" in decorator_types(kv["parameters"]["callbackSecrets"])
    out = kv["outputs"]["callbackEntryNames"]["value"]
    assert out["loop_type"]["detail"]["array_name"] == "callbackNames"

    passed = _module_params("keyVault")
    assert accessor_path(passed["callbackNames"]) == ["sourceConfig", "outputs", "callbackNames"]
    assert accessor_path(passed["callbackEntryNames"]) == [
        "sourceConfig",
        "outputs",
        "callbackEntryNames",
    ]
    merged = passed["callbackSecrets"]["function"]
    assert merged["type"] == "union"
    named, default = merged["parameters"]["arg_1"], merged["parameters"]["arg_2"]
    assert "json" in functions(named)
    assert "sourceCallbackSecrets" in strings(named)
    # The default source's secrets, under its name, only when it has a callback URL.
    assert _operands(default)["true_value"] == {}
    assert _operands(default)["false_value"] == {DEFAULT_SOURCE: "callbackSecrets"}
    assert "callbackUrl" in strings(_operands(default)["condition"])
    for pname in ("sourceCallbackSecrets", "callbackSecrets"):
        param = _main()["parameters"][pname]
        assert param["type"] == "string", pname
        assert "secure" in decorator_types(param), pname
        assert param["default"] == "", pname


def test_callback_secrets_user_is_scoped_to_each_callback_secret() -> None:
    rbac = tree("app/rbac.bicep")
    entries = rbac["resources"]["callbackEntries"]
    assert entries["existing"]
    assert entries["type"] == "Microsoft.KeyVault/vaults/secrets"
    assert entries["config"]["loop_type"]["detail"]["array_name"] == "callbackEntryNames"
    grant = rbac["resources"]["callbackSecretsUser"]
    assert grant["config"]["loop_type"]["detail"]["array_name"] == "callbackEntryNames"
    scope = body(grant)["scope"]["operator"]
    assert scope["type"] == "index_accessor"
    assert scope["operands"]["operand_1"] == "callbackEntries"
    # The grants wait for the deployed secrets (an output of their loop).
    assert accessor_path(_module_params("rbac")["callbackEntryNames"]) == [
        "keyVault",
        "outputs",
        "callbackEntryNames",
    ]


def test_callback_queues_exist() -> None:
    storage = tree("app/storage.bicep")
    queues = resources(storage, "Microsoft.Storage/storageAccounts/queueServices/queues")
    names = {resolve(storage, body(q)["name"]) for q in queues.values()}
    assert {CALLBACK_QUEUE, CALLBACK_POISON_QUEUE} <= names
    passed = _module_params("storage")
    assert resolve(_main(), passed["callbackQueueName"]) == CALLBACK_QUEUE
    assert resolve(_main(), passed["callbackPoisonQueueName"]) == CALLBACK_POISON_QUEUE
    # The queue role is on the account, so it covers these queues.
    assert body(tree("app/rbac.bicep")["resources"]["queueContributor"])["scope"] == "storage"


# --- azd and the workflow ---------------------------------------------------------------------

AZD_VARIABLES = {
    # parameter: its value in main.parameters.json
    "sourceCallbackSecrets": "${SOURCE_CALLBACK_SECRETS}",
    "callbackUrl": "${CALLBACK_URL=}",
    "callbackSecrets": "${CALLBACK_SECRETS}",
    "callbackRetrySchedule": "${CALLBACK_RETRY_SCHEDULE=}",
    "enableClientEmail": "${ENABLE_CLIENT_EMAIL=false}",
    "mailSender": "${MAIL_SENDER=}",
    "grantEntraMailSend": "${GRANT_ENTRA_MAIL_SEND=true}",
}


def test_parameters_file_maps_the_new_azd_variables() -> None:
    params = load_json("main.parameters.json")["parameters"]
    for name, value in AZD_VARIABLES.items():
        assert params[name]["value"] == value, name
        assert name in _main()["parameters"], name


def test_deploy_workflow_passes_the_new_azd_variables(
    workflows: dict[str, dict[Any, Any]],
) -> None:
    job = workflows["deploy.yml"]["jobs"]["deploy"]
    env = job["env"]
    assert env["ENABLE_CLIENT_EMAIL"] == "${{ vars.ENABLE_CLIENT_EMAIL || 'false' }}"
    assert env["MAIL_SENDER"] == "${{ vars.MAIL_SENDER }}"
    assert env["GRANT_ENTRA_MAIL_SEND"] == "${{ vars.GRANT_ENTRA_MAIL_SEND || 'true' }}"
    assert env["CALLBACK_URL"] == "${{ vars.CALLBACK_URL }}"
    assert env["CALLBACK_RETRY_SCHEDULE"] == "${{ vars.CALLBACK_RETRY_SCHEDULE }}"
    (provision,) = [s for s in job["steps"] if str(s.get("run", "")).startswith("azd provision")]
    # The secrets only where azd provision reads them, from GitHub secrets, never variables.
    assert provision["env"]["SOURCE_CALLBACK_SECRETS"] == "${{ secrets.SOURCE_CALLBACK_SECRETS }}"
    assert provision["env"]["CALLBACK_SECRETS"] == "${{ secrets.CALLBACK_SECRETS }}"
    assert "CALLBACK_SECRETS" not in env
    assert "SOURCE_CALLBACK_SECRETS" not in env


# --- the Exchange scoping script --------------------------------------------------------------


def test_mail_scope_script_covers_both_methods() -> None:
    text = (REPO_ROOT / "scripts" / "grant-mail-scope.ps1").read_text(encoding="utf-8")
    for needle in (
        "ExchangeOnlineManagement",
        "New-ServicePrincipal",
        "-ObjectId",
        "New-ManagementScope",
        "-RecipientRestrictionFilter",
        "New-ManagementRoleAssignment",
        "-Role 'Application Mail.Send'",
        "-CustomResourceScope",
        "Test-ServicePrincipalAuthorization",
        "New-ApplicationAccessPolicy",
        "-AccessRight RestrictAccess",
        "-PolicyScopeGroupId",
        "Test-ApplicationAccessPolicy",
        "[switch] $Legacy",
        "$ServicePrincipalObjectId",
        "$Mailbox",
        "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
        "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID",
        "MAIL_SENDER",
        "GRANT_ENTRA_MAIL_SEND",
        "application-rbac",
    ):
        assert needle in text, needle
