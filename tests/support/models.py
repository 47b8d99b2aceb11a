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


class FailsOnSomeInputs(LogisticRegression):
    """A model whose own code breaks on some inputs (first feature above 6.5): the server answers
    those with 500. Loading it needs the owner's trust (``trusted_globals``) and this module on
    the model server's path."""

    def predict(self, X):  # type: ignore[no-untyped-def]  # noqa: N803 - scikit-learn's name
        import numpy as np

        if (np.asarray(X, dtype=float)[:, 0] > 6.5).any():
            raise RuntimeError("this model breaks on a first feature above 6.5")
        return super().predict(X)


FAILING_GLOBAL = f"{__name__}.FailsOnSomeInputs"


def train_failing_iris(path: Path) -> Path:
    data = load_iris()
    joblib.dump(FailsOnSomeInputs(max_iter=500).fit(data.data, data.target), path)
    return path


def train_steps(path: Path, labels: list[int]) -> Path:
    """A one-feature tree that answers ``labels[i]`` around x = i (0, 1, 2, ...). Two of them with
    different labels at some points disagree exactly on the rows there (a known shadow share)."""
    from sklearn.tree import DecisionTreeClassifier

    joblib.dump(DecisionTreeClassifier().fit([[float(x)] for x in range(len(labels))], labels), path)
    return path


#: the live and candidate labels of the shadow tests: the two disagree exactly at x = 2
SHADOW_LIVE, SHADOW_CANDIDATE = [0, 1, 1], [0, 1, 0]
