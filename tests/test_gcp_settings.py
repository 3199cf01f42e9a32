"""env=, secrets= and max_concurrency on GCP, against the loopback fake of Google's
control planes (tests/gcp_fake.py) and gcp-storage-emulator.

Contract tests (``test_contract_...``), as in test_gcp_provider.py: the official
clients and the REST calls send their requests to the fake, which keeps the
function, the secrets and their IAM policies, and records every request.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from gcp_emulators import gcs_emulator
from gcp_fake import FakeGoogleCloud
from google.cloud import functions_v2
from test_gcp_provider import (
    FUNCTION,
    FUNCTION_ACCOUNT,
    OUTPUT,
    PROJECT,
    buckets,
    deploy,
    environment,
    fake,
    fake_google_cloud,
    get_function,
    no_real_google,
    options,
    plan,
    predict,
    predict_v2,
)

import deployer
from deployer import ConfigError, ProviderError
from deployer.providers.gcp.provider import GcpProvider

# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (gcs_emulator, buckets, fake, fake_google_cloud, no_real_google)

ACCESSOR = "roles/secretmanager.secretAccessor"
MEMBER = f"serviceAccount:{FUNCTION_ACCOUNT}"
# A secret's value: it must never leave Secret Manager (here: the fake's store).
VALUE = b"pw-7f3c9e1d-never-anywhere"
DB_SECRET = f"projects/{PROJECT}/secrets/db-password"
API_SECRET = "projects/other-project/secrets/api-key"
# Someone else's grants on the secret: deployer adds its account beside them.
OTHERS = [
    {"role": ACCESSOR, "members": ["user:alice@example.com"]},
    {"role": "roles/secretmanager.viewer", "members": ["group:ops@example.com"]},
]


def settings() -> dict[str, Any]:
    deployed = GcpProvider().deployed("scores")
    assert deployed is not None
    return deployed.settings


def add_secrets(fake: FakeGoogleCloud) -> None:
    """db-password (two versions, someone else may read it) and api-key, in another project."""
    fake.add_secret(PROJECT, "db-password", b"old", VALUE)
    fake.secret_policies[DB_SECRET] = {"version": 1, "etag": "BwOthers", "bindings": OTHERS}
    fake.add_secret("other-project", "api-key", b"key-1", b"key-2")


def readers(fake: FakeGoogleCloud, secret: str) -> list[str]:
    return sorted(
        member
        for binding in fake.secret_policies.get(secret, {}).get("bindings", [])
        if binding["role"] == ACCESSOR
        for member in binding["members"]
    )


def lines(computed: Any) -> list[str]:
    return [str(action) for action in computed.actions]


def changes(fake: FakeGoogleCloud) -> list[str]:
    return [request.call for request in fake.requests if request.method != "GET"]


# --- env= ------------------------------------------------------------------------------


def test_contract_env_is_set_beside_deployers_own_variables_and_read_back(
    fake: FakeGoogleCloud,
) -> None:
    deploy(env={"LOG_LEVEL": "info", "MODEL_VARIANT": "b"})
    variables = environment(fake)
    assert variables["LOG_LEVEL"] == "info" and variables["MODEL_VARIANT"] == "b"
    assert variables["DEPLOYER_OUTPUT"] == OUTPUT
    assert variables["DEPLOYER_MANAGED"] == "LOG_LEVEL,MODEL_VARIANT"
    assert settings()["env"] == {"LOG_LEVEL": "info", "MODEL_VARIANT": "b"}
    assert settings()["secrets"] == {} and settings()["max concurrency"] is None
    assert plan(env={"LOG_LEVEL": "info", "MODEL_VARIANT": "b"}).changes_nothing
    assert lines(plan(env={"LOG_LEVEL": "debug", "MODEL_VARIANT": "b"})) == [
        "update config: env: {'LOG_LEVEL': 'info', 'MODEL_VARIANT': 'b'} -> "
        "{'LOG_LEVEL': 'debug', 'MODEL_VARIANT': 'b'}"
    ]


def test_contract_a_variable_set_in_the_console_survives_redeploys_a_dropped_name_goes(
    fake: FakeGoogleCloud,
) -> None:
    deploy(env={"LOG_LEVEL": "info", "MODEL_VARIANT": "b"})
    # Set outside deployer, as the console does: on the function itself.
    fake.functions[FUNCTION]["serviceConfig"]["environmentVariables"]["FEATURE_FLAG"] = "on"
    # Not deployer's: it is no change to plan, and no setting of the user's.
    assert plan(env={"LOG_LEVEL": "info", "MODEL_VARIANT": "b"}).changes_nothing
    assert "FEATURE_FLAG" not in settings()["env"]

    # New code only: the whole function is updated, and the variable stays.
    deploy(predict_v2, env={"LOG_LEVEL": "info", "MODEL_VARIANT": "b"})
    assert environment(fake)["FEATURE_FLAG"] == "on"

    assert lines(plan(predict_v2, env={"LOG_LEVEL": "info"})) == [
        "update config: env: {'LOG_LEVEL': 'info', 'MODEL_VARIANT': 'b'} -> {'LOG_LEVEL': 'info'}"
    ]
    deploy(predict_v2, env={"LOG_LEVEL": "info"})
    variables = environment(fake)
    assert "MODEL_VARIANT" not in variables
    assert variables["FEATURE_FLAG"] == "on" and variables["LOG_LEVEL"] == "info"
    assert variables["DEPLOYER_MANAGED"] == "LOG_LEVEL"

    deploy(predict_v2)
    variables = environment(fake)
    assert "LOG_LEVEL" not in variables and "DEPLOYER_MANAGED" not in variables
    assert variables["FEATURE_FLAG"] == "on"
    assert plan(predict_v2).changes_nothing


def test_names_cloud_functions_sets_itself_are_refused_by_build(fake: FakeGoogleCloud) -> None:
    for env in ({"K_SERVICE": "x"}, {"X_GOOGLE_FUNCTION_NAME": "x"}, {"PORT": "1"}):
        with pytest.raises(ConfigError, match="set by Cloud Functions itself"):
            deployer.build(predict, **without_quiet(env=env))
    assert fake.requests == []


# --- secrets= --------------------------------------------------------------------------


def test_contract_a_secret_is_a_secret_variable_only_the_functions_account_may_read(
    fake: FakeGoogleCloud,
) -> None:
    add_secrets(fake)
    computed = plan(secrets={"DB_PASSWORD": "db-password"})
    grant = (
        f"update config: grant {ACCESSOR} on secret {DB_SECRET} to {FUNCTION_ACCOUNT} "
        "(for DB_PASSWORD)"
    )
    planned = lines(computed)
    # Granted before the function names the secret (Cloud Functions checks it).
    [create] = [line for line in planned if line.startswith("create: Cloud Function scores ")]
    assert planned.index(grant) < planned.index(create)
    assert {request.method for request in fake.requests} == {"GET"}  # planning only reads

    deploy(secrets={"DB_PASSWORD": "db-password"})
    service = get_function(fake).service_config
    assert list(service.secret_environment_variables) == [
        functions_v2.SecretEnvVar(
            key="DB_PASSWORD", project_id=PROJECT, secret="db-password", version="latest"
        )
    ]
    variables = dict(service.environment_variables)
    assert "DB_PASSWORD" not in variables  # the platform sets it from Secret Manager
    assert json.loads(variables["DEPLOYER_SECRETS"]) == {"DB_PASSWORD": "db-password"}
    # Exactly the function's account, on exactly that secret, beside the grants there were.
    assert readers(fake, DB_SECRET) == sorted(["user:alice@example.com", MEMBER])
    assert {"role": "roles/secretmanager.viewer", "members": ["group:ops@example.com"]} in (
        fake.secret_policies[DB_SECRET]["bindings"]
    )
    assert set(fake.secret_policies) == {DB_SECRET}
    [set_policy] = fake.calls(contains="/secrets/", method="POST")
    assert set_policy.path == f"/v1/{DB_SECRET}:setIamPolicy"
    assert settings()["secrets"] == {"DB_PASSWORD": "db-password"}
    assert settings()["env"] == {}

    fake.requests.clear()
    assert plan(secrets={"DB_PASSWORD": "db-password"}).changes_nothing
    deploy(secrets={"DB_PASSWORD": "db-password"})
    assert changes(fake) == []


def test_contract_full_references_and_versions_are_kept_as_given(fake: FakeGoogleCloud) -> None:
    add_secrets(fake)
    secrets = {"API_KEY": f"{API_SECRET}/versions/2", "DB_PASSWORD": "db-password@1"}
    deploy(secrets=secrets)
    assert sorted(
        (variable.key, variable.project_id, variable.secret, variable.version)
        for variable in get_function(fake).service_config.secret_environment_variables
    ) == [
        ("API_KEY", "other-project", "api-key", "2"),
        ("DB_PASSWORD", PROJECT, "db-password", "1"),
    ]
    assert readers(fake, API_SECRET) == [MEMBER]
    assert settings()["secrets"] == secrets
    assert plan(secrets=secrets).changes_nothing
    # The same secret version written another way is a change of the setting only.
    spelled = {**secrets, "DB_PASSWORD": f"{DB_SECRET}/versions/1"}
    assert lines(plan(secrets=spelled)) == [f"update config: secrets: {secrets!r} -> {spelled!r}"]
    # Changed in the console, the variable shows as it is, and deploy puts it back.
    variables = fake.functions[FUNCTION]["serviceConfig"]["secretEnvironmentVariables"]
    next(v for v in variables if v["key"] == "DB_PASSWORD")["version"] = "2"
    assert settings()["secrets"]["DB_PASSWORD"] == f"{DB_SECRET}/versions/2"
    deploy(secrets=secrets)
    assert settings()["secrets"] == secrets


def test_a_secrets_value_is_in_no_artifact_label_plan_variable_or_request(
    fake: FakeGoogleCloud, tmp_path: Path
) -> None:
    add_secrets(fake)
    secrets = {"DB_PASSWORD": "db-password", "API_KEY": API_SECRET}
    built = deployer.build(predict, **without_quiet(secrets=secrets))
    written = deployer.write_artifacts(built, tmp_path, quiet=True)
    assert written
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert VALUE not in data
            if zipfile.is_zipfile(io.BytesIO(data)):
                with zipfile.ZipFile(io.BytesIO(data)) as archive:
                    for member in archive.namelist():
                        assert VALUE not in archive.read(member), member
    computed = plan(secrets=secrets)
    assert VALUE.decode() not in str(computed) + "\n".join(lines(computed))

    deploy(secrets=secrets)
    function = get_function(fake)
    assert VALUE.decode() not in json.dumps(dict(function.labels))
    assert VALUE.decode() not in json.dumps(dict(function.service_config.environment_variables))
    assert VALUE.decode() not in json.dumps(fake.functions)
    assert VALUE.decode() not in json.dumps(settings())
    for request in fake.requests:
        assert VALUE not in request.data and VALUE.decode() not in request.path
    # No version (a value) was ever asked for: only secrets' metadata and policies.
    assert not [request for request in fake.requests if "/versions" in request.path]


def test_contract_a_missing_secret_is_refused_before_anything_is_made(
    fake: FakeGoogleCloud,
) -> None:
    with pytest.raises(ProviderError) as raised:
        deploy(secrets={"DB_PASSWORD": "db-password"})
    message = str(raised.value)
    assert "db-password" in message and "DB_PASSWORD" in message
    assert f"gcloud secrets create db-password --project {PROJECT}" in message
    assert {request.method for request in fake.requests} == {"GET"}
    assert fake.functions == {} and fake.accounts == {} and fake.uploads == {}


@pytest.mark.parametrize(
    "reference",
    [
        "correct horse battery staple",
        "projects/acme-ml/secrets",
        "projects/acme-ml/secrets/db/versions/0",
        "db-password@v2",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db",
    ],
)
def test_a_malformed_reference_is_refused_by_build_naming_the_forms(
    fake: FakeGoogleCloud, reference: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        deployer.build(predict, **without_quiet(secrets={"DB_PASSWORD": reference}))
    message = str(raised.value)
    assert "DB_PASSWORD" in message
    assert "projects/PROJECT/secrets/SECRET/versions/VERSION" in message
    assert "SECRET@VERSION" in message
    assert reference not in message  # it may be the value itself, passed by mistake
    assert fake.requests == []


def test_contract_dropping_a_secret_revokes_the_functions_access_to_it(
    fake: FakeGoogleCloud,
) -> None:
    add_secrets(fake)
    deploy(secrets={"DB_PASSWORD": "db-password", "API_KEY": API_SECRET})
    # A secret variable set in the console, reading db-password too.
    console = {"key": "LEGACY", "projectId": PROJECT, "secret": "db-password", "version": "1"}
    fake.functions[FUNCTION]["serviceConfig"]["secretEnvironmentVariables"].append(console)
    fake.requests.clear()

    computed = plan(secrets={"API_KEY": API_SECRET})
    # db-password is still read (by LEGACY): its grant stays.
    assert [line for line in lines(computed) if "secret " in line and "revoke" in line] == []
    fake.functions[FUNCTION]["serviceConfig"]["secretEnvironmentVariables"].remove(console)

    assert lines(plan(secrets={"API_KEY": API_SECRET})) == [
        f"update config: secrets: {{'API_KEY': '{API_SECRET}', 'DB_PASSWORD': 'db-password'}} "
        f"-> {{'API_KEY': '{API_SECRET}'}}",
        f"update config: revoke {FUNCTION_ACCOUNT}'s access to secret {DB_SECRET}",
    ]
    fake.requests.clear()
    deploy(secrets={"API_KEY": API_SECRET})
    assert [v.key for v in get_function(fake).service_config.secret_environment_variables] == [
        "API_KEY"
    ]
    assert readers(fake, DB_SECRET) == ["user:alice@example.com"]
    assert readers(fake, API_SECRET) == [MEMBER]
    # Taken back only once the function no longer reads it.
    [patch] = fake.calls(method="PATCH")
    [revoke] = fake.calls(contains=":setIamPolicy", method="POST")
    assert fake.requests.index(patch) < fake.requests.index(revoke)
    assert settings()["secrets"] == {"API_KEY": API_SECRET}
    assert plan(secrets={"API_KEY": API_SECRET}).changes_nothing


def test_contract_delete_revokes_the_functions_access_to_its_secrets(
    fake: FakeGoogleCloud,
) -> None:
    add_secrets(fake)
    deployment = deploy(secrets={"DB_PASSWORD": "db-password", "API_KEY": API_SECRET})
    fake.requests.clear()
    deployment.delete(quiet=True)
    assert readers(fake, DB_SECRET) == ["user:alice@example.com"]
    assert fake.secret_policies[API_SECRET].get("bindings", []) == []
    # Before the account itself went.
    revokes = fake.calls(contains=":setIamPolicy", method="POST")
    assert sorted(request.path for request in revokes) == [
        f"/v1/{DB_SECRET}:setIamPolicy",
        f"/v1/{API_SECRET}:setIamPolicy",
    ]
    [gone] = fake.calls(method="DELETE", contains="/serviceAccounts/")
    assert all(fake.requests.index(revoke) < fake.requests.index(gone) for revoke in revokes)


# --- max_concurrency -------------------------------------------------------------------


def test_contract_max_concurrency_is_the_maximum_instance_count(fake: FakeGoogleCloud) -> None:
    deploy(max_concurrency=5)
    assert get_function(fake).service_config.max_instance_count == 5
    assert settings()["max concurrency"] == 5
    fake.requests.clear()
    assert plan(max_concurrency=5).changes_nothing
    deploy(max_concurrency=5)
    assert changes(fake) == []

    assert lines(plan(max_concurrency=None)) == ["update config: max concurrency: 5 -> None"]
    deploy()
    # Back to the platform's default, which is no setting of deployer's.
    assert get_function(fake).service_config.max_instance_count == 100
    assert settings()["max concurrency"] is None
    assert plan().changes_nothing


def test_contract_an_instance_count_set_in_the_console_is_left_alone(
    fake: FakeGoogleCloud,
) -> None:
    deploy()
    fake.functions[FUNCTION]["serviceConfig"]["maxInstanceCount"] = 7
    assert plan().changes_nothing
    fake.requests.clear()
    deploy(predict_v2)
    assert get_function(fake).service_config.max_instance_count == 7
    [patch] = fake.calls(method="PATCH")
    assert "serviceConfig.maxInstanceCount" not in patch.query["updateMask"]


# --- helpers ---------------------------------------------------------------------------


def without_quiet(**overrides: Any) -> dict[str, Any]:
    arguments = options(**overrides)
    arguments.pop("quiet")
    return arguments
