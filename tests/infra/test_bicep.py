"""Properties of the deployment, asserted on the parsed Bicep (pycep-parser), not on text.

Text is read only where the parse tree cannot answer: comments (which name each role GUID).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.health import TABLE_NAME as HEALTH_TABLE_NAME
from shared.settings import (
    _SOURCE_SETTINGS,
    DIRECTORY_TABLE_NAME,
    POISON_QUEUE_NAME,
    QUEUE_NAME,
    TABLE_NAME,
    queue_semantics,
)
from shared.sources.base import DEFAULT_SOURCE, KINDS

from .bicep_tree import (
    INFRA_DIR,
    REPO_ROOT,
    Tree,
    accessor_path,
    all_resources,
    body,
    condition,
    decorator_types,
    functions,
    load_json,
    only_resource,
    parse_all,
    resolve,
    resources,
    strings,
    tree,
    walk,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# SPEC "Back to the scheduling system: signed callbacks".
CALLBACK_QUEUE = "appointment-callbacks"
CALLBACK_POISON_QUEUE = "appointment-callbacks-poison"
ATTENDANCE_QUEUE = "appointment-attendance"
ATTENDANCE_POISON_QUEUE = "appointment-attendance-poison"
GRAPH_MODULE = "app/graph-permissions.bicep"
SOURCES_MODULE = "app/sources.bicep"

# Built-in Azure role definition ids the app's identity must hold, by role name.
BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
KV_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
ROLE_NAMES = {
    BLOB_DATA_OWNER: "Storage Blob Data Owner",
    QUEUE_DATA_CONTRIBUTOR: "Storage Queue Data Contributor",
    TABLE_DATA_CONTRIBUTOR: "Storage Table Data Contributor",
    METRICS_PUBLISHER: "Monitoring Metrics Publisher",
    KV_SECRETS_USER: "Key Vault Secrets User",
}
# Broad roles that would break least privilege if they showed up anywhere.
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
}

GRAPH_ROLES = {
    "VirtualAppointment.ReadWrite.All",
    "OnlineMeetings.ReadWrite.All",
    "User.ReadBasic.All",
}
SMS_ROLE = "VirtualAppointmentNotification.Send"
MAIL_ROLE = "Mail.Send"
ATTENDANCE_ROLE = "OnlineMeetingArtifact.Read.All"

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _main() -> Tree:
    return tree("main.bicep")


def _module_params(module: str) -> dict[str, Any]:
    """The params main.bicep passes to the module declared as `module <module> ...`."""
    params: dict[str, Any] = body(_main()["modules"][module])["params"]
    return params


# --- the files ------------------------------------------------------------------------------


def test_every_bicep_file_parses_and_is_used(bicep: dict[str, Tree]) -> None:
    assert {"main.bicep", GRAPH_MODULE} <= set(bicep)
    referenced = {m["detail"]["path"] for m in _main()["modules"].values()}
    # Every module main.bicep names exists, and every file under infra/app is a used module.
    assert referenced == {name for name in bicep if name != "main.bicep"}
    assert all(m["type"] == "local" for m in _main()["modules"].values())


def test_main_is_subscription_scoped_and_creates_its_resource_group() -> None:
    assert _main()["globals"]["scope"]["value"] == "subscription"
    assert resources(_main(), "Microsoft.Resources/resourceGroups")
    for name, module in _main()["modules"].items():
        assert body(module)["scope"] == "rg", f"module {name} must deploy into the app's group"


def test_parameters_file_matches_main() -> None:
    params = load_json("main.parameters.json")["parameters"]
    declared = _main()["parameters"]
    assert set(params) <= set(declared), "main.parameters.json names unknown parameters"
    required = {n for n, p in declared.items() if p["default"] is None}
    assert required <= set(params), f"required parameters missing: {required - set(params)}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    # The secret comes from the azd environment, never a literal in the repository.
    assert params["webhookSecrets"]["value"] == "${WEBHOOK_SECRETS}"
    assert params["sourceSecrets"]["value"] == "${SOURCE_SECRETS}"
    # No named source unless the operator lists them; the file holds no secret for them.
    assert params["sources"]["value"] == []


# --- storage ----------------------------------------------------------------------------------


def test_storage_account_is_locked_down() -> None:
    _, account = only_resource("Microsoft.Storage/storageAccounts")
    props = body(account)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props.get("allowCrossTenantReplication") is False


def test_deployment_container_is_private() -> None:
    _, container = only_resource("Microsoft.Storage/storageAccounts/blobServices/containers")
    assert body(container)["properties"]["publicAccess"] == "None"


def test_queues_and_table_are_created_with_the_app_names() -> None:
    storage = tree("app/storage.bicep")
    queues = resources(storage, "Microsoft.Storage/storageAccounts/queueServices/queues")
    tables = resources(storage, "Microsoft.Storage/storageAccounts/tableServices/tables")
    queue_params = {body(q)["name"] for q in queues.values()}
    table_params = {body(t)["name"] for t in tables.values()}
    # Names flow main.bicep variable -> module param; both ends must say the same.
    passed = _module_params("storage")
    main_names = {resolve(_main(), passed[p]) for p in queue_params | table_params}
    module_defaults = {resolve(storage, p) for p in queue_params | table_params}
    expected = {QUEUE_NAME, POISON_QUEUE_NAME, TABLE_NAME, DIRECTORY_TABLE_NAME, HEALTH_TABLE_NAME}
    expected |= {CALLBACK_QUEUE, CALLBACK_POISON_QUEUE, ATTENDANCE_QUEUE, ATTENDANCE_POISON_QUEUE}
    assert main_names == expected
    assert module_defaults == expected
    assert {resolve(storage, p) for p in table_params} == {
        TABLE_NAME,
        DIRECTORY_TABLE_NAME,
        HEALTH_TABLE_NAME,
    }


def test_organizer_directory_table_is_declared_and_output() -> None:
    storage = tree("app/storage.bicep")
    tables = resources(storage, "Microsoft.Storage/storageAccounts/tableServices/tables")
    directory = body(tables["directoryTable"])
    assert directory["parent"] == "tableService"
    assert resolve(storage, directory["name"]) == DIRECTORY_TABLE_NAME
    assert accessor_path(storage["outputs"]["directoryTableName"]["value"]) == [
        "directoryTable",
        "name",
    ]
    # The table role is granted on the whole account, so it covers this table too.
    rbac = tree("app/rbac.bicep")
    assert body(rbac["resources"]["tableContributor"])["scope"] == "storage"
    # The app uses a fixed name (no setting): nothing to pass to the function app.
    assert not any("organizers" in s.lower() for s in strings(_app_settings()))


# --- the function app -------------------------------------------------------------------------


def _api() -> Tree:
    return tree("app/api.bicep")


def _site() -> dict[str, Any]:
    sites = resources(_api(), "Microsoft.Web/sites")
    assert len(sites) == 1
    return body(next(iter(sites.values())))


def _app_settings_union() -> dict[str, Any]:
    """The parameters of `union({...fixed settings...}, sourceSettings)` in the appsettings."""
    configs = resources(_api(), "Microsoft.Web/sites/config")
    settings = [body(c) for c in configs.values() if body(c)["name"] == "appsettings"]
    assert len(settings) == 1, "one appsettings resource holds every setting"
    function = settings[0]["properties"]["function"]
    assert function["type"] == "union"
    parameters: dict[str, Any] = function["parameters"]
    return parameters


def _app_settings() -> dict[str, Any]:
    """The fixed settings (the named sources' ones are added to these, see the sources tests)."""
    fixed = _app_settings_union()["arg_1"]
    assert isinstance(fixed, dict)
    return fixed


def test_plan_is_flex_consumption_fc1() -> None:
    _, plan = only_resource("Microsoft.Web/serverfarms")
    cfg = body(plan)
    assert cfg["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert cfg["properties"]["reserved"] is True  # Linux


def test_function_app_runs_python_311_on_flex_with_bounded_scale() -> None:
    site = _site()
    assert site["kind"] == "functionapp,linux"
    fac = site["properties"]["functionAppConfig"]
    assert fac["runtime"] == {"name": "python", "version": "3.11"}
    scale = fac["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    main_params = _main()["parameters"]
    assert main_params["maximumInstanceCount"]["type"] == "int"
    assert main_params["instanceMemoryMB"]["type"] == "int"
    passed = _module_params("api")
    assert passed["maximumInstanceCount"] == "maximumInstanceCount"
    assert passed["instanceMemoryMB"] == "instanceMemoryMB"


def test_function_app_uses_only_its_user_assigned_identity() -> None:
    site = _site()
    assert site["identity"]["type"] == "UserAssigned"
    # pycep keeps the quotes of a quoted key.
    keys = [k.strip("'") for k in site["identity"]["userAssignedIdentities"]]
    assert keys == ["${identityId}"]
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    auth = props["functionAppConfig"]["deployment"]["storage"]["authentication"]
    assert auth == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    # azd deploy finds the app by this tag; the service is `api` in azure.yaml.
    assert site["tags"]["function"]["type"] == "union"
    union_args = site["tags"]["function"]["parameters"].values()
    tag_objects = [a for a in union_args if isinstance(a, dict)]
    service_tags = [{k.strip("'"): v for k, v in a.items()} for a in tag_objects]
    assert {"azd-service-name": "serviceName"} in service_tags
    assert resolve(_api(), "serviceName") == "api"


def test_basic_auth_publishing_is_disabled() -> None:
    policies = resources(_api(), "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    by_name = {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()}
    assert by_name == {"ftp": False, "scm": False}


def test_host_storage_is_identity_based() -> None:
    settings = _app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    for service in ("blob", "queue", "table"):
        value = settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert accessor_path(value) == ["storage", "properties", "primaryEndpoints", service]
    assert "AzureWebJobsStorage" not in settings, "no connection-string form of host storage"


def test_no_account_keys_or_connection_strings_anywhere(bicep: dict[str, Tree]) -> None:
    for name, t in bicep.items():
        called = set(functions(t))
        assert not {f for f in called if f.startswith("list")}, f"{name} calls a list* function"
        for text in strings(t):
            for marker in ("AccountKey=", "SharedAccessSignature=", "InstrumentationKey="):
                assert marker not in text, f"{name} holds a key: {text!r}"


def test_app_settings_for_identity_graph_and_telemetry() -> None:
    settings = _app_settings()
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["GRAPH_BASE_URL"] == "graphBaseUrl"
    assert resolve(_main(), "graphBaseUrl") == "https://graph.microsoft.com/v1.0"
    assert _module_params("api")["graphBaseUrl"] == "graphBaseUrl"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )
    assert accessor_path(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == [
        "appInsights",
        "properties",
        "ConnectionString",
    ]
    # The client id the app uses is the identity the roles are granted to.
    passed = _module_params("api")
    assert accessor_path(passed["identityClientId"]) == ["identity", "outputs", "clientId"]
    assert accessor_path(passed["identityId"]) == ["identity", "outputs", "id"]


# Threads kept free for the HTTP functions (webhook, health) beyond the queue trigger's batch.
HTTP_THREADS = 8
# The queue-triggered functions (tests/integration/test_function_index.py lists them all).
QUEUE_FUNCTIONS = ("reconcile_appointment_event", "deliver_callback")


def test_python_thread_pool_holds_the_queue_batch_plus_http_headroom() -> None:
    """Sync functions hold a pool thread each: the pool must fit what the host keeps in flight.

    The queue trigger runs up to batchSize + newBatchThreshold messages at once (read here from
    host.json, so changing the batch without the thread count fails this test).
    """
    semantics = queue_semantics()
    in_flight = semantics.batch_size + semantics.new_batch_threshold
    # Every queue trigger has a listener of its own: each keeps its batch in flight, so a slow
    # callback receiver holds the delivery function's threads, never the reconciler's.
    queue_triggers = len(QUEUE_FUNCTIONS)
    value = _app_settings()["PYTHON_THREADPOOL_THREAD_COUNT"]
    assert isinstance(value, str), "app settings are strings"
    assert int(value) == queue_triggers * in_flight + HTTP_THREADS
    assert (in_flight, queue_triggers) == (24, 2)  # the figures the Bicep comment explains


def test_webhook_secrets_come_from_key_vault_reference() -> None:
    value = _app_settings()["WEBHOOK_SECRETS"]
    assert value == "@Microsoft.KeyVault(SecretUri=${webhookReferenceUri})"
    passed = _module_params("api")
    assert accessor_path(passed["webhookReferenceUri"]) == [
        "keyVault",
        "outputs",
        "webhookReferenceUri",
    ]
    kv = tree("app/keyvault.bicep")
    # Versionless URI so the reference follows rotations.
    assert accessor_path(kv["outputs"]["webhookReferenceUri"]["value"]) == [
        "webhookSecret",
        "properties",
        "secretUri",
    ]


# --- Key Vault --------------------------------------------------------------------------------


def test_key_vault_is_rbac_only_with_purge_protection() -> None:
    _, vault = only_resource("Microsoft.KeyVault/vaults")
    props = body(vault)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props


def test_webhook_secret_value_is_a_secure_parameter() -> None:
    kv = tree("app/keyvault.bicep")
    secret = resources(kv, "Microsoft.KeyVault/vaults/secrets")["webhookSecret"]
    assert body(secret)["name"] == "webhook-secrets"
    source = body(secret)["properties"]["value"]
    assert source in kv["parameters"]
    assert "secure" in decorator_types(kv["parameters"][source])
    assert "secure" in decorator_types(_main()["parameters"]["webhookSecrets"])
    assert _module_params("keyVault")[source] == "webhookSecrets"


# --- named sources ------------------------------------------------------------------------

# The `source` type of app/sources.bicep: field -> type (pycep drops the `?` of optional ones).
SOURCE_FIELDS = {
    "name": "sourceName",
    "kind": "sourceKind",
    "timeZone": "string",
    "phoneRegion": "phoneRegion",
    "subject": "subject",
    "sendSms": "bool",
    "sendEmail": "bool",
    "sendSmsReminder": "bool",
    "callbackUrl": "callbackUrl",
}


def _sources_module() -> Tree:
    return tree(SOURCES_MODULE)


def _lambda(node: Any) -> tuple[str, Any]:
    """(variable, expression) of a one-variable lambda."""
    assert node["type"] == "lambda_expression"
    detail = node["detail"]
    return detail["var_1"], detail["expression"]


def _decorators(declaration: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in declaration["decorators"]}


def test_sources_parameter_defaults_to_none_and_feeds_the_sources_module() -> None:
    param = _main()["parameters"]["sources"]
    assert param["type"] == "array"
    assert param["default"] == []
    assert "description" in decorator_types(param)
    module = _main()["modules"]["sourceConfig"]
    assert module["detail"]["path"] == SOURCES_MODULE
    # Only main's own values: no module output, so it runs (and fails) before anything exists.
    assert _module_params("sourceConfig") == {
        "sources": "sources",
        "keyVaultName": "keyVaultName",
        "defaultCallbackUrl": "callbackUrl",
    }
    assert "dependsOn" not in body(module)
    assert _module_params("keyVault")["name"] == "keyVaultName"


def test_source_type_allows_the_app_kinds_and_bounds_the_fields() -> None:
    types = _sources_module()["types"]
    assert set(types["sourceKind"]["value"].split(" | ")) == set(KINDS)
    assert _decorators(types["sourceName"]) == {"min_length": 1, "max_length": 32}
    assert _decorators(types["phoneRegion"]) == {"min_length": 2, "max_length": 2}
    assert _decorators(types["subject"]) == {"min_length": 1, "max_length": 255}
    # At least `https://x`; the scheme itself is the app's check (documented beside the type).
    assert _decorators(types["callbackUrl"]) == {"min_length": 9, "max_length": 2048}
    assert types["source"]["value"] == SOURCE_FIELDS
    assert _sources_module()["parameters"]["sources"]["type"] == {
        "type": "array",
        "item_type": "source",
    }
    # Read from the text: only name and kind are required.
    text = (INFRA_DIR / SOURCES_MODULE).read_text(encoding="utf-8")
    block = text.split("type source = {", 1)[1].split("\n}", 1)[0]
    fields = dict(re.findall(r"^  (\w+): \w+(\??)$", block, re.MULTILINE))
    assert set(fields) == set(SOURCE_FIELDS)
    assert {f for f, optional in fields.items() if not optional} == {"name", "kind"}
    # The name pattern cannot be a Bicep check: it is documented where the operator looks.
    for file in ("main.bicep", SOURCES_MODULE):
        source_text = (INFRA_DIR / file).read_text(encoding="utf-8")
        assert "a-z0-9" in source_text, file
        assert f"`{DEFAULT_SOURCE}`" in source_text, file


def test_each_source_becomes_its_sources_settings() -> None:
    variables = _sources_module()["variables"]
    builder = variables["sourceSettings"]["value"]["function"]
    assert builder["type"] == "map"
    over = builder["parameters"]["arg_1"]["function"]
    assert over["type"] == "range"
    assert functions(over["parameters"]["count"]) == ["length"]
    assert "sources" in strings(over["parameters"]["count"])
    index, entries = _lambda(builder["parameters"]["arg_2"])
    assert index == "i"
    by_key = {e["key"]: e["value"] for e in entries}
    prefix = "SOURCES__${sources[i].name}__"
    # The callback pair is written by its own builder (tests below), only for sources with a URL.
    callback = {"CALLBACKURL", "CALLBACKSECRETS"}
    assert set(by_key) == {prefix + s for s in _SOURCE_SETTINGS - callback}
    assert "kind" in strings(by_key[prefix + "KIND"])
    for switch in ("SENDSMS", "SENDEMAIL", "SENDSMSREMINDER"):
        assert functions(by_key[prefix + switch])[0] == "string", switch  # 'true' / 'false'
    # Every entry of every source, plus the callback entries (tests below), with the unset
    # optional ones left out so the app's defaults apply.
    combined = variables["entries"]["value"]["function"]
    assert combined["type"] == "filter"
    assert set(functions(combined["parameters"]["input_array"])) == {"concat", "flatten"}
    assert {"sourceSettings", "callbackSettings"} <= set(strings(combined["parameters"]))
    assert "empty" in functions(combined["parameters"]["expression"])
    output = _sources_module()["outputs"]["appSettings"]
    assert output["type"] == "object"
    to_object = output["value"]["function"]
    assert to_object["type"] == "toObject"
    assert to_object["parameters"]["arg_1"] == "entries"
    # The function app writes them next to its fixed settings, which never start SOURCES__.
    assert _app_settings_union()["arg_2"] == "sourceSettings"
    assert _api()["parameters"]["sourceSettings"]["default"] == {}
    assert accessor_path(_module_params("api")["sourceSettings"]) == [
        "sourceConfig",
        "outputs",
        "appSettings",
    ]
    assert not [k for k in _app_settings() if k.upper().startswith("SOURCES__")]


def test_source_secrets_are_key_vault_references_never_values() -> None:
    sources = _sources_module()
    variables = sources["variables"]
    # The setting names a versionless secret URI, never a value.
    secret_setting = "@Microsoft.KeyVault(SecretUri=${referenceUris[i]})"
    assert secret_setting in strings(variables["sourceSettings"])
    uris = variables["referenceUris"]["value"]["function"]
    assert (uris["type"], uris["parameters"]["arg_1"]) == ("map", "entryNames")
    name, uri = _lambda(uris["parameters"]["arg_2"])
    assert uri == (
        "https://${keyVaultName}${environment().suffixes.keyvaultDns}/secrets/${" + name + "}"
    )
    names = variables["entryNames"]["value"]["function"]
    item, secret_name = _lambda(names["parameters"]["arg_2"])
    assert secret_name == "source-${" + item + ".name}-secrets"
    assert sources["outputs"]["entryNames"]["value"] == "entryNames"
    # The module never sees a secret.
    assert not [p for p in sources["parameters"] if SECRETISH.search(p)]
    assert not [s for s in strings(sources) if "sourceSecrets" in s]

    # Key Vault creates exactly those secrets, valued from the secure parameter only.
    kv = tree("app/keyvault.bicep")
    secret = resources(kv, "Microsoft.KeyVault/vaults/secrets")["sourceSecret"]
    loop = secret["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "sourceNames"
    cfg = body(secret)
    assert cfg["parent"] == "vault"
    assert cfg["name"]["operator"]["operands"] == {
        "operand_1": "sourceEntryNames",
        "operand_2": loop["index_name"],
    }
    value = cfg["properties"]["value"]["operator"]
    assert value["type"] == "index_accessor"
    assert value["operands"] == {"operand_1": "sourceSecrets", "operand_2": loop["item_name"]}
    assert "secure" in decorator_types(kv["parameters"]["sourceSecrets"])
    passed = _module_params("keyVault")
    assert accessor_path(passed["sourceNames"]) == ["sourceConfig", "outputs", "names"]
    assert accessor_path(passed["sourceEntryNames"]) == ["sourceConfig", "outputs", "entryNames"]
    assert "json" in functions(passed["sourceSecrets"])
    assert "sourceSecrets" in strings(passed["sourceSecrets"])
    main_param = _main()["parameters"]["sourceSecrets"]
    assert main_param["type"] == "string"
    assert "secure" in decorator_types(main_param)
    assert main_param["default"] == ""

    # The grants follow the deployed secrets, and the app waits for the grants.
    out = kv["outputs"]["sourceEntryNames"]["value"]
    assert out["loop_type"]["detail"]["array_name"] == "sourceNames"
    assert accessor_path(_module_params("rbac")["sourceEntryNames"]) == [
        "keyVault",
        "outputs",
        "sourceEntryNames",
    ]
    assert "rbac" in body(_main()["modules"]["api"])["dependsOn"]


def test_sources_module_declares_no_resource_so_checkov_may_skip_it() -> None:
    sources = _sources_module()
    assert not sources.get("resources")
    assert not sources.get("modules")
    script = (REPO_ROOT / "scripts" / "check-infra.sh").read_text(encoding="utf-8")
    assert f'SOURCES_MODULE="infra/{SOURCES_MODULE}"' in script
    skipped = re.findall(r'--skip-path "\$(\w+)"', script)
    assert skipped == ["GRAPH_MODULE", "SOURCES_MODULE"]


# --- role assignments -------------------------------------------------------------------------

EXPECTED_ASSIGNMENTS = {
    # symbolic name: (role id, scope)
    "blobOwner": (BLOB_DATA_OWNER, "storage"),
    "queueContributor": (QUEUE_DATA_CONTRIBUTOR, "storage"),
    "tableContributor": (TABLE_DATA_CONTRIBUTOR, "storage"),
    "metricsPublisher": (METRICS_PUBLISHER, "appInsights"),
    "secretsUser": (KV_SECRETS_USER, "webhookEntry"),
    # One per named source, each on that source's secret (a loop: scope sourceEntries[i]).
    "sourceSecretsUser": (KV_SECRETS_USER, "sourceEntries[]"),
    # One per source with a callback URL, each on its callback secret.
    "callbackSecretsUser": (KV_SECRETS_USER, "callbackEntries[]"),
}


def _scope(res: dict[str, Any]) -> str:
    scope = body(res)["scope"]
    if isinstance(scope, dict) and scope.get("operator", {}).get("type") == "index_accessor":
        operands = scope["operator"]["operands"]
        return f"{operands['operand_1']}[]"
    assert isinstance(scope, str)
    return scope


def _role_id(t: Tree, assignment: dict[str, Any]) -> str:
    ref = body(assignment)["properties"]["roleDefinitionId"]
    fn = ref["function"]
    assert fn["type"] == "subscription_resource_id"
    assert fn["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    role = resolve(t, fn["parameters"]["resource_name_1"])
    assert isinstance(role, str)
    return role


def test_role_assignments_are_exactly_the_needed_ones() -> None:
    found = all_resources("Microsoft.Authorization/roleAssignments")
    assert {f for f, _, _ in found} == {"app/rbac.bicep"}
    rbac = tree("app/rbac.bicep")
    actual = {name: (_role_id(rbac, res), _scope(res)) for _, name, res in found}
    assert actual == EXPECTED_ASSIGNMENTS
    for _, name, res in found:
        props = body(res)["properties"]
        assert props["principalType"] == "ServicePrincipal", name
        assert props["principalId"] == "principalId", name
        assert condition(res) is None, f"{name} must not be optional"
    assert accessor_path(_module_params("rbac")["principalId"]) == [
        "identity",
        "outputs",
        "principalId",
    ]


def test_role_scopes_point_at_the_right_resources() -> None:
    rbac = tree("app/rbac.bicep")
    existing = {name: res["type"] for name, res in rbac["resources"].items() if res["existing"]}
    assert existing["storage"] == "Microsoft.Storage/storageAccounts"
    assert existing["appInsights"] == "Microsoft.Insights/components"
    # Key Vault Secrets User is granted on the one secret, not on the whole vault.
    assert existing["webhookEntry"] == "Microsoft.KeyVault/vaults/secrets"
    assert existing["sourceEntries"] == "Microsoft.KeyVault/vaults/secrets"


def test_each_role_guid_is_named_in_a_comment() -> None:
    lines = (INFRA_DIR / "app" / "rbac.bicep").read_text(encoding="utf-8").splitlines()
    for guid, role_name in ROLE_NAMES.items():
        (index,) = [i for i, line in enumerate(lines) if guid in line]
        comment = lines[index - 1] + lines[index]
        assert f"// {role_name}" in comment, f"{guid} needs a comment naming {role_name}"


def test_no_broad_role_anywhere(bicep: dict[str, Tree]) -> None:
    for name, t in bicep.items():
        ids = {m.lower() for s in strings(t) for m in GUID.findall(s)}
        assert not ids & set(BROAD_ROLES), f"{name} grants {ids & set(BROAD_ROLES)}"


# --- Microsoft Graph permissions --------------------------------------------------------------


def _graph() -> Tree:
    return tree(GRAPH_MODULE)


def _graph_assignments() -> dict[str, dict[str, Any]]:
    return resources(_graph(), "Microsoft.Graph/appRoleAssignedTo")


def _role_value(assignment: dict[str, Any]) -> str:
    """The app role value an assignment looks up in Graph's appRoles."""
    app_role_id = body(assignment)["appRoleId"]
    assert "filter" in functions(app_role_id), "look the role id up, do not paste it"
    assert any(accessor_path(n) == ["graphSp", "appRoles"] for n in walk(app_role_id))
    assert not any(GUID.search(s) for s in strings(app_role_id)), "no pasted role GUID"
    values = {s for s in strings(app_role_id) if "." in s}
    assert len(values) == 1, values
    return values.pop()


def test_graph_module_uses_the_extension_alias() -> None:
    assert "microsoftGraphV1" in _graph()["extensions"]
    config = load_json("bicepconfig.json")
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    # Only this module needs the extension; the rest stays plain ARM for checkov.
    others = [n for n, t in parse_all().items() if n != GRAPH_MODULE and t.get("extensions")]
    assert others == []


def test_graph_service_principal_is_looked_up_by_app_id() -> None:
    sps = resources(_graph(), "Microsoft.Graph/servicePrincipals", existing=True)
    assert list(sps) == ["graphSp"]
    assert sps["graphSp"]["api_version"] == "v1.0"
    assert resolve(_graph(), body(sps["graphSp"])["appId"]) == GRAPH_APP_ID


def test_graph_app_roles_are_granted_by_value() -> None:
    granted = {_role_value(a) for a in _graph_assignments().values()}
    assert granted == GRAPH_ROLES | {SMS_ROLE, MAIL_ROLE, ATTENDANCE_ROLE}
    # The UPN lookup reads only the id: the basic profile role, never the full directory one.
    assert "User.Read.All" not in granted
    for name, assignment in _graph_assignments().items():
        cfg = body(assignment)
        assert assignment["api_version"] == "v1.0", name
        assert cfg["principalId"] == "principalId", name
        assert accessor_path(cfg["resourceId"]) == ["graphSp", "id"], name


def test_sms_role_is_gated_by_enable_sms() -> None:
    graph = _graph()
    for name, assignment in _graph_assignments().items():
        if _role_value(assignment) == SMS_ROLE:
            assert condition(assignment) == "enableSms", name
        elif _role_value(assignment) in (MAIL_ROLE, ATTENDANCE_ROLE):
            continue  # tests/infra/test_callbacks_mail_infra.py, test_attendance_infra.py
        else:
            assert condition(assignment) is None, f"{name} must always be granted"
    assert graph["parameters"]["enableSms"] == {
        "decorators": graph["parameters"]["enableSms"]["decorators"],
        "type": "bool",
        "default": False,
    }
    assert _module_params("graphPermissions")["enableSms"] == "enableSms"
    assert _main()["parameters"]["enableSms"]["default"] is False


def test_graph_roles_go_to_the_app_identity_and_can_be_skipped() -> None:
    module = _main()["modules"]["graphPermissions"]
    assert module["detail"]["path"] == GRAPH_MODULE
    assert condition(module) == "grantGraphPermissions"
    assert accessor_path(_module_params("graphPermissions")["principalId"]) == [
        "identity",
        "outputs",
        "principalId",
    ]


def test_graph_roles_wait_for_the_function_app() -> None:
    # A new identity may not have replicated in Entra yet when Graph is asked to assign it a role
    # (msgraph-bicep-types#193, "Not a valid reference update"); deploying the app first buys time.
    assert "api" in body(_main()["modules"]["graphPermissions"]).get("dependsOn", [])
    assert "msgraph-bicep-types#193" in (INFRA_DIR / "main.bicep").read_text(encoding="utf-8")


# --- monitoring -------------------------------------------------------------------------------


def test_app_insights_is_workspace_based_without_local_auth() -> None:
    _, component = only_resource("Microsoft.Insights/components")
    props = body(component)["properties"]
    assert props["DisableLocalAuth"] is True
    assert accessor_path(props["WorkspaceResourceId"]) == ["logAnalytics", "id"]
    only_resource("Microsoft.OperationalInsights/workspaces")


def test_poison_queue_alert_and_optional_email() -> None:
    monitoring = tree("app/monitoring.bicep")
    rules = resources(monitoring, "Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == {"poisonAlert", "callbackPoisonAlert", "attendancePoisonAlert"}
    props = body(rules["poisonAlert"])["properties"]
    assert props["enabled"] is True
    assert [accessor_path(s) for s in props["scopes"]] == [["appInsights", "id"]]
    (criterion,) = props["criteria"]["allOf"]
    assert "MaxDequeueCount" in criterion["query"]
    assert "${poisonQueueName}" in criterion["query"]
    assert criterion["operator"] == "GreaterThan"
    assert criterion["threshold"] == 0
    assert resolve(_main(), _module_params("monitoring")["poisonQueueName"]) == (
        "appointment-events-poison"
    )
    callbacks = body(rules["callbackPoisonAlert"])["properties"]
    (criterion,) = callbacks["criteria"]["allOf"]
    # The line CallbackDelivery logs when it dead-letters a callback.
    assert "failed after" in criterion["query"]
    assert "${callbackPoisonQueueName}" in criterion["query"]
    assert resolve(_main(), _module_params("monitoring")["callbackPoisonQueueName"]) == (
        CALLBACK_POISON_QUEUE
    )
    attendance = body(rules["attendancePoisonAlert"])["properties"]
    (criterion,) = attendance["criteria"]["allOf"]
    # The host's line when it parks a check, and the app's for a message it cannot read.
    assert "MaxDequeueCount" in criterion["query"]
    assert "malformed attendance message" in criterion["query"]
    assert resolve(_main(), _module_params("monitoring")["attendancePoisonQueueName"]) == (
        "appointment-attendance-poison"
    )
    (group,) = resources(monitoring, "Microsoft.Insights/actionGroups").values()
    gate = condition(group)
    assert gate["operator"]["type"] == "not"
    assert "empty" in functions(gate)
    assert "alertEmail" in strings(gate)
    assert monitoring["parameters"]["alertEmail"]["default"] == ""
    assert _main()["parameters"]["alertEmail"]["default"] == ""


# --- secrets and outputs ----------------------------------------------------------------------

SECRETISH = re.compile(r"secret|password|passwd|token|apikey", re.IGNORECASE)


def test_secret_parameters_are_secure_and_have_no_default(bicep: dict[str, Tree]) -> None:
    for name, t in bicep.items():
        for pname, param in t.get("parameters", {}).items():
            if SECRETISH.search(pname) and not pname.endswith(("Uri", "Name", "Url")):
                assert "secure" in decorator_types(param), f"{name}: {pname} needs @secure()"
            if "secure" in decorator_types(param):
                # Only an empty default (as the Bicep linter's secure-parameter-default allows).
                assert param["default"] in (None, "", {}), f"{name}: secure {pname} has a default"


def test_outputs_expose_no_secret(bicep: dict[str, Tree]) -> None:
    for name, t in bicep.items():
        secure = {p for p, v in t.get("parameters", {}).items() if "secure" in decorator_types(v)}
        for oname, output in t.get("outputs", {}).items():
            assert not re.search(r"password|secrets?$", oname, re.IGNORECASE), (name, oname)
            used = set(strings(output["value"]))
            text = " ".join(used)
            assert not {p for p in secure if p in used or "${" + p + "}" in text}, (name, oname)


def test_no_hard_coded_credentials(bicep: dict[str, Tree]) -> None:
    for name, t in bicep.items():
        for node in walk(t):
            if not isinstance(node, dict):
                continue
            for key, value in node.items():
                if re.search(r"password|clientsecret|accountkey", key, re.IGNORECASE):
                    pytest.fail(f"{name}: credential-like property {key}={value!r}")


def test_main_outputs() -> None:
    outputs = _main()["outputs"]
    for required in (
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "SERVICE_API_NAME",
        "AZURE_FUNCTION_APP_NAME",
        "WEBHOOK_URL",
        "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
        "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID",
    ):
        assert required in outputs, required
    # azd writes outputs into the environment: AZURE_CLIENT_ID there would hijack azd's own login.
    assert "AZURE_CLIENT_ID" not in outputs
    assert accessor_path(outputs["WEBHOOK_URL"]["value"]) == ["api", "outputs", "webhookUrl"]
    assert accessor_path(outputs["AZURE_FUNCTION_IDENTITY_CLIENT_ID"]["value"]) == [
        "identity",
        "outputs",
        "clientId",
    ]
    assert accessor_path(outputs["AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID"]["value"]) == [
        "identity",
        "outputs",
        "principalId",
    ]
    assert _api()["outputs"]["webhookUrl"]["value"] == (
        "https://${functionApp.properties.defaultHostName}/api/webhooks/appointments"
    )
