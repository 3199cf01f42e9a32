"""The GCP provider against a loopback fake of Google's control planes.

These are contract tests (hence ``test_contract_...``): no emulator exists for
Cloud Functions, Cloud Scheduler or Cloud Run's IAM, so the official client
libraries talk REST to tests/gcp_fake.py, which keeps the resources and records
every request. The resources are read back through the same official clients
and asserted field by field; the recorded requests show what was uploaded and
changed. Building and running the uploaded source is tested in
test_gcp_runtime.py (functions-framework in a fresh venv).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gcp_fake import DEFAULT_SERVICE_ACCOUNT, FakeGoogleCloud
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import functions_v2, run_v2, scheduler_v1

import deployer
from deployer import ConfigError, Cron, Every, Http, ProviderError, TriggerError
from deployer.bundle import python_version
from deployer.providers.base import ADD_TRIGGER, CREATE, REMOVE_TRIGGER, UPDATE_CODE
from deployer.providers.gcp import (
    ENDPOINT_VARIABLES,
    IDENTITY_TOKEN,
    GcpProvider,
    decode_hash,
    encode_hash,
)
from deployer.providers.gcp_source import gcp_runtime, source_zip

PROJECT = "demo-project"
REGION = "europe-west1"
LOCATION = f"projects/{PROJECT}/locations/{REGION}"
FUNCTION = f"{LOCATION}/functions/scores"
OUTPUT = "gs://acme-predictions/runs"
INPUTS = "gs://acme-features/latest.parquet"
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
def fake(
    fake_google_cloud: FakeGoogleCloud, deployer_home: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeGoogleCloud:
    """An empty fake, every control plane pointed at it, project and region set."""
    fake_google_cloud.reset()
    for variable in ENDPOINT_VARIABLES:
        monkeypatch.setenv(variable, fake_google_cloud.endpoint)
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


# --- first deploy: the resources, exactly ------------------------------------------


def test_contract_first_deploy_creates_the_function_from_the_uploaded_source(
    fake: FakeGoogleCloud,
) -> None:
    assert plan(triggers=[DAILY, Http()]).kinds() == [CREATE, ADD_TRIGGER, ADD_TRIGGER]
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
    }
    assert service.ingress_settings == functions_v2.ServiceConfig.IngressSettings.ALLOW_ALL
    assert service.all_traffic_on_latest_revision is True
    assert service.service_account_email == DEFAULT_SERVICE_ACCOUNT  # Google's default

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
    assert target.oidc_token.service_account_email == DEFAULT_SERVICE_ACCOUNT
    assert target.oidc_token.audience == function.url
    assert job.attempt_deadline.total_seconds() == 600  # Scheduler waits as long as a run may take
    assert job.retry_config.retry_count == 2  # a failed run (HTTP 500) is retried
    # The scheduler's identity may invoke the function; nobody else was let in.
    assert invokers(fake, function) == {f"serviceAccount:{DEFAULT_SERVICE_ACCOUNT}"}


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

    fake.requests.clear()
    assert plan(triggers=[Http()]).kinds() == [ADD_TRIGGER, REMOVE_TRIGGER]
    deploy(triggers=[Http()])
    function = get_function(fake)
    assert "allUsers" not in invokers(fake, function)
    assert function.labels["deployer-http"] == "authenticated"
    # Who may call it is not the code: nothing was uploaded or rebuilt.
    assert fake.calls(contains="generateUploadUrl") == []
    [patch] = fake.calls(method="PATCH")
    assert patch.query["updateMask"] == "labels"


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
    [change] = plan(triggers=[DAILY], timeout=900).actions
    assert change.description == "timeout: 300 -> 900 s"
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


def test_contract_service_account_option_runs_and_schedules_the_function(
    fake: FakeGoogleCloud,
) -> None:
    account = "scores-runner@demo-project.iam.gserviceaccount.com"
    deploy(triggers=[DAILY], provider_options={"service_account": account})
    function = get_function(fake)
    assert function.service_config.service_account_email == account
    [job] = jobs(fake)
    assert job.http_target.oidc_token.service_account_email == account
    assert invokers(fake, function) == {f"serviceAccount:{account}"}


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


def test_contract_delete_removes_the_function_and_its_jobs(fake: FakeGoogleCloud) -> None:
    deployment = deploy(triggers=[DAILY, Every(hours=1), Http()])
    fake.requests.clear()
    deployment.delete(quiet=True)
    with pytest.raises(google_exceptions.NotFound):
        get_function(fake)
    assert jobs(fake) == []
    deletes = [request.path for request in fake.calls(method="DELETE")]
    assert len(deletes) == 3 and deletes[-1] == f"/v2/{FUNCTION}"  # jobs first
    # Outputs are in Cloud Storage, which delete never calls.
    assert all(request.path.startswith(("/v1/", "/v2/")) for request in fake.requests)
    with pytest.raises(ConfigError, match="no function named 'scores'"):
        deployer.delete("scores", provider="gcp", quiet=True)


def test_logs_name_the_gcloud_command_to_use(fake: FakeGoogleCloud) -> None:
    with pytest.raises(ProviderError, match="gcloud functions logs read scores"):
        GcpProvider().logs("scores")


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
