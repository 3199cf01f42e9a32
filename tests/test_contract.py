"""The provider contract: one suite, run against every provider.

local on this machine, aws on moto (server mode), gcp on the recording fake of
Google's control planes (tests/gcp_fake.py) with gcp-storage-emulator, azure
on the recording fake of Azure Resource Manager (tests/azure_fake.py) with
Azurite. A new provider joins by adding a ``World`` below; what it must do is
not rewritten.

Uploads are counted where each provider uploads code: a new unpacked bundle
(local), CreateFunction / UpdateFunctionCode (AWS, through botocore's own
event hooks on every client of this process), generateUploadUrl (GCP), the
zip publish to Kudu (Azure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from azure_fake import FakeAzure
from azurite import azurite
from gcp_fake import FakeGoogleCloud
from test_azure_provider import APP as AZURE_APP
from test_azure_provider import INPUTS as AZURE_INPUTS
from test_azure_provider import LOCATION as AZURE_LOCATION
from test_azure_provider import OUTPUT as AZURE_OUTPUT
from test_azure_provider import SITE_PATH as AZURE_SITE
from test_azure_provider import azure_fake, isolate_from_real_azure, point_at
from test_gcp_provider import FUNCTION as GCP_FUNCTION
from test_gcp_provider import INPUTS as GCP_INPUTS
from test_gcp_provider import OUTPUT as GCP_OUTPUT
from test_gcp_provider import buckets, fake, fake_google_cloud, gcs_emulator, no_real_google

import deployer
from deployer import ConcurrentChange, ConfigError, Cron, Every, Http, ProviderError
from deployer.providers.base import REMOVE_TRIGGER, UPDATE_CODE
from deployer.registry import get_provider
from deployer.runtimes import storage

# Fixtures defined elsewhere: importing them is how pytest finds them here.
GCP_FIXTURES = (buckets, fake, fake_google_cloud, gcs_emulator, no_real_google)
AZURE_FIXTURES = (azure_fake, azurite)

DAILY = Cron("0 6 * * *", tz="UTC")
HOURLY = Every(hours=1)


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def predict_v2(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 3)


def predict_v3(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 4)


@dataclass
class World:
    """One provider, set up for the contract: how to deploy there and what to count."""

    provider: str
    output: str
    inputs: str | None
    uploads: Callable[[], int]
    make_foreign: Callable[[str], Callable[[], Any]] | None  # returns a snapshot reader
    # Azure declares schedules in the app's own code (function_app.py): a trigger
    # change publishes the app again. Elsewhere the cloud holds them.
    triggers_in_artifact: bool = False

    def options(self, **overrides: Any) -> dict[str, Any]:
        return {
            "name": "scores",
            "provider": self.provider,
            "output": self.output,
            "inputs": self.inputs,
            "quiet": True,
            **overrides,
        }

    def deploy(self, function: Any = predict, **overrides: Any) -> deployer.Deployment:
        return deployer.deploy(function, **self.options(**overrides))

    def plan(self, function: Any = predict, **overrides: Any) -> deployer.Plan:
        return deployer.plan(function, **self.options(**overrides))


def local_world(deployer_home: Path) -> World:
    bundles = deployer_home / "local" / "bundles"
    return World(
        provider="local",
        output=str(deployer_home / "store"),
        inputs=str(deployer_home / "features.parquet"),
        uploads=lambda: len(list(bundles.iterdir())) if bundles.exists() else 0,
        make_foreign=None,  # nothing on this machine is a function deployer did not make
    )


@pytest.fixture
def aws_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the AWS operations every boto3 client of this process sends."""
    sent: list[str] = []
    original = boto3.session.Session.client

    def recording_client(session: Any, service: str, *args: Any, **kwargs: Any) -> Any:
        client = original(session, service, *args, **kwargs)
        client.meta.events.register(
            "before-call", lambda model, **_: sent.append(model.name), unique_id="contract"
        )
        return client

    monkeypatch.setattr(boto3.session.Session, "client", recording_client)
    return sent


def aws_world(bucket: str, sent: list[str]) -> World:
    def make_foreign(name: str) -> Callable[[], Any]:
        iam, lambda_client = boto3.client("iam"), boto3.client("lambda")
        role = iam.create_role(
            RoleName=f"someone-elses-{name}",
            AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
        )["Role"]["Arn"]
        lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18},  # an empty zip
            Tags={"team": "someone else"},
        )

        def snapshot() -> Any:
            found = lambda_client.get_function(FunctionName=name)
            return found["Tags"], found["Configuration"]["CodeSha256"]

        return snapshot

    return World(
        provider="aws",
        output=f"s3://{bucket}/predictions",
        inputs=f"s3://{bucket}/features.parquet",
        uploads=lambda: sum(call in ("CreateFunction", "UpdateFunctionCode") for call in sent),
        make_foreign=make_foreign,
    )


def gcp_world(fake: FakeGoogleCloud) -> World:
    def make_foreign(name: str) -> Callable[[], Any]:
        assert GCP_FUNCTION.endswith(f"/{name}")
        fake.functions[GCP_FUNCTION] = {
            "name": GCP_FUNCTION,
            "state": "ACTIVE",
            "labels": {"team": "someone-else"},
        }
        return lambda: dict(fake.functions[GCP_FUNCTION])

    return World(
        provider="gcp",
        output=GCP_OUTPUT,
        inputs=GCP_INPUTS,
        uploads=lambda: len(fake.calls(contains="generateUploadUrl")),
        make_foreign=make_foreign,
    )


def azure_world(fake: FakeAzure) -> World:
    def make_foreign(name: str) -> Callable[[], Any]:
        assert AZURE_APP.startswith(f"{name}-")
        fake.sites[AZURE_SITE.lower()] = {
            "id": AZURE_SITE,
            "name": AZURE_APP,
            "type": "Microsoft.Web/sites",
            "kind": "functionapp,linux",
            "location": AZURE_LOCATION,
            "tags": {"team": "someone else"},
            "properties": {"state": "Running"},
        }
        return lambda: dict(fake.sites[AZURE_SITE.lower()])

    return World(
        provider="azure",
        output=AZURE_OUTPUT,
        inputs=AZURE_INPUTS,
        uploads=lambda: len(fake.calls(method="POST", contains="/api/publish")),
        make_foreign=make_foreign,
        triggers_in_artifact=True,
    )


@pytest.fixture(
    params=[
        "local",
        pytest.param("aws", marks=pytest.mark.slow),
        "gcp",
        pytest.param("azure", marks=pytest.mark.slow),
    ]
)
def world(request: pytest.FixtureRequest, deployer_home: Path) -> Iterator[World]:
    if request.param == "local":
        chosen = local_world(deployer_home)
    elif request.param == "aws":
        sent = request.getfixturevalue("aws_calls")
        chosen = aws_world(request.getfixturevalue("s3_bucket"), sent)
    elif request.param == "azure":
        monkeypatch = request.getfixturevalue("monkeypatch")
        isolate_from_real_azure(monkeypatch, request.getfixturevalue("tmp_path"))
        pointed = point_at(
            request.getfixturevalue("azure_fake"), request.getfixturevalue("azurite"), monkeypatch
        )
        chosen = azure_world(pointed)
    else:
        # The fake fixture also points pyarrow's gs:// at the emulator.
        chosen = gcp_world(request.getfixturevalue("fake"))
    # The inputs exist, as deploy checks (written where the provider's runs read them).
    assert chosen.inputs is not None
    filesystem, path = storage.filesystem(chosen.inputs)
    storage.write_bytes(filesystem, path, _parquet({"x": [1.0, 2.0]}))
    yield chosen


# -- the contract ----------------------------------------------------------------


def test_nothing_changed_is_no_step_and_no_upload(world: World) -> None:
    world.deploy(triggers=[DAILY, Http()])
    deployed = get_provider(world.provider).get("scores")
    uploads = world.uploads()
    assert uploads >= 1
    assert world.plan(triggers=[DAILY, Http()]).changes_nothing
    world.deploy(triggers=[DAILY, Http()])
    assert world.uploads() == uploads
    # Not redeployed: the same deployed_at, hashes and triggers.
    assert get_provider(world.provider).get("scores") == deployed


def test_code_only_change_is_exactly_one_code_step_and_one_upload(world: World) -> None:
    world.deploy(triggers=[DAILY, Http()])
    uploads = world.uploads()
    assert world.plan(predict_v2, triggers=[DAILY, Http()]).kinds() == [UPDATE_CODE]
    changed = world.deploy(predict_v2, triggers=[DAILY, Http()])
    assert world.uploads() == uploads + 1
    assert changed.code_hash == deployer.build(predict_v2, **_build_options(world)).bundle.code_hash
    assert sorted(t["type"] for t in changed.triggers) == ["cron", "http"]


def test_removed_schedule_is_removed(world: World) -> None:
    world.deploy(triggers=[DAILY, HOURLY, Http()])
    uploads = world.uploads()
    assert world.plan(triggers=[DAILY, Http()]).kinds() == [REMOVE_TRIGGER]
    kept = world.deploy(triggers=[DAILY, Http()])
    assert world.uploads() == uploads + (1 if world.triggers_in_artifact else 0)
    assert sorted(t["type"] for t in kept.triggers) == ["cron", "http"]
    state = get_provider(world.provider).get("scores")
    assert state is not None and state.triggers == kept.triggers


def test_a_function_deployer_did_not_make_is_never_adopted(world: World) -> None:
    if world.make_foreign is None:
        pytest.skip(f"{world.provider} has no functions deployer did not make")
    snapshot = world.make_foreign("scores")
    before, uploads = snapshot(), world.uploads()
    with pytest.raises(ProviderError, match="not deployed by deployer"):
        world.deploy(triggers=[Http()])
    assert world.uploads() == uploads
    assert snapshot() == before
    assert get_provider(world.provider).get("scores") is None


def test_delete_keeps_outputs(world: World) -> None:
    deployment = world.deploy(triggers=[Http()])
    # A committed run's files, as a run writes them (on AWS and GCP no function
    # executes here: the contract is about what delete leaves).
    run = storage.run_path(world.output, "scores", "20261129T000000Z-contract")
    filesystem, path = storage.filesystem(run)
    storage.write_bytes(filesystem, f"{path}/output.parquet", _parquet({"score": [1.0]}))
    storage.write_json(filesystem, f"{path}/run.json", {"status": "succeeded"})
    deployment.delete(quiet=True)
    assert get_provider(world.provider).get("scores") is None
    assert storage.read_bytes(filesystem, f"{path}/output.parquet") == _parquet({"score": [1.0]})
    with pytest.raises(ConfigError, match="no function named 'scores'"):
        deployer.get("scores", provider=world.provider)


def test_a_bundle_from_an_unsupported_python_is_refused_before_any_upload(world: World) -> None:
    built = deployer.build(predict, **_build_options(world))
    old = dataclasses.replace(
        built.bundle, manifest=dataclasses.replace(built.bundle.manifest, python="3.7")
    )
    with pytest.raises((ConfigError, ProviderError), match=r"Python 3\.7"):
        get_provider(world.provider).plan(old, built.spec)
    assert world.uploads() == 0
    assert get_provider(world.provider).get("scores") is None


def test_a_concurrent_deploy_is_detected_and_nothing_is_lost_silently(world: World) -> None:
    world.deploy(triggers=[Http()])
    # Two deploys plan from the same state; the first applies.
    first = world.plan(predict_v2, triggers=[Http()])
    second = world.plan(predict_v3, triggers=[Http()])
    deployer.apply(first, quiet=True)
    uploads = world.uploads()
    with pytest.raises(ConcurrentChange, match="changed after this plan was made"):
        deployer.apply(second, quiet=True)
    assert world.uploads() == uploads
    assert first.bundle is not None
    assert deployer.get("scores", provider=world.provider).code_hash == first.bundle.code_hash
    # Planned again, from what is there now, the second deploy goes through.
    assert world.plan(predict_v3, triggers=[Http()]).kinds() == [UPDATE_CODE]


# -- helpers -----------------------------------------------------------------------


def _build_options(world: World) -> dict[str, Any]:
    options = world.options(triggers=[Http()])
    options.pop("quiet")
    return options


def _parquet(columns: dict[str, list[Any]]) -> bytes:
    return pd.DataFrame(columns).to_parquet(index=False)
