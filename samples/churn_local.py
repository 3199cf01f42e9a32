"""Train a classifier, deploy its predict function locally, invoke it, read results back.

Runs on this machine with no cloud account:

    python samples/churn_local.py

The data is scikit-learn's bundled breast-cancer data set (no download), standing
in for a churn model's features; the steps are what you would do with your own.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import deployer
from deployer import Cron, Http

WORKDIR = Path(os.environ.get("DEPLOYER_HOME", ".deployer"))

# 1. Train a model, as in any notebook.
data = load_breast_cancer(as_frame=True)
features: pd.DataFrame = data.data
COLUMNS = list(features.columns[:10])  # the "mean ..." measurements
train, test, y_train, y_test = train_test_split(
    features[COLUMNS], data.target, test_size=0.25, random_state=0
)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
model.fit(train, y_train)
print(f"trained: accuracy {model.score(test, y_test):.3f} on {len(test)} held-out rows")

# The feature table a scheduled run reads every morning.
WORKDIR.mkdir(exist_ok=True)
inputs_path = WORKDIR / "features.parquet"
test.reset_index(drop=True).to_parquet(inputs_path, index=False)


# 2. The prediction function: a closure over the fitted model.
def predict(batch: pd.DataFrame) -> pd.DataFrame:
    scores = model.predict_proba(batch[COLUMNS])[:, 1]
    return pd.DataFrame({"score": scores, "label": (scores >= 0.5).astype(int)})


# 3. Deploy: a daily schedule and an authenticated HTTP endpoint.
deployment = deployer.deploy(
    predict,
    name="churn-scores",
    triggers=[Cron("0 6 * * *", tz="Europe/Berlin"), Http()],
    inputs=str(inputs_path),
    metrics={
        "mean_score": lambda out: out.score.mean(),
        "positive_rate": lambda out: out.label.mean(),
    },
    checks={"scores_in_range": lambda out: out.score.between(0, 1).all()},
)

# 4a. Invoke directly with a DataFrame (no server needed).
print("\ninvoke with 5 rows:")
print(deployment.invoke(test.head(5)))

# 4b. A run like the 06:00 schedule's: no body, so the function reads `inputs`.
deployment.invoke()

# 4c. Over HTTP, through the local server, as a client would call it.
from deployer.providers.local.server import LocalServer  # noqa: E402

server = LocalServer(port=0, log=lambda line: None)
server.start()
try:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/functions/churn-scores",
        data=json.dumps(test.head(3).to_dict(orient="records")).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
    )
    with urllib.request.urlopen(request) as response:
        reply = json.load(response)
    print(f"\nHTTP POST -> {reply['status']}: {reply['predictions']}")
finally:
    server.stop()

# 5. Read everything back from the store as DataFrames.
outputs = deployer.read_outputs("churn-scores", output=deployment.output)
runs = deployer.read_runs("churn-scores", output=deployment.output)
print(f"\noutputs: {len(outputs)} rows over {outputs.run_id.nunique()} runs")
print(outputs.tail().to_string())
print("\nruns:")
print(
    runs[
        [
            "run_id",
            "status",
            "trigger",
            "rows_in",
            "rows_out",
            "duration_ms",
            "metric.mean_score",
            "metric.positive_rate",
        ]
    ]
    .tail()
    .to_string()
)

# 6. The run report: every run, its metrics and drift, in one HTML file.
report = deployment.report(path="churn-scores-report.html")
print(f"\nreport: {report} (or `deployer report churn-scores --open`)")
