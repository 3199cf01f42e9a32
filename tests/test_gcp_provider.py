"""The GCP provider against a loopback fake of Google's control planes.

These are contract tests (hence ``test_contract_...``): no emulator exists for
Cloud Functions, Cloud Scheduler, Cloud Run's IAM or IAM's service accounts,
so the official client libraries (and the IAM REST API) talk to
tests/gcp_fake.py, which keeps the resources and records every request. The
resources are read back through the same official clients and asserted field
by field; the recorded requests show what was uploaded and changed. Bucket
IAM policies go to gcp-storage-emulator, which keeps them (it does not
enforce them), and are read back through its JSON API. Building and running
the uploaded source is tested in test_gcp_runtime.py (functions-framework in
a fresh venv).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gcp_emulators import GcsEmulator, gcs_emulator
from gcp_fake import DEFAULT_SERVICE_ACCOUNT, FakeGoogleCloud
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import functions_v2, run_v2, scheduler_v1

import deployer
from deployer import ConfigError, Cron, Every, Http, ProviderError, TriggerError
from deployer.bundle import python_version
from deployer.providers.base import (
    ADD_TRIGGER,
    CREATE,
    DELETE,
    REMOVE_TRIGGER,
    UPDATE_CODE,
    UPDATE_CONFIG,
)
from deployer.providers.gcp.provider import (
    ENDPOINT_VARIABLES,
    IDENTITY_TOKEN,
    STORAGE_ENDPOINT,
    GcpProvider,
    decode_hash,
    encode_hash,
)
from deployer.providers.gcp.source import gcp_runtime, source_zip
from deployer.triggers import describe

# Fixtures defined in gcp_emulators: importing them is how pytest finds them here.
EMULATOR_FIXTURES = (gcs_emulator,)

PROJECT = "demo-project"
REGION = "europe-west1"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
FUNCTION = f"{LOCATION}/functions/scores"
OUTPUT_BUCKET, INPUTS_BUCKET = "acme-predictions", "acme-features"
OUTPUT = f"gs://{OUTPUT_BUCKET}/runs"
INPUTS = f"gs://{INPUTS_BUCKET}/latest.parquet"
# The accounts deployer makes for "scores" in REGION: ids of at most 30
# characters from a hash of region and name (function names take up to 40).
_DIGEST = hashlib.sha256(f"{REGION}/scores".encode()).hexdigest()[:20]
FUNCTION_ACCOUNT = f"dpl-fn-{_DIGEST}@{PROJECT}.iam.gserviceaccount.com"
SCHEDULER_ACCOUNT = f"dpl-sch-{_DIGEST}@{PROJECT}.iam.gserviceaccount.com"
ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
TOKEN = "test-identity-token"
DAILY = Cron("0 6 * * *", tz="Europe/Berlin")
# Label keys and values as Google accepts them.
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 2)


def predict_v2(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 3)


@pytest.fixture(scope="session")
def fake_google_cloud() -> Iterator[FakeGoogleCloud]:
    fake = FakeGoogleCloud().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(autouse=True)
def no_real_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever a test does, credentials and project never come from this machine."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # never probe the metadata server
    for variable in (
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CORE_PROJECT",
        "FUNCTION_REGION",
        "CLOUDSDK_FUNCTIONS_REGION",
        "GOOGLE_CLOUD_REGION",
        IDENTITY_TOKEN,
        *ENDPOINT_VARIABLES,
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def buckets(gcs_emulator: GcsEmulator) -> GcsEmulator:
    """The output and inputs buckets, in the emulator, with nobody granted anything."""
    for bucket in (OUTPUT_BUCKET, INPUTS_BUCKET):
        gcs_emulator.create_bucket(bucket, exist_ok=True)
        gcs_emulator.set_iam_policy(bucket, {"bindings": []})
    return gcs_emulator


@pytest.fixture
def fake(
    fake_google_cloud: FakeGoogleCloud,
    buckets: GcsEmulator,
    deployer_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> FakeGoogleCloud:
    """An empty fake, every control plane pointed at it (Cloud Storage at the
    emulator), project and region set."""
    fake_google_cloud.reset()
    for variable in ENDPOINT_VARIABLES:
        monkeypatch.setenv(variable, fake_google_cloud.endpoint)
    monkeypatch.setenv(STORAGE_ENDPOINT, buckets.endpoint)
    # Where pyarrow (runtimes/storage.py) reaches gs:// in this process.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", buckets.endpoint)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GOOGLE_CLOUD_REGION", REGION)
    monkeypatch.setenv(IDENTITY_TOKEN, TOKEN)
    return fake_google_cloud


def client_options(fake: FakeGoogleCloud) -> dict[str, Any]:
    return {
        "credentials": AnonymousCredentials(),
        "transport": "rest",
        "client_options": {"api_endpoint": fake.endpoint},
    }


def get_function(fake: FakeGoogleCloud, name: str = FUNCTION) -> functions_v2.Function:
    return functions_v2.FunctionServiceClient(**client_options(fake)).get_function(name=name)


def jobs(fake: FakeGoogleCloud, location: str = LOCATION) -> list[scheduler_v1.Job]:
    client = scheduler_v1.CloudSchedulerClient(**client_options(fake))
    return sorted(client.list_jobs(parent=location), key=lambda job: job.name)


def invokers(fake: FakeGoogleCloud, function: functions_v2.Function) -> set[str]:
    client = run_v2.ServicesClient(**client_options(fake))
    policy = client.get_iam_policy(request={"resource": function.service_config.service})
    return {
        member
        for binding in policy.bindings
        if binding.role == "roles/run.invoker"
        for member in binding.members
    }


def options(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "scores",
        "provider": "gcp",
        "output": OUTPUT,
        "inputs": INPUTS,
        "allow_missing_inputs": True,  # the inputs bucket holds no data in these tests
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


def calls(fake: FakeGoogleCloud) -> list[str]:
    return [request.call for request in fake.requests]


def add_account(fake: FakeGoogleCloud, email: str, description: str) -> None:
    """An account someone else made (deployer did not)."""
    fake.accounts[email] = {
        "name": f"projects/{PROJECT}/serviceAccounts/{email}",
        "projectId": PROJECT,
        "email": email,
        "displayName": "",
        "description": description,
    }


def bindings(buckets: GcsEmulator, bucket: str) -> dict[str, list[str]]:
    """Role -> members of a bucket's IAM policy, as the emulator keeps it."""
    return {
        binding["role"]: sorted(binding["members"])
        for binding in buckets.iam_policy(bucket).get("bindings", [])
    }


def environment(fake: FakeGoogleCloud) -> dict[str, str]:
    return dict(get_function(fake).service_config.environment_variables)


# --- first deploy: the resources, exactly ------------------------------------------


def test_contract_first_deploy_creates_the_function_from_the_uploaded_source(
    fake: FakeGoogleCloud,
) -> None:
    assert plan(triggers=[DAILY, Http()]).kinds() == [
        CREATE,  # the function's service account
        CREATE,  # the scheduler's
        UPDATE_CONFIG,  # the function's account on the output bucket
        UPDATE_CONFIG,  # and on the inputs bucket
        CREATE,  # the function
        UPDATE_CONFIG,  # the scheduler's account may invoke it
        ADD_TRIGGER,
        ADD_TRIGGER,
    ]
    assert fake.calls(method="POST") == []  # planning only reads
    deployment = deploy(triggers=[DAILY, Http()])
    bundle = built_bundle(triggers=[DAILY, Http()])

    function = get_function(fake)
    assert function.environment == functions_v2.Environment.GEN_2
    assert function.description == "deployer: predict"
    build = function.build_config
    assert build.runtime == gcp_runtime(python_version())
    assert build.entry_point == "handle"
    [upload] = fake.calls(method="PUT")
    assert upload.headers["content-type"] == "application/zip"
    assert upload.data == source_zip(bundle)  # deterministic: rebuilt, byte for byte
    assert build.source.storage_source.object_ == upload.path.rsplit("/", 1)[-1] + ".zip"
    assert build.source.storage_source.bucket == f"gcf-v2-uploads-{PROJECT}-{REGION}"

    service = function.service_config
    assert service.available_memory == "1Gi"
    assert service.timeout_seconds == 300
    assert dict(service.environment_variables) == {
        "DEPLOYER_NAME": "scores",
        "DEPLOYER_OUTPUT": OUTPUT,
        "DEPLOYER_INPUTS": INPUTS,
        # What the runtime checks a scheduled run's token against; never a
        # certificate URL (DEPLOYER_GCP_CERTS_URL is a test hook).
        "DEPLOYER_SCHEDULER_ACCOUNT": SCHEDULER_ACCOUNT,
        "DEPLOYER_SCHEDULER_AUDIENCE": function.url,
        "DEPLOYER_HTTP_ACCESS": "authenticated",
    }
    assert service.ingress_settings == functions_v2.ServiceConfig.IngressSettings.ALLOW_ALL
    assert service.all_traffic_on_latest_revision is True
    # Its own account, never Google's default (the project's compute account).
    assert service.service_account_email == FUNCTION_ACCOUNT != DEFAULT_SERVICE_ACCOUNT

    assert dict(function.labels) == {
        "deployer-name": "scores",
        "deployer-code-hash": encode_hash(bundle.code_hash),
        "deployer-deps-hash": encode_hash(bundle.deps_hash),
        "deployer-http": "authenticated",
    }
    for key, value in function.labels.items():
        assert LABEL_KEY.match(key) and LABEL_VALUE.match(value), (key, value)
    assert deployment.code_hash == bundle.code_hash == decode_hash(encode_hash(bundle.code_hash))
    assert deployment.deps_hash == bundle.deps_hash
    assert deployment.url == function.url


def test_contract_schedule_is_a_scheduler_job_posting_to_the_url_with_oidc(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY, Http()], timeout=600)
    function = get_function(fake)
    [job] = jobs(fake)
    assert re.fullmatch(rf"{LOCATION}/jobs/deployer-scores-[0-9a-f]{{10}}", job.name)
    assert job.schedule == "0 6 * * *"
    assert job.time_zone == "Europe/Berlin"
    target = job.http_target
    assert target.uri == function.url
    assert target.http_method == scheduler_v1.HttpMethod.POST
    assert target.body == b""  # the runtime reads Scheduler's own X-CloudScheduler-* headers
    assert target.oidc_token.service_account_email == SCHEDULER_ACCOUNT
    assert target.oidc_token.audience == function.url
    # The runtime is told the same account and audience, so only this job's
    # token makes a scheduled run.
    assert function.service_config.environment_variables["DEPLOYER_SCHEDULER_ACCOUNT"] == (
        target.oidc_token.service_account_email
    )
    assert function.service_config.environment_variables["DEPLOYER_SCHEDULER_AUDIENCE"] == (
        target.oidc_token.audience
    )
    assert job.attempt_deadline.total_seconds() == 600  # Scheduler waits as long as a run may take
    assert job.retry_config.retry_count == 2  # a failed run (HTTP 500) is retried
    # The scheduler's identity may invoke the function; nobody else was let in.
    assert invokers(fake, function) == {f"serviceAccount:{SCHEDULER_ACCOUNT}"}


def flag(frame: pd.DataFrame, *, threshold: float = 0.5, label: str = "high") -> pd.DataFrame:
    return frame.assign(flag=(frame.x > threshold).map({True: label, False: "low"}))


def test_contract_a_schedules_params_are_its_jobs_body_and_a_change_replaces_the_job(
    fake: FakeGoogleCloud,
) -> None:
    # Keys in sorted order: a job's trigger is read back with its keys sorted.
    strict = Cron("0 6 * * *", tz="Europe/Berlin", params={"label": "alert", "threshold": 0.7})
    deploy(flag, triggers=[strict, Every(minutes=15)])
    bodies = {job.schedule: job.http_target.body for job in jobs(fake)}
    assert json.loads(bodies["0 6 * * *"]) == {"params": {"label": "alert", "threshold": 0.7}}
    assert bodies["*/15 * * * *"] == b""  # no params, no body
    job_changes = [ADD_TRIGGER, REMOVE_TRIGGER]
    same = plan(flag, triggers=[strict, Every(minutes=15)])
    assert [kind for kind in same.kinds() if kind in job_changes] == []

    stricter = Cron("0 6 * * *", tz="Europe/Berlin", params={"threshold": 0.9})
    changed = plan(flag, triggers=[stricter, Every(minutes=15)])
    assert [str(step) for step in changed.steps if step.kind in job_changes] == [
        f"{ADD_TRIGGER}: {describe(stricter)}",
        f"{REMOVE_TRIGGER}: {describe(strict)}",
    ]
    deploy(flag, triggers=[stricter, Every(minutes=15)])
    bodies = {job.schedule: job.http_target.body for job in jobs(fake)}
    assert len(jobs(fake)) == 2
    assert json.loads(bodies["0 6 * * *"]) == {"params": {"threshold": 0.9}}


def test_contract_every_becomes_a_utc_cron_job(fake: FakeGoogleCloud) -> None:
    deploy(triggers=[Every(minutes=15)])
    [job] = jobs(fake)
    assert (job.schedule, job.time_zone) == ("*/15 * * * *", "UTC")


def test_contract_http_requires_authentication_by_default(fake: FakeGoogleCloud) -> None:
    deploy(triggers=[Http()])
    assert "allUsers" not in invokers(fake, get_function(fake))
    # and it was never granted, not even for a moment
    for request in fake.calls(contains=":setIamPolicy"):
        assert "allUsers" not in str(request.body)


def test_contract_public_http_grants_all_users_and_taking_it_back_revokes(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[Http(public=True)])
    function = get_function(fake)
    assert "allUsers" in invokers(fake, function)
    assert function.labels["deployer-http"] == "public"
    # On a public function nobody checked a token before the runtime sees it.
    assert environment(fake)["DEPLOYER_HTTP_ACCESS"] == "public"

    fake.requests.clear()
    assert plan(triggers=[Http()]).kinds() == [ADD_TRIGGER, REMOVE_TRIGGER]
    deploy(triggers=[Http()])
    function = get_function(fake)
    assert "allUsers" not in invokers(fake, function)
    assert function.labels["deployer-http"] == "authenticated"
    assert environment(fake)["DEPLOYER_HTTP_ACCESS"] == "authenticated"
    # Who may call it is not the code: nothing was uploaded or rebuilt.
    assert fake.calls(contains="generateUploadUrl") == []
    [patch] = fake.calls(method="PATCH")
    assert set(patch.query["updateMask"].split(",")) == {
        "labels",
        "serviceConfig.environmentVariables",
    }
    # allUsers went before the runtime was told every caller is authenticated.
    [revoke] = fake.calls(contains=":setIamPolicy")
    assert fake.requests.index(revoke) < fake.requests.index(patch)

    fake.requests.clear()
    deploy(triggers=[Http(public=True)])
    [patch] = fake.calls(method="PATCH")
    [grant] = fake.calls(contains=":setIamPolicy")
    # and the other way round: the runtime stops believing first.
    assert fake.requests.index(patch) < fake.requests.index(grant)
    assert environment(fake)["DEPLOYER_HTTP_ACCESS"] == "public"


# --- identities: the function's and the scheduler's own service accounts -----------


def test_contract_first_deploy_makes_an_account_for_the_function_and_one_for_the_scheduler(
    fake: FakeGoogleCloud, buckets: GcsEmulator
) -> None:
    deploy(triggers=[DAILY, Http()])
    assert set(fake.accounts) == {FUNCTION_ACCOUNT, SCHEDULER_ACCOUNT}
    creates = fake.calls(method="POST", contains="/serviceAccounts")
    assert [request.path for request in creates] == [f"/v1/projects/{PROJECT}/serviceAccounts"] * 2
    for request, email, role in zip(
        creates, (FUNCTION_ACCOUNT, SCHEDULER_ACCOUNT), ("function", "scheduler"), strict=True
    ):
        account_id = request.body["accountId"]
        assert email.startswith(f"{account_id}@")
        assert 6 <= len(account_id) <= 30 and ACCOUNT_ID.match(account_id)
        # The description says which deployer function owns it: how deployer
        # tells its accounts from someone else's.
        description = request.body["serviceAccount"]["description"]
        assert description.startswith(f"deployer:{role}:{REGION}/scores ")
        assert "scores" in request.body["serviceAccount"]["displayName"]
    # Both exist before anything names them.
    first_use = min(
        fake.requests.index(request)
        for request in fake.requests
        if request.method in ("POST", "PATCH") and "/serviceAccounts" not in request.path
    )
    assert max(fake.requests.index(request) for request in creates) < first_use

    function = get_function(fake)
    assert function.service_config.service_account_email == FUNCTION_ACCOUNT
    [job] = jobs(fake)
    assert job.http_target.oidc_token.service_account_email == SCHEDULER_ACCOUNT
    # The scheduler's account may invoke this function's Cloud Run service, and
    # that is all it is granted here.
    [setting] = fake.calls(contains=":setIamPolicy")
    assert setting.path == f"/v2/{LOCATION}/services/scores:setIamPolicy"
    assert setting.body["policy"]["bindings"] == [
        {"role": "roles/run.invoker", "members": [f"serviceAccount:{SCHEDULER_ACCOUNT}"]}
    ]
    # The function's account: objects of its output bucket (and the bucket's
    # metadata, which pyarrow reads), read-only on its inputs bucket.
    member = f"serviceAccount:{FUNCTION_ACCOUNT}"
    assert bindings(buckets, OUTPUT_BUCKET) == {
        "roles/storage.bucketViewer": [member],
        "roles/storage.objectAdmin": [member],
    }
    assert bindings(buckets, INPUTS_BUCKET) == {"roles/storage.objectViewer": [member]}
    # The function's URL exists once it is created: the runtime learns the
    # audience in a configuration-only update, without a second upload.
    [create] = fake.calls(method="POST", contains="/functions")[1:]  # after generateUploadUrl
    assert "DEPLOYER_SCHEDULER_AUDIENCE" not in create.body["serviceConfig"]["environmentVariables"]
    [patch] = fake.calls(method="PATCH")
    assert patch.query["updateMask"] == "serviceConfig.environmentVariables"
    assert len(fake.calls(method="PUT")) == 1
    assert environment(fake)["DEPLOYER_SCHEDULER_AUDIENCE"] == function.url


def test_contract_the_plan_lists_the_identity_steps(fake: FakeGoogleCloud) -> None:
    computed = plan(triggers=[DAILY])
    lines = [str(action) for action in computed.actions]
    assert lines[:4] == [
        f"create: service account {FUNCTION_ACCOUNT}: scores runs as it",
        f"create: service account {SCHEDULER_ACCOUNT}: Cloud Scheduler calls scores as it",
        f"update config: grant roles/storage.objectAdmin, roles/storage.bucketViewer on "
        f"gs://{OUTPUT_BUCKET} to {FUNCTION_ACCOUNT}",
        f"update config: grant roles/storage.objectViewer on gs://{INPUTS_BUCKET} to "
        f"{FUNCTION_ACCOUNT}",
    ]
    assert lines[5] == f"update config: grant roles/run.invoker on scores to {SCHEDULER_ACCOUNT}"
    assert {request.method for request in fake.requests} == {"GET"}
    assert fake.accounts == {}


def test_contract_an_account_deployer_did_not_make_is_refused_before_any_upload(
    fake: FakeGoogleCloud, buckets: GcsEmulator
) -> None:
    add_account(fake, SCHEDULER_ACCOUNT, "the billing team's exporter")
    with pytest.raises(ProviderError) as raised:
        deploy(triggers=[DAILY])
    message = str(raised.value)
    assert SCHEDULER_ACCOUNT in message and "was not made by deployer" in message
    assert f"gcloud iam service-accounts delete {SCHEDULER_ACCOUNT}" in message
    assert {request.method for request in fake.requests} == {"GET"}  # nothing made or uploaded
    assert fake.uploads == {} and set(fake.accounts) == {SCHEDULER_ACCOUNT}
    assert bindings(buckets, OUTPUT_BUCKET) == {}

    # An account made by deployer for another function is not this one's either.
    fake.accounts.clear()
    add_account(fake, FUNCTION_ACCOUNT, f"deployer:function:{REGION}/scores-v2 made by deployer")
    with pytest.raises(ProviderError, match="provider_options=\\{'service_account'"):
        plan(triggers=[Http()])


def test_contract_removing_every_schedule_revokes_the_schedulers_invoker(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY, Http()])
    computed = plan(triggers=[Http()])
    assert f"update config: revoke roles/run.invoker on scores from {SCHEDULER_ACCOUNT}" in [
        str(action) for action in computed.actions
    ]
    deploy(triggers=[Http()])
    assert invokers(fake, get_function(fake)) == set()
    assert jobs(fake) == []


def test_contract_a_function_deployed_before_it_had_accounts_gets_them_without_a_rebuild(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY])
    # As deployer left it before: the default compute account, scheduled with
    # it, and no scheduler settings in the environment.
    function = fake.functions[FUNCTION]
    function["serviceConfig"]["serviceAccountEmail"] = DEFAULT_SERVICE_ACCOUNT
    for key in (
        "DEPLOYER_SCHEDULER_ACCOUNT",
        "DEPLOYER_SCHEDULER_AUDIENCE",
        "DEPLOYER_HTTP_ACCESS",
    ):
        del function["serviceConfig"]["environmentVariables"][key]
    [job_name] = fake.jobs
    fake.jobs[job_name]["httpTarget"]["oidcToken"]["serviceAccountEmail"] = DEFAULT_SERVICE_ACCOUNT
    fake.accounts.clear()
    fake.policies.clear()
    fake.requests.clear()

    lines = [str(action) for action in plan(triggers=[DAILY]).actions]
    assert f"create: service account {FUNCTION_ACCOUNT}: scores runs as it" in lines
    assert (
        f"update config: service account: {DEFAULT_SERVICE_ACCOUNT!r} -> {FUNCTION_ACCOUNT!r}"
    ) in lines
    assert f"update config: scheduler account: None -> {SCHEDULER_ACCOUNT!r}" in lines
    assert any(
        line.startswith("update config: schedule ")
        and line.endswith(f" calls as {SCHEDULER_ACCOUNT} (was {DEFAULT_SERVICE_ACCOUNT})")
        for line in lines
    )
    deploy(triggers=[DAILY])
    assert fake.calls(contains="generateUploadUrl") == []  # no rebuild
    function = get_function(fake)
    assert function.service_config.service_account_email == FUNCTION_ACCOUNT
    assert environment(fake)["DEPLOYER_SCHEDULER_ACCOUNT"] == SCHEDULER_ACCOUNT
    assert environment(fake)["DEPLOYER_SCHEDULER_AUDIENCE"] == function.url
    [job] = jobs(fake)
    assert job.http_target.oidc_token.service_account_email == SCHEDULER_ACCOUNT
    assert plan(triggers=[DAILY]).changes_nothing


def test_contract_an_account_iam_does_not_know_yet_is_tried_again(fake: FakeGoogleCloud) -> None:
    # IAM refuses a just-made account for a moment; the deploy waits it out.
    fake.unsettled = 2
    deploy(triggers=[DAILY])
    # The function's creation was refused twice for its brand-new account, then went through.
    assert fake.refused == [FUNCTION_ACCOUNT, FUNCTION_ACCOUNT]
    creates = [request for request in fake.calls(method="POST") if "functionId" in request.query]
    assert len(creates) == 3
    assert get_function(fake).service_config.service_account_email == FUNCTION_ACCOUNT
    assert invokers(fake, get_function(fake)) == {f"serviceAccount:{SCHEDULER_ACCOUNT}"}


# --- redeploys ---------------------------------------------------------------------


def test_contract_redeploy_with_nothing_changed_uploads_and_changes_nothing(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY, Http()])
    before = (get_function(fake), jobs(fake))
    fake.requests.clear()

    assert plan(triggers=[DAILY, Http()]).changes_nothing
    deploy(triggers=[DAILY, Http()])
    assert {request.method for request in fake.requests} == {"GET"}  # it only read
    assert fake.calls(contains="generateUploadUrl") == []
    assert (get_function(fake), jobs(fake)) == before


def test_contract_code_only_change_uploads_once_and_patches_the_function_once(
    fake: FakeGoogleCloud,
) -> None:
    first = deploy(triggers=[DAILY, Http()])
    jobs_before = jobs(fake)
    fake.requests.clear()

    assert plan(predict_v2, triggers=[DAILY, Http()]).kinds() == [UPDATE_CODE]
    second = deploy(predict_v2, triggers=[DAILY, Http()])
    assert second.deps_hash == first.deps_hash and second.code_hash != first.code_hash

    assert len(fake.calls(contains="generateUploadUrl")) == 1
    [upload] = fake.calls(method="PUT")
    [patch] = fake.calls(method="PATCH")
    assert patch.path == f"/v2/{FUNCTION}"
    assert set(patch.query["updateMask"].split(",")) == {
        "buildConfig.runtime",
        "buildConfig.entryPoint",
        "buildConfig.source",
        "serviceConfig.availableMemory",
        "serviceConfig.timeoutSeconds",
        "serviceConfig.environmentVariables",
        "serviceConfig.ingressSettings",
        "serviceConfig.allTrafficOnLatestRevision",
        "serviceConfig.serviceAccountEmail",
        "labels",
        "description",
    }
    assert fake.calls(method="DELETE") == []
    assert fake.calls(contains="/jobs", method="POST") == []
    assert fake.calls(contains=":setIamPolicy") == []

    function = get_function(fake)
    assert function.build_config.source.storage_source.object_ == (
        upload.path.rsplit("/", 1)[-1] + ".zip"
    )
    assert decode_hash(function.labels["deployer-code-hash"]) == second.code_hash
    assert decode_hash(function.labels["deployer-deps-hash"]) == first.deps_hash
    assert jobs(fake) == jobs_before


def test_contract_config_change_redeploys_with_the_new_timeout(fake: FakeGoogleCloud) -> None:
    deploy(triggers=[DAILY])
    # The job's deadline follows the timeout: a step of the plan, not a side effect.
    assert [str(step) for step in plan(triggers=[DAILY], timeout=900).steps] == [
        "update config: timeout: 300 -> 900",
        f"update config: schedule {describe(DAILY)}: attempt deadline 300 s -> 900 s",
    ]
    deploy(triggers=[DAILY], timeout=900)
    assert get_function(fake).service_config.timeout_seconds == 900
    [job] = jobs(fake)
    assert job.attempt_deadline.total_seconds() == 900  # the job follows the timeout


def test_contract_removed_schedule_is_deleted_on_redeploy(fake: FakeGoogleCloud) -> None:
    deploy(triggers=[DAILY, Every(hours=1), Http()])
    assert len(jobs(fake)) == 2
    fake.requests.clear()

    assert plan(triggers=[Every(hours=1), Http()]).kinds() == [REMOVE_TRIGGER]
    deploy(triggers=[Every(hours=1), Http()])
    [kept] = jobs(fake)
    assert kept.schedule == "0 * * * *"
    [deleted] = fake.calls(method="DELETE")
    assert deleted.path.startswith(f"/v1/{LOCATION}/jobs/deployer-scores-")
    assert fake.calls(method="PATCH") == []  # the function itself was not touched
    assert fake.calls(contains="generateUploadUrl") == []


def test_contract_jobs_of_a_function_with_a_longer_name_are_not_touched(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY])
    deploy(name="scores-v2", triggers=[DAILY])
    deploy(triggers=[])
    [remaining] = jobs(fake)
    assert "/jobs/deployer-scores-v2-" in remaining.name


def test_contract_failed_build_leaves_the_previous_code_labelled(fake: FakeGoogleCloud) -> None:
    first = deploy(triggers=[Http()])
    fake.fail_next_build = "Build failed: pip could not install the requirements"
    with pytest.raises(ProviderError, match="Build failed"):
        deploy(predict_v2, triggers=[Http()])
    # Cloud Functions keeps serving the previous revision; the labels say so,
    # and the next deploy offers the update again.
    function = get_function(fake)
    assert decode_hash(function.labels["deployer-code-hash"]) == first.code_hash
    assert plan(predict_v2, triggers=[Http()]).kinds() == [UPDATE_CODE]


def test_contract_function_not_made_by_deployer_is_left_alone(fake: FakeGoogleCloud) -> None:
    fake.functions[FUNCTION] = {"name": FUNCTION, "state": "ACTIVE", "labels": {"team": "x"}}
    with pytest.raises(ProviderError, match="not deployed by deployer"):
        deploy()
    assert fake.calls(contains="generateUploadUrl") == []
    assert GcpProvider().get("scores") is None


def test_contract_service_account_option_is_what_the_function_runs_as(
    fake: FakeGoogleCloud, buckets: GcsEmulator
) -> None:
    account = "scores-runner@demo-project.iam.gserviceaccount.com"
    add_account(fake, account, "the team's own")
    deploy(triggers=[DAILY], provider_options={"service_account": account})
    function = get_function(fake)
    assert function.service_config.service_account_email == account
    # Cloud Scheduler still calls as deployer's scheduler account, nothing else.
    [job] = jobs(fake)
    assert job.http_target.oidc_token.service_account_email == SCHEDULER_ACCOUNT
    assert invokers(fake, function) == {f"serviceAccount:{SCHEDULER_ACCOUNT}"}
    # No account of deployer's for the function, and the user's is granted nothing.
    assert set(fake.accounts) == {account, SCHEDULER_ACCOUNT}
    for bucket in (OUTPUT_BUCKET, INPUTS_BUCKET):
        assert bindings(buckets, bucket) == {}
    assert fake.accounts[account]["description"] == "the team's own"  # untouched


def test_contract_project_and_region_options_win_over_the_environment(
    fake: FakeGoogleCloud,
) -> None:
    deploy(triggers=[DAILY], provider_options={"project": "other", "region": "us-central1"})
    assert get_function(fake, "projects/other/locations/us-central1/functions/scores")
    assert len(jobs(fake, "projects/other/locations/us-central1")) == 1
    assert fake.functions.keys() == {"projects/other/locations/us-central1/functions/scores"}


# --- reading, invoking, deleting ---------------------------------------------------


def test_contract_list_and_get_read_the_state_from_google_cloud(fake: FakeGoogleCloud) -> None:
    deployment = deploy(triggers=[DAILY, Http(public=True)])
    [state] = GcpProvider().list()
    assert state.name == "scores" and state.provider == "gcp"
    assert (state.output, state.inputs, state.qualname) == (OUTPUT, INPUTS, "predict")
    assert state.code_hash == deployment.code_hash
    assert sorted(state.triggers, key=lambda trigger: trigger["type"]) == [
        {"type": "cron", "expr": "0 6 * * *", "tz": "Europe/Berlin"},
        {"type": "http", "public": True},
    ]
    assert deployer.get("scores", provider="gcp").url == get_function(fake).url


def test_contract_invoke_posts_the_records_with_an_identity_token(
    fake: FakeGoogleCloud,
) -> None:
    deployment = deploy(triggers=[Http()])
    fake.requests.clear()
    predictions = deployment.invoke(pd.DataFrame({"x": [1, 2]}))
    [call] = fake.calls(method="POST")
    assert call.path == f"/invoke/{PROJECT}/{REGION}/scores"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json"
    assert call.headers["x-deployer-trigger"] == "manual"  # recorded as a manual run
    assert call.body == [{"x": 1}, {"x": 2}]  # the body is the payload itself
    # The fake echoes the records as predictions, as JSON in -> JSON out.
    assert predictions.to_dict("records") == [{"x": 1}, {"x": 2}]


def test_contract_delete_removes_the_function_its_jobs_and_its_accounts(
    fake: FakeGoogleCloud, buckets: GcsEmulator
) -> None:
    deployment = deploy(triggers=[DAILY, Every(hours=1), Http()])
    member = f"serviceAccount:{FUNCTION_ACCOUNT}"
    assert member in buckets.members(OUTPUT_BUCKET, "roles/storage.objectAdmin")
    fake.requests.clear()
    delete_plan = GcpProvider().plan_delete("scores")
    assert delete_plan.kinds() == [DELETE, *[REMOVE_TRIGGER] * 3, DELETE, DELETE, DELETE]
    versions = f"gs://{OUTPUT_BUCKET}/runs/.deployer-artifacts/versions/{PROJECT}/{REGION}/scores/"
    # (The emulator's bucket outlives each test: earlier tests' versions are there too.)
    *accounts, forget = [action.description for action in delete_plan.actions[4:]]
    assert accounts == [
        f"service account {FUNCTION_ACCOUNT} (the function's)",
        f"service account {SCHEDULER_ACCOUNT} (the scheduler's)",
    ]
    assert forget.endswith(f" version(s) kept for rollback in {versions}")
    assert buckets.keys(OUTPUT_BUCKET, versions.split("/", 3)[3]) != []
    deployment.delete(quiet=True)
    with pytest.raises(google_exceptions.NotFound):
        get_function(fake)
    assert jobs(fake) == []
    deletes = [request.path for request in fake.calls(method="DELETE")]
    # Jobs first, then the accounts it ran and was called as, the function last
    # (while it exists, a delete that failed halfway can be run again).
    assert len(deletes) == 5 and deletes[-1] == f"/v2/{FUNCTION}"
    assert all(path.startswith(f"/v1/{LOCATION}/jobs/") for path in deletes[:2])
    assert sorted(deletes[2:4]) == sorted(
        f"/v1/projects/{PROJECT}/serviceAccounts/{email}"
        for email in (FUNCTION_ACCOUNT, SCHEDULER_ACCOUNT)
    )
    assert fake.accounts == {}
    # What the function's account was granted on its buckets went first.
    for bucket in (OUTPUT_BUCKET, INPUTS_BUCKET):
        assert member not in str(buckets.iam_policy(bucket))
    # Outputs are in Cloud Storage, which delete never removes; the code kept
    # for rollback goes with the function.
    assert all(request.path.startswith(("/v1/", "/v2/")) for request in fake.requests)
    assert buckets.keys(OUTPUT_BUCKET, versions.split("/", 3)[3]) == []
    with pytest.raises(ConfigError, match="no function named 'scores'"):
        deployer.delete("scores", provider="gcp", quiet=True)


def test_contract_delete_leaves_alone_an_account_deployer_did_not_make(
    fake: FakeGoogleCloud,
) -> None:
    account = "scores-runner@demo-project.iam.gserviceaccount.com"
    add_account(fake, account, "the team's own")
    deployment = deploy(triggers=[DAILY], provider_options={"service_account": account})
    # Someone reuses the scheduler account's id for something of their own.
    fake.accounts[SCHEDULER_ACCOUNT]["description"] = "taken over by hand"
    deployment.delete(quiet=True)
    assert set(fake.accounts) == {account, SCHEDULER_ACCOUNT}
    assert fake.calls(method="DELETE", contains="/serviceAccounts") == []
    with pytest.raises(google_exceptions.NotFound):
        get_function(fake)


# --- bad input: refused before any request reaches Google ---------------------------


def test_unsupported_python_is_refused_naming_what_works(
    fake: FakeGoogleCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("deployer.bundle.python_version", lambda: "3.7")
    with pytest.raises(ProviderError, match=r"Python 3\.7.*3\.11"):
        deploy(triggers=[DAILY])
    assert fake.requests == []


@pytest.mark.parametrize(
    "schedule, fragment",
    [
        (Every(minutes=7), "7 minutes"),
        (Cron("30 2 * * *", tz="Europe/Berlin"), "clock"),
    ],
)
def test_schedules_cloud_scheduler_cannot_run_exactly_are_refused(
    fake: FakeGoogleCloud, schedule: Any, fragment: str
) -> None:
    with pytest.raises(TriggerError, match=fragment):
        deploy(triggers=[schedule])
    assert fake.requests == []


def test_output_and_inputs_must_be_cloud_storage(fake: FakeGoogleCloud) -> None:
    with pytest.raises(ConfigError, match="gs://"):
        deploy(output="s3://bucket/runs")
    with pytest.raises(ConfigError, match="output='gs://"):
        deployer.deploy(predict, name="scores", provider="gcp", quiet=True)
    with pytest.raises(ConfigError, match="inputs='gs://"):
        deploy(inputs="/tmp/features.parquet")
    assert fake.requests == []


def test_missing_project_is_named(fake: FakeGoogleCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    with pytest.raises(ProviderError, match="GOOGLE_CLOUD_PROJECT"):
        deploy()
    assert fake.requests == []


def test_missing_region_is_named(fake: FakeGoogleCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_REGION")
    with pytest.raises(ProviderError, match="GOOGLE_CLOUD_REGION"):
        deploy()
    assert fake.requests == []


def test_missing_credentials_are_named(
    fake: FakeGoogleCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real endpoints: Application Default Credentials are needed, and there are none.
    for variable in ENDPOINT_VARIABLES:
        monkeypatch.delenv(variable)
    with pytest.raises(ProviderError, match="gcloud auth application-default login"):
        deploy()
    assert fake.requests == []


def test_labels_round_trip_a_full_sha256() -> None:
    digest = "0123456789abcdef" * 4
    label = encode_hash(digest)
    assert len(label) == 52 and LABEL_VALUE.match(label)
    assert decode_hash(label) == digest
    assert decode_hash("not-a-hash!") == ""


def test_contract_memory_maps_to_the_services_available_memory(fake: FakeGoogleCloud) -> None:
    deploy(memory=2048)
    assert get_function(fake).service_config.available_memory == "2Gi"
    assert any("memory: '2Gi' -> '1536Mi'" in str(action) for action in plan(memory=1536).actions)
    deploy(memory=1536)
    assert get_function(fake).service_config.available_memory == "1536Mi"
    with pytest.raises(ConfigError, match="32768"):
        deploy(memory=40000)


def test_build_needs_no_project_region_or_credentials_and_writes_the_source_zip(
    deployer_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in (*ENDPOINT_VARIABLES, "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-credentials.json"))
    built = deployer.build(predict, name="scores", provider="gcp", output=OUTPUT)
    [path] = deployer.write_artifacts(built, tmp_path / "dist", quiet=True)
    assert path == tmp_path / "dist" / f"scores-{built.bundle.code_hash[:12]}-source.zip"
    assert path.read_bytes() == source_zip(built.bundle)  # what deploy uploads, byte for byte
    # Deploying is where the missing credentials are named.
    with pytest.raises(ProviderError, match="no Google Cloud credentials"):
        deployer.deploy(predict, name="scores", provider="gcp", output=OUTPUT, quiet=True)
