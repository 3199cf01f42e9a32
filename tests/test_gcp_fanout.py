"""A map run on GCP: deployed through the control-plane fake, each shard an
authenticated POST that the fake's function URL passes to functions-framework
serving the real source (in a venv made from its requirements.txt); the data
and the parts are in gcp-storage-emulator."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcp_emulators import GcsEmulator, cloud_function, function_environment, gcs_emulator, unzip
from gcp_fake import FakeGoogleCloud
from test_gcp_provider import (
    INPUTS_BUCKET,
    OUTPUT,
    OUTPUT_BUCKET,
    buckets,
    built_bundle,
    deploy,
    fake,
    fake_google_cloud,
    no_real_google,
)
from test_gcp_runtime import function_environments

import deployer
from deployer import ConfigError, Http
from deployer.providers.gcp.source import ENTRY_POINT, source_zip

pytestmark = pytest.mark.slow
# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (gcs_emulator, buckets, fake, fake_google_cloud, no_real_google, function_environments)
FEATURES = f"gs://{INPUTS_BUCKET}/features/"


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x * 3 - frame.k)


def put_features(gcs: GcsEmulator, key: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=500)
    gcs.put(INPUTS_BUCKET, key, buffer.getvalue())


def test_a_map_run_fans_out_over_authenticated_calls_of_the_function(
    fake: FakeGoogleCloud,
    buckets: GcsEmulator,
    function_environments: Path,
    tmp_path: Path,
) -> None:
    generator = np.random.default_rng(3)
    frame = pd.DataFrame({"x": generator.normal(size=3_000), "k": generator.integers(0, 5, 3_000)})
    put_features(buckets, "features/a.parquet", frame.iloc[:2_000])
    put_features(buckets, "features/b.parquet", frame.iloc[2_000:])
    overrides = {"inputs": FEATURES, "triggers": [Http()]}
    deployment = deploy(predict, **overrides)
    source = unzip(source_zip(built_bundle(predict, **overrides)), tmp_path / "source")
    venv = function_environment(source / "requirements.txt", function_environments)
    environment = {
        "STORAGE_EMULATOR_HOST": buckets.endpoint,
        "DEPLOYER_HTTP_ACCESS": "authenticated",
    }
    with cloud_function(source, venv, environment, target=ENTRY_POINT) as function:
        fake.backends["scores"] = function.url
        run = deployment.map(FEATURES, rows_per_shard=500, concurrency=3, progress=False)
        calls = [call for call in fake.requests if call.path.startswith("/invoke/")]

        # Data outside the buckets its account may read is refused before any call.
        buckets.create_bucket("acme-elsewhere", exist_ok=True)
        buckets.put("acme-elsewhere", "x.parquet", frame.to_parquet(index=False))
        with pytest.raises(ConfigError, match="outside what scores's account may read"):
            deployment.map("gs://acme-elsewhere/x.parquet", progress=False)

    assert run.status == "succeeded", run.record
    assert (run.shards, run.rows_in) == (6, 3_000)
    assert len(calls) == 6
    assert {call.headers["x-deployer-trigger"] for call in calls} == {"map"}
    assert all(call.headers["authorization"].startswith("Bearer ") for call in calls)
    assert max(len(call.data) for call in calls) < 600  # a reference, never the rows
    got = deployer.read_outputs("scores", output=OUTPUT, run_id=run.run_id)
    pd.testing.assert_frame_equal(got.drop(columns="run_id"), predict(frame))
    parts = buckets.keys(OUTPUT_BUCKET, f"runs/scores/runs/{run.run_id}/part-")
    assert len(parts) == 6


def test_a_public_function_takes_no_map_shards(
    fake: FakeGoogleCloud,
    buckets: GcsEmulator,
    function_environments: Path,
    tmp_path: Path,
) -> None:
    put_features(buckets, "features/a.parquet", pd.DataFrame({"x": [1.0], "k": [1]}))
    overrides = {"inputs": FEATURES, "triggers": [Http(public=True)]}
    deployment = deploy(predict, **overrides)
    with pytest.raises(ConfigError, match="public HTTP trigger"):
        deployment.map(FEATURES, progress=False)
    # The function itself refuses one too: anyone may call a public URL.
    source = unzip(source_zip(built_bundle(predict, **overrides)), tmp_path / "source")
    venv = function_environment(source / "requirements.txt", function_environments)
    environment = {"STORAGE_EMULATOR_HOST": buckets.endpoint, "DEPLOYER_HTTP_ACCESS": "public"}
    shard = {
        "run_id": "20261129T060000Z-0123abcd",
        "part": 0,
        "pieces": [{"path": f"{FEATURES}a.parquet"}],
        "first": True,
    }
    with cloud_function(source, venv, environment, target=ENTRY_POINT) as function:
        reply = function.request(
            json.dumps(shard),
            headers={"Content-Type": "application/json", "X-Deployer-Trigger": "map"},
        )
    assert reply.status == 403 and "takes no map shards" in reply.json()["error"]["message"]
    assert not buckets.keys(OUTPUT_BUCKET, f"runs/scores/runs/{shard['run_id']}/")
