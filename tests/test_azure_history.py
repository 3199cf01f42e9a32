"""Versions and rollback on Azure, against the control-plane fake.

Contract tests (there is no emulator for Azure Resource Manager): the fixtures,
the fake and Azurite are those of tests/test_azure_provider.py. Flex
Consumption keeps only the current package, so deployer keeps every deployed
app zip in the app's deployment container under versions/, with one small
JSON record per deploy; the fake serves that container's Blob Storage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pytest
from azure_fake import DEPLOYING_IDENTITY, DEPLOYING_PRINCIPAL, FakeAzure, Recorded
from azurite import azurite
from click.testing import CliRunner
from test_azure_provider import (
    ACCOUNT,
    DAILY,
    SITE_PATH,
    azure_fake,
    deploy,
    fake,
    no_real_azure,
    predict_v2,
    publishes,
    site,
)
from test_azure_settings import DB_SECRET, add_vault, app_settings, secret_url

import deployer
from deployer import ConfigError, Http, ProviderError
from deployer.cli import main
from deployer.providers.azure import provider as azure_provider
from deployer.providers.azure.provider import AzureProvider

# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (azurite, azure_fake, fake, no_real_azure)

CONTAINER = "app-package"
FIRST_ALERT = "https://hooks.example.com/services/T0/B0/first-secret-token"
SECOND_ALERT = "https://hooks.example.com/services/T0/B0/second-secret-token"


def predict_v3(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 4)


def predict_v4(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 5)


def history() -> list[deployer.Version]:
    return deployer.history("scores", provider="azure")


def rollback(to: str | None = None) -> deployer.Version:
    return deployer.rollback("scores", to=to, provider="azure", quiet=True)


def kept(fake: FakeAzure, suffix: str) -> list[str]:
    """The blobs under versions/ of the app's deployment container ending in ``suffix``."""
    names = fake.blob_names(ACCOUNT, CONTAINER, "versions/")
    return [name for name in names if name.endswith(suffix)]


def record(fake: FakeAzure, version: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(fake.blob(ACCOUNT, CONTAINER, f"versions/{version}.json"))
    return found


def published_zip(fake: FakeAzure) -> bytes:
    return fake.packages[SITE_PATH.lower()]


def tags(fake: FakeAzure) -> dict[str, str]:
    found: dict[str, str] = site(fake)["tags"]
    return found


def timers(fake: FakeAzure) -> int:
    registered = fake.functions[SITE_PATH.lower()]
    return sum(1 for f in registered if f["properties"]["name"].startswith("schedule"))


def blob_changes(fake: FakeAzure) -> list[Recorded]:
    return [request for request in fake.changing_calls() if request.path.startswith("/blob/")]


# -- two deploys, a rollback, the next deploy -------------------------------------------


def test_contract_two_deploys_are_two_kept_versions_and_the_newest_is_live(
    fake: FakeAzure,
) -> None:
    first = deploy(triggers=[Http()], env={"MODE": "a"})
    first_zip = published_zip(fake)
    second = deploy(predict_v2, triggers=[DAILY, Http()], env={"MODE": "b"})
    assert published_zip(fake) != first_zip

    versions = history()
    assert [(version.code_hash, version.live) for version in versions] == [
        (second.code_hash, True),
        (first.code_hash, False),
    ]
    assert versions[0].deployed_at > versions[1].deployed_at
    assert versions[0].deps_hash == second.deps_hash
    # Who deployed, as the deploying identity's token names it.
    assert {version.deployed_by for version in versions} == {DEPLOYING_IDENTITY}
    # Each zip kept under its sha256, byte for byte what was published; one record each.
    published = {
        f"versions/{hashlib.sha256(data).hexdigest()}.zip": data
        for data in (first_zip, published_zip(fake))
    }
    assert sorted(kept(fake, ".zip")) == sorted(published)
    for name, data in published.items():
        assert fake.blob(ACCOUNT, CONTAINER, name) == data
    assert kept(fake, ".json") == [f"versions/{v.version}.json" for v in reversed(versions)]
    assert record(fake, versions[1].version)["env"] == {"MODE": "a"}
    assert record(fake, versions[0].version)["triggers"] == [
        {"type": "cron", "expr": "0 6 * * *", "tz": "UTC"},
        {"type": "http", "public": False},
    ]


def test_contract_rollback_publishes_the_kept_zip_with_that_versions_settings(
    fake: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_vault(fake, DB_SECRET)
    first = deploy(
        triggers=[Http()],
        env={"MODE": "a"},
        secrets={"DB_PASSWORD": secret_url(DB_SECRET)},
        alerts=[FIRST_ALERT],
    )
    first_zip = published_zip(fake)
    second = deploy(
        predict_v2,
        triggers=[DAILY, Http()],
        env={"MODE": "b"},
        secrets={"DB_PASSWORD": secret_url(DB_SECRET)},
        memory=4096,
        alerts=[SECOND_ALERT],
    )
    assert timers(fake) == 1

    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a rollback builds nothing")

    monkeypatch.setattr(azure_provider, "install_app_dependencies", no_build)
    monkeypatch.setattr(azure_provider, "app_zip", no_build)
    fake.requests.clear()
    back = rollback()

    assert back.code_hash == first.code_hash and not back.live
    [publish] = publishes(fake)
    assert publish.data == first_zip and published_zip(fake) == first_zip
    # Its tags, code, settings and scale are the first version's...
    assert tags(fake)["deployer-code-hash"] == first.code_hash
    assert tags(fake)["deployer-qualname"] == "predict"
    settings = app_settings(fake)
    assert settings["MODE"] == "a"
    assert settings["DB_PASSWORD"].startswith("@Microsoft.KeyVault(SecretUri=")
    assert settings["DEPLOYER_MANAGED"] == "DB_PASSWORD,MODE"
    scale = site(fake)["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["instanceMemoryMB"] == 2048
    # ...and so are its triggers: on Azure the schedules are in the app zip.
    assert timers(fake) == 0
    assert [json.loads(v) for k, v in tags(fake).items() if "-trigger-" in k] == [
        {"type": "http", "public": False}
    ]
    # Alert URLs are secrets: never kept, so the ones deployed now stay. A secret is
    # kept as its reference.
    assert json.loads(settings["DEPLOYER_ALERTS"]) == [SECOND_ALERT]
    for name in kept(fake, ".json"):
        assert "secret-token" not in fake.blob(ACCOUNT, CONTAINER, name).decode()
    assert record(fake, back.version)["secrets"] == {"DB_PASSWORD": secret_url(DB_SECRET)}
    # Nothing was kept or removed: the version was there already.
    assert blob_changes(fake) == []
    assert [(v.code_hash, v.live) for v in history()] == [
        (second.code_hash, False),
        (first.code_hash, True),
    ]
    state = deployer.get("scores", provider="azure")
    assert state is not None and state.code_hash == first.code_hash


def test_contract_the_next_deploy_after_a_rollback_deploys_and_history_follows(
    fake: FakeAzure,
) -> None:
    first = deploy(triggers=[Http()])
    second = deploy(predict_v2, triggers=[Http()])
    rollback()
    # The plan is made from what is deployed now: the first version's code.
    third = deploy(predict_v3, triggers=[Http()])
    assert tags(fake)["deployer-code-hash"] == third.code_hash
    assert [(v.code_hash, v.live) for v in history()] == [
        (third.code_hash, True),
        (second.code_hash, False),
        (first.code_hash, False),
    ]
    # Back to the second, by a prefix of its code hash.
    fake.requests.clear()
    back = rollback(to=second.code_hash[:8])
    assert back.code_hash == second.code_hash
    assert published_zip(fake) == fake.blob(ACCOUNT, CONTAINER, kept_zip_of(fake, second))
    assert [v.code_hash for v in history() if v.live] == [second.code_hash]
    # Deploying the live code again changes nothing: no version is added.
    deploy(predict_v2, triggers=[Http()])
    assert len(history()) == 3


def kept_zip_of(fake: FakeAzure, deployment: deployer.Deployment) -> str:
    [version] = [v for v in history() if v.code_hash == deployment.code_hash]
    return f"versions/{record(fake, version.version)['zip']['sha256']}.zip"


def test_contract_a_setting_change_is_a_version_that_runs_the_same_zip(fake: FakeAzure) -> None:
    deploy(triggers=[Http()], env={"MODE": "a"})
    deploy(triggers=[Http()], env={"MODE": "b"})  # no publish
    assert len(publishes(fake)) == 1
    versions = history()
    assert [v.live for v in versions] == [True, False]
    assert versions[0].code_hash == versions[1].code_hash
    assert len(kept(fake, ".zip")) == 1 and len(kept(fake, ".json")) == 2
    fake.requests.clear()
    rollback(to=versions[1].code_hash[:12])  # the same code: the version before the live one
    # The app runs those bytes already: only the settings change.
    assert publishes(fake) == []
    assert app_settings(fake)["MODE"] == "a"
    assert [v.live for v in history()] == [False, True]


# -- keep_versions ----------------------------------------------------------------------


def test_contract_keep_versions_removes_the_oldest_versions_and_their_zips(
    fake: FakeAzure,
) -> None:
    first = deploy(triggers=[Http()], keep_versions=2)
    second = deploy(predict_v2, triggers=[Http()], keep_versions=2)
    third = deploy(predict_v3, triggers=[Http()], keep_versions=2)
    assert [v.code_hash for v in history()] == [third.code_hash, second.code_hash]
    assert len(kept(fake, ".zip")) == 2 and len(kept(fake, ".json")) == 2
    assert [request.method for request in fake.calls(contains="/blob/")].count("DELETE") == 2

    # The version live before a deploy is kept, however old: what a rollback wants.
    rollback(to=second.code_hash[:12])
    fourth = deploy(predict_v4, triggers=[Http()], keep_versions=2)
    assert [v.code_hash for v in history()] == [fourth.code_hash, second.code_hash]
    assert len(kept(fake, ".zip")) == 2
    assert first.code_hash not in {v.code_hash for v in history()}


# -- what a rollback refuses: nothing changes --------------------------------------------


def test_contract_rollback_refusals_change_nothing(fake: FakeAzure) -> None:
    first = deploy(triggers=[Http()])
    fake.requests.clear()
    with pytest.raises(ConfigError, match="scores has no version before the live one"):
        rollback()
    assert fake.changing_calls() == []

    deploy(predict_v2, triggers=[Http()])
    before = json.dumps(site(fake), sort_keys=True)
    fake.requests.clear()
    with pytest.raises(ConfigError) as unknown:
        rollback(to="0000ffff")
    assert str(unknown.value).startswith(
        f"scores keeps no version with code 0000ffff: the kept ones are {first.code_hash[:12]} ("
    )
    with pytest.raises(ConfigError, match="is live already"):
        rollback(to=history()[0].code_hash[:8])
    with pytest.raises(ConfigError, match="no function named 'other'"):
        deployer.rollback("other", provider="azure", quiet=True)
    assert fake.changing_calls() == []
    assert json.dumps(site(fake), sort_keys=True) == before


def test_contract_a_damaged_kept_zip_is_refused_before_anything_changes(fake: FakeAzure) -> None:
    first = deploy(triggers=[Http()])
    deploy(predict_v2, triggers=[Http()])
    stored = next(
        blobs for key, blobs in fake.blobs.items() if key.endswith(f"/containers/{CONTAINER}")
    )
    stored[kept_zip_of(fake, first)].data = b"PK not the zip that was kept"
    fake.requests.clear()
    with pytest.raises(ProviderError, match="is damaged: deploy that code again instead"):
        rollback()
    assert fake.changing_calls() == []


def test_contract_blob_storage_refusing_the_deploying_identity_stops_before_publishing(
    fake: FakeAzure,
) -> None:
    first = deploy(triggers=[Http()])
    fake.blob_access = False  # no data role: Contributor and Owner give none
    fake.requests.clear()
    with pytest.raises(ProviderError) as refused:
        deploy(predict_v2, triggers=[Http()])
    message = str(refused.value)
    assert "AuthorizationPermissionMismatch" in message
    assert 'az role assignment create --role "Storage Blob Data Contributor"' in message
    assert f"--assignee {DEPLOYING_PRINCIPAL}" in message
    assert fake.changing_calls() == []  # refused before the publish, or any change
    assert tags(fake)["deployer-code-hash"] == first.code_hash
    with pytest.raises(ProviderError, match="Storage Blob Data Contributor"):
        history()
    fake.blob_access = True
    deploy(predict_v2, triggers=[Http()])
    assert len(history()) == 2


# -- the CLI ---------------------------------------------------------------------------


def test_contract_the_cli_rolls_back_and_says_the_triggers_came_back(fake: FakeAzure) -> None:
    first = deploy(triggers=[Http()])
    second = deploy(predict_v2, triggers=[DAILY, Http()])
    runner = CliRunner()
    listed = runner.invoke(main, ["history", "scores", "--provider", "azure", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(row["code_hash"], row["live"]) for row in rows] == [
        (second.code_hash, True),
        (first.code_hash, False),
    ]
    assert rows[0]["deployed_by"] == DEPLOYING_IDENTITY
    rolled = runner.invoke(main, ["rollback", "scores", "--provider", "azure"])
    assert rolled.exit_code == 0, rolled.output
    output = " ".join(rolled.output.split())
    assert "the triggers are that version's again: - cron '0 6 * * *' (UTC)" in output
    assert "with the settings and triggers it was deployed with" in output
    assert timers(fake) == 0
    assert AzureProvider().get("scores") is not None


def test_contract_a_rollback_grants_nothing_a_kept_record_asks_for(fake: FakeAzure) -> None:
    # A version whose secret the app's identity may no longer read is refused:
    # what the app may read is widened by a deploy, never by a kept record.
    add_vault(fake, DB_SECRET)
    deploy(triggers=[Http()], secrets={"DB_PASSWORD": secret_url(DB_SECRET)})
    deploy(predict_v2, triggers=[Http()])  # drops the secret: its role is revoked
    fake.requests.clear()
    with pytest.raises(ConfigError) as refused:
        rollback()
    assert "needs access its identity does not have now (" in str(refused.value)
    assert "a rollback grants nothing: deploy that code again instead" in str(refused.value)
    assert fake.changing_calls() == []
