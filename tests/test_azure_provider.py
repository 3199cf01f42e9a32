"""The Azure provider against a loopback fake of Azure Resource Manager.

These are contract tests (hence ``test_contract_...``): there is no emulator
for Azure Resource Manager, so the official clients (azure-mgmt-web,
azure-mgmt-storage, azure-mgmt-authorization) and azure-identity talk to
tests/azure_fake.py over HTTPS, configured only through the environment, as
a user's would be. The fake keeps the resources and records every request;
the tests assert both. The output and inputs live in Azurite (the real Blob
Storage emulator), where deploy's preflight writes its probe. Running the
published app (function_app.py with azure-functions) is the data plane's
tests' business.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from azure_fake import IDENTITY_HEADER, FakeAzure, Recorded
from azurite import ACCOUNT as AZURITE_ACCOUNT
from azurite import ACCOUNT_KEY as AZURITE_KEY
from azurite import Azurite, azurite

import deployer
from deployer import ConfigError, Cron, Every, Http, ProviderError
from deployer.bundle import python_version
from deployer.providers.azure import provider as azure_provider
from deployer.providers.azure.provider import (
    ARM_URL_VARIABLE,
    BLOB_CONTRIBUTOR,
    BLOB_OWNER,
    BLOB_READER,
    ROLE_IDS,
    SCM_URL_VARIABLE,
    AzureProvider,
    app_name,
    storage_account_name,
)
from deployer.providers.base import (
    ADD_TRIGGER,
    CREATE,
    DELETE,
    REMOVE_TRIGGER,
    UPDATE_CODE,
    UPDATE_CONFIG,
)

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
GROUP = "ml"
LOCATION = "westeurope"
DATA_GROUP = "data"
# Azurite's well-known development account: the data account of az:// URLs here.
# Blob Storage is Azurite's (tests/azurite.py), with its well-known account.
DATA_ACCOUNT = AZURITE_ACCOUNT
DATA_KEY = AZURITE_KEY
OUTPUT = "az://predictions/runs"
INPUTS = "az://features/latest.parquet"
APP = app_name("scores", SUBSCRIPTION, GROUP)
ACCOUNT = storage_account_name("scores", SUBSCRIPTION, GROUP)
RG_PATH = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}"
SITE_PATH = f"{RG_PATH}/providers/Microsoft.Web/sites/{APP}"
PLAN_PATH = f"{RG_PATH}/providers/Microsoft.Web/serverfarms/{APP}"
ACCOUNT_PATH = f"{RG_PATH}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
DATA_ACCOUNT_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{DATA_GROUP}/providers/"
    f"Microsoft.Storage/storageAccounts/{DATA_ACCOUNT}"
)
OUTPUT_SCOPE = f"{DATA_ACCOUNT_ID}/blobServices/default/containers/predictions"
INPUTS_SCOPE = f"{DATA_ACCOUNT_ID}/blobServices/default/containers/features"
DAILY = Cron("0 6 * * *")
HOURLY = Every(hours=1)
ENVIRONMENT = (
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_LOCATION",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_USERNAME",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_BLOB_ENDPOINT",
    "AZURE_STORAGE_CONNECTION_STRING",
    ARM_URL_VARIABLE,
    SCM_URL_VARIABLE,
)


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def predict_v2(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 3)


# -- fixtures ---------------------------------------------------------------------

# Fixtures defined elsewhere: importing them is how pytest finds them here.
AZURITE_FIXTURES = (azurite,)


@pytest.fixture(scope="session")
def azure_fake() -> Iterator[FakeAzure]:
    fake = FakeAzure().start()
    try:
        yield fake
    finally:
        fake.stop()


def isolate_from_real_azure(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Whatever a test does, nothing reaches a real Azure or this machine's logins."""
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(home))  # no az login, no token cache


@pytest.fixture(autouse=True)
def no_real_azure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_from_real_azure(monkeypatch, tmp_path)


@pytest.fixture
def fake(
    azure_fake: FakeAzure,
    azurite: Azurite,  # noqa: F811 (the fixture imported above)
    deployer_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> FakeAzure:
    return point_at(azure_fake, azurite, monkeypatch)


def point_at(azure_fake: FakeAzure, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> FakeAzure:
    """An empty fake with the resource groups and the data account; every client
    pointed at it by configuration; Blob Storage at Azurite."""
    azure_fake.reset()
    azure_fake.add_resource_group(SUBSCRIPTION, GROUP)
    azure_fake.add_storage_account(
        SUBSCRIPTION, DATA_GROUP, DATA_ACCOUNT, containers=("predictions", "features")
    )
    monkeypatch.setenv(ARM_URL_VARIABLE, azure_fake.endpoint)
    monkeypatch.setenv(SCM_URL_VARIABLE, azure_fake.scm_url)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{azure_fake.endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azure_fake.certificate))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", GROUP)
    monkeypatch.setenv("AZURE_LOCATION", LOCATION)
    # Where pyarrow (runtimes/storage.py) reaches az:// in this process: Azurite.
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", DATA_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", DATA_KEY)
    monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", azurite.endpoint)
    _create_containers(azurite.endpoint, "predictions", "features")
    return azure_fake


def _create_containers(endpoint: str, *names: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(
        account_url=endpoint, credential={"account_name": DATA_ACCOUNT, "account_key": DATA_KEY}
    )
    for name in names:
        with contextlib.suppress(ResourceExistsError):
            client.create_container(name)


# -- helpers ----------------------------------------------------------------------


def options(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "scores",
        "provider": "azure",
        "output": OUTPUT,
        "inputs": INPUTS,
        "allow_missing_inputs": True,  # the inputs container holds no data in these tests
        "quiet": True,
        **overrides,
    }


def deploy(function: Any = predict, **overrides: Any) -> deployer.Deployment:
    return deployer.deploy(function, **options(**overrides))


def plan(function: Any = predict, **overrides: Any) -> Any:
    return deployer.plan(function, **options(**overrides))


def built_bundle(function: Any = predict, **overrides: Any) -> Any:
    arguments = options(**overrides)
    arguments.pop("quiet")
    return deployer.build(function, **arguments).bundle


def site(fake: FakeAzure) -> dict[str, Any]:
    return fake.sites[SITE_PATH.lower()]


def changes(fake: FakeAzure) -> list[str]:
    """The requests that changed something in Azure Resource Manager or Kudu, as "METHOD
    path"; what a deploy keeps in Blob Storage for rollback is ``kept_blobs``'."""
    return [
        request.call for request in fake.changing_calls() if not request.path.startswith("/blob/")
    ]


def kept_blobs(fake: FakeAzure) -> list[str]:
    """The kinds of the blobs deploys wrote under versions/, in order ("zip", "json"),
    each once (a large zip is written in blocks)."""
    written = [
        request.path.split("/", 4)[4]
        for request in fake.changing_calls()
        if request.method == "PUT" and request.path.startswith("/blob/")
    ]
    return [name.rsplit(".", 1)[-1] for name in dict.fromkeys(written)]


def publishes(fake: FakeAzure) -> list[Recorded]:
    return fake.calls(method="POST", contains="/api/publish")


def assignments(fake: FakeAzure) -> set[tuple[str, str]]:
    """(role name, scope) of every role assignment of the app's identity."""
    principal = site(fake)["identity"]["principalId"]
    names = {role_id: role for role, role_id in ROLE_IDS.items()}
    return {
        (names[a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]], a["properties"]["scope"])
        for a in fake.assignments.values()
        if a["properties"]["principalId"] == principal
    }


# -- first deploy: exactly these resources -------------------------------------------


def test_contract_first_deploy_creates_exactly_the_expected_resources(fake: FakeAzure) -> None:
    computed = plan(triggers=[DAILY, Http()])
    assert computed.kinds() == [
        CREATE,  # the app's storage account and deployment container
        CREATE,  # the plan and the app
        UPDATE_CONFIG,  # Storage Blob Data Owner on its storage account
        UPDATE_CONFIG,  # Contributor on the output container
        UPDATE_CONFIG,  # Reader on the inputs container
        UPDATE_CODE,  # the zip, published
        ADD_TRIGGER,
        ADD_TRIGGER,
    ]
    assert fake.changing_calls() == []  # planning only reads
    deployment = deploy(triggers=[DAILY, Http()])
    bundle = built_bundle(triggers=[DAILY, Http()])

    assert changes(fake) == [
        f"PUT {ACCOUNT_PATH}",
        f"PUT {ACCOUNT_PATH}/blobServices/default/containers/app-package",
        f"PUT {PLAN_PATH}",
        f"PUT {SITE_PATH}",
        *[f"PUT {scope}" for scope in _assignment_paths(fake)],
        f"POST /scm/{APP}/api/publish",
        f"PUT {SITE_PATH}",  # the tags claim the code only once it is published
    ]
    # The zip is kept for rollback before it is published, the version recorded after.
    assert kept_blobs(fake) == ["zip", "json"]
    # The storage account and the plan were created asynchronously: both polled.
    assert len(fake.calls(method="GET", contains="/operations/")) == 2

    [account] = [a for a in fake.accounts.values() if a["name"] == ACCOUNT]
    assert account["tags"] == {
        "managed-by": "deployer",
        "deployer-name": "scores",
        "deployer-app": APP,
    }
    assert account["properties"]["allowSharedKeyAccess"] is False  # identity only
    assert account["properties"]["allowBlobPublicAccess"] is False
    plan_resource = fake.plans[PLAN_PATH.lower()]
    assert plan_resource["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan_resource["properties"]["reserved"] is True  # Linux

    app = site(fake)
    assert app["kind"] == "functionapp,linux"
    assert app["location"] == LOCATION
    assert app["identity"]["type"] == "SystemAssigned"
    properties = app["properties"]
    assert properties["serverFarmId"] == PLAN_PATH
    assert properties["httpsOnly"] is True
    config = properties["functionAppConfig"]
    assert config["deployment"]["storage"] == {
        "type": "blobContainer",
        "value": f"https://{ACCOUNT}.blob.core.windows.net/app-package",
        "authentication": {"type": "SystemAssignedIdentity"},
    }
    assert config["runtime"] == {"name": "python", "version": python_version()}
    assert config["scaleAndConcurrency"] == {"maximumInstanceCount": 100, "instanceMemoryMB": 2048}
    assert fake.settings[SITE_PATH.lower()] == {
        "AzureWebJobsStorage__accountName": ACCOUNT,  # the host's storage, through the identity
        "DEPLOYER_NAME": "scores",
        "DEPLOYER_OUTPUT": OUTPUT,
        "DEPLOYER_INPUTS": INPUTS,
        "AZURE_STORAGE_ACCOUNT_NAME": DATA_ACCOUNT,
    }
    tags = app["tags"]
    triggers = {key: json.loads(value) for key, value in tags.items() if "-trigger-" in key}
    assert sorted(triggers.values(), key=str) == sorted(
        [{"type": "cron", "expr": "0 6 * * *", "tz": "UTC"}, {"type": "http", "public": False}],
        key=str,
    )
    assert {key: value for key, value in tags.items() if "-trigger-" not in key} == {
        "managed-by": "deployer",
        "deployer-name": "scores",
        "deployer-code-hash": bundle.code_hash,
        "deployer-deps-hash": bundle.deps_hash,
        "deployer-output": OUTPUT,
        "deployer-inputs": INPUTS,
        "deployer-timeout": "300",
        "deployer-qualname": "predict",
    }
    for key, value in tags.items():
        assert not re.search(r"[<>%&\\?/]", key) and len(value) <= 256

    # Least privilege: the host's own account, the output container, the inputs container.
    assert assignments(fake) == {
        (BLOB_OWNER, ACCOUNT_PATH),
        (BLOB_CONTRIBUTOR, OUTPUT_SCOPE),
        (BLOB_READER, INPUTS_SCOPE),
    }
    for assignment in fake.assignments.values():
        assert assignment["properties"]["principalType"] == "ServicePrincipal"

    [publish] = publishes(fake)
    assert publish.query == {"RemoteBuild": "false"}
    assert publish.headers["content-type"] == "application/zip"
    assert publish.headers["authorization"].startswith("Bearer ")
    # Published after the identity may read its deployment container.
    assert fake.requests.index(publish) > max(
        fake.requests.index(request)
        for request in fake.calls(method="PUT", contains="roleAssignments")
    )
    assert deployment.code_hash == bundle.code_hash
    assert deployment.url == f"{fake.endpoint}/sites/{APP}/api/scores"


def _assignment_paths(fake: FakeAzure) -> list[str]:
    return [request.path for request in fake.calls(method="PUT", contains="roleAssignments")]


def test_contract_the_plan_says_where_and_what_in_words(fake: FakeAzure) -> None:
    lines = [str(step) for step in plan(triggers=[DAILY]).steps]
    assert lines[0].startswith(f"create: storage account {ACCOUNT} in {LOCATION}")
    assert lines[1].startswith(f"create: function app {APP} on a Flex Consumption plan")
    assert lines[2] == (
        f"update config: grant {BLOB_OWNER} on its own storage account {ACCOUNT} to the app's "
        "identity"
    )
    assert lines[3] == (
        f"update config: grant {BLOB_CONTRIBUTOR} on container predictions of storage account "
        f"{DATA_ACCOUNT} (output) to the app's identity"
    )
    assert "no remote build" in lines[5]
    assert "function_app.py" in lines[6]


# -- redeploys ------------------------------------------------------------------------


def test_contract_redeploy_with_nothing_changed_uploads_and_changes_nothing(
    fake: FakeAzure,
) -> None:
    deploy(triggers=[DAILY, Http()])
    before = json.dumps(site(fake), sort_keys=True)
    fake.requests.clear()
    assert plan(triggers=[DAILY, Http()]).changes_nothing
    deploy(triggers=[DAILY, Http()])
    assert fake.changing_calls() == []
    assert publishes(fake) == []
    assert json.dumps(site(fake), sort_keys=True) == before


def test_contract_code_only_change_publishes_one_zip_and_changes_nothing_else(
    fake: FakeAzure,
) -> None:
    first = deploy(triggers=[DAILY, Http()])
    before = site(fake)
    settings = dict(fake.settings[SITE_PATH.lower()])
    fake.requests.clear()

    assert plan(predict_v2, triggers=[DAILY, Http()]).kinds() == [UPDATE_CODE]
    second = deploy(predict_v2, triggers=[DAILY, Http()])
    assert second.code_hash != first.code_hash and second.deps_hash == first.deps_hash
    assert changes(fake) == [f"POST /scm/{APP}/api/publish", f"PUT {SITE_PATH}"]
    assert kept_blobs(fake) == ["zip", "json"]  # the new version, kept for rollback
    after = site(fake)
    assert after["tags"] == {
        **before["tags"],
        "deployer-code-hash": second.code_hash,
        "deployer-qualname": "predict_v2",
    }
    assert after["properties"]["functionAppConfig"] == before["properties"]["functionAppConfig"]
    assert fake.settings[SITE_PATH.lower()] == settings


def test_contract_memory_change_is_one_site_update_without_a_publish(fake: FakeAzure) -> None:
    deploy(triggers=[Http()])
    fake.requests.clear()
    assert [str(step) for step in plan(triggers=[Http()], memory=4096).steps] == [
        "update config: memory: 2048 -> 4096"
    ]
    deploy(triggers=[Http()], memory=4096)
    assert changes(fake) == [f"PUT {SITE_PATH}"]
    assert kept_blobs(fake) == ["json"]  # a version that runs the zip kept before
    scale = site(fake)["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == 4096


def test_contract_output_change_publishes_the_zip_whose_manifest_carries_it(
    fake: FakeAzure,
) -> None:
    deploy(triggers=[Http()])
    fake.requests.clear()
    [step] = plan(triggers=[Http()], output="az://predictions/v2").steps
    assert str(step) == (
        f"update config: output: {OUTPUT!r} -> 'az://predictions/v2' (in the app zip: "
        "published again)"
    )
    deploy(triggers=[Http()], output="az://predictions/v2")
    assert len(publishes(fake)) == 1
    assert site(fake)["tags"]["deployer-output"] == "az://predictions/v2"
    assert fake.settings[SITE_PATH.lower()]["DEPLOYER_OUTPUT"] == "az://predictions/v2"


def test_contract_removed_schedule_is_one_publish_and_its_tag_goes(fake: FakeAzure) -> None:
    deploy(triggers=[DAILY, HOURLY, Http()])
    fake.requests.clear()
    computed = plan(triggers=[DAILY, Http()])
    assert computed.kinds() == [REMOVE_TRIGGER]
    # Schedules are decorators in function_app.py: the plan says it publishes.
    assert "the app zip is published again" in str(computed.steps[0])
    kept = deploy(triggers=[DAILY, Http()])
    assert changes(fake) == [f"POST /scm/{APP}/api/publish", f"PUT {SITE_PATH}"]
    assert kept_blobs(fake) == ["zip", "json"]
    assert sorted(trigger["type"] for trigger in kept.triggers) == ["cron", "http"]
    assert [
        f
        for f in fake.functions[SITE_PATH.lower()]
        if f["properties"]["name"].startswith("schedule")
    ]
    assert len([key for key in site(fake)["tags"] if "-trigger-" in key]) == 2


def test_contract_moving_the_inputs_revokes_the_old_read_access(fake: FakeAzure) -> None:
    deploy(triggers=[Http()])
    lines = [str(step) for step in plan(triggers=[Http()], inputs=None).steps]
    assert any(
        line.startswith("update config: revoke the app identity's role on") for line in lines
    )
    deploy(triggers=[Http()], inputs=None)
    assert assignments(fake) == {(BLOB_OWNER, ACCOUNT_PATH), (BLOB_CONTRIBUTOR, OUTPUT_SCOPE)}


# -- partial failure and recovery ---------------------------------------------------


def test_contract_failed_role_assignment_leaves_no_claim_and_the_next_deploy_recovers(
    fake: FakeAzure,
) -> None:
    fake.fail_next(
        "PUT",
        "containers/features/providers/Microsoft.Authorization",
        status=403,
        code="AuthorizationFailed",
        message="does not have authorization to perform action roleAssignments/write",
    )
    with pytest.raises(ProviderError, match="permission denied.*Role Based Access Control"):
        deploy(triggers=[DAILY, Http()])
    # The app exists, but claims no code: nothing was published.
    assert site(fake)["tags"]["deployer-code-hash"] == ""
    assert publishes(fake) == []

    recovery = plan(triggers=[DAILY, Http()])
    assert recovery.kinds() == [UPDATE_CONFIG, UPDATE_CODE, UPDATE_CONFIG, ADD_TRIGGER, ADD_TRIGGER]
    assert "grant Storage Blob Data Reader" in str(recovery.steps[0])
    deployment = deploy(triggers=[DAILY, Http()])
    assert len(publishes(fake)) == 1
    assert site(fake)["tags"]["deployer-code-hash"] == deployment.code_hash
    assert len(assignments(fake)) == 3
    assert plan(triggers=[DAILY, Http()]).changes_nothing


def test_contract_failed_publish_keeps_the_previous_code_claimed(fake: FakeAzure) -> None:
    first = deploy(triggers=[Http()])
    fake.fail_next("POST", "/api/publish", status=500, message="Kudu could not store the package")
    with pytest.raises(ProviderError, match="HTTP 500"):
        deploy(predict_v2, triggers=[Http()])
    assert site(fake)["tags"]["deployer-code-hash"] == first.code_hash
    assert plan(predict_v2, triggers=[Http()]).kinds() == [UPDATE_CODE]
    second = deploy(predict_v2, triggers=[Http()])
    assert site(fake)["tags"]["deployer-code-hash"] == second.code_hash


def test_contract_a_deployment_in_progress_is_waited_for(fake: FakeAzure) -> None:
    fake.busy = 2  # Kudu answers 409 while another deployment runs
    deploy(triggers=[Http()])
    assert [request.path for request in publishes(fake)] == [f"/scm/{APP}/api/publish"] * 3


def test_contract_a_publish_that_registers_no_function_fails_clearly(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = deploy(triggers=[Http()])
    monkeypatch.setattr(azure_provider, "REGISTRATION_TIMEOUT_SECONDS", 0)
    fake.register_nothing = True  # the host could not load the app
    with pytest.raises(ProviderError, match="lists none of its functions.*python_packages"):
        deploy(predict_v2, triggers=[Http()])
    assert site(fake)["tags"]["deployer-code-hash"] == first.code_hash
    fake.register_nothing = False
    assert plan(predict_v2, triggers=[Http()]).kinds() == [UPDATE_CODE]


def test_contract_a_new_identity_entra_does_not_know_yet_is_tried_again(fake: FakeAzure) -> None:
    fake.unsettled = 2
    deploy(triggers=[Http()])
    owner_attempts = [
        request
        for request in fake.calls(method="PUT", contains="roleAssignments")
        if request.path.startswith(ACCOUNT_PATH)
    ]
    assert len(owner_attempts) == 3
    assert len(assignments(fake)) == 3


# -- ownership ----------------------------------------------------------------------


def test_contract_an_app_deployer_did_not_make_is_refused_not_adopted(fake: FakeAzure) -> None:
    fake.sites[SITE_PATH.lower()] = {
        "id": SITE_PATH,
        "name": APP,
        "type": "Microsoft.Web/sites",
        "kind": "functionapp,linux",
        "location": LOCATION,
        "tags": {"team": "someone else"},
        "properties": {"state": "Running"},
    }
    before = json.dumps(fake.sites, sort_keys=True)
    with pytest.raises(ProviderError, match="not deployed by deployer"):
        deploy(triggers=[Http()])
    assert fake.changing_calls() == []
    assert json.dumps(fake.sites, sort_keys=True) == before
    assert AzureProvider().get("scores") is None
    assert AzureProvider().list() == []


def test_contract_a_storage_account_deployer_did_not_make_is_refused(fake: FakeAzure) -> None:
    fake.add_storage_account(SUBSCRIPTION, GROUP, ACCOUNT, tags={"team": "billing"})
    with pytest.raises(ProviderError, match=f"storage account {ACCOUNT} .*not made by deployer"):
        deploy(triggers=[Http()])
    assert fake.changing_calls() == []


def test_contract_an_app_name_taken_elsewhere_is_refused_before_anything_is_made(
    fake: FakeAzure,
) -> None:
    fake.taken_site_names.add(APP)
    with pytest.raises(ConfigError, match=f"the function app name {APP} .*is taken elsewhere"):
        deploy(triggers=[Http()])
    assert fake.changing_calls() == []


# -- reading, invoking, deleting ------------------------------------------------------


def test_contract_list_and_get_read_the_state_from_azure(fake: FakeAzure) -> None:
    deployment = deploy(triggers=[DAILY, Http(public=True)])
    [state] = AzureProvider().list()
    assert (state.name, state.provider, state.output, state.inputs) == (
        "scores",
        "azure",
        OUTPUT,
        INPUTS,
    )
    assert state.code_hash == deployment.code_hash and state.qualname == "predict"
    assert sorted(state.triggers, key=lambda trigger: trigger["type"]) == [
        {"type": "cron", "expr": "0 6 * * *", "tz": "UTC"},
        {"type": "http", "public": True},
    ]
    assert deployer.get("scores", provider="azure").url == deployment.url


def test_contract_invoke_posts_the_records_with_the_function_key(fake: FakeAzure) -> None:
    deployment = deploy(triggers=[Http()])
    fake.requests.clear()
    predictions = deployment.invoke(pd.DataFrame({"x": [1, 2]}))
    keys = fake.calls(method="POST", contains="/listkeys")
    assert [request.path for request in keys] == [f"{SITE_PATH}/functions/http/listkeys"]
    [call] = [request for request in fake.requests if request.path.startswith("/sites/")]
    assert call.path == f"/sites/{APP}/api/scores"
    assert call.headers["x-functions-key"].startswith("key-")
    assert call.headers["x-deployer-trigger"] == "manual"
    assert call.body == [{"x": 1}, {"x": 2}]
    assert predictions.to_dict("records") == [{"x": 1}, {"x": 2}]


def test_contract_a_public_function_is_called_without_a_key(fake: FakeAzure) -> None:
    deployment = deploy(triggers=[Http(public=True)])
    fake.requests.clear()
    deployment.invoke([{"x": 1}])
    assert fake.calls(contains="/listkeys") == []
    [call] = [request for request in fake.requests if request.path.startswith("/sites/")]
    assert "x-functions-key" not in call.headers


def test_contract_without_an_http_trigger_invoke_uses_the_master_key(fake: FakeAzure) -> None:
    deployment = deploy(triggers=[DAILY])
    assert deployment.url is None  # nobody else may call it
    fake.requests.clear()
    deployment.invoke([{"x": 1}])
    assert [request.path for request in fake.calls(contains="/listkeys")] == [
        f"{SITE_PATH}/host/default/listkeys"
    ]
    [call] = [request for request in fake.requests if request.path.startswith("/sites/")]
    assert call.headers["x-functions-key"].startswith("master-")


def test_contract_delete_removes_what_deployer_made_and_nothing_else(fake: FakeAzure) -> None:
    deployment = deploy(triggers=[DAILY, Http()])
    principal = site(fake)["identity"]["principalId"]
    # Someone else's grant to the same identity is not deployer's to remove.
    foreign = f"{DATA_ACCOUNT_ID}/providers/Microsoft.Authorization/roleAssignments/someone-elses"
    fake.assignments[foreign.lower()] = {
        "id": foreign,
        "name": "someone-elses",
        "properties": {
            "roleDefinitionId": (
                f"/providers/Microsoft.Authorization/roleDefinitions/{ROLE_IDS[BLOB_READER]}"
            ),
            "principalId": principal,
            "scope": DATA_ACCOUNT_ID,
        },
    }
    delete_plan = AzureProvider().plan_delete("scores")
    assert delete_plan.kinds() == [DELETE, REMOVE_TRIGGER, REMOVE_TRIGGER, *[DELETE] * 4]
    fake.requests.clear()
    deployment.delete(quiet=True)
    deletes = [request.path for request in fake.calls(method="DELETE")]
    # Role assignments first (while the identity exists), then the app, its plan, its storage.
    assert len(deletes) == 6
    assert all("roleAssignments" in path for path in deletes[:3])
    assert deletes[3:] == [SITE_PATH, PLAN_PATH, ACCOUNT_PATH]
    assert fake.sites == {} and fake.plans == {}
    assert list(fake.assignments) == [foreign.lower()]
    # The data account and its containers (the outputs) stay.
    assert DATA_ACCOUNT_ID.lower() in fake.accounts
    assert f"{OUTPUT_SCOPE.lower()}" in fake.containers
    with pytest.raises(ConfigError, match="no function named 'scores'"):
        deployer.delete("scores", provider="azure", quiet=True)


# -- bad input: refused before anything is created -------------------------------------


def test_unsupported_python_is_refused_naming_what_works(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("deployer.bundle.python_version", lambda: "3.7")
    with pytest.raises((ConfigError, ProviderError), match=r"3\.7"):
        deploy(triggers=[Http()])
    assert fake.requests == []


def test_output_and_inputs_must_be_azure_storage(fake: FakeAzure) -> None:
    with pytest.raises(ConfigError, match="az://"):
        deploy(output="s3://bucket/runs")
    with pytest.raises(ConfigError, match="output='az://"):
        deployer.deploy(predict, name="scores", provider="azure", quiet=True)
    with pytest.raises(ConfigError, match="inputs='az://"):
        deploy(inputs="/tmp/features.parquet")
    assert fake.requests == []


def test_abfs_urls_name_their_own_account(fake: FakeAzure) -> None:
    with pytest.raises(ConfigError, match="storage account 'elsewhere' is not in subscription"):
        plan(triggers=[Http()], inputs="abfs://features@elsewhere.dfs.core.windows.net/x.parquet")
    assert fake.changing_calls() == []


def test_an_az_url_without_an_account_is_refused(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME")
    with pytest.raises(ConfigError, match="names no storage account.*storage_account"):
        AzureProvider().plan(built_bundle(triggers=[Http()]), _spec(triggers=[Http()]))
    assert fake.changing_calls() == []


def test_timeout_over_the_flex_limit_is_refused(fake: FakeAzure) -> None:
    # (deploy() caps every timeout at 3600 s already; the provider says why for Flex.)
    spec = dataclasses.replace(_spec(), timeout_seconds=7200)
    with pytest.raises(ConfigError, match="3600 s .*60 minutes"):
        AzureProvider().check(spec)
    with pytest.raises(ConfigError, match="4096 MB"):
        deploy(memory=8192)
    assert fake.requests == []


@pytest.mark.parametrize(
    "variable, fragment",
    [
        ("AZURE_SUBSCRIPTION_ID", "subscription_id.*AZURE_SUBSCRIPTION_ID"),
        ("AZURE_RESOURCE_GROUP", "resource_group.*AZURE_RESOURCE_GROUP"),
        ("AZURE_LOCATION", "location.*AZURE_LOCATION"),
    ],
)
def test_missing_configuration_is_named(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch, variable: str, fragment: str
) -> None:
    monkeypatch.delenv(variable)
    with pytest.raises(ConfigError, match=fragment):
        deploy(triggers=[Http()])
    assert fake.changing_calls() == []


def test_options_win_over_the_environment(fake: FakeAzure) -> None:
    fake.add_resource_group(SUBSCRIPTION, "other")
    deploy(triggers=[Http()], provider_options={"resource_group": "other", "location": "eastus"})
    other = app_name("scores", SUBSCRIPTION, "other")
    [found] = fake.sites.values()
    assert found["name"] == other != APP and found["location"] == "eastus"


def test_a_missing_resource_group_is_named(fake: FakeAzure) -> None:
    with pytest.raises(
        ConfigError, match="resource group 'nowhere' does not exist.*az group create"
    ):
        deploy(triggers=[Http()], provider_options={"resource_group": "nowhere"})
    assert fake.changing_calls() == []


def test_missing_credentials_say_how_to_log_in(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    # The developer chain only (Azure CLI, PowerShell, azd: none installed here):
    # never the instance metadata endpoint of a machine that is not in Azure.
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    with pytest.raises(ConfigError, match="az login.*AZURE_CLIENT_ID"):
        deploy(triggers=[Http()])
    assert fake.requests == []


def test_app_names_are_valid_and_distinct_per_resource_group() -> None:
    assert re.fullmatch(r"scores-[0-9a-f]{10}", APP)
    assert app_name("scores", SUBSCRIPTION, "other") != APP
    assert re.fullmatch(r"dpl[0-9a-f]{21}", ACCOUNT)
    with pytest.raises(ConfigError, match="2-60 lowercase letters"):
        app_name("a" * 55, SUBSCRIPTION, GROUP)
    with pytest.raises(ConfigError, match="Azure app name"):
        app_name("Scores_1", SUBSCRIPTION, GROUP)


def _spec(**overrides: Any) -> Any:
    arguments = options(**overrides)
    arguments.pop("quiet")
    return deployer.build(predict, **arguments).spec
