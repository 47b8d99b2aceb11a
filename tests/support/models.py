"""Small real models for tests: trained in a second, saved the way users save theirs."""

from __future__ import annotations

from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train_iris(path: Path) -> tuple[Path, LogisticRegression]:
    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    joblib.dump(model, path)
    return path, model


IRIS_ROWS = [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6], [5.1, 3.5, 1.4, 0.2]]
