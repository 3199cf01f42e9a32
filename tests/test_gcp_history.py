"""Versions and rollback on GCP: each deployed source zip is kept with its settings beside
the output, and a rollback rebuilds exactly that source with them, the triggers as
deployed now.

Contract tests (``test_contract_...``), as in test_gcp_provider.py: the official
clients send their requests to the loopback fake of Google's control planes
(tests/gcp_fake.py), which keeps the function and records every request; the kept
versions are in gcp-storage-emulator, read back through its JSON API.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pandas as pd
import pytest
from gcp_emulators import GcsEmulator, gcs_emulator, mint_token, signing_key
from gcp_fake import FakeGoogleCloud
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from test_gcp_provider import (
    DAILY,
    FUNCTION,
    OUTPUT_BUCKET,
    PROJECT,
    REGION,
    add_account,
    buckets,
    fake,
    fake_google_cloud,
    get_function,
    invokers,
    jobs,
    no_real_google,
    options,
    predict,
    predict_v2,
)
from test_gcp_settings import DB_SECRET, MEMBER, VALUE, add_secrets, readers

import deployer
from deployer import ConfigError, Http, ProviderError
from deployer.providers.gcp.provider import credentials_email, decode_hash
from deployer.triggers import describe

# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (gcs_emulator, buckets, fake, fake_google_cloud, no_real_google)

# Alert webhooks are secrets: no kept version may hold one.
HOOK_A = "https://hooks.example.com/services/T0/B0/first-secret-token"
HOOK_B = "https://hooks.example.com/services/T0/B0/second-secret-token"


def predict_v3(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 4)


def predict_v4(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 5)


@pytest.fixture
def prefix() -> str:
    """An output prefix of this test's own: the emulator's buckets live for the session."""
    return f"history-{uuid.uuid4().hex[:12]}"


def deploy_to(prefix: str, function: Any = predict, **overrides: Any) -> deployer.Deployment:
    """Deploy "scores" with its output under ``prefix``."""
    output = f"gs://{OUTPUT_BUCKET}/{prefix}"
    return deployer.deploy(function, **options(output=output, **overrides))


def plan_to(prefix: str, function: Any = predict, **overrides: Any) -> Any:
    output = f"gs://{OUTPUT_BUCKET}/{prefix}"
    return deployer.plan(function, **options(output=output, **overrides))


def history() -> list[deployer.Version]:
    return deployer.history("scores", provider="gcp")


def rollback(to: str | None = None, **overrides: Any) -> deployer.Version:
    return deployer.rollback("scores", to=to, provider="gcp", quiet=True, **overrides)


def kept_keys(buckets: GcsEmulator, prefix: str) -> list[str]:
    return buckets.keys(OUTPUT_BUCKET, f"{prefix}/.deployer-artifacts/versions/")


def kept_key(prefix: str, version: str, suffix: str) -> str:
    return f"{prefix}/.deployer-artifacts/versions/{PROJECT}/{REGION}/scores/{version}{suffix}"


def deployed_source(fake: FakeGoogleCloud) -> bytes:
    """The zip the fake's function is built from now."""
    source = fake.functions[FUNCTION]["buildConfig"]["source"]["storageSource"]
    return fake.uploads[source["object"]]


def changes(fake: FakeGoogleCloud) -> list[str]:
    return [request.call for request in fake.requests if request.method != "GET"]


def test_contract_a_rollback_rebuilds_the_kept_source_with_its_settings_the_triggers_stay(
    fake: FakeGoogleCloud, buckets: GcsEmulator, prefix: str
) -> None:
    add_secrets(fake)
    first_settings: dict[str, Any] = {
        "env": {"MODE": "a"},
        "secrets": {"DB_PASSWORD": "db-password@2"},
        "memory": 512,
        "alerts": [HOOK_A],
    }
    first = deploy_to(prefix, triggers=[Http()], **first_settings)
    first_source = deployed_source(fake)
    second = deploy_to(
        prefix,
        predict_v2,
        triggers=[DAILY, Http()],
        env={"MODE": "b"},
        secrets={"DB_PASSWORD": "db-password@2"},
        memory=2048,
        timeout=600,
        max_concurrency=3,
        alerts=[HOOK_B],
    )
    second_source = deployed_source(fake)

    versions = history()
    assert [(version.code_hash, version.deps_hash, version.live) for version in versions] == [
        (second.code_hash, second.deps_hash, True),
        (first.code_hash, first.deps_hash, False),
    ]
    assert versions[0].deployed_at > versions[1].deployed_at
    # Anonymous credentials (the fake's) name nobody.
    assert [version.deployed_by for version in versions] == [None, None]
    # Each version: the zip deployed, byte for byte, and its record.
    old, new = versions[1].version, versions[0].version
    assert kept_keys(buckets, prefix) == sorted(
        kept_key(prefix, version, suffix) for version in (old, new) for suffix in (".json", ".zip")
    )
    assert buckets.get(OUTPUT_BUCKET, kept_key(prefix, old, ".zip")) == first_source
    assert buckets.get(OUTPUT_BUCKET, kept_key(prefix, new, ".zip")) == second_source
    record = json.loads(buckets.get(OUTPUT_BUCKET, kept_key(prefix, old, ".json")))
    assert record["env"] == {"MODE": "a"} and record["memory_mb"] == 512
    assert record["secrets"] == {"DB_PASSWORD": "db-password@2"}  # the reference, as given
    assert record["code_hash"] == first.code_hash and record["max_concurrency"] is None
    # Nothing secret is kept: no secret value, no alert URL (in the records or the zips).
    for key in kept_keys(buckets, prefix):
        data = buckets.get(OUTPUT_BUCKET, key)
        assert VALUE not in data and b"secret-token" not in data, key

    jobs_before = jobs(fake)
    invokers_before = invokers(fake, get_function(fake))
    fake.requests.clear()
    back = rollback()
    assert back.code_hash == first.code_hash and back.version == old

    # The kept zip, uploaded again and built with the first version's settings.
    assert deployed_source(fake) == first_source
    assert changes(fake) == [
        f"POST /v2/projects/{PROJECT}/locations/{REGION}/functions:generateUploadUrl",
        f"PUT {fake.calls(method='PUT')[0].path}",
        f"PATCH /v2/{FUNCTION}",
    ]
    [patch] = fake.calls(method="PATCH")
    assert "serviceConfig.maxInstanceCount" in patch.query["updateMask"].split(",")
    function = get_function(fake)
    service = function.service_config
    assert service.available_memory == "512Mi" and service.timeout_seconds == 300
    assert service.max_instance_count == 100  # the platform's default again
    assert service.environment_variables["MODE"] == "a"
    assert [variable.key for variable in service.secret_environment_variables] == ["DB_PASSWORD"]
    assert MEMBER in readers(fake, DB_SECRET)
    # The alert URLs deployed now stay; a version never keeps them.
    assert json.loads(service.environment_variables["DEPLOYER_ALERTS"]) == [HOOK_B]
    assert decode_hash(function.labels["deployer-code-hash"]) == first.code_hash
    assert decode_hash(function.labels["deployer-deps-hash"]) == first.deps_hash
    assert "deployer-max-concurrency" not in function.labels
    assert function.labels["deployer-http"] == "authenticated"
    # The triggers are the ones deployed now: the schedule the first version lacked stays.
    assert jobs(fake) == jobs_before and len(jobs_before) == 1
    assert invokers(fake, function) == invokers_before
    assert [(version.code_hash, version.live) for version in history()] == [
        (second.code_hash, False),
        (first.code_hash, True),
    ]
    # What runs is what deploying the first version with today's triggers gives; only
    # the schedule still waits as long as the second version's timeout.
    again = plan_to(prefix, triggers=[DAILY, Http()], **first_settings)
    assert [str(step) for step in again.steps] == [
        f"update config: schedule {describe(DAILY)}: attempt deadline 600 s -> 300 s"
    ]

    # The next deploy deploys as usual, and history shows it.
    third = deploy_to(
        prefix, predict_v3, triggers=[DAILY, Http()], secrets={"DB_PASSWORD": "db-password@2"}
    )
    assert decode_hash(get_function(fake).labels["deployer-code-hash"]) == third.code_hash
    assert [(version.code_hash, version.live) for version in history()] == [
        (third.code_hash, True),
        (second.code_hash, False),
        (first.code_hash, False),
    ]
    # Forward again, by code hash.
    rollback(to=second.code_hash[:8])
    assert deployed_source(fake) == second_source
    assert get_function(fake).service_config.environment_variables["MODE"] == "b"
    assert get_function(fake).service_config.max_instance_count == 3


def test_contract_keep_versions_removes_the_oldest_never_the_live_nor_the_one_live_before(
    fake: FakeGoogleCloud, buckets: GcsEmulator, prefix: str
) -> None:
    first = deploy_to(prefix, predict, keep_versions=3)
    deploy_to(prefix, predict_v2, keep_versions=3)
    deploy_to(prefix, predict_v3, keep_versions=3)
    assert len(history()) == 3 and len(kept_keys(buckets, prefix)) == 6
    rollback(to=first.code_hash[:12])

    fourth = deploy_to(prefix, predict_v4, keep_versions=2)
    # The two newest before it go; the first, live until now, is what a rollback wants.
    assert [(version.code_hash, version.live) for version in history()] == [
        (fourth.code_hash, True),
        (first.code_hash, False),
    ]
    assert len(kept_keys(buckets, prefix)) == 4
    rollback()
    assert decode_hash(get_function(fake).labels["deployer-code-hash"]) == first.code_hash


def test_contract_a_failed_build_keeps_no_version(
    fake: FakeGoogleCloud, buckets: GcsEmulator, prefix: str
) -> None:
    first = deploy_to(prefix, triggers=[Http()])
    fake.fail_next_build = "Build failed: pip could not install the requirements"
    with pytest.raises(ProviderError, match="Build failed"):
        deploy_to(prefix, predict_v2, triggers=[Http()])
    assert [(version.code_hash, version.live) for version in history()] == [(first.code_hash, True)]
    assert len(kept_keys(buckets, prefix)) == 2


def test_contract_a_rollback_that_cannot_be_done_changes_nothing(
    fake: FakeGoogleCloud, buckets: GcsEmulator, prefix: str
) -> None:
    first = deploy_to(prefix, triggers=[DAILY, Http()])
    fake.requests.clear()
    with pytest.raises(ConfigError, match="scores has no version before the live one"):
        rollback()
    assert changes(fake) == []

    second = deploy_to(prefix, predict_v2, triggers=[DAILY, Http()])
    function, kept = get_function(fake), kept_keys(buckets, prefix)
    fake.requests.clear()
    with pytest.raises(ConfigError) as unknown:
        rollback(to="0000ffff")
    assert str(unknown.value).startswith(
        f"scores keeps no version with code 0000ffff: the kept ones are {first.code_hash[:12]} ("
    )
    with pytest.raises(ConfigError, match="is live already"):
        rollback(to=second.code_hash[:6])
    with pytest.raises(ConfigError, match="no function named 'other'"):
        deployer.rollback("other", provider="gcp", quiet=True)

    # A kept zip that is not the one deployed is never deployed.
    old = history()[1].version
    buckets.put(OUTPUT_BUCKET, kept_key(prefix, old, ".zip"), b"PK not the source")
    with pytest.raises(ProviderError, match=r"is not the source version .* was deployed from"):
        rollback()
    # Nor does a rollback change who the function runs as.
    with pytest.raises(ConfigError, match="runs as .* roll back with the provider options"):
        rollback(to=first.code_hash[:8], provider_options={"service_account": "x@y.com"})
    assert changes(fake) == []
    assert get_function(fake) == function
    assert kept_keys(buckets, prefix) == kept

    # A record deployer did not write is named, not guessed at.
    stray = kept_key(prefix, "notes", ".json")
    buckets.put(OUTPUT_BUCKET, stray, b'{"hello": 1}')
    with pytest.raises(ProviderError, match=f"gs://{OUTPUT_BUCKET}/{stray} is not a version"):
        history()


def test_contract_a_function_running_as_the_users_account_rolls_back_as_it(
    fake: FakeGoogleCloud, prefix: str
) -> None:
    account = f"scores-runner@{PROJECT}.iam.gserviceaccount.com"
    add_account(fake, account, "the team's own")
    own = {"provider_options": {"service_account": account}}
    first = deploy_to(prefix, env={"MODE": "a"}, **own)
    deploy_to(prefix, predict_v2, env={"MODE": "b"}, **own)
    with pytest.raises(ConfigError, match=f"runs as {account}"):
        rollback()
    rollback(**own)
    function = get_function(fake)
    assert decode_hash(function.labels["deployer-code-hash"]) == first.code_hash
    assert function.service_config.service_account_email == account
    assert function.service_config.environment_variables["MODE"] == "a"


def test_deployed_by_is_the_email_the_deploying_credentials_carry() -> None:
    key = signing_key("deployer-test")[0]
    robot = service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "client_email": f"ci@{PROJECT}.iam.gserviceaccount.com",
            "private_key": key,
            "private_key_id": "deployer-test",
            "token_uri": "https://oauth2.googleapis.com/token",
            "project_id": PROJECT,
        }
    )
    assert credentials_email(robot) == f"ci@{PROJECT}.iam.gserviceaccount.com"
    # gcloud's application-default login: the account it records, or the ID token's email.
    assert credentials_email(user_credentials.Credentials("t", account="alice@example.com")) == (
        "alice@example.com"
    )
    token = mint_token("deployer-test", {"email": "bob@example.com", "sub": "1"})
    assert credentials_email(user_credentials.Credentials("t", id_token=token)) == (
        "bob@example.com"
    )
    assert credentials_email(user_credentials.Credentials("t")) is None
    assert credentials_email(AnonymousCredentials()) is None


def test_contract_a_rollback_grants_nothing_a_kept_record_asks_for(
    fake: FakeGoogleCloud, buckets: GcsEmulator, prefix: str
) -> None:
    # The records sit in the output bucket, which the function's account may
    # write: a version that needs a secret the account may no longer read is
    # refused, and nothing is granted or changed.
    add_secrets(fake)
    deploy_to(prefix, triggers=[Http()], secrets={"DB_PASSWORD": "db-password@2"})
    deploy_to(prefix, predict_v2, triggers=[Http()])
    assert MEMBER not in readers(fake, DB_SECRET)  # dropped: revoked
    fake.requests.clear()
    with pytest.raises(ConfigError) as refused:
        rollback()
    assert "needs access its account does not have now (projects/" in str(refused.value)
    assert "a rollback grants nothing: deploy that code again instead" in str(refused.value)
    assert changes(fake) == []
    assert MEMBER not in readers(fake, DB_SECRET)
