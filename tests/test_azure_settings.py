"""env=, secrets= and max_concurrency= on Azure, against the control-plane fake.

Contract tests (there is no emulator for Azure Resource Manager): the fixtures,
the fake and Azurite are those of tests/test_azure_provider.py. A secret is a
Key Vault reference the platform resolves as the app's identity; the fake
keeps each secret's value, as Key Vault would, and never serves it, so a test
can look for that value everywhere deployer writes.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from azure_fake import FakeAzure
from azurite import azurite
from test_azure_provider import (
    ACCOUNT,
    SITE_PATH,
    SUBSCRIPTION,
    azure_fake,
    changes,
    deploy,
    fake,
    no_real_azure,
    options,
    plan,
    predict,
    publishes,
    site,
)

import deployer
from deployer import ConfigError, Http
from deployer.providers.azure.provider import ROLE_IDS, SECRETS_USER, AzureProvider
from deployer.providers.base import UPDATE_CONFIG

# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (azurite, azure_fake, fake, no_real_azure)

VAULT = "scores-kv"
VAULT_GROUP = "secrets"
DB_SECRET = "db-password"
API_SECRET = "api-token"


def secret_url(secret: str, version: str = "") -> str:
    return f"https://{VAULT}.vault.azure.net/secrets/{secret}" + (f"/{version}" if version else "")


def add_vault(fake: FakeAzure, *secrets: str, rbac: bool = True) -> dict[str, str]:
    """The vault with ``secrets``: secret name -> its distinctive value."""
    vault_id = fake.add_key_vault(SUBSCRIPTION, VAULT_GROUP, VAULT, rbac=rbac)
    values = {}
    for secret in secrets:
        values[secret] = f"value-of-{secret}-{uuid.uuid4().hex}"
        fake.add_secret(vault_id, secret, values[secret])
    return values


def secret_id(secret: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{VAULT_GROUP}/providers/"
        f"Microsoft.KeyVault/vaults/{VAULT}/secrets/{secret}"
    )


def app_settings(fake: FakeAzure) -> dict[str, str]:
    return fake.settings[SITE_PATH.lower()]


def secret_grants(fake: FakeAzure) -> list[tuple[str, str]]:
    """(principal, scope) of every Key Vault Secrets User assignment in the fake."""
    return sorted(
        (a["properties"]["principalId"], a["properties"]["scope"])
        for a in fake.assignments.values()
        if a["properties"]["roleDefinitionId"].endswith(ROLE_IDS[SECRETS_USER])
    )


def deployed_settings() -> dict[str, Any]:
    found = AzureProvider().deployed("scores")
    assert found is not None
    return found.settings


# -- env= ------------------------------------------------------------------------------


def test_contract_env_is_set_beside_deployers_own_settings_and_read_back(fake: FakeAzure) -> None:
    deploy(triggers=[Http()], env={"LOG_LEVEL": "info", "REGION": "eu"})
    settings = app_settings(fake)
    assert settings["LOG_LEVEL"] == "info" and settings["REGION"] == "eu"
    assert settings["DEPLOYER_MANAGED"] == "LOG_LEVEL,REGION"
    assert settings["AzureWebJobsStorage__accountName"] == ACCOUNT
    assert deployed_settings()["env"] == {"LOG_LEVEL": "info", "REGION": "eu"}
    assert deployed_settings()["secrets"] == {}
    assert deployed_settings()["max concurrency"] is None


def test_contract_settings_made_elsewhere_survive_a_redeploy_and_a_removed_env_name_goes(
    fake: FakeAzure,
) -> None:
    deploy(triggers=[Http()], env={"LOG_LEVEL": "info", "REGION": "eu"})
    # Set in the portal, and by the platform when Application Insights is turned on.
    app_settings(fake)["FEATURE_FLAG"] = "on"
    connection = "InstrumentationKey=k;ApplicationId=a"
    app_settings(fake)["APPLICATIONINSIGHTS_CONNECTION_STRING"] = connection
    fake.requests.clear()

    [step] = plan(triggers=[Http()], env={"LOG_LEVEL": "debug"}).steps
    assert step.kind == UPDATE_CONFIG and str(step).startswith("update config: env: ")
    deploy(triggers=[Http()], env={"LOG_LEVEL": "debug"})

    assert changes(fake) == [f"PUT {SITE_PATH}"]  # a setting is no reason to publish
    settings = app_settings(fake)
    assert "REGION" not in settings
    assert settings["LOG_LEVEL"] == "debug"
    assert settings["FEATURE_FLAG"] == "on"
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == connection
    assert settings["AzureWebJobsStorage__accountName"] == ACCOUNT
    assert settings["DEPLOYER_MANAGED"] == "LOG_LEVEL"

    deploy(triggers=[Http()])  # no env= at all: deployer's variables go, the others stay
    settings = app_settings(fake)
    assert "LOG_LEVEL" not in settings and "DEPLOYER_MANAGED" not in settings
    assert settings["FEATURE_FLAG"] == "on"
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == connection


@pytest.mark.parametrize(
    "env",
    [
        {"FUNCTIONS_WORKER_RUNTIME": "python"},
        {"AzureWebJobsStorage": "x"},
        {"WEBSITE_TIME_ZONE": "Europe/Berlin"},
        {"SCM_DO_BUILD_DURING_DEPLOYMENT": "true"},
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": "x"},
        {"website_run_from_package": "1"},  # app setting names ignore case
    ],
)
def test_a_name_the_platform_sets_is_refused_by_build(fake: FakeAzure, env: dict[str, str]) -> None:
    [name] = env
    with pytest.raises(ConfigError, match=f"env=: {name} is an app setting the Azure Functions"):
        deployer.build(predict, **_build_options(env=env))
    with pytest.raises(ConfigError, match=f"secrets=: {name} is an app setting"):
        deployer.build(predict, **_build_options(secrets={name: secret_url(DB_SECRET)}))
    assert fake.requests == []


def test_names_deployer_sets_or_that_differ_only_in_case_are_refused(fake: FakeAzure) -> None:
    with pytest.raises(ConfigError, match="storage_account"):
        deployer.build(predict, **_build_options(env={"AZURE_STORAGE_ACCOUNT_NAME": "x"}))
    with pytest.raises(ConfigError, match="would be one app setting"):
        deployer.build(predict, **_build_options(env={"db_url": "a", "DB_URL": "b"}))
    assert fake.requests == []


# -- secrets= --------------------------------------------------------------------------


def test_contract_a_secret_is_a_key_vault_reference_only_the_apps_identity_may_read(
    fake: FakeAzure,
) -> None:
    add_vault(fake, DB_SECRET, "unrelated")
    computed = plan(triggers=[Http()], secrets={"DB_PASSWORD": secret_url(DB_SECRET)})
    assert (
        f"update config: grant {SECRETS_USER} on secret {DB_SECRET} of key vault {VAULT} to the "
        "app's identity"
    ) in [str(step) for step in computed.steps]
    assert fake.changing_calls() == []  # the vault and the secret were looked up, no more

    deploy(triggers=[Http()], secrets={"DB_PASSWORD": secret_url(DB_SECRET)})

    settings = app_settings(fake)
    assert settings["DB_PASSWORD"] == (
        f"@Microsoft.KeyVault(SecretUri=https://{VAULT}.vault.azure.net/secrets/{DB_SECRET}/)"
    )
    assert json.loads(settings["DEPLOYER_SECRETS"]) == {"DB_PASSWORD": secret_url(DB_SECRET)}
    assert settings["DEPLOYER_MANAGED"] == "DB_PASSWORD"
    # One role, to the app's own identity, on exactly that secret (not the vault).
    principal = site(fake)["identity"]["principalId"]
    assert secret_grants(fake) == [(principal, secret_id(DB_SECRET))]
    # The reference is set only after the grant: the platform resolves it as the app starts.
    [create, *_, last] = fake.calls(method="PUT", contains=SITE_PATH)
    assert "DB_PASSWORD" not in json.dumps(create.body)
    assert "DB_PASSWORD" in json.dumps(last.body)
    grant = fake.calls(method="PUT", contains=f"{DB_SECRET}/providers/Microsoft.Authorization")
    assert fake.requests.index(grant[0]) < fake.requests.index(last)
    assert deployed_settings()["secrets"] == {"DB_PASSWORD": secret_url(DB_SECRET)}
    assert deployed_settings()["env"] == {}


def test_contract_a_secrets_value_is_in_no_artifact_tag_plan_setting_or_request(
    fake: FakeAzure, tmp_path: Path
) -> None:
    version = uuid.uuid4().hex
    values = add_vault(fake, DB_SECRET)
    secrets = {"DB_PASSWORD": secret_url(DB_SECRET, version)}
    value = values[DB_SECRET]

    built = deployer.build(predict, **_build_options(triggers=[Http()], secrets=secrets))
    seen = [str(built.spec), json.dumps(built.bundle.manifest, default=str)]
    for path in deployer.write_artifacts(built, tmp_path / "dist", quiet=True):
        seen.append(path.read_bytes().decode("latin-1"))
        with zipfile.ZipFile(path) as archive:  # the zip's members, uncompressed
            seen += [archive.read(member).decode("latin-1") for member in archive.namelist()]
    computed = plan(triggers=[Http()], secrets=secrets)
    seen += [str(computed), *map(str, computed.steps)]
    deploy(triggers=[Http()], secrets=secrets)
    seen += [json.dumps(site(fake)), json.dumps(app_settings(fake))]
    seen += [request.data.decode("latin-1") for request in fake.requests]
    seen += [json.dumps(request.query) + request.path for request in fake.requests]

    assert app_settings(fake)["DB_PASSWORD"] == (
        f"@Microsoft.KeyVault(SecretUri={secret_url(DB_SECRET, version)})"
    )
    assert not [text for text in seen if value in text]


@pytest.mark.parametrize(
    "vault_secrets, reference, message",
    [
        ((), secret_url(DB_SECRET), f"key vault {VAULT!r} is not in subscription"),
        (("other",), secret_url(DB_SECRET), f"key vault {VAULT} has no secret {DB_SECRET!r}"),
    ],
)
def test_contract_a_missing_vault_or_secret_is_refused_before_anything_is_made(
    fake: FakeAzure, vault_secrets: tuple[str, ...], reference: str, message: str
) -> None:
    if vault_secrets:
        add_vault(fake, *vault_secrets)
    with pytest.raises(ConfigError, match=f"secrets=: DB_PASSWORD: {message}"):
        deploy(triggers=[Http()], secrets={"DB_PASSWORD": reference})
    assert fake.changing_calls() == []
    assert fake.calls(method="PUT") == []


def test_contract_a_vault_that_ignores_azure_rbac_is_refused(fake: FakeAzure) -> None:
    add_vault(fake, DB_SECRET, rbac=False)
    with pytest.raises(ConfigError, match="access policies.*enable-rbac-authorization true"):
        deploy(triggers=[Http()], secrets={"DB_PASSWORD": secret_url(DB_SECRET)})
    assert fake.changing_calls() == []


@pytest.mark.parametrize(
    "reference",
    [
        "hunter2-the-password-itself",
        f"@Microsoft.KeyVault(SecretUri={secret_url(DB_SECRET)}/)",
        f"{VAULT}/{DB_SECRET}",
        f"https://{VAULT}.vault.azure.net/keys/{DB_SECRET}",
        f"https://{VAULT}.vault.azure.net/secrets/{DB_SECRET}/not-a-version",
    ],
)
def test_a_malformed_reference_is_refused_by_build_naming_the_form(
    fake: FakeAzure, reference: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        deployer.build(predict, **_build_options(secrets={"DB_PASSWORD": reference}))
    message = str(refused.value)
    assert message.startswith("secrets=: DB_PASSWORD is not the URL of a Key Vault secret")
    assert "https://<vault>.vault.azure.net/secrets/<secret>[/<version>]" in message
    assert reference not in message  # it may be the secret itself, typed in the wrong place
    assert fake.requests == []


def test_contract_dropping_a_secret_revokes_its_role_and_removes_its_setting(
    fake: FakeAzure,
) -> None:
    add_vault(fake, DB_SECRET, API_SECRET)
    both = {"DB_PASSWORD": secret_url(DB_SECRET), "API_TOKEN": secret_url(API_SECRET)}
    deploy(triggers=[Http()], secrets=both)
    principal = site(fake)["identity"]["principalId"]
    assert secret_grants(fake) == sorted(
        [(principal, secret_id(DB_SECRET)), (principal, secret_id(API_SECRET))]
    )

    kept = {"API_TOKEN": both["API_TOKEN"]}
    lines = [str(step) for step in plan(triggers=[Http()], secrets=kept).steps]
    revoke = f"update config: revoke the app identity's role on {secret_id(DB_SECRET)}"
    assert any(line.startswith(revoke) for line in lines)
    deploy(triggers=[Http()], secrets=kept)

    assert secret_grants(fake) == [(principal, secret_id(API_SECRET))]
    settings = app_settings(fake)
    assert "DB_PASSWORD" not in settings
    assert settings["API_TOKEN"].startswith("@Microsoft.KeyVault(SecretUri=")
    assert json.loads(settings["DEPLOYER_SECRETS"]) == kept
    assert publishes(fake)[1:] == []  # only the first deploy published


def test_contract_delete_removes_the_secrets_roles(fake: FakeAzure) -> None:
    add_vault(fake, DB_SECRET)
    deployment = deploy(triggers=[Http()], secrets={"DB_PASSWORD": secret_url(DB_SECRET)})
    assert len(secret_grants(fake)) == 1
    deployment.delete(quiet=True)
    assert secret_grants(fake) == []
    assert fake.assignments == {}
    assert fake.secrets[secret_id(DB_SECRET).lower()]  # the secret itself is the user's


# -- max_concurrency= ---------------------------------------------------------------------


def scale(fake: FakeAzure) -> dict[str, Any]:
    scale_settings: dict[str, Any] = site(fake)["properties"]["functionAppConfig"][
        "scaleAndConcurrency"
    ]
    return scale_settings


def test_contract_max_concurrency_caps_instances_at_one_call_each_and_round_trips(
    fake: FakeAzure,
) -> None:
    deploy(triggers=[Http()], max_concurrency=5)
    assert scale(fake) == {
        "maximumInstanceCount": 5,
        "instanceMemoryMB": 2048,
        "triggers": {"http": {"perInstanceConcurrency": 1}},
    }
    assert deployed_settings()["max concurrency"] == 5
    assert plan(triggers=[Http()], max_concurrency=5).changes_nothing

    fake.requests.clear()
    assert [str(step) for step in plan(triggers=[Http()], max_concurrency=8).steps] == [
        "update config: max concurrency: 5 -> 8"
    ]
    deploy(triggers=[Http()], max_concurrency=8)
    assert scale(fake)["maximumInstanceCount"] == 8
    assert publishes(fake) == []

    deploy(triggers=[Http()])  # None: the platform's defaults again
    assert scale(fake) == {"maximumInstanceCount": 100, "instanceMemoryMB": 2048}
    assert deployed_settings()["max concurrency"] is None
    assert plan(triggers=[Http()]).changes_nothing


def test_contract_a_scale_changed_in_the_portal_is_set_back(fake: FakeAzure) -> None:
    deploy(triggers=[Http()], max_concurrency=5)
    scale(fake)["triggers"]["http"]["perInstanceConcurrency"] = 16
    [step] = plan(triggers=[Http()], max_concurrency=5).steps
    assert str(step) == "update config: max concurrency: '5 instances of 16 calls each' -> 5"
    deploy(triggers=[Http()], max_concurrency=5)
    assert scale(fake)["triggers"] == {"http": {"perInstanceConcurrency": 1}}


def test_max_concurrency_over_the_flex_instance_limit_is_refused(fake: FakeAzure) -> None:
    spec = deployer.build(predict, **_build_options()).spec
    with pytest.raises(ConfigError, match="at most 1000 instances"):
        AzureProvider().check(dataclasses.replace(spec, max_concurrency=1001))


# -- all of them, redeployed unchanged --------------------------------------------------------


def test_contract_a_redeploy_with_the_same_settings_plans_and_changes_nothing(
    fake: FakeAzure,
) -> None:
    add_vault(fake, DB_SECRET)
    settings = {
        "triggers": [Http()],
        "env": {"LOG_LEVEL": "info"},
        "secrets": {"DB_PASSWORD": secret_url(DB_SECRET)},
        "max_concurrency": 3,
    }
    deploy(**settings)
    before = json.dumps([site(fake), app_settings(fake)], sort_keys=True)
    fake.requests.clear()
    assert plan(**settings).changes_nothing
    deploy(**settings)
    assert fake.changing_calls() == []
    assert json.dumps([site(fake), app_settings(fake)], sort_keys=True) == before
    assert deployed_settings()["env"] == {"LOG_LEVEL": "info"}
    assert deployed_settings()["secrets"] == {"DB_PASSWORD": secret_url(DB_SECRET)}
    assert deployed_settings()["max concurrency"] == 3
    # A secret's setting removed in the portal is planned back.
    del app_settings(fake)["DB_PASSWORD"]
    assert [step.kind for step in plan(**settings).steps] == [UPDATE_CONFIG]


def _build_options(**overrides: Any) -> dict[str, Any]:
    arguments = options(**overrides)
    arguments.pop("quiet")
    return arguments
