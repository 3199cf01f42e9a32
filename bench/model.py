"""The model every benchmark deploys: the sample's classifier, built the same way."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train() -> tuple[Any, list[str], pd.DataFrame]:
    data = load_breast_cancer(as_frame=True)
    columns = list(data.data.columns[:10])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(data.data[columns], data.target)
    return model, columns, data.data[columns]


def make_predict(model: Any, columns: list[str], *, offset: float = 0.0) -> Any:
    """A prediction function; a different ``offset`` is a code-only change."""

    def predict(batch: pd.DataFrame) -> pd.DataFrame:
        scores = model.predict_proba(batch[columns])[:, 1] + offset
        return pd.DataFrame({"score": scores})

    return predict
