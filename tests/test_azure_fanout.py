"""A map run on Azure: deployed through the control-plane fake, each shard a POST
to the app's function URL with its key, passed by the fake's front end to a
Functions host (tests/azure_host.py) serving the very zip deployer published,
in a virtualenv with nothing but azure-functions; data and parts in Azurite."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure_fake import FakeAzure
from azure_host import functions_host
from azurite import Azurite, azurite
from test_azure_app import app_python
from test_azure_provider import (
    APP,
    DATA_ACCOUNT,
    DATA_KEY,
    OUTPUT,
    SITE_PATH,
    _create_containers,
    azure_fake,
    deploy,
    fake,
    no_real_azure,
)

import deployer
from deployer import ConfigError, Http

pytestmark = pytest.mark.slow
# Fixtures defined elsewhere: importing them is how pytest finds them here.
FIXTURES = (azurite, azure_fake, fake, no_real_azure, app_python)
FEATURES = "az://features/2026-11/"


def predict(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=frame.x - frame.k / 2)


def put_features(path: str, frame: pd.DataFrame) -> None:
    from deployer.runtimes import storage

    filesystem, key = storage.filesystem(path)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, row_group_size=400)
    storage.write_bytes(filesystem, key, buffer.getvalue())


def test_a_map_run_fans_out_over_keyed_calls_of_the_app(
    fake: FakeAzure, azurite: Azurite, app_python: Path, tmp_path: Path
) -> None:
    generator = np.random.default_rng(11)
    frame = pd.DataFrame({"x": generator.normal(size=2_000), "k": generator.integers(0, 7, 2_000)})
    put_features(f"{FEATURES}a.parquet", frame.iloc[:1_200])
    put_features(f"{FEATURES}b.parquet", frame.iloc[1_200:])
    deployment = deploy(predict, inputs=FEATURES, triggers=[Http()])
    with zipfile.ZipFile(io.BytesIO(fake.packages[SITE_PATH.lower()])) as archive:
        archive.extractall(tmp_path / "app")
    environment = {
        "AZURE_STORAGE_ACCOUNT_NAME": DATA_ACCOUNT,
        "AZURE_STORAGE_ACCOUNT_KEY": DATA_KEY,
        "AZURE_STORAGE_BLOB_ENDPOINT": azurite.endpoint,
    }
    with functions_host(app_python, tmp_path / "app", environment) as host:
        fake.backends[APP] = host
        run = deployment.map(FEATURES, rows_per_shard=400, concurrency=2, progress=False)
        _create_containers(azurite.endpoint, "elsewhere")
        put_features("az://elsewhere/x.parquet", frame)
        with pytest.raises(ConfigError, match="outside what scores's identity may read"):
            deployment.map("az://elsewhere/x.parquet", progress=False)

    assert run.status == "succeeded", run.record
    assert (run.shards, run.rows_in) == (5, 2_000)
    calls = [call for call in fake.requests if call.path.startswith("/sites/")]
    assert len(calls) == 5
    assert {call.headers["x-deployer-trigger"] for call in calls} == {"map"}
    assert all(call.headers.get("x-functions-key") for call in calls)  # the front end checked
    got = deployer.read_outputs("scores", output=OUTPUT, run_id=run.run_id)
    pd.testing.assert_frame_equal(got.drop(columns="run_id"), predict(frame))


def test_a_public_app_takes_no_map_shards(
    fake: FakeAzure, azurite: Azurite, app_python: Path, tmp_path: Path
) -> None:
    deployment = deploy(predict, inputs=FEATURES, triggers=[Http(public=True)])
    with pytest.raises(ConfigError, match="public HTTP trigger"):
        deployment.map(FEATURES, progress=False)
    # The app itself refuses one too: anyone may call a public function URL.
    with zipfile.ZipFile(io.BytesIO(fake.packages[SITE_PATH.lower()])) as archive:
        archive.extractall(tmp_path / "app")
    shard = {"run_id": "20261129T060000Z-0123abcd", "part": 0, "pieces": [{"path": FEATURES}]}
    with functions_host(app_python, tmp_path / "app", {}) as host:
        request = urllib.request.Request(
            f"{host}/api/scores",
            data=json.dumps(shard).encode(),
            headers={"Content-Type": "application/json", "X-Deployer-Trigger": "map"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        answer = json.loads(refused.value.read())  # while the host still serves
    assert refused.value.code == 403
    assert "takes no map shards" in answer["error"]["message"]
